"""Command-line flags with environment defaults, shared by the three services.

Every flag can also be set by the environment variable named in its help; flags
win over the environment. ``KAFKA_BOOTSTRAP_SERVERS`` is required.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from walletkit.service.build import add_version_flag
from walletkit.stream import Guarantee, KafkaSettings, parse_kafka_config

#: Environment variables mapped onto librdkafka properties (TLS / SASL). Each may instead be
#: given as ``<NAME>_FILE``, the path of a file holding the value (a mounted Secret), so a
#: password never has to sit in the process environment: see :func:`kafka_env_properties`.
KAFKA_ENV_PROPERTIES = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
}


def env_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    env: str,
    help: str,
    *,
    default: Any = None,
    type: Any = str,
    required: bool = False,
    **kwargs: Any,
) -> None:
    """Add ``flag`` whose default comes from ``env`` (then ``default``)."""
    raw = os.environ.get(env)
    if raw is not None and raw != "":
        try:
            value = _parse_bool(raw) if type is bool else type(raw)
        except ValueError:
            parser.error(f"environment variable {env}={raw!r} is not a valid {getattr(type, '__name__', type)}")
    else:
        value = default
    if type is bool:
        parser.add_argument(
            flag,
            default=value,
            action=argparse.BooleanOptionalAction,
            help=f"{help} [env {env}, default {value}]",
            **kwargs,
        )
        return
    parser.add_argument(
        flag,
        default=value,
        type=type,
        required=required and value is None,
        help=f"{help} [env {env}{'' if value is None else f', default {value}'}]",
        **kwargs,
    )


def _parse_bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def base_parser(
    prog: str, description: str, default_port: int, default_state_dir: str, *, default_partitions: int
) -> argparse.ArgumentParser:
    """The flags every service has; ``default_partitions`` is the application's (its topology's)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    add_version_flag(p)
    env_flag(
        p,
        "--bootstrap-servers",
        "KAFKA_BOOTSTRAP_SERVERS",
        "Kafka bootstrap servers, host:port[,host:port]",
        required=True,
    )
    env_flag(
        p, "--state-dir", "WALLET_STATE_DIR", "root directory of the local RocksDB state", default=default_state_dir
    )
    env_flag(p, "--http-port", "WALLET_HTTP_PORT", "port of the HTTP server", default=default_port, type=int)
    env_flag(p, "--http-host", "WALLET_HTTP_HOST", "address the HTTP server binds", default="0.0.0.0")
    env_flag(
        p,
        "--partitions",
        "WALLET_PARTITIONS",
        "partitions of each topic when this process creates it",
        default=default_partitions,
        type=int,
    )
    env_flag(
        p,
        "--replication-factor",
        "WALLET_REPLICATION_FACTOR",
        "replication of topics this process creates (-1: the broker's default)",
        default=-1,
        type=int,
    )
    env_flag(
        p,
        "--min-insync-replicas",
        "WALLET_MIN_INSYNC_REPLICAS",
        "min.insync.replicas of topics this process creates (-1: the broker's default)",
        default=-1,
        type=int,
    )
    env_flag(
        p,
        "--create-topics",
        "WALLET_CREATE_TOPICS",
        "create missing topics (off when an operator such as Strimzi owns them)",
        default=True,
        type=bool,
    )
    env_flag(
        p,
        "--session-timeout-ms",
        "WALLET_KAFKA_SESSION_TIMEOUT_MS",
        "consumer-group session timeout",
        default=10_000,
        type=int,
    )
    env_flag(
        p,
        "--instance-id",
        "WALLET_INSTANCE_ID",
        "static group membership id (e.g. the StatefulSet pod name)",
        default=None,
    )
    env_flag(p, "--kafka-config", "KAFKA_CONFIG", "extra librdkafka properties, comma-separated key=value", default="")
    env_flag(
        p,
        "--processing-guarantee",
        "WALLET_PROCESSING_GUARANTEE",
        "exactly_once: Kafka transactions (the API's deposits commit in transactions; a processor's "
        "changelog records and input offsets commit in one, which fences a member whose partitions moved "
        "on); applied_offsets: for brokers without working transactions, replays are recognised by the "
        "input offset each table value carries",
        default=Guarantee.EXACTLY_ONCE.value,
        choices=[g.value for g in Guarantee],
    )
    env_flag(p, "--log-level", "WALLET_LOG_LEVEL", "log level: debug, info, warning, error", default="info")
    env_flag(
        p,
        "--log-format",
        "WALLET_LOG_FORMAT",
        "log lines as json (for collectors) or console (for people)",
        default="json",
        choices=("json", "console"),
    )
    return p


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.partitions < 1:
        parser.error("--partitions must be at least 1")
    if args.processing_guarantee not in {g.value for g in Guarantee}:
        parser.error(
            f"--processing-guarantee / WALLET_PROCESSING_GUARANTEE must be one of "
            f"{', '.join(g.value for g in Guarantee)}, not {args.processing_guarantee!r}"
        )
    return args


class SettingError(ValueError):
    """A setting from the environment that cannot be used; the message names the variable."""


#: Suffix of the variable that names a file holding another variable's value.
FILE_SUFFIX = "_FILE"


def env_or_file(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of ``name`` from the environment, or read from the file ``<name>_FILE`` names.

    The file's content is the value, less one trailing newline (what ``echo`` or an editor adds,
    and what a Secret created from a file often keeps). Empty variables count as unset, as for
    every other setting; an empty file does not. Both set is refused rather than resolved: which
    one wins would be a guess, and a stale password silently preferred is hard to find. Raises
    SettingError, naming the variable, when the file cannot be used.
    """
    environ = os.environ if environ is None else environ
    direct = environ.get(name) or None
    path = environ.get(name + FILE_SUFFIX) or None
    if path is None:
        return direct
    if direct is not None:
        raise SettingError(f"both {name} and {name}{FILE_SUFFIX} are set: set only one of them")
    try:
        value = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingError(f"{name}{FILE_SUFFIX}={path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingError(f"{name}{FILE_SUFFIX}={path}: cannot be read ({exc})") from None
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    if not value:
        # A file named on purpose but empty is a mistake (a wrong Secret key, a failed mount),
        # not a request to leave the setting unset.
        raise SettingError(f"{name}{FILE_SUFFIX}={path}: the file is empty")
    return value


def kafka_env_properties(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka properties from KAFKA_ENV_PROPERTIES' variables (each also as ``<NAME>_FILE``)."""
    extra: dict[str, str] = {}
    for env, prop in KAFKA_ENV_PROPERTIES.items():
        value = env_or_file(env, environ)
        if value:
            extra[prop] = value
    return extra


def kafka_extra(args: argparse.Namespace) -> dict[str, str]:
    """librdkafka properties from the KAFKA_* variables (or their files) and --kafka-config;
    exits with a message naming the bad one."""
    try:
        extra = kafka_env_properties()
    except SettingError as exc:
        sys.exit(f"Kafka client settings: {exc}")
    try:
        extra.update(parse_kafka_config(args.kafka_config))
    except ValueError as exc:
        sys.exit(f"--kafka-config: {exc}")
    return extra


def kafka_settings(args: argparse.Namespace, client_id: str) -> KafkaSettings:
    extra = kafka_extra(args)
    return KafkaSettings(
        bootstrap_servers=args.bootstrap_servers,
        client_id=client_id,
        session_timeout_ms=args.session_timeout_ms,
        instance_id=args.instance_id or None,
        extra=extra,
    )
