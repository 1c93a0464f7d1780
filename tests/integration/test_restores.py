"""Restores run in the processor's main loop, the partition paused, not in the rebalance callback.

Real broker, real RocksDB, the processor in-process. The restore is made slow on purpose
(the reader consumer hands over a few hundred records at a time and pauses between them, as
a slow disk or a throttled network would), so that it lasts longer than the group's
``max.poll.interval.ms``: a restore inside the rebalance callback would then get the member
thrown out of its group.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client import REGISTRY
from support import CounterCodec, IntCodec, add

from walletkit.stream import GroupSpec, KafkaSettings, Processor, TopicManager
from walletkit.stream.kafka import KafkaClients
from walletkit.stream.partitioner import partition_for
from walletkit.stream.processor import LocalStores
from walletkit.stream.store import Store

pytestmark = pytest.mark.integration

PARTITIONS = 4
KEYS = 20_000
MAX_POLL_INTERVAL_MS = 6_000  # the shortest the broker's default session bounds allow


SPEC = GroupSpec(
    group="restores", input_topic="amounts", input_codec=IntCodec(), table_codec=CounterCodec(), callback=add
)


class SlowReader(Consumer):
    """A changelog reader that hands over at most 200 records per call, 100 ms apart (~2,000 records/s)."""

    def consume(self, num_messages: int = 1, timeout: float = -1):
        time.sleep(0.1)
        return super().consume(min(num_messages, 200), timeout)

    def poll(self, timeout: float | None = None):
        time.sleep(0.1)
        return super().poll(timeout if timeout is not None else -1)


class SlowRestores(KafkaClients):
    def reader(self, **overrides):
        return SlowReader(self.settings.reader(**overrides))

    def group_consumer(self, group: str, **overrides):
        return super().group_consumer(group, **{"max.poll.interval.ms": MAX_POLL_INTERVAL_MS, **overrides})


def settings(broker) -> KafkaSettings:
    return KafkaSettings(broker.bootstrap, client_id="restore-test", session_timeout_ms=6000)


def produce(broker, records: list[tuple[str, int]]) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for key, amount in records:
        k = key.encode()
        while True:
            try:
                producer.produce("amounts", str(amount).encode(), k, partition=partition_for(k, PARTITIONS))
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(30) == 0


def run_in_thread(processor: Processor) -> threading.Thread:
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    return thread


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stored_totals(root: Path) -> dict[str, int]:
    totals: dict[str, int] = {}
    for p in range(PARTITIONS):
        store = Store(root / str(p))
        try:
            for key, raw in store.items():
                totals[key.decode()] = json.loads(raw)["n"]
        finally:
            store.close()
    return totals


def build_table(broker, tmp_path) -> dict[str, int]:
    """Deposits over KEYS keys, and a first member that builds the table (and its changelog)
    from them, then goes away with its disk."""
    topics = TopicManager(settings(broker))
    topics.ensure_stream("amounts", PARTITIONS)
    topics.ensure_table(SPEC.table_topic, PARTITIONS)
    expected = {f"k{i:05d}": i % 97 + 1 for i in range(KEYS)}
    produce(broker, list(expected.items()))
    first = Processor.create(SPEC, settings(broker), tmp_path / "first")
    thread = run_in_thread(first)
    wait_for(lambda: first.ready, 60, "the first member")
    wait_for(
        lambda: sum(len(list(part.store.items())) for part in first.tables.values()) >= KEYS,
        60,
        "the first member to apply every record",
    )
    first.stop()
    thread.join(30)
    return expected


def test_a_member_joining_mid_restore_neither_evicts_the_restoring_member_nor_restarts_its_restore(
    broker, tmp_path, caplog
):
    """Cold start of two members: the second joins while the first restores, for longer than
    the group's rebalance timeout (max.poll.interval.ms). A restore inside the rebalance
    callback cannot take part in that rebalance: the coordinator evicts the member, which then
    comes back as a new member with its partitions lost."""
    expected = build_table(broker, tmp_path)
    caplog.set_level(logging.INFO, logger="walletkit")
    members = [
        Processor(SPEC, SlowRestores(settings(broker)), LocalStores(tmp_path / name / SPEC.group))
        for name in ("a", "b")
    ]
    a, b = members
    started = time.monotonic()
    threads = [run_in_thread(a)]
    wait_for(lambda: a.restoring, 30, "the first member's assignment")
    first_id = a.member_id
    wait_for(lambda: a._restorer.records_restored >= KEYS // 10, 30, "the first member's restore to be under way")
    threads.append(run_in_thread(b))
    wait_for(lambda: a.ready and b.ready, 180, "both members restored")
    restore_seconds = time.monotonic() - started
    assert restore_seconds > MAX_POLL_INTERVAL_MS / 1000, (
        f"the restores took {restore_seconds:.1f}s: too fast to show anything about max.poll.interval.ms"
    )
    messages = [r.getMessage() for r in caplog.records]
    # The first member stayed in the group throughout: same member id, nothing lost.
    assert a.member_id == first_id, "the restoring member was evicted and came back as a new member"
    assert not [m for m in messages if "lost partitions" in m], [m for m in messages if "partitions" in m]
    assert sorted(a.partitions + b.partitions) == list(range(PARTITIONS)) and a.partitions and b.partitions
    # Nothing was read twice by the member that kept restoring: its restore went on.
    assert a._restorer.records_restored <= KEYS, a._restorer.records_restored
    # Progress was reported on the way: share done, pace and time to go.
    progress = [m for m in messages if m.startswith("restoring restores-table:")]
    assert any("records/s" in m and "ETA" in m and "%" in m for m in progress), progress

    # And processing goes on from the restored values.
    owner = a if partition_for(b"k00000", PARTITIONS) in a.partitions else b
    produce(broker, [("k00000", 1000)])
    wait_for(
        lambda: (
            (v := owner.tables[partition_for(b"k00000", PARTITIONS)].get("k00000")) is not None
            and v["n"] == expected["k00000"] + 1000
        ),
        30,
        "the next record on top of the restored value",
    )
    owned = {"a": a.partitions, "b": b.partitions}
    for member, thread in zip(members, threads):
        member.stop()
        thread.join(30)
    expected["k00000"] += 1000
    totals: dict[str, int] = {}
    for name, partitions in owned.items():
        totals.update(
            {
                k: v
                for k, v in stored_totals(tmp_path / name / SPEC.group).items()
                if partition_for(k.encode(), PARTITIONS) in partitions
            }
        )
    assert totals == expected


def test_a_restore_held_short_by_a_departed_producers_open_transaction_waits_for_it_to_end(broker, tmp_path):
    """A member that died mid-transaction leaves it open until the broker aborts it
    (transaction.timeout.ms). Until then the changelog partition's last stable offset stays at
    that transaction's first record, and a ``read_committed`` restore ends there. A member that
    resumed on such a table would commit transactions beyond the open one; the next member to
    restore the partition would again stop at the open one, miss them, and resume at the
    group's committed offset on stale values: deposits lost (with the wait removed this
    scenario ends at 17 instead of 57). So a restore is done only at the log's end.
    """
    topics = TopicManager(settings(broker))
    topics.ensure_stream("amounts", PARTITIONS)
    topics.ensure_table(SPEC.table_topic, PARTITIONS)
    key = "k00001"
    p = partition_for(key.encode(), PARTITIONS)
    # A member that owned the partition once: its disk keeps a table (and a changelog position) from then.
    produce(broker, [(key, 5)] * 2)
    back = Processor.create(SPEC, settings(broker), tmp_path / "back")
    thread = run_in_thread(back)
    wait_for(
        lambda: (v := back.tables.get(p) and back.tables[p].get(key)) and v["n"] == 10,
        60,
        "the member to apply the first deposits",
    )
    back.stop()
    thread.join(30)
    # The departed member: a transaction on the changelog partition, never ended.
    departed = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "transactional.id": "restores-departed",
            "transaction.timeout.ms": 120_000,
        }
    )
    departed.init_transactions(30)
    departed.begin_transaction()
    departed.produce(SPEC.table_topic, json.dumps({"n": 0, "o": -1}).encode(), b"k-departed", partition=p)
    assert departed.flush(30) == 0
    still_open = True
    try:
        # The next owner restores while the transaction is open: it waits instead of resuming.
        produce(broker, [(key, 5)] * 8)
        nxt = Processor.create(SPEC, settings(broker), tmp_path / "next")
        thread = run_in_thread(nxt)
        wait_for(lambda: p in nxt.waiting, 30, "the next owner to wait for the open transaction")
        time.sleep(2)
        assert not nxt.ready and p in nxt.restoring, "resumed on a table short of the log's end"
        assert REGISTRY.get_sample_value("stream_restore_waiting_partitions", {"topic": SPEC.table_topic}) == 1
        # The transaction ends (the broker would abort it after transaction.timeout.ms).
        departed.abort_transaction(30)
        still_open = False
        wait_for(lambda: nxt.ready, 30, "the next owner to finish its restore")
        wait_for(
            lambda: (v := nxt.tables[p].get(key)) is not None and v["n"] == 50,
            30,
            "the next owner to apply the deposits",
        )
        nxt.stop()
        thread.join(30)
    finally:
        if still_open:
            departed.abort_transaction(30)
    # The earlier member comes back on its old disk: it catches up with everything committed.
    back = Processor.create(SPEC, settings(broker), tmp_path / "back")
    thread = run_in_thread(back)
    wait_for(lambda: back.ready, 60, "the member back")
    produce(broker, [(key, 7)])
    wait_for(
        lambda: (v := back.tables[p].get(key)) is not None and v["o"] >= 10,
        30,
        "the member back to apply the next deposit",
    )
    assert back.tables[p].get(key)["n"] == 57, back.tables[p].get(key)
    back.stop()
    thread.join(30)


class SilentReader(Consumer):
    """A changelog reader whose fetches bring nothing until the test releases it, as under a
    broker's fetch quota: no fetch answered, so no cached end of log either."""

    released = threading.Event()

    def consume(self, num_messages: int = 1, timeout: float = -1):
        if not self.released.is_set():
            time.sleep(min(max(timeout, 0), 0.05))
            return []
        return super().consume(num_messages, timeout)

    def poll(self, timeout: float | None = None):
        if not self.released.is_set():
            time.sleep(min(max(timeout or 0, 0), 0.05))
            return None
        return super().poll(timeout if timeout is not None else -1)


class SilentRestores(KafkaClients):
    def reader(self, **overrides):
        return SilentReader(self.settings.reader(**overrides))


def test_records_to_go_are_known_before_the_first_fetch_answers(broker, tmp_path):
    """Before its first fetch returns, a restoring member asks the broker for the changelog's
    ends: the dashboards' "records to go" shows the real backlog, not 0, while nothing moves."""
    expected = build_table(broker, tmp_path)
    member = Processor(SPEC, SilentRestores(settings(broker)), LocalStores(tmp_path / "silent" / SPEC.group))
    thread = run_in_thread(member)
    gauge = ("stream_restore_remaining_records", {"topic": SPEC.table_topic})
    try:
        wait_for(lambda: member.restoring, 30, "the member's assignment")
        wait_for(lambda: (REGISTRY.get_sample_value(*gauge) or 0) > 0, 10, "records to go above 0")
        # Nothing has been read yet, and all of it is to go (a commit marker per batch on top).
        assert member._restorer.records_restored == 0
        assert REGISTRY.get_sample_value(*gauge) >= len(expected)
        SilentReader.released.set()
        wait_for(lambda: member.ready, 60, "the restore to finish")
        assert REGISTRY.get_sample_value(*gauge) == 0
    finally:
        SilentReader.released.set()
        member.stop()
        thread.join(30)
