"""The chart's alerts seen firing and resolving on a live stack, in Prometheus' own alerts API.

Apache Kafka, two balance members, above_threshold and the API run as processes; a real
Prometheus scrapes them every second and evaluates the chart's rule file, rendered by Helm,
every second. The rules' expressions and thresholds are the chart's; only their durations
are compressed 60 times (``for: 5m`` -> 5 s, ``[10m]`` -> 10 s, ``[15m:1m]`` -> ``[15s:1s]``),
so that a ``for:`` window passes within a test. Each test first waits until its alerts are
inactive, provokes the condition with real processes, sees them firing, undoes the cause and
sees them resolve. What is asserted is that each rule fires for its cause and resolves
without it; how fast is a figure, not an assertion (a loaded 2-core machine is slower): each
firing prints how long after its ``for:`` window it came (``pytest -s`` shows them).

Provocations, each with real processes and real broker-side limits (quotas, topic configs):

- a balance member frozen with SIGSTOP: WalletProcessorDown, WalletProcessorPartitionsUnowned;
- deposits beyond above_threshold's value-size limit: WalletRecordsQuarantined;
- the API's producer throttled by a broker quota, so acknowledgements come late and some after
  the deposit timeout: WalletApiLatencyBudgetBurnFast and ...Slow, WalletApiErrorRatioHigh;
- the balance group's reads throttled while deposits pour in: WalletProcessorLagGrowing;
- a second API rebuilding its views from scratch through a quota: WalletViewNotCaughtUp,
  WalletViewLagging;
- the balance changelog's max.message.bytes below one change: WalletProcessorFlushFailing
  (and every deposit of the retried batches counted once after it is lifted);
- the group's reads held back while a member's partitions move to a member that must restore
  them: WalletProcessorRestoreStuck.

The tests run in this order on one stack; each leaves it as it found it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from datetime import datetime

import pytest
from observability_support import alerts, require_prometheus, rule_groups

pytestmark = pytest.mark.integration

PARTITIONS = 4
# Consumer lag comes from librdkafka's statistics. A request the broker holds back (a quota's
# throttle) is given up and sent again after 10 s instead of 60 once the quota is lifted.
STATISTICS = "statistics.interval.ms=1000,socket.timeout.ms=10000"
# Small fetches for the processors, so that a read quota's throttle comes in small steps: the
# lag, learnt from fetch responses, then rises every few seconds. With the default 1 MB per
# partition one response could hold the group back for longer than the rule's window, the lag
# stayed flat meanwhile and the alert's deriv() > 0 did not hold for its for: (seen under load).
PROCESSOR_FETCHES = "max.partition.fetch.bytes=1024"
#: How long a provoked alert may take to fire, and a resolved one to go: generous, since only
#: that it happens is asserted (a busy machine scrapes, evaluates and processes later).
FIRE_TIMEOUT = 180.0
RESOLVE_TIMEOUT = 180.0
CATCHING_UP = "wallet-api-catching-up"  # client id of api-1
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
            rule["expr"] = _RANGE.sub(
                lambda m: "[" + compressed(m.group(1)) + (":" + compressed(m.group(2)) if m.group(2) else "") + "]",
                rule["expr"],
            )
            rules.append(rule)
        out.append({**group, "rules": rules})
    return out


def test_compress_divides_every_duration():
    groups = [
        {
            "name": "g",
            "rules": [
                {"alert": "A", "for": "10m", "expr": "deriv(x[15m:1m]) > 0 and rate(y[5m]) > 0 and rate(z[6h]) > 0"}
            ],
        }
    ]
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
    cluster = LocalCluster(
        root,
        broker=ApacheKafka(log_path=root / "logs" / "broker.log"),
        partitions=PARTITIONS,
        session_timeout_ms=60_000,
        extra_env={
            "KAFKA_CONFIG": f"{STATISTICS},{PROCESSOR_FETCHES}",
            "WALLET_MAX_VALUE_BYTES": "1024",
            "WALLET_DEPOSIT_TIMEOUT_SECONDS": "2",
        },
    )
    # A second API with a client id of its own, so that a quota can slow its views alone;
    # small fetches, so that the quota's throttle comes in small steps.
    cluster.service(
        "api", 1, env={"KAFKA_CONFIG": f"{STATISTICS},client.id={CATCHING_UP},max.partition.fetch.bytes=1024"}
    )
    prometheus = None
    try:
        cluster.start_broker()
        cluster.start_members({"balance": 2, "above_threshold": 1, "api": 2})
        prometheus = LocalPrometheus(
            root / "prometheus",
            cluster_targets(cluster.services),
            scrape_interval="1s",
            rule_groups=groups,
            log_path=root / "logs" / "prometheus.log",
        ).start()
        prometheus.wait_targets_up(30)
        # Settled first: members that just joined may still be sharing out partitions (under
        # load, long enough for PartitionsUnowned to go pending), and each test's provocation
        # must start from a stack with no alert active.
        from walletkit.devstack.net import wait_until

        wait_until(
            lambda: not prometheus.api("alerts")["alerts"], 90, interval=0.5, what="no alert active on the fresh stack"
        )
        yield cluster, prometheus, alerts(groups)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for proc in cluster.services.values():
            if proc.proc is not None and proc.proc.poll() is None:
                os.kill(proc.proc.pid, signal.SIGCONT)  # a frozen one must be able to drain
        cluster.stop()


def active(prometheus, name: str, **labels: str) -> list[dict]:
    return [
        a
        for a in prometheus.api("alerts")["alerts"]
        if a["labels"]["alertname"] == name and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def _ts(rfc3339: str) -> float:
    head, _, frac = rfc3339.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + (float("0." + frac) if frac else 0.0)


def wait_firing(prometheus, rule: dict, timeout: float = FIRE_TIMEOUT, *, during=None, **labels: str) -> dict:
    """The alert once firing (not before its compressed for: had passed since it became
    active); prints how long after that window it fired. ``during()`` runs between polls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if during is not None:
            during()
        found = active(prometheus, rule["alert"], **labels)
        firing = [a for a in found if a["state"] == "firing"]
        if firing:
            late = time.time() - _ts(firing[0]["activeAt"]) - seconds(rule.get("for", "0s"))
            # The rule's for: held it back: firing can come late on a busy machine, never early.
            assert late >= -2 * EVALUATION, f"{rule['alert']} fired {-late:.1f}s before its for: window ended"
            print(f"figure: {rule['alert']} fired {late:.1f}s after its for: window")
            return firing[0]
        time.sleep(0.25)
    raise AssertionError(
        f"{rule['alert']} {labels} did not fire within {timeout}s; now {active(prometheus, rule['alert'])}"
    )


def wait_resolved(prometheus, name: str, timeout: float = RESOLVE_TIMEOUT, **labels: str) -> None:
    deadline = time.monotonic() + timeout
    while active(prometheus, name, **labels):
        assert time.monotonic() < deadline, f"{name} {labels} still active after {timeout}s"
        time.sleep(0.25)


def wait_inactive(prometheus, *names: str, timeout: float = RESOLVE_TIMEOUT) -> None:
    """Start from a stack where none of ``names`` is active: an earlier test's load (or a busy
    machine's slow answers) may still hold one, which would prove nothing about this cause."""
    for name in names:
        wait_resolved(prometheus, name, timeout)


def test_a_frozen_processor_is_down_and_leaves_partitions_unowned_until_it_thaws(live):
    cluster, prometheus, rules = live
    down, unowned = rules["WalletProcessorDown"], rules["WalletProcessorPartitionsUnowned"]
    wait_inactive(prometheus, down["alert"], unowned["alert"])
    pid = cluster.services["balance-1"].proc.pid
    os.kill(pid, signal.SIGSTOP)  # alive, holding its partitions, answering nothing
    try:
        alert = wait_firing(prometheus, down, pod="wallet-balance-1")
        assert alert["labels"]["severity"] == "critical"
        alert = wait_firing(prometheus, unowned, group="balance")
        assert float(alert["value"]) == PARTITIONS / 2, alert  # the other member's half
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_resolved(prometheus, down["alert"])
    wait_resolved(prometheus, unowned["alert"])


def test_deposits_beyond_the_value_size_limit_are_quarantined_and_alerted(live):
    from walletkit.devstack.net import http_post_json

    cluster, prometheus, rules = live
    rule = rules["WalletRecordsQuarantined"]
    wait_inactive(prometheus, rule["alert"])
    api = cluster.services["api-0"]
    for i in range(120):  # one wallet's 2-minute window outgrows 1,024 bytes
        status, _ = http_post_json(api.url("/deposit"), {"WalletID": "alert-heavy", "Amount": 1 + i})
        assert status == 202, status
    alert = wait_firing(prometheus, rule, group="above_threshold")
    assert alert["labels"]["pod"] == "wallet-above-threshold-0" and float(alert["value"]) > 0
    wait_resolved(prometheus, rule["alert"])  # its window passes without another


class Deposits:
    """Deposits posted to one API from a few threads until the block ends; bounded in count
    and time. ``statuses`` counts the answers (0: no answer)."""

    def __init__(self, api, *, wallet: str, threads: int = 4, limit: int = 20_000, seconds: float = 120) -> None:
        import threading
        from collections import Counter

        self.api, self.wallet, self.limit, self.seconds = api, wallet, limit, seconds
        self.statuses: Counter = Counter()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        from walletkit.devstack.net import http_post_json

        deadline = time.monotonic() + self.seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if sum(self.statuses.values()) >= self.limit:
                    return
            try:
                status, _ = http_post_json(
                    self.api.url("/deposit"), {"WalletID": f"{self.wallet}-{i}", "Amount": 1}, timeout=10
                )
            except OSError:
                status = 0
            with self._lock:
                self.statuses[status] += 1

    def __enter__(self) -> Deposits:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def test_slow_acknowledgements_burn_the_latency_budget_and_fail_deposits(live):
    cluster, prometheus, rules = live
    names = ("WalletApiLatencyBudgetBurnFast", "WalletApiErrorRatioHigh", "WalletApiLatencyBudgetBurnSlow")
    wait_inactive(prometheus, *names)
    # The broker throttles the API's producer: acknowledgements come late (slow 202s), and
    # those later than WALLET_DEPOSIT_TIMEOUT_SECONDS fail (503).
    cluster.broker.set_client_quota("wallet-api", producer_byte_rate=512)
    try:
        with Deposits(cluster.services["api-0"], wallet="alert-slow", seconds=3 * FIRE_TIMEOUT) as load:
            for name in names:
                alert = wait_firing(prometheus, rules[name], namespace="wallet-local")
    finally:
        cluster.broker.clear_client_quota("wallet-api", "producer_byte_rate")
    assert load.statuses[503] and load.statuses[202], load.statuses
    assert alert["labels"]["severity"] == "warning"
    for name in names:
        wait_resolved(prometheus, name)


def _group_lag(prometheus, group: str) -> float:
    found = prometheus.query(f'sum(stream_processor_consumer_lag{{group="{group}"}})')
    return float(found[0]["value"][1]) if found else -1.0


def test_a_throttled_group_falls_behind_and_catches_up(live):
    from support import Deposit, DepositWriter

    from walletkit.devstack.net import wait_until

    cluster, prometheus, rules = live
    rule = rules["WalletProcessorLagGrowing"]
    wait_inactive(prometheus, rule["alert"])
    writer = DepositWriter(cluster.broker.bootstrap, partitions=PARTITIONS)
    now = int(time.time()) * 1_000_000
    written = 0

    started = time.monotonic()

    def write_more() -> None:  # ~300 deposits/s against a group held to a few dozen
        nonlocal written
        due = min(int((time.monotonic() - started) * 300), 60_000)  # bounded in rate and count
        if written + 100 <= due:
            writer.write(Deposit(f"alert-lag-{written + i}", 1_000_000, now) for i in range(100))
            written += 100

    cluster.broker.set_client_quota("wallet-balance", consumer_byte_rate=2048)
    try:
        alert = wait_firing(prometheus, rule, during=write_more, group="balance")
    finally:
        cluster.broker.clear_client_quota("wallet-balance", "consumer_byte_rate")
    writer.flush()
    assert float(alert["value"]) > 1000
    wait_resolved(prometheus, rule["alert"])
    wait_until(lambda: _group_lag(prometheus, "balance") == 0, 120, interval=1, what="balance caught up")


def test_a_view_rebuilt_through_a_throttle_is_not_caught_up_and_lags(live):
    import shutil

    from walletkit.devstack.net import http_get

    cluster, prometheus, rules = live
    not_caught_up, lagging = rules["WalletViewNotCaughtUp"], rules["WalletViewLagging"]
    api = cluster.services["api-1"]
    api.stop()
    shutil.rmtree(cluster.state_dir("api", 1))  # its views rebuild from the changelogs' start
    cluster.broker.set_client_quota(CATCHING_UP, consumer_byte_rate=1024)
    try:
        cluster.start("api", 1, wait=False)
        wait_firing(prometheus, not_caught_up, pod="wallet-api-1", topic="balance-table")
        alert = wait_firing(prometheus, lagging, pod="wallet-api-1", topic="balance-table")
        assert float(alert["value"]) > 1000
        assert http_get(api.ops_url("/readyz"))[0] == 503
    finally:
        cluster.broker.clear_client_quota(CATCHING_UP, "consumer_byte_rate")
    api.wait_ready(120)
    wait_resolved(prometheus, not_caught_up["alert"])
    wait_resolved(prometheus, lagging["alert"])


def test_changelog_writes_the_broker_refuses_fail_flushes_until_it_accepts_them(live):
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    from walletkit.devstack.net import http_get, wait_until

    cluster, prometheus, rules = live
    rule = rules["WalletProcessorFlushFailing"]
    wait_inactive(prometheus, rule["alert"])
    admin = AdminClient({"bootstrap.servers": cluster.broker.bootstrap})

    def max_message_bytes(op: AlterConfigOpType, value: str | None = None) -> None:
        entry = ConfigEntry("max.message.bytes", value, incremental_operation=op)
        resource = ConfigResource(ResourceType.TOPIC, "balance-table", incremental_configs=[entry])
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(30)

    # Smaller than a batch of one change of a wallet with a 40-character id (about 130 bytes),
    # larger than the coordinator's abort markers (78): a write fails at once and its abort
    # succeeds, so the processor fails, rewinds and retries about once a second. (Below the
    # markers' size the coordinator gives up writing them and the transactional id is
    # blocked until the coordinator moves: no way to provoke a flush failure that ends.)
    max_message_bytes(AlterConfigOpType.SET, "90")
    wallet = "alert-flush-" + "x" * 29
    try:
        with Deposits(cluster.services["api-0"], wallet=wallet, threads=1, seconds=FIRE_TIMEOUT) as load:
            wait_firing(prometheus, rule, group="balance")
    finally:
        max_message_bytes(AlterConfigOpType.DELETE)
    wait_resolved(prometheus, rule["alert"])
    # Every deposit of those rewound and retried batches counts once (1.00 each; none failed).
    assert set(load.statuses) == {202}, load.statuses
    api = cluster.services["api-0"]
    wait_until(
        lambda: json.loads(http_get(api.url(f"/details/{wallet}-0"))[1]).get("Balance") == load.statuses[202],
        60,
        interval=0.5,
        what=f"a balance of {load.statuses[202]} in {wallet}-0",
    )


def test_a_restore_that_reads_nothing_is_stuck_until_it_can_read(live):
    cluster, prometheus, rules = live
    rule = rules["WalletProcessorRestoreStuck"]
    wait_inactive(prometheus, rule["alert"])
    # A byte a second: the broker holds the group's reads back for far longer than a test.
    cluster.broker.set_client_quota("wallet-balance", consumer_byte_rate=1)
    try:
        cluster.services["balance-1"].stop()  # its partitions move to balance-0, which restores them first
        alert = wait_firing(prometheus, rule, pod="wallet-balance-0", topic="balance-table")
        assert float(alert["value"]) >= PARTITIONS / 2, alert
    finally:
        cluster.broker.clear_client_quota("wallet-balance", "consumer_byte_rate")
    # Reads held back before the quota went are sent again after the request timeout (10 s).
    wait_resolved(prometheus, rule["alert"])
    cluster.start("balance", 1)  # the stack as it was
