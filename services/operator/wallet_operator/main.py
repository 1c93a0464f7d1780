"""``wallet-operator``: scales the processor StatefulSets by their consumer groups' lag.

Flags have environment defaults, as for the services (``wallet-operator --help``). Serves
Prometheus metrics on ``WALLET_HTTP_PORT`` (any path, e.g. ``/metrics``) and kopf's liveness
endpoint on ``WALLET_HEALTH_PORT`` (``/healthz``). SIGTERM stops the timers and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kopf
from prometheus_client import start_http_server

from wallet_operator.handlers import OperatorRuntime, build_registry, settings
from wallet_operator.kafka_lag import LagReader
from wallet_operator.kube import KubeEndpoint, ScaleClient
from wallet_operator.reconciler import Reconciler
from walletkit.service.logs import setup_logging
from walletkit.service.settings import env_flag, kafka_extra
from walletkit.stream import KafkaSettings, TableVersion, TableVersions
from walletkit.wallet.topology import TABLE_VERSIONS_TOPIC

log = logging.getLogger("wallet_operator")

DEFAULT_HTTP_PORT = 8083
DEFAULT_HEALTH_PORT = 8084


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wallet-operator", description=__doc__.splitlines()[0])
    from walletkit.service.build import add_version_flag

    add_version_flag(p)
    env_flag(
        p,
        "--bootstrap-servers",
        "KAFKA_BOOTSTRAP_SERVERS",
        "Kafka bootstrap servers, host:port[,host:port]",
        required=True,
    )
    env_flag(p, "--kafka-config", "KAFKA_CONFIG", "extra librdkafka properties, comma-separated key=value", default="")
    env_flag(
        p,
        "--namespace",
        "WALLET_OPERATOR_NAMESPACE",
        "namespace whose ProcessorScalers to serve (default: the pod's own)",
        default=None,
    )
    env_flag(
        p,
        "--sync-seconds",
        "WALLET_OPERATOR_SYNC_SECONDS",
        "seconds between syncs of each scaler",
        default=15.0,
        type=float,
    )
    env_flag(
        p,
        "--kafka-timeout-seconds",
        "WALLET_OPERATOR_KAFKA_TIMEOUT_SECONDS",
        "bound of one lag read (metadata, offsets, fetch); beyond it the scaler is Degraded",
        default=10.0,
        type=float,
    )
    env_flag(
        p,
        "--kube-api",
        "WALLET_KUBE_API",
        "Kubernetes API URL (default: in-cluster with the pod's ServiceAccount; outside a pod e.g. "
        "http://127.0.0.1:8001 from `kubectl proxy`)",
        default=None,
    )
    env_flag(
        p,
        "--kube-token-file",
        "WALLET_KUBE_TOKEN_FILE",
        "with --kube-api: a file holding the bearer token to send (re-read on every call, as a rotated "
        "ServiceAccount token is)",
        default=None,
    )
    env_flag(
        p,
        "--kube-ca-file",
        "WALLET_KUBE_CA_FILE",
        "with --kube-api: the CA bundle that signed the API server's certificate",
        default=None,
    )
    env_flag(p, "--http-host", "WALLET_HTTP_HOST", "address the metrics and health servers bind", default="0.0.0.0")
    env_flag(
        p, "--http-port", "WALLET_HTTP_PORT", "port of the Prometheus metrics", default=DEFAULT_HTTP_PORT, type=int
    )
    env_flag(
        p,
        "--health-port",
        "WALLET_HEALTH_PORT",
        "port of the liveness endpoint /healthz",
        default=DEFAULT_HEALTH_PORT,
        type=int,
    )
    env_flag(p, "--log-level", "WALLET_LOG_LEVEL", "log level: debug, info, warning, error", default="info")
    return p


class KopfRecords(logging.Filter):
    """Keeps kopf's log records useful as JSON lines: its per-object ``extra`` (the whole settings
    object and a reference dict) becomes one ``object`` field, and the per-sync "Timer ... succeeded"
    lines (every scaler, every sync) and probe lines (every liveness probe) are dropped unless
    debugging."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("settings", None)
        record.__dict__.pop("k8s_skip", None)
        ref = record.__dict__.pop("k8s_ref", None)
        if isinstance(ref, dict):
            record.object = f"{ref.get('namespace')}/{ref.get('name')}"
        if not self.debug and record.name == "kopf.objects" and record.levelno <= logging.INFO:
            message = record.getMessage()
            if message.startswith("Timer ") and message.endswith("succeeded."):
                return False
        if not self.debug and record.name == "kopf.activities.probe" and record.levelno <= logging.INFO:
            return False  # every liveness probe
        return True


def kafka_settings_of(args: argparse.Namespace) -> KafkaSettings:
    """The operator's Kafka clients: the same KAFKA_* variables (and their ``_FILE`` forms) and
    --kafka-config as the services."""
    return KafkaSettings(bootstrap_servers=args.bootstrap_servers, client_id="wallet-operator", extra=kafka_extra(args))


def kafka_config(args: argparse.Namespace) -> dict:
    return kafka_settings_of(args).common()


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.sync_seconds <= 0 or args.kafka_timeout_seconds <= 0:
        p.error("--sync-seconds and --kafka-timeout-seconds must be positive")
    setup_logging("wallet-operator", args.log_level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(KopfRecords(debug=args.log_level.lower() == "debug"))
    try:
        endpoint = (
            KubeEndpoint(
                server=args.kube_api,
                token_path=Path(args.kube_token_file) if args.kube_token_file else None,
                ca_path=Path(args.kube_ca_file) if args.kube_ca_file else None,
            )
            if args.kube_api
            else KubeEndpoint.in_cluster()
        )
    except RuntimeError as exc:
        p.error(str(exc))
    namespace = args.namespace or endpoint.namespace
    if not namespace:
        p.error("no namespace: set --namespace / WALLET_OPERATOR_NAMESPACE")

    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kafka-lag")
    scale = ScaleClient(endpoint)
    # A scaler names a table's base group; after a rebuild its live version's group is measured.
    versions = TableVersions(kafka_settings_of(args), TABLE_VERSIONS_TOPIC).watch(lambda _versions: None)
    reconciler = Reconciler(
        LagReader(kafka_config(args), timeout=args.kafka_timeout_seconds),
        scale,
        executor,
        live_group=lambda group: (versions.seen or {}).get(group, TableVersion.first(group)).group,
    )
    runtime = OperatorRuntime(endpoint=endpoint, reconciler=reconciler, scale=scale, sync_seconds=args.sync_seconds)

    start_http_server(args.http_port, addr=args.http_host)
    log.info(
        "serving ProcessorScalers in namespace %s; metrics on :%d, /healthz on :%d",
        namespace,
        args.http_port,
        args.health_port,
    )
    instance = os.environ.get("POD_NAME") or socket.gethostname()

    async def run() -> None:
        try:
            await kopf.operator(
                registry=build_registry(runtime),
                settings=settings(reporting_instance=instance),
                namespaces=[namespace],
                standalone=True,
                liveness_endpoint=f"http://{args.http_host}:{args.health_port}/healthz",
            )
        finally:
            # After kopf returns: its timers are stopped by then, so none races the closing client.
            executor.shutdown(wait=False, cancel_futures=True)
            await runtime.close()

    asyncio.run(run())
    log.info("stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
