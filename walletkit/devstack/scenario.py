"""``make dashboards``: a scripted few minutes of the local stack, drawn as the chart's dashboards.

Apache Kafka (one KRaft node on loopback), two balance processors, one above_threshold
processor and the API run as processes; a real Prometheus scrapes them every second with the
chart's alert rules loaded. The scenario then drives, in order:

1. a steady load of deposits (with some bad requests and reads of unknown wallets);
2. a burst, as fast as the API takes it, with deposits large enough to flag wallets;
3. a balance processor killed (SIGKILL) and its local state deleted;
4. the same processor started again under a fetch quota, so its restore from the changelog
   is slow enough to be seen; then the quota lifted.

Every panel of the chart's dashboards is then drawn from Prometheus' range queries
(``walletkit.devstack.dashboards``) into ``--out``; the scenario's moments are the dashed lines.
Every load loop is bounded in count and time; every process is stopped by its own handle.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from walletkit.devstack import dashboards
from walletkit.devstack.dashboards import Event

WALLETS = 300
STEADY_RATE = 40.0  # deposits/s
CHANGELOG_QUOTA = 30_000  # bytes/s of fetches for the balance processors while balance-1 restores


def say(msg: str) -> None:
    print(f"[dashboards {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Load:
    """Deposits (and a few bad requests and reads) against the API from one thread, at ``rate`` per
    second (``None``: as fast as answers come), until ``seconds`` pass or ``count`` are sent."""

    def __init__(
        self, port: int, *, rate: float | None, seconds: float, count: int = 100_000, big_every: int = 0, seed: int = 0
    ) -> None:
        self.port, self.rate, self.seconds, self.count, self.big_every = port, rate, seconds, count, big_every
        self.random = random.Random(seed)
        self.statuses: Counter[int] = Counter()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def join(self) -> Counter[int]:
        self._thread.join(self.seconds + 30)
        return self.statuses

    def _request(self, conn: http.client.HTTPConnection, method: str, path: str, doc: object | None = None) -> None:
        body = json.dumps(doc).encode() if doc is not None else None
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        resp = conn.getresponse()
        resp.read()
        self.statuses[resp.status] += 1

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        start = time.monotonic()
        for i in range(self.count):
            due = start + i / self.rate if self.rate else time.monotonic()
            if due - start > self.seconds:
                break
            if (pause := due - time.monotonic()) > 0:
                time.sleep(pause)
            wallet = f"dash-{self.random.randrange(WALLETS)}"
            amount = 6000 if self.big_every and i % self.big_every == 0 else round(self.random.uniform(1, 200), 2)
            try:
                if i % 50 == 7:
                    self._request(conn, "POST", "/deposit", {"WalletID": wallet, "Amount": -5})  # a 400
                elif i % 10 == 3:
                    self._request(conn, "GET", f"/details/{wallet if i % 20 else 'dash-nobody'}")
                else:
                    self._request(conn, "POST", "/deposit", {"WalletID": wallet, "Amount": amount})
            except (OSError, http.client.HTTPException):
                self.statuses[0] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        conn.close()


def run(out: Path, work: Path, *, scale: float = 1.0) -> list[Path]:
    from walletkit.devstack.cluster import LocalCluster
    from walletkit.devstack.kafka import ApacheKafka
    from walletkit.devstack.prometheus import LOCAL_NAMESPACE, LocalPrometheus, chart_rule_groups, cluster_targets

    partitions = 4
    cluster = LocalCluster(
        work,
        broker=ApacheKafka(log_path=work / "logs" / "broker.log"),
        partitions=partitions,
        extra_env={"KAFKA_CONFIG": "statistics.interval.ms=1000"},
    )
    prometheus = None
    events: list[Event] = []

    def mark(label: str) -> None:
        events.append(Event(time.time(), label))
        say(label)

    def phase(label: str, seconds: float, rate: float | None, **kwargs) -> None:
        say(f"{label}: {seconds * scale:.0f} s" + (f" at {rate:.0f} requests/s" if rate else ", as fast as it goes"))
        loads = [
            Load(api.port, rate=rate, seconds=seconds * scale, seed=len(events) * 10 + i, **kwargs).start()
            for i in range(1 if rate else 4)
        ]
        statuses = sum((load.join() for load in loads), Counter())
        say(f"  answers: {dict(sorted(statuses.items()))}")

    try:
        say(f"starting Apache Kafka, the services and Prometheus under {work}")
        cluster.start_broker()
        cluster.start_members({"balance": 2, "above_threshold": 1, "api": 1})
        api = cluster.services["api-0"]
        prometheus = LocalPrometheus(
            work / "prometheus",
            cluster_targets(cluster.services),
            scrape_interval="1s",
            rule_groups=chart_rule_groups(LOCAL_NAMESPACE, partitions=partitions),
            log_path=work / "logs" / "prometheus.log",
        ).start()
        prometheus.wait_targets_up(30)
        start = time.time()
        phase("steady load", 40, STEADY_RATE)
        mark("burst")
        phase("burst", 12, None, big_every=40)
        phase("steady load", 15, STEADY_RATE)
        mark("balance-1 killed")
        cluster.services["balance-1"].kill()
        shutil.rmtree(cluster.state_dir("balance", 1), ignore_errors=True)
        phase("steady load, one balance processor", 25, STEADY_RATE)
        cluster.broker.set_client_quota("wallet-balance", consumer_byte_rate=CHANGELOG_QUOTA)
        mark("balance-1 restarts, throttled")
        cluster.start("balance", 1, wait=False)
        phase("steady load while balance-1 restores", 35, STEADY_RATE)
        cluster.broker.set_client_quota("wallet-balance", consumer_byte_rate=1 << 30)
        mark("throttle lifted")
        phase("steady load", 30, STEADY_RATE)
        time.sleep(3)  # the last scrapes
        end = time.time()
        return draw(prometheus, LOCAL_NAMESPACE, out, start, end, events)
    finally:
        if prometheus is not None:
            prometheus.stop()
        say("stopping the stack")
        cluster.stop()


def draw(
    prometheus, namespace: str, out: Path, start: float, end: float, events: list[Event], *, step: float = 2.0
) -> list[Path]:
    """Every dashboard's panels from ``prometheus`` over [start, end] into ``out``; the paths."""
    scrape = float(prometheus.scrape_interval.rstrip("s"))
    variables = {
        "namespace": namespace,
        "instance": ".*",
        "pod": ".*",
        "__rate_interval": dashboards.rate_interval(scrape, step),
        "__range": f"{int(end - start)}s",
        "__interval": f"{int(step)}s",
    }

    def query_range(expr: str, a: float, b: float, s: float) -> list[dict]:
        return prometheus.api("query_range", query=expr, start=str(a), end=str(b), step=str(s))["result"]

    paths, empty = [], []
    for name, doc in dashboards.load().items():
        data = {p["id"]: dashboards.query(p, query_range, variables, start, end, step) for p in dashboards.panels(doc)}
        empty += [f"{name}: {d.panel['title']}" for d in data.values() if d.empty or d.errors]
        paths += dashboards.render(
            name,
            doc,
            data,
            out,
            start=start,
            end=end,
            step=step,
            events=events,
            note=f"Rate window {variables['__rate_interval']}, step {step:g} s; dashed lines: "
            "the scenario's moments (make dashboards).",
        )
        say(f"drew {name}: {len(data)} panels -> {out / name}.png")
    if empty:
        say("panels without data: " + "; ".join(empty))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make dashboards", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/img/dashboards"), help="where the PNGs go")
    p.add_argument("--work-dir", type=Path, help="state and logs of the stack (default: a temporary directory)")
    p.add_argument("--scale", type=float, default=1.0, help="stretch or shrink every phase (e.g. 0.5)")
    args = p.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="wallet-dashboards-"))
    try:
        paths = run(args.out, work, scale=args.scale)
    except (RuntimeError, TimeoutError) as exc:
        say(f"error: {exc} (logs under {work / 'logs'})")
        return 1
    say(f"{len(paths)} pictures under {args.out}")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
