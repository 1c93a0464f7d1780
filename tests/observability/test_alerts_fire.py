"""The chart's alerts seen firing and resolving on a live stack, in Prometheus' own alerts API.

Apache Kafka, two balance members, above_threshold and the API run as processes; a real
Prometheus scrapes them every second and evaluates the chart's rule file, rendered by Helm,
every second. The rules' expressions and thresholds are the chart's; only their durations
are compressed 60 times (``for: 5m`` -> 5 s, ``[10m]`` -> 10 s, ``[15m:1m]`` -> ``[15s:1s]``),
so that a ``for:`` window passes within a test. Each test first sees its alerts inactive,
provokes the condition with real processes, sees them pending and then firing no later than
their (compressed) ``for:`` plus one evaluation (and scrape) after they became active, undoes
the cause and sees them resolve.

Provocations: a balance member frozen with SIGSTOP (WalletProcessorDown,
WalletProcessorPartitionsUnowned), and deposits beyond above_threshold's value-size limit
(WalletRecordsQuarantined). The other alerts are proven by promtool unit tests
(tests/observability/rules_test.yaml) and checked quiet on a live stack (test_prometheus_e2e).
"""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime

import pytest

from observability_support import alerts, require_prometheus, rule_groups

pytestmark = pytest.mark.integration

PARTITIONS = 4
SCALE = 60
EVALUATION = 1.0  # seconds: Prometheus' evaluation and scrape interval here
_DURATION = re.compile(r"(\d+)([smhd])")
_RANGE = re.compile(r"\[(\d+[smhd])(?::(\d+[smhd]))?\]")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> float:
    return sum(int(n) * _SECONDS[u] for n, u in _DURATION.findall(duration))


def compressed(duration: str) -> str:
    return f"{max(1, round(seconds(duration) / SCALE))}s"


def compress(groups: list[dict]) -> list[dict]:
    """The rule groups with every duration (``for``, range and subquery windows) divided by SCALE."""
    out = []
    for group in groups:
        rules = []
        for rule in group["rules"]:
            rule = dict(rule)
            if "for" in rule:
                rule["for"] = compressed(rule["for"])
            rule["expr"] = _RANGE.sub(lambda m: "[" + compressed(m.group(1))
                                      + (":" + compressed(m.group(2)) if m.group(2) else "") + "]", rule["expr"])
            rules.append(rule)
        out.append({**group, "rules": rules})
    return out


def test_compress_divides_every_duration():
    groups = [{"name": "g", "rules": [{"alert": "A", "for": "10m",
                                       "expr": "deriv(x[15m:1m]) > 0 and rate(y[5m]) > 0 and rate(z[6h]) > 0"}]}]
    rule = compress(groups)[0]["rules"][0]
    assert rule["for"] == "10s"
    assert rule["expr"] == "deriv(x[15s:1s]) > 0 and rate(y[5s]) > 0 and rate(z[360s]) > 0"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """(cluster, prometheus, rules by name) with the compressed chart rules loaded."""
    require_prometheus()
    from walletkit.devstack.cluster import LocalCluster
    from walletkit.devstack.kafka import ApacheKafka
    from walletkit.devstack.prometheus import LOCAL_NAMESPACE, LocalPrometheus, cluster_targets

    groups = compress(rule_groups(LOCAL_NAMESPACE, partitions=PARTITIONS))
    root = tmp_path_factory.mktemp("alerts")
    # A frozen member keeps its partitions until its session expires: longer than a test.
    cluster = LocalCluster(root, broker=ApacheKafka(log_path=root / "logs" / "broker.log"), partitions=PARTITIONS,
                           session_timeout_ms=60_000,
                           extra_env={"KAFKA_CONFIG": "statistics.interval.ms=1000", "WALLET_MAX_VALUE_BYTES": "1024"})
    prometheus = None
    try:
        cluster.start_broker()
        cluster.start_members({"balance": 2, "above_threshold": 1, "api": 1})
        prometheus = LocalPrometheus(root / "prometheus", cluster_targets(cluster.services), scrape_interval="1s",
                                     rule_groups=groups, log_path=root / "logs" / "prometheus.log").start()
        prometheus.wait_targets_up(30)
        # Settled first: members that just joined may still be sharing out partitions (under
        # load, long enough for PartitionsUnowned to go pending), and each test's provocation
        # must start from a stack with no alert active.
        from walletkit.devstack.net import wait_until

        wait_until(lambda: not prometheus.api("alerts")["alerts"], 90, interval=0.5,
                   what="no alert active on the fresh stack")
        yield cluster, prometheus, alerts(groups)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for proc in cluster.services.values():
            if proc.proc is not None and proc.proc.poll() is None:
                os.kill(proc.proc.pid, signal.SIGCONT)  # a frozen one must be able to drain
        cluster.stop()


def active(prometheus, name: str, **labels: str) -> list[dict]:
    return [a for a in prometheus.api("alerts")["alerts"]
            if a["labels"]["alertname"] == name and all(a["labels"].get(k) == v for k, v in labels.items())]


def _ts(rfc3339: str) -> float:
    head, _, frac = rfc3339.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + (float("0." + frac) if frac else 0.0)


def wait_firing(prometheus, rule: dict, timeout: float, **labels: str) -> dict:
    """The alert once firing; fails if it fired later than its for: plus one evaluation after
    it became active (and one scrape and poll of slack)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = active(prometheus, rule["alert"], **labels)
        firing = [a for a in found if a["state"] == "firing"]
        if firing:
            late = time.time() - _ts(firing[0]["activeAt"]) - seconds(rule.get("for", "0s"))
            assert late <= 2 * EVALUATION + 1.0, f"{rule['alert']} fired {late:.1f}s after its for: window"
            return firing[0]
        time.sleep(0.25)
    raise AssertionError(f"{rule['alert']} {labels} did not fire within {timeout}s; "
                         f"now {active(prometheus, rule['alert'])}")


def wait_resolved(prometheus, name: str, timeout: float, **labels: str) -> None:
    deadline = time.monotonic() + timeout
    while active(prometheus, name, **labels):
        assert time.monotonic() < deadline, f"{name} {labels} still active after {timeout}s"
        time.sleep(0.25)


def test_a_frozen_processor_is_down_and_leaves_partitions_unowned_until_it_thaws(live):
    cluster, prometheus, rules = live
    down, unowned = rules["WalletProcessorDown"], rules["WalletProcessorPartitionsUnowned"]
    assert not active(prometheus, down["alert"]) and not active(prometheus, unowned["alert"])
    pid = cluster.services["balance-1"].proc.pid
    os.kill(pid, signal.SIGSTOP)  # alive, holding its partitions, answering nothing
    try:
        alert = wait_firing(prometheus, down, 30, pod="wallet-balance-1")
        assert alert["labels"]["severity"] == "critical"
        alert = wait_firing(prometheus, unowned, 40, group="balance")
        assert float(alert["value"]) == PARTITIONS / 2, alert  # the other member's half
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_resolved(prometheus, down["alert"], 30)
    wait_resolved(prometheus, unowned["alert"], 30)


def test_deposits_beyond_the_value_size_limit_are_quarantined_and_alerted(live):
    from walletkit.devstack.net import http_post_json

    cluster, prometheus, rules = live
    rule = rules["WalletRecordsQuarantined"]
    assert not active(prometheus, rule["alert"])
    api = cluster.services["api-0"]
    for i in range(120):  # one wallet's 2-minute window outgrows 1,024 bytes
        status, _ = http_post_json(api.url("/deposit"), {"WalletID": "alert-heavy", "Amount": 1 + i})
        assert status == 202, status
    alert = wait_firing(prometheus, rule, 30, group="above_threshold")
    assert alert["labels"]["pod"] == "wallet-above-threshold-0" and float(alert["value"]) > 0
    wait_resolved(prometheus, rule["alert"], 40)  # its window passes without another

