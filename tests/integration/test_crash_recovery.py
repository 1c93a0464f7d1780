"""Crashes, lost disks, rebalances: every deposit counted exactly once.

Real broker, real processes (SIGKILL is a real crash: no draining, no flushing),
real RocksDB on disk. The expected state is computed from the deposits the
broker acknowledged.
"""

from __future__ import annotations

import random
import shutil
import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from support import (
    Deposit,
    DepositWriter,
    balances_in_table,
    balances_match,
    create_topics,
    details,
    expected_balances,
    expected_flags,
    flags_in_table,
    wait_for,
)

from walletkit.devstack.net import http_get
from walletkit.stream.changelog import stored_position
from walletkit.stream.store import Store

pytestmark = pytest.mark.integration

UNIT = 1_000_000


def make_deposits(rng: random.Random, count: int, wallets: int, start_micros: int) -> list[Deposit]:
    """Small wallets never cross the threshold; big ones usually do."""
    out = []
    for i in range(count):
        w = rng.randrange(wallets)
        name = f"big-{w}" if w % 3 == 0 else f"small-{w}"
        amount = (
            rng.randint(500, 4000) * UNIT
            if name.startswith("big")
            else rng.randint(1, 300) * UNIT + rng.randint(0, 99) * 10_000
        )
        out.append(Deposit(name, amount, start_micros + i * 1000))
    return out


class BackgroundWriter(threading.Thread):
    """Writes deposits at a bounded rate while the test breaks things.

    It writes ``deposits`` in order; with ``until`` it stops early once ``until``
    is set, and otherwise stops after the last one (always bounded).
    """

    def __init__(
        self,
        writer: DepositWriter,
        deposits: list[Deposit],
        rate: float,
        until: threading.Event | None = None,
        min_count: int = 0,
    ) -> None:
        super().__init__(daemon=True)
        self.writer, self.deposits, self.rate = writer, deposits, rate
        self.until, self.min_count = until, min_count

    def run(self) -> None:
        chunk = 25
        for i in range(0, len(self.deposits), chunk):
            if self.until is not None and self.until.is_set() and i >= self.min_count:
                break
            self.writer.write(self.deposits[i : i + chunk])
            time.sleep(chunk / self.rate)
        self.writer.flush()


def test_sigkill_mid_stream_and_restart_leaves_every_balance_and_flag_exact(cluster):
    rng = random.Random(20261125)
    create_topics(cluster.broker.bootstrap)
    cluster.start("balance", wait=False)
    cluster.start("above_threshold", wait=False)
    for name in ("balance-0", "above_threshold-0"):
        cluster.services[name].wait_ready(60)
    deposits = make_deposits(rng, 3000, 150, int(time.time() * UNIT))
    writer = DepositWriter(cluster.broker.bootstrap)
    feeder = BackgroundWriter(writer, deposits, rate=400)
    feeder.start()
    kills = 0
    for round_ in range(3):
        time.sleep(rng.uniform(0.8, 2.0))
        for name in ("balance", "above_threshold"):
            cluster.services[f"{name}-0"].kill()
            kills += 1
            if round_ == 1:  # and once the disk is lost too
                shutil.rmtree(cluster.state_dir(name), ignore_errors=True)
        for name in ("balance", "above_threshold"):
            cluster.start(name, wait=False)
    feeder.join(60)
    for name in ("balance-0", "above_threshold-0"):
        cluster.services[name].wait_ready(60)
    assert writer.failed == 0 and len(writer.acked) == len(deposits)
    expected = expected_balances(writer.acked)
    wait_for(
        lambda: balances_match(cluster.broker.bootstrap, expected), 90, "balances to match the acknowledged deposits"
    )
    want = expected_flags(writer.acked)

    def flags_exact():
        # Waited for like the balances: a SIGKILLed member holds its partitions until its
        # session expires, so one table can be behind the other for a few seconds.
        flags = flags_in_table(cluster.broker.bootstrap)
        wrong = {w: (flags.get(w), f) for w, f in want.items() if flags.get(w) != f}
        return not wrong or f"{len(wrong)} wrong flags (actual, expected): {dict(list(wrong.items())[:5])}"

    wait_for(flags_exact, 60, "every flag to match the model")
    assert any(want.values()) and not all(want.values()), "the data set must exercise both outcomes"
    assert kills == 6


@pytest.mark.parametrize("guarantee", ["exactly_once", "applied_offsets"])
def test_crashes_between_changelog_write_and_commit_never_count_twice(cluster, guarantee):
    """Crash exactly where a replay follows: after the changelog write (a transaction still
    open under exactly-once), after the transaction committed, after the store write."""
    from walletkit.stream.faults import CRASH_EXIT_CODE

    rng = random.Random(42)
    cluster.extra_env["WALLET_PROCESSING_GUARANTEE"] = guarantee
    # Each process crashes at one point; the next start crashes at the next one.
    points = ["after_changelog", "after_commit", "after_store"]
    faulty = {"WALLET_FAULT_INJECTION": f"{points[0]}=0.15"}
    create_topics(cluster.broker.bootstrap)
    for name in ("balance", "above_threshold"):
        cluster.start(name, wait=False, env=faulty)
    # A slow, steady feed (many small batches, so crash points come up often) that
    # goes on until every processor crashed a few times (at most 30,000 deposits).
    deposits = make_deposits(rng, 30_000, 60, int(time.time() * UNIT))
    writer = DepositWriter(cluster.broker.bootstrap)
    enough = threading.Event()
    feeder = BackgroundWriter(writer, deposits, rate=150, until=enough, min_count=1500)
    feeder.start()
    crashes = {"balance": 0, "above_threshold": 0}
    deadline = time.monotonic() + 150
    while feeder.is_alive() and time.monotonic() < deadline:
        if min(crashes.values()) >= 3:
            enough.set()
        for name in crashes:
            proc = cluster.services[f"{name}-0"]
            if proc.proc.poll() is not None:
                assert proc.proc.returncode == CRASH_EXIT_CODE, f"{name} died for real; see {proc.log_path}"
                crashes[name] += 1
                # Like a restarting pod; after a few crashes it runs clean so the test ends.
                if crashes[name] >= len(points):
                    proc.env.pop("WALLET_FAULT_INJECTION", None)
                else:
                    proc.env["WALLET_FAULT_INJECTION"] = f"{points[crashes[name]]}=0.15"
                proc.start()
        time.sleep(0.2)
    feeder.join(30)
    for name in crashes:
        cluster.services[f"{name}-0"].env.pop("WALLET_FAULT_INJECTION", None)
    assert min(crashes.values()) >= 3, f"too few injected crashes: {crashes}"
    log = cluster.services["balance-0"].log_path.read_text()
    assert f"processing guarantee {guarantee}" in log
    for point in points:
        assert f"injected crash at {point}" in log, point
    expected = expected_balances(writer.acked)
    wait_for(
        lambda: balances_match(cluster.broker.bootstrap, expected), 90, "balances to match the acknowledged deposits"
    )
    want = expected_flags(writer.acked)
    wait_for(lambda: flags_in_table(cluster.broker.bootstrap) == want, 30, "flags to match the model")


def test_processor_rebuilds_a_lost_disk_from_its_changelog(cluster):
    rng = random.Random(7)
    bal = cluster.start("balance")
    writer = DepositWriter(cluster.broker.bootstrap)
    first = make_deposits(rng, 300, 30, int(time.time() * UNIT))
    writer.write(first)
    writer.flush()
    wait_for(lambda: balances_match(cluster.broker.bootstrap, expected_balances(writer.acked)), 30, "first batch")
    assert bal.stop() == 0, "SIGTERM must drain and exit 0"
    shutil.rmtree(cluster.state_dir("balance"))
    cluster.start("balance")
    second = make_deposits(rng, 300, 30, int(time.time() * UNIT))
    writer.write(second)
    writer.flush()
    # Wallets of the first batch keep their restored balance and add the second on top.
    wait_for(
        lambda: balances_match(cluster.broker.bootstrap, expected_balances(writer.acked)),
        30,
        "balances after the rebuild",
    )
    log = cluster.services["balance-0"].log_path.read_text()
    restored = [line for line in log.splitlines() if "restored partitions" in line]
    assert restored and any(
        '"msg":"table balance-table restored partitions' in line and " 0 records" not in line for line in restored
    ), "the second start must have restored records from the changelog"


def test_second_instance_joining_and_leaving_mid_stream_keeps_balances_exact(cluster):
    rng = random.Random(99)
    cluster.start("balance")
    writer = DepositWriter(cluster.broker.bootstrap)
    deposits = make_deposits(rng, 2500, 120, int(time.time() * UNIT))
    feeder = BackgroundWriter(writer, deposits, rate=300)
    feeder.start()
    time.sleep(1.5)
    second = cluster.start("balance", 1)
    status, body = http_get(second.url("/readyz"))
    import json

    assert status == 200 and json.loads(body)["partitions"], f"the joiner got no partitions: {body!r}"
    time.sleep(1.5)
    assert second.stop() == 0
    feeder.join(60)
    expected = expected_balances(writer.acked)
    wait_for(lambda: balances_match(cluster.broker.bootstrap, expected), 60, "balances after the rebalance")


def test_api_view_resumes_from_its_checkpoint_after_restart(cluster):
    cluster.start("balance")
    api = cluster.start("api")
    writer = DepositWriter(cluster.broker.bootstrap)
    writer.write([Deposit(f"v{i}", (i + 1) * UNIT, int(time.time() * UNIT)) for i in range(40)])
    writer.flush()
    wait_for(lambda: details(api.port, "v39")[0] == 200, 20, "views to see the deposits")
    assert api.stop() == 0
    store = Store(cluster.state_dir("api") / "balance-table")
    checkpointed = {p: stored_position(store, p) for p in range(8)}
    store.close()
    # The checkpoint covers all 40 records and lies within the changelog (whose ends also
    # count the commit markers of the transactions that wrote them).
    probe = Consumer({"bootstrap.servers": cluster.broker.bootstrap, "group.id": "checkpoint-probe"})
    ends = {p: probe.get_watermark_offsets(TopicPartition("balance-table", p), timeout=10)[1] for p in range(8)}
    probe.close()
    assert sum(checkpointed.values()) >= 40 and all(checkpointed[p] <= ends[p] for p in ends), (checkpointed, ends)
    api.start().wait_ready(60)
    assert details(api.port, "v39") == (200, b'{"WalletID":"v39","Balance":40,"AboveThreshold":false}')
    log = api.log_path.read_text().splitlines()
    follows = [line for line in log if "view balance-table: following" in line]
    assert len(follows) == 2 and "{0: 0, 1: 0" not in follows[-1].replace('"', ""), follows
    caught_up = [line for line in log if "view balance-table: caught up" in line]
    assert len(caught_up) == 2 and "read 0 changelog records on top of" in caught_up[-1], caught_up
    assert balances_in_table(cluster.broker.bootstrap)["v0"] == UNIT
