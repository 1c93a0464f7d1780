"""Failover with and without a standby: a takeover from a warm copy restores only the tail.

Two balance instances run as processes with static membership (as the chart runs them) on
Apache Kafka. Deposits fill the table; then the instance owning half the partitions is
killed with SIGKILL. Once its session expires its partitions move to the survivor, which
either kept them warm (``WALLET_STANDBY_REPLICAS=1``) and restores only what it had not yet
followed, or restores them from the changelog's beginning. Records restored are counted by
the survivor's own metric; the balances are checked against every acknowledged deposit.
"""

from __future__ import annotations

import random

import pytest
from confluent_kafka import Consumer, TopicPartition
from support import (
    Deposit,
    DepositWriter,
    balances_match,
    create_topics,
    ops_status,
    scraped_metric,
    wait_for,
)

from walletkit.stream.standby import range_assignment

pytestmark = pytest.mark.integration

WALLETS = 6_000
UNIT = 1_000_000


def changelog_records(bootstrap: str, partitions: list[int]) -> int:
    """Records in these partitions of balance-table (its high watermarks: nothing is compacted yet)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "standby-test-probe"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition("balance-table", p), timeout=10)[1] for p in partitions
        )
    finally:
        consumer.close()


def restored(proc) -> float:
    return scraped_metric(proc.port, "stream_restore_records_total", topic="balance-table") or 0.0


@pytest.mark.parametrize("standby", [1, 0], ids=["with-standby", "without-standby"])
def test_a_takeover_from_a_standby_restores_only_the_tail(cluster, standby):
    bootstrap = cluster.broker.bootstrap
    create_topics(bootstrap)
    procs = [
        cluster.start(
            "balance",
            i,
            wait=False,
            env={"WALLET_INSTANCE_ID": f"wallet-balance-{i}", "WALLET_STANDBY_REPLICAS": str(standby)},
        )
        for i in (0, 1)
    ]
    for proc in procs:
        proc.wait_ready(90)

    rng = random.Random(17)
    writer = DepositWriter(bootstrap)
    writer.write(Deposit(f"w{i:05d}", rng.randint(1, 500) * UNIT, 1_000_000 * i) for i in range(WALLETS))
    writer.flush()
    expected: dict[str, int] = {}
    for d in writer.acked:
        expected[d.wallet] = expected.get(d.wallet, 0) + d.micros
    wait_for(lambda: balances_match(bootstrap, expected), 90, "the table to hold every deposit")

    # The assignment is the one the standby plan predicts from the members' instance ids.
    layout = range_assignment([f"wallet-balance-{i}" for i in (0, 1)], cluster.partitions)
    for i, proc in enumerate(procs):
        assert ops_status(proc.port)["partitions"] == layout[f"wallet-balance-{i}"]
    survivor, victim = procs
    moved = layout["wallet-balance-1"]
    if standby:
        wait_for(lambda: ops_status(survivor.port)["standby"] == moved, 30, "the survivor to keep the standby")
        wait_for(
            lambda: scraped_metric(survivor.port, "stream_standby_lag_records", topic="balance-table") == 0,
            30,
            "the standby copies to catch up",
        )
    before = restored(survivor)
    victim.kill()

    # Deposits keep coming while the victim's partitions wait for its session to expire.
    tail = DepositWriter(bootstrap)
    tail.write(Deposit(f"w{rng.randrange(WALLETS):05d}", UNIT, 0) for _ in range(200))
    tail.flush()
    for d in tail.acked:
        expected[d.wallet] += d.micros
    wait_for(
        lambda: (
            ops_status(survivor.port)["partitions"] == list(range(cluster.partitions))
            and ops_status(survivor.port)["status"] == "ok"
        ),
        60,
        "the survivor to take every partition over",
    )
    wait_for(lambda: balances_match(bootstrap, expected), 60, "every deposit, the tail too, in the table")

    taken_over = restored(survivor) - before
    in_moved = changelog_records(bootstrap, moved)
    print(
        f"\nstandby={standby}: the takeover restored {taken_over:.0f} of the moved partitions' "
        f"{in_moved} changelog records"
    )
    if standby:
        assert taken_over <= 0.02 * in_moved, (taken_over, in_moved)
    else:
        assert taken_over >= 0.9 * (in_moved - 200), (taken_over, in_moved)
