"""``wallet-stack``: the whole service on one machine (``make run``).

Starts a broker (Tansu, embedded and instant, by default; ``--kafka apache`` for a real
Apache Kafka node, fetched with Maven the first time), starts the three services with
their state under one directory, waits until all are ready and prints how to use
them; Ctrl-C stops the services gracefully (drain, flush, commit), then the broker.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from walletkit.devstack.broker import BROKER_KINDS, make_broker
from walletkit.devstack.cluster import LocalCluster
from walletkit.devstack.net import wait_until
from walletkit.devstack.prometheus import (
    LOCAL_NAMESPACE,
    LocalPrometheus,
    PrometheusNotFound,
    chart_rule_groups,
    cluster_targets,
    find_binary,
)

BANNER = """
Wallet service is up (state and logs in {state}).

  curl -X POST localhost:{port}/deposit -d '{{"WalletID": "walletID001", "Amount": 8000}}'
  curl localhost:{port}/details/walletID001

  API            http://localhost:{port}   (operations: http://localhost:{ops}/metrics /healthz /readyz)
  balance        http://localhost:{bal}/metrics
  above_threshold http://localhost:{thr}/metrics
  Kafka ({kind})  {bootstrap}

{prometheus}Ctrl-C stops everything.
"""

PROMETHEUS_BANNER = """  Prometheus     http://localhost:{port}   (every service scraped each {interval}; alerts: {alerts})
                 series carry namespace="{namespace}"; the dashboards' queries are in docs/observability.md

"""


def say(msg: str) -> None:
    print(f"[wallet-stack] {msg}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="wallet-stack", description=__doc__.split("\n\n")[0])
    from walletkit.service.build import add_version_flag

    add_version_flag(p)
    p.add_argument("--port", type=int, default=8080, help="API port (default 8080)")
    p.add_argument("--ops-port", type=int, default=8090, help="API operations port (default 8090)")
    p.add_argument(
        "--kafka",
        choices=BROKER_KINDS,
        default=os.environ.get("KAFKA", "tansu") or "tansu",
        help="the broker: tansu (embedded, memory-only, starts at once) or apache (Apache Kafka, "
        "a KRaft node with its data under the state dir) (default tansu; env KAFKA)",
    )
    p.add_argument("--broker-port", type=int, default=9092, help="broker port (default 9092)")
    p.add_argument("--state-dir", default=".state", help="state and logs (default .state; emptied at start)")
    p.add_argument("--partitions", type=int, default=8, help="partitions per topic (default 8)")
    p.add_argument(
        "--with-prometheus",
        action="store_true",
        help="also run Prometheus (the `prometheus` binary, e.g. Debian's package) scraping the three "
        "services, with the chart's alert rules",
    )
    p.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus port (default 9090)")
    args = p.parse_args(argv)
    if args.with_prometheus:
        try:
            find_binary()
        except PrometheusNotFound as exc:
            say(str(exc))
            sys.exit(1)

    state = Path(args.state_dir).resolve()
    # Tansu keeps its data in memory only, and the Apache Kafka node's data lives under the
    # state dir: state from an earlier run describes topics of a broker that is gone, so
    # start empty either way.
    shutil.rmtree(state, ignore_errors=True)

    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    name = {"tansu": "the embedded broker (Tansu)", "apache": "Apache Kafka"}[args.kafka]
    say(f"starting {name} on 127.0.0.1:{args.broker_port}")
    broker = make_broker(
        args.kafka, port=args.broker_port, log_path=state / "logs" / "broker.log", data_dir=state / "kafka"
    )
    # Logs for a person to read (tail -f .state/logs/api-0.log), unless WALLET_LOG_FORMAT says otherwise.
    cluster = LocalCluster(
        state,
        broker=broker,
        partitions=args.partitions,
        extra_env={"WALLET_LOG_FORMAT": os.environ.get("WALLET_LOG_FORMAT") or "console"},
    )
    try:
        cluster.start_broker()
    except RuntimeError as exc:
        say(f"cannot start the broker: {exc}")
        sys.exit(1)
    services = [
        cluster.service("balance", port=8081),
        cluster.service("above_threshold", port=8082),
        cluster.service("api", port=args.port, ops_port=args.ops_port),
    ]
    prometheus: LocalPrometheus | None = None
    prometheus_text = ""
    code = 0
    try:
        for svc in services:
            say(f"starting {svc.script} (log: {svc.log_path})")
            svc.start()
            if svc.script == "wallet-balance":
                # Let one service create the topics before the others check them.
                svc.wait_ready(60)
        for svc in services:
            wait_until(lambda: stopping or svc.ready(), 90, interval=0.3, what=f"{svc.script} to become ready")
            if stopping:
                break
            say(f"{svc.script} ready on port {svc.port}")
        if args.with_prometheus and not stopping:
            rules = chart_rule_groups(LOCAL_NAMESPACE, partitions=args.partitions)
            prometheus = LocalPrometheus(
                state / "prometheus",
                cluster_targets(cluster.services),
                port=args.prometheus_port,
                scrape_interval="5s",
                rule_groups=rules,
                log_path=state / "logs" / "prometheus.log",
            )
            say(f"starting Prometheus on port {args.prometheus_port} (log: {prometheus.log_path})")
            prometheus.start()
            prometheus_text = PROMETHEUS_BANNER.format(
                port=args.prometheus_port,
                interval=prometheus.scrape_interval,
                namespace=LOCAL_NAMESPACE,
                alerts="the chart's rules" if rules else "none: the Helm SDK (requirements/chart.txt) renders them",
            )
        if not stopping:
            print(
                BANNER.format(
                    state=state,
                    port=args.port,
                    ops=args.ops_port,
                    bal=8081,
                    thr=8082,
                    bootstrap=cluster.broker.bootstrap,
                    kind=args.kafka,
                    prometheus=prometheus_text,
                ),
                flush=True,
            )
        while not stopping:
            for svc in services:
                svc.check_running()
            time.sleep(0.5)
    except (RuntimeError, TimeoutError) as exc:
        say(f"error: {exc}")
        code = 1
    finally:
        if prometheus is not None:
            prometheus.stop()
        say("stopping services (draining and committing)")
        for svc in reversed(services):
            rc = svc.stop()
            say(f"{svc.script} exited with code {rc}")
        cluster.broker.stop()
        say("broker stopped; bye")
    sys.exit(code)


if __name__ == "__main__":
    main()
