"""The stream toolkit on its own, with a domain-free counter (no wallet code).

Real broker, real RocksDB; processors and views run in-process on threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from support import CounterCodec, IntCodec, add

from walletkit.stream import (
    BrokerUnavailable,
    Context,
    CoPartitioningError,
    Emitter,
    GroupSpec,
    KafkaSettings,
    Processor,
    ProcessorState,
    StreamError,
    TopicManager,
    View,
)
from walletkit.stream.partitioner import partition_for

pytestmark = pytest.mark.integration


SPEC = GroupSpec(
    group="counter", input_topic="events", input_codec=IntCodec(), table_codec=CounterCodec(), callback=add
)


def settings(broker) -> KafkaSettings:
    return KafkaSettings(broker.bootstrap, client_id="toolkit-test", session_timeout_ms=6000)


def make_topics(broker, input_partitions: int = 4, table_partitions: int = 4) -> TopicManager:
    tm = TopicManager(settings(broker))
    tm.ensure_stream("events", input_partitions)
    tm.ensure_table("counter-table", table_partitions)
    return tm


def delete_topic(broker, tm: TopicManager, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics([topic])[topic].result()
    deadline = time.monotonic() + 10
    while topic in tm.partitions([topic]) and time.monotonic() < deadline:
        time.sleep(0.1)


def produce(broker, records: list[tuple[str, bytes]], partitions: int = 4) -> None:
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for key, value in records:
        p.produce("events", value, key.encode(), partition=partition_for(key.encode(), partitions))
    assert p.flush(10) == 0


class Running:
    """A processor on a thread."""

    def __init__(self, broker, state_dir: Path, spec: GroupSpec = SPEC) -> None:
        self.processor = Processor.create(spec, settings(broker), state_dir)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.processor.run()
        except BaseException as exc:  # surfaced to the test
            self.error = exc

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.processor.ready:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "processor never became ready"
            time.sleep(0.05)

    def stop(self) -> None:
        self.processor.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


def view_values(broker, path: Path, expected: dict[str, int], timeout: float = 30) -> View:
    view = View(settings(broker), "counter-table", CounterCodec(), path)
    assert not view.caught_up
    view.start()
    assert view.wait_caught_up(timeout), "view never caught up"
    deadline = time.monotonic() + timeout
    while True:
        got = {k: (view.get(k) or {}).get("n") for k in expected}
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == expected
    return view


def test_processor_counts_and_view_follows_then_resumes_from_checkpoint(broker, tmp_path):
    make_topics(broker)
    records = [(f"k{i % 20}", str(i).encode()) for i in range(500)]
    expected: dict[str, int] = {}
    for key, value in records:
        expected[key] = expected.get(key, 0) + int(value)
    run = Running(broker, tmp_path / "proc")
    run.wait_ready()
    produce(broker, records)
    view = view_values(broker, tmp_path / "view", expected)
    view.stop()
    run.stop()
    assert run.processor.state is ProcessorState.STOPPED and run.error is None
    # A second view on the same directory resumes: its checkpoint covers all records.
    again = View(settings(broker), "counter-table", CounterCodec(), tmp_path / "view")
    assert again.get("k1")["n"] == expected["k1"], "the replica must be readable before it starts following"
    again.start()
    assert again.wait_caught_up(10)
    assert sum(again.offsets().values()) > 0
    again.stop()


def test_malformed_records_are_skipped_and_the_rest_processed(broker, tmp_path, caplog):
    make_topics(broker)
    run = Running(broker, tmp_path / "proc")
    run.wait_ready()
    with caplog.at_level(logging.WARNING):
        produce(broker, [("a", b"5"), ("a", b"garbage"), ("a", b"7")])
        view_values(broker, tmp_path / "view", {"a": 12}).stop()
    run.stop()
    assert any("skipping record events" in r.getMessage() and "not_an_int" in r.getMessage() for r in caplog.records)


def test_a_deleted_and_recreated_changelog_is_rebuilt_from_the_input_not_reset(broker, tmp_path, caplog):
    tm = make_topics(broker)
    run = Running(broker, tmp_path / "proc")
    run.wait_ready()
    produce(broker, [("x", b"1"), ("y", b"2")])
    view_values(broker, tmp_path / "view", {"x": 1, "y": 2}).stop()
    run.stop()
    # Nothing may follow the topic while it is deleted: librdkafka 2.16 crashes
    # (metadata cache, strcmp on a NULL name) on the embedded broker's metadata
    # for a deleted topic. The view is restarted on its old directory instead.
    delete_topic(broker, tm, "counter-table")
    tm.ensure_table("counter-table", 4)
    with caplog.at_level(logging.WARNING):
        view = View(settings(broker), "counter-table", CounterCodec(), tmp_path / "view")
        assert view.get("x") == {"n": 1, "o": view.get("x")["o"]}  # the old replica, before it starts
        announced: list[object] = []
        view.subscribe(lambda records: announced.append(None if records is None else len(records)))
        view.start()
        run = Running(broker, tmp_path / "proc")
        run.wait_ready()
        produce(broker, [("x", b"10")])
        deadline = time.monotonic() + 20
        while (view.get("x") or {}).get("n") != 11 and time.monotonic() < deadline:
            time.sleep(0.1)
    run.stop()
    x, y = view.get("x"), view.get("y")
    view.stop()
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "another topic incarnation; rebuilding" in messages, "the processor trusted stale local state"
    assert "rebuilding from the beginning" in messages, "the view trusted stale local state"
    assert "rebuilding it from events" in messages, "the processor resumed an empty table at the committed offset"
    # Rebuilt from the input's first record: 10 alone (and no y) would be a reset table.
    assert x is not None and x["n"] == 11, x
    assert y is not None and y["n"] == 2, y
    # Subscribers (the API's details cache) hear of the wipe before the first rebuilt batch.
    assert announced and announced[0] is None and all(isinstance(n, int) for n in announced[1:]), announced


def test_a_lost_table_whose_input_no_longer_starts_at_zero_is_refused_with_instructions(broker, tmp_path):
    """Nothing to rebuild from: starting from an empty table would serve reset values."""
    tm = make_topics(broker)
    run = Running(broker, tmp_path / "proc")
    run.wait_ready()
    produce(broker, [("x", b"1"), ("x", b"2")])
    view_values(broker, tmp_path / "view", {"x": 3}).stop()
    run.stop()
    delete_topic(broker, tm, "counter-table")
    tm.ensure_table("counter-table", 4)
    p = partition_for(b"x", 4)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for fut in admin.delete_records([TopicPartition("events", p, 1)]).values():
        fut.result()  # the ledger's first record of x is gone (retention)
    processor = Processor.create(SPEC, settings(broker), tmp_path / "proc")
    with pytest.raises(StreamError, match=rf"counter-table' partition {p} is empty.*now starts at offset 1.*backup"):
        processor.run()
    assert not processor.ready


def test_processor_refuses_topics_that_are_not_copartitioned(broker, tmp_path):
    make_topics(broker, input_partitions=4, table_partitions=8)
    processor = Processor.create(SPEC, settings(broker), tmp_path / "proc")
    with pytest.raises(CoPartitioningError, match="events=4, counter-table=8"):
        processor.run()
    assert processor.state is ProcessorState.FAILED


def test_emitter_resolves_on_ack_and_fails_clearly_without_a_broker(broker):
    make_topics(broker)

    async def scenario() -> None:
        emitter = Emitter(settings(broker), "events", IntCodec())
        await emitter.start()
        delivery = await emitter.emit("k", 42)
        assert delivery.topic == "events" and delivery.offset >= 0
        assert delivery.partition == partition_for(b"k", 4)
        await emitter.close()
        dead = Emitter(KafkaSettings("127.0.0.1:1"), "events", IntCodec(), connect_timeout=2)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="cannot reach Kafka at 127.0.0.1:1"):
            await dead.start()
        assert time.monotonic() - started < 10

    asyncio.run(scenario())


def test_transactional_emitter_commits_each_record_once_and_its_successor_fences_it(broker):
    """Records of a transactional emitter become visible (read_committed) once, each where its
    delivery says; a successor with the same transactional id fences the old one's lanes,
    which take their ids back on the next emit (the old process stays usable), and records
    of the aborted side never show."""
    make_topics(broker)

    def committed() -> list[tuple[int, int, bytes]]:
        c = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": "txn-check",
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
        c.assign([TopicPartition("events", p, 0) for p in range(4)])
        out, ends = [], set()
        deadline = time.monotonic() + 30
        while len(ends) < 4 and time.monotonic() < deadline:
            for m in c.consume(500, 0.2):
                if m.error():
                    ends.add(m.partition())
                else:
                    out.append((m.partition(), m.offset(), m.value()))
        c.close()
        return out

    async def scenario() -> None:
        first = Emitter(settings(broker), "events", IntCodec(), transactional_id="toolkit-emitter", lanes=2)
        await first.start()
        deliveries = await asyncio.gather(*(first.emit(f"k{i}", i) for i in range(300)))
        second = Emitter(settings(broker), "events", IntCodec(), transactional_id="toolkit-emitter", lanes=2)
        await second.start()  # registers the same ids: the first's producers are fenced
        more = await asyncio.gather(*(second.emit(f"k{i}", 1000 + i) for i in range(50)))
        again = await first.emit("k0", 5000)  # fenced lane: re-registers, then commits
        await second.close()
        await first.close()
        records = committed()
        values = sorted(int(v) for _, _, v in records)
        assert values == sorted([*range(300), *range(1000, 1050), 5000]), "each record exactly once"
        where = {(p, o) for p, o, _ in records}
        assert {(d.partition, d.offset) for d in [*deliveries, *more, again]} <= where
        assert all(d.partition == partition_for(f"k{i}".encode(), 4) for i, d in enumerate(deliveries))

    asyncio.run(scenario())


def test_a_recreated_input_topic_is_refused_not_silently_skipped(broker, tmp_path):
    """Offsets of a recreated input restart at 0: they would look like replays."""
    tm = make_topics(broker)
    run = Running(broker, tmp_path / "proc")
    run.wait_ready()
    produce(broker, [("x", b"1")])
    view_values(broker, tmp_path / "view", {"x": 1}).stop()
    run.stop()
    delete_topic(broker, tm, "events")
    tm.ensure_stream("events", 4)
    processor = Processor.create(SPEC, settings(broker), tmp_path / "proc")
    with pytest.raises(StreamError, match="deleted and recreated"):
        processor.run()
    assert processor.state is ProcessorState.FAILED


def test_a_bug_in_the_callback_stops_the_processor_and_the_record_is_retried(broker, tmp_path):
    """Only SkipRecord skips a record; any other error (here an AttributeError) must not lose it."""
    make_topics(broker)

    def buggy(ctx: Context, amount: int) -> None:
        if amount == 13:
            None.missing  # noqa: B018 - the bug
        add(ctx, amount)

    spec = GroupSpec(
        group="counter", input_topic="events", input_codec=IntCodec(), table_codec=CounterCodec(), callback=buggy
    )
    produce(broker, [("a", b"5"), ("a", b"13")])
    failing = Running(broker, tmp_path / "proc", spec)
    failing.thread.join(60)  # bounded: a processor that swallowed the bug would run on
    assert not failing.thread.is_alive(), "the processor skipped the failing record instead of stopping"
    failing.processor.stop()
    assert isinstance(failing.error, AttributeError), failing.error
    assert failing.processor.state is ProcessorState.FAILED
    # Fixed and restarted, the processor gets the record again: nothing was committed past it.
    run = Running(broker, tmp_path / "proc")
    run.wait_ready()
    view_values(broker, tmp_path / "view", {"a": 18}).stop()
    run.stop()


def committed_total(broker, group: str = "counter", topic: str = "events", partitions: int = 4) -> int:
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return sum(
            max(tp.offset, 0) for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        )
    finally:
        c.close()


def test_offsets_are_committed_while_running_not_only_on_stop(broker, tmp_path):
    """Commits are asynchronous and batched: once the input goes idle the processor commits
    what it made durable, without waiting for a rebalance or a shutdown."""
    make_topics(broker)
    run = Running(broker, tmp_path / "proc")
    run.wait_ready()
    produce(broker, [(f"k{i % 7}", b"1") for i in range(300)])
    deadline = time.monotonic() + 30
    while (done := committed_total(broker)) < 300 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert done == 300, f"only {done} of 300 offsets committed while running"
    assert run.thread.is_alive() and run.error is None
    run.stop()
    assert committed_total(broker) == 300


def test_join_emit_and_delete_on_kafka_each_once_and_the_joined_copy_survives_a_restart(broker, tmp_path):
    """A group that reads another table (a per-key cap, written to its changelog as its own
    group would), emits each capped total to an output topic in its batches' transactions, and
    deletes a key on a negative record. Restarted on the same disk and then on an empty one,
    it goes on from the joined copy and its own table: every output read_committed once."""
    from walletkit.stream import JsonCodec, JsonTableCodec

    tm = make_topics(broker)
    tm.ensure_table("caps-table", 4)
    tm.ensure_stream("capped", 4)

    def on_record(ctx: Context, amount: int) -> None:
        if amount < 0:
            ctx.delete()
            return
        cap = ctx.join("caps-table")
        value = ctx.value() or {"n": 0}
        value["n"] = min(value["n"] + amount, cap["max"] if cap else 10**9)
        ctx.set_value(value)
        ctx.emit("capped", ctx.key, {"key": ctx.key, "n": value["n"], "offset": ctx.offset})

    spec = GroupSpec(
        group="counter",
        input_topic="events",
        input_codec=IntCodec(),
        table_codec=CounterCodec(),
        callback=on_record,
        outputs={"capped": JsonCodec()},
        joins={"caps-table": JsonTableCodec()},
    )
    caps = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for key, cap in (("a", 10), ("b", 1000)):
        caps.produce(
            "caps-table",
            JsonCodec().encode({"max": cap, "_offset": 0}),
            key.encode(),
            partition=partition_for(key.encode(), 4),
        )
    assert caps.flush(10) == 0
    run = Running(broker, tmp_path / "proc", spec)
    run.wait_ready()
    produce(broker, [("a", b"4"), ("a", b"4"), ("a", b"4"), ("b", b"7"), ("c", b"1"), ("c", b"-1")])

    def outputs() -> list[dict]:
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": f"read-{time.monotonic_ns()}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
        consumer.assign([TopicPartition("capped", p, 0) for p in range(4)])
        got, ended = [], set()
        deadline = time.monotonic() + 10
        while len(ended) < 4 and time.monotonic() < deadline:
            for m in consumer.consume(100, 0.5):
                if m.error():
                    ended.add(m.partition())
                else:
                    got.append(JsonCodec().decode(m.value()))
        consumer.close()
        return got

    deadline = time.monotonic() + 30
    while len(outputs()) < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    run.stop()
    got = sorted((o["key"], o["n"]) for o in outputs())
    assert got == [("a", 4), ("a", 8), ("a", 10), ("b", 7), ("c", 1)]  # a capped by the joined table
    for state in (tmp_path / "proc", tmp_path / "fresh"):  # the same disk, then an empty one
        caps.produce("caps-table", JsonCodec().encode({"max": 1, "_offset": 1}), b"b", partition=partition_for(b"b", 4))
        assert caps.flush(10) == 0
        again = Running(broker, state, spec)
        again.wait_ready()
        produce(broker, [("b", b"5")])
        deadline = time.monotonic() + 30
        while len(outputs()) < (6 if state.name == "proc" else 7) and time.monotonic() < deadline:
            time.sleep(0.2)
        again.stop()
    got = [(o["key"], o["n"]) for o in outputs()]
    assert sorted(got).count(("b", 1)) == 2 and len(got) == 7, got  # the new cap read from the copy, each once
    view = View(settings(broker), "counter-table", CounterCodec(), tmp_path / "view")
    view.start()
    assert view.wait_caught_up(30)
    assert view.get("c") is None and view.get("a")["n"] == 10 and view.get("b")["n"] == 1
    view.stop()
