"""Command-line flags with environment defaults, shared by the three services.

Every flag can also be set by the environment variable named in its help; flags
win over the environment. ``KAFKA_BOOTSTRAP_SERVERS`` is required.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from walletkit.stream.checkpoint import Guarantee
from walletkit.stream.kafka import KafkaSettings, parse_kafka_config
from walletkit.wallet.topology import DEFAULT_PARTITIONS

#: Environment variables mapped onto librdkafka properties (TLS / SASL).
KAFKA_ENV_PROPERTIES = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
}


def env_flag(parser: argparse.ArgumentParser, flag: str, env: str, help: str, *, default: Any = None,
             type: Any = str, required: bool = False, **kwargs: Any) -> None:
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
        parser.add_argument(flag, default=value, action=argparse.BooleanOptionalAction,
                            help=f"{help} [env {env}, default {value}]", **kwargs)
        return
    parser.add_argument(flag, default=value, type=type, required=required and value is None,
                        help=f"{help} [env {env}{'' if value is None else f', default {value}'}]", **kwargs)


def _parse_bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def base_parser(prog: str, description: str, default_port: int, default_state_dir: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    env_flag(p, "--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", "Kafka bootstrap servers, host:port[,host:port]",
             required=True)
    env_flag(p, "--state-dir", "WALLET_STATE_DIR", "root directory of the local RocksDB state",
             default=default_state_dir)
    env_flag(p, "--http-port", "WALLET_HTTP_PORT", "port of the HTTP server", default=default_port, type=int)
    env_flag(p, "--http-host", "WALLET_HTTP_HOST", "address the HTTP server binds", default="0.0.0.0")
    env_flag(p, "--partitions", "WALLET_PARTITIONS", "partitions of each topic when this process creates it",
             default=DEFAULT_PARTITIONS, type=int)
    env_flag(p, "--replication-factor", "WALLET_REPLICATION_FACTOR",
             "replication of topics this process creates (-1: the broker's default)", default=-1, type=int)
    env_flag(p, "--min-insync-replicas", "WALLET_MIN_INSYNC_REPLICAS",
             "min.insync.replicas of topics this process creates (-1: the broker's default)", default=-1, type=int)
    env_flag(p, "--create-topics", "WALLET_CREATE_TOPICS",
             "create missing topics (off when an operator such as Strimzi owns them)", default=True, type=bool)
    env_flag(p, "--session-timeout-ms", "WALLET_KAFKA_SESSION_TIMEOUT_MS",
             "consumer-group session timeout", default=10_000, type=int)
    env_flag(p, "--instance-id", "WALLET_INSTANCE_ID",
             "static group membership id (e.g. the StatefulSet pod name)", default=None)
    env_flag(p, "--kafka-config", "KAFKA_CONFIG",
             "extra librdkafka properties, comma-separated key=value", default="")
    env_flag(p, "--processing-guarantee", "WALLET_PROCESSING_GUARANTEE",
             "exactly_once: Kafka transactions (the API's deposits commit in transactions; a processor's "
             "changelog records and input offsets commit in one, which fences a member whose partitions moved "
             "on); applied_offsets: for brokers without working transactions, replays are recognised by the "
             "input offset each table value carries", default=Guarantee.EXACTLY_ONCE.value,
             choices=[g.value for g in Guarantee])
    env_flag(p, "--log-level", "WALLET_LOG_LEVEL", "log level: debug, info, warning, error", default="info")
    return p


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.partitions < 1:
        parser.error("--partitions must be at least 1")
    if args.processing_guarantee not in {g.value for g in Guarantee}:
        parser.error(f"--processing-guarantee / WALLET_PROCESSING_GUARANTEE must be one of "
                     f"{', '.join(g.value for g in Guarantee)}, not {args.processing_guarantee!r}")
    return args


def kafka_settings(args: argparse.Namespace, client_id: str) -> KafkaSettings:
    extra: dict[str, str] = {}
    for env, prop in KAFKA_ENV_PROPERTIES.items():
        if os.environ.get(env):
            extra[prop] = os.environ[env]
    try:
        extra.update(parse_kafka_config(args.kafka_config))
    except ValueError as exc:
        sys.exit(f"--kafka-config: {exc}")
    return KafkaSettings(
        bootstrap_servers=args.bootstrap_servers,
        client_id=client_id,
        session_timeout_ms=args.session_timeout_ms,
        instance_id=args.instance_id or None,
        extra=extra,
    )
