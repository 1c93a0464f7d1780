"""A tester for processor groups: records in, table values and changelog out, no broker.

In the spirit of Goka's ``tester`` and Kafka Streams' TopologyTestDriver: a
:class:`Tester` runs a :class:`~walletkit.stream.processor.GroupSpec`'s callbacks through
the same parts a processor member uses (the :class:`~walletkit.stream.batch.BatchRunner`,
the :class:`~walletkit.stream.checkpoint.Checkpoint` and the real
:class:`~walletkit.stream.checkpoint.ChangelogWriter`, tables in RocksDB) over
:class:`MemoryLog`, an in-memory stand-in for the broker's logs, transactions and group
offsets. So a test can feed records, read the table and what its changelog holds, and crash
the member between any two steps of a batch, then restart it and see what a real restart
would: the stores as the crash left them, restored from the committed changelog; the input
resumed at the committed offsets; an open transaction aborted by the next registration::

    t = Tester(balance_group())
    t.feed("w1", deposit(5))
    t.process()
    assert t.value("w1").Balance == 5
    t.feed("w1", deposit(1))
    t.process(crash_at="after_commit")   # committed, the store not written yet
    t.restart()                          # the store restored from the changelog
    t.process()                          # the record is a replay now: not counted again

``MemoryLog`` imitates what the toolkit relies on (read_committed reads, transactions that
commit records and offsets together, fencing by transactional id), not Kafka's protocol:
the suites that prove the toolkit against a broker run Apache Kafka.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, KafkaError, KafkaException, TopicPartition

from walletkit.stream.batch import Batch, BatchRunner
from walletkit.stream.changelog import merge_changelog, stored_position
from walletkit.stream.checkpoint import ChangelogWriter, Checkpoint, CheckpointFailed, Guarantee
from walletkit.stream.group import GroupSpec
from walletkit.stream.partitioner import partition_for
from walletkit.stream.processor import DEFAULT_MAX_VALUE_BYTES
from walletkit.stream.store import Store
from walletkit.stream.table import TablePartition

#: The crash points of a batch (see walletkit.stream.faults.POINTS), in the order a batch passes them.
CRASH_POINTS = ("after_changelog", "after_commit", "after_store")


class Crashed(Exception):
    """The member stopped at a crash point (``Tester.process(crash_at=...)``); ``restart()`` it."""


@dataclass
class Record:
    """One record in a :class:`MemoryLog`, with the accessors of a consumed Kafka message."""

    topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _timestamp: int
    _headers: list[tuple[str, bytes]] | None = None
    txn: _Transaction | None = None  # None: written outside a transaction (or committed)

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_LOG_APPEND_TIME, self._timestamp

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


class _Transaction:
    def __init__(self) -> None:
        self.state = "open"  # open, committed, aborted
        self.offsets: dict[tuple[str, int], int] = {}
        self.group: str | None = None


class MemoryLog:
    """Topics of partitions of records, transactions and committed group offsets, in memory.

    Reads are read_committed: records of open or aborted transactions are not seen.
    """

    def __init__(self) -> None:
        self.topics: dict[str, list[list[Record]]] = {}
        #: (group, topic, partition) -> next offset to consume.
        self.committed: dict[tuple[str, str, int], int] = {}
        self._epochs: dict[str, int] = {}  # transactional id -> current epoch
        self._open: dict[str, _Transaction] = {}  # transactional id -> its open transaction
        self.clock_ms = int(time.time() * 1000)

    def create(self, topic: str, partitions: int) -> None:
        self.topics.setdefault(topic, [[] for _ in range(partitions)])

    def append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        txn: _Transaction | None = None,
        timestamp_ms: int | None = None,
    ) -> Record:
        log = self.topics[topic][partition]
        self.clock_ms += 1
        record = Record(
            topic,
            partition,
            len(log),
            key,
            value,
            timestamp_ms if timestamp_ms is not None else self.clock_ms,
            headers,
            txn,
        )
        log.append(record)
        return record

    def read(self, topic: str, partition: int, start: int = 0) -> list[Record]:
        """The committed records of ``topic[partition]`` from ``start`` on, up to the first one
        still in an open transaction (the last stable offset)."""
        out = []
        for record in self.topics[topic][partition][start:]:
            if record.txn is not None:
                if record.txn.state == "open":
                    break
                if record.txn.state == "aborted":
                    continue
            out.append(record)
        return out

    def latest(self, topic: str, key: bytes) -> bytes | None:
        """The committed value of ``key`` last written to ``topic`` (as compaction keeps it)."""
        value = None
        for partition in range(len(self.topics[topic])):
            for record in self.read(topic, partition):
                if record.key() == key:
                    value = record.value()
        return value

    # -- transactions (called by MemoryProducer) ---------------------------------

    def register(self, transactional_id: str) -> int:
        """A new epoch for ``transactional_id``: the previous producer is fenced, its open
        transaction aborted."""
        left = self._open.pop(transactional_id, None)
        if left is not None:
            left.state = "aborted"
        self._epochs[transactional_id] = epoch = self._epochs.get(transactional_id, 0) + 1
        return epoch

    def check_epoch(self, transactional_id: str, epoch: int) -> None:
        if self._epochs.get(transactional_id) != epoch:
            raise KafkaException(KafkaError(KafkaError._FENCED, "producer fenced by a newer instance", fatal=True))

    def begin(self, transactional_id: str) -> _Transaction:
        txn = self._open[transactional_id] = _Transaction()
        return txn

    def end(self, transactional_id: str, txn: _Transaction, commit: bool) -> None:
        self._open.pop(transactional_id, None)
        txn.state = "committed" if commit else "aborted"
        if commit and txn.group is not None:
            for (topic, partition), offset in txn.offsets.items():
                self.committed[(txn.group, topic, partition)] = offset


class MemoryProducer:
    """The calls the toolkit makes of a ``confluent_kafka.Producer``, over a :class:`MemoryLog`."""

    def __init__(self, log: MemoryLog, **config: Any) -> None:
        self._log = log
        self._tid: str | None = config.get("transactional.id")
        self._epoch = 0
        self._txn: _Transaction | None = None
        self._pending: list[tuple[Any, Record]] = []

    def _check(self) -> None:
        if self._tid is not None:
            self._log.check_epoch(self._tid, self._epoch)

    def init_transactions(self, timeout: float | None = None) -> None:
        self._epoch = self._log.register(self._tid)

    def begin_transaction(self) -> None:
        self._check()
        self._txn = self._log.begin(self._tid)

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        on_delivery: Any = None,
        headers: list[tuple[str, bytes]] | None = None,
        **_: Any,
    ) -> None:
        self._check()
        if self._tid is not None and self._txn is None:
            raise KafkaException(KafkaError(KafkaError._STATE, "produce outside a transaction"))
        if partition < 0:
            partition = partition_for(key or b"", len(self._log.topics[topic]))
        record = self._log.append(topic, partition, key, value, headers, self._txn)
        self._pending.append((on_delivery, record))

    def poll(self, timeout: float = 0) -> int:
        pending, self._pending = self._pending, []
        for on_delivery, record in pending:
            if on_delivery is not None:
                on_delivery(None, record)
        return len(pending)

    def flush(self, timeout: float | None = None) -> int:
        self.poll()
        return 0

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group_metadata: Any, timeout: float | None = None
    ) -> None:
        self._check()
        self._txn.group = group_metadata
        self._txn.offsets.update({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def commit_transaction(self, timeout: float | None = None) -> None:
        self._check()
        self.flush()
        self._log.end(self._tid, self._txn, commit=True)
        self._txn = None

    def abort_transaction(self, timeout: float | None = None) -> None:
        self._check()
        self._pending.clear()
        self._log.end(self._tid, self._txn, commit=False)
        self._txn = None

    def purge(self, in_queue: bool = True, in_flight: bool = True) -> None:
        self._pending.clear()


class _Member:
    """The consumer calls a Checkpoint makes: its identity, and a rewind."""

    def __init__(self, tester: Tester) -> None:
        self._tester = tester

    def memberid(self) -> str:
        return "tester"

    def seek(self, tp: TopicPartition) -> None:
        self._tester._position[tp.partition] = tp.offset


class _CrashAt:
    def __init__(self, point: str | None) -> None:
        if point is not None and point not in CRASH_POINTS:
            raise ValueError(f"unknown crash point {point!r}; known: {', '.join(CRASH_POINTS)}")
        self.point = point

    def maybe_crash(self, point: str) -> None:
        if point == self.point:
            raise Crashed(point)


class Tester:
    """One member of ``spec.group`` owning every partition, over a :class:`MemoryLog`.

    ``feed`` appends input records; ``process`` runs what is not consumed yet as batches of at
    most ``batch_size``; ``value``/``changelog`` read the table and its changelog;
    ``restart`` is a crash and a restart on the same disk (``lose_state=True``: on an empty one).
    """

    __test__ = False  # not a test class, though its name says Test

    def __init__(
        self,
        spec: GroupSpec,
        *,
        partitions: int = 1,
        guarantee: Guarantee = Guarantee.EXACTLY_ONCE,
        max_value_bytes: int | None = DEFAULT_MAX_VALUE_BYTES,
        batch_size: int = 10_000,
        directory: str | Path | None = None,
    ) -> None:
        self.spec = spec
        self.partitions = partitions
        self.guarantee = Guarantee(guarantee)
        self.max_value_bytes = max_value_bytes
        self.batch_size = batch_size
        self.log = MemoryLog()
        self.log.create(spec.input_topic, partitions)
        self.log.create(spec.table_topic, partitions)
        for topic in (*spec.outputs, *spec.joins):
            self.log.create(topic, partitions)
        self._own_directory = directory is None
        self.directory = (
            Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="walletkit-tester-"))
        )
        self._runner = BatchRunner(spec)
        self.tables: dict[int, TablePartition] = {}
        #: Each partition's copies of the joined tables (GroupSpec.joins), by topic.
        self.joined: dict[int, dict[str, TablePartition]] = {}
        self._writer: ChangelogWriter | None = None
        self._position: dict[int, int] = {}
        self._crashed = False
        self._start()

    # -- life ----------------------------------------------------------------------

    def _start(self) -> None:
        """Open the stores, restore them from the committed changelog, register the writer."""
        spec = self.spec
        for p in range(self.partitions):
            table = TablePartition(
                Store(self.directory / str(p)), spec.table_codec, p, max_value_bytes=self.max_value_bytes
            )
            self._catch_up(table, spec.table_topic)  # a restore: the committed changelog's tail
            self.tables[p] = table
            self.joined[p] = {
                topic: TablePartition(Store(self.directory / "joined" / topic / str(p)), codec, p)
                for topic, codec in spec.joins.items()
            }
            self._position[p] = max(self.log.committed.get((spec.group, spec.input_topic, p), 0), 0)
        self._writer = ChangelogWriter(
            lambda **config: MemoryProducer(self.log, **config),
            spec.group,
            self.guarantee,
            transactional_id=f"{spec.group}-tester",
        )
        self._writer.start()
        self._crashed = False

    def _follow_joined(self) -> None:
        """Bring the joined copies up to their changelogs (a member follows them between batches)."""
        for copies in self.joined.values():
            for topic, copy in copies.items():
                self._catch_up(copy, topic)

    def _catch_up(self, table: TablePartition, topic: str) -> None:
        """Merge what ``topic`` committed past the table's stored position into it, as a restore does."""
        p = table.partition
        tail = self.log.read(topic, p, stored_position(table.store, p))
        if tail:
            merge_changelog(
                table.store, table.codec, [(r.key(), r.value()) for r in tail], table.checkpoint(tail[-1].offset() + 1)
            )

    def restart(self, *, lose_state: bool = False) -> None:
        """Stop as a crash does (nothing flushed or committed that was not), and start again on the
        same stores, or on empty ones with ``lose_state``."""
        self._close_tables()
        self._writer = None  # dropped as a killed process drops it: its open transaction stays open
        if lose_state:
            shutil.rmtree(self.directory, ignore_errors=True)
        self._start()

    def _close_tables(self) -> None:
        for table in [*self.tables.values(), *(c for copies in self.joined.values() for c in copies.values())]:
            table.close()
        self.tables.clear()
        self.joined.clear()

    def close(self) -> None:
        self._close_tables()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Tester:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- records in ------------------------------------------------------------------

    def feed(
        self,
        key: str,
        value: Any,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Record:
        """Append one input record (``value`` encoded with the group's input codec unless it is
        bytes), to the key's partition as the toolkit's partitioner places it."""
        raw = value if isinstance(value, bytes) or value is None else self.spec.input_codec.encode(value)
        p = partition if partition is not None else partition_for(key.encode(), self.partitions)
        return self.log.append(
            self.spec.input_topic,
            p,
            key.encode(),
            raw,
            [(k, v.encode()) for k, v in headers.items()] if headers else None,
            timestamp_ms=timestamp_ms,
        )

    def put(self, topic: str, key: str, value: Any) -> Record:
        """Write ``value`` (None: a tombstone) for ``key`` to joined table ``topic``'s changelog,
        as the group that owns that table would; the member's copy follows it before each batch."""
        codec = self.spec.joins[topic]
        raw = codec.encode(value) if value is not None else None
        return self.log.append(topic, partition_for(key.encode(), self.partitions), key.encode(), raw)

    def process(self, *, crash_at: str | None = None) -> list[Batch]:
        """Process every record not consumed yet; the batches run (a failed one is rewound and
        not listed). ``crash_at``: stop the first batch at that point and raise :class:`Crashed`."""
        if self._crashed:
            raise RuntimeError("the member crashed: restart() it first")
        done = []
        while True:
            msgs = self._next_batch()
            if not msgs:
                return done
            self._follow_joined()
            batch = self._runner.run(msgs, self.tables, self.joined)
            try:
                if self._flush(batch, _CrashAt(crash_at)):
                    done.append(batch)
            except Crashed:
                self._crashed = True
                raise

    def _next_batch(self) -> list[Record]:
        msgs: list[Record] = []
        for p in range(self.partitions):
            msgs += self.log.read(self.spec.input_topic, p, self._position[p])[: self.batch_size - len(msgs)]
        for m in msgs:
            self._position[m.partition()] = m.offset() + 1
        return msgs

    def _flush(self, batch: Batch, crash: _CrashAt) -> bool:
        spec = self.spec
        if not batch.txns:
            return True
        member = ("tester", spec.group if self.guarantee is Guarantee.EXACTLY_ONCE else None)
        checkpoint = Checkpoint(
            batch.txns,
            self._writer,
            _Member(self),
            input_topic=spec.input_topic,
            table_topic=spec.table_topic,
            member=member,
            faults=crash,
            output_partitions={topic: self.partitions for topic in spec.outputs},
        )
        try:
            checkpoint.prepare()
            checkpoint.commit()
        except CheckpointFailed as exc:
            checkpoint.abort(exc, set(self.tables))
            return False
        for p, offset in checkpoint.flush().items():  # applied-offsets: the consumer's commit
            self.log.committed[(spec.group, spec.input_topic, p)] = offset
        return True

    # -- what came out -------------------------------------------------------------------

    def value(self, key: str) -> Any | None:
        """The key's value in the member's table (as stored: what a restart would find)."""
        table = self.tables[partition_for(key.encode(), self.partitions)]
        raw = table.store.get(key.encode())
        return self.spec.table_codec.decode(raw) if raw is not None else None

    def changelog(self, key: str) -> Any | None:
        """The key's last committed value in the group's changelog topic (what views and restores read)."""
        raw = self.log.latest(self.spec.table_topic, key.encode())
        return self.spec.table_codec.decode(raw) if raw is not None else None

    def emitted(self, topic: str) -> list[tuple[str, Any | None]]:
        """The committed records the group emitted to ``topic``: (key, decoded value or None), in
        offset order per partition, partitions in order."""
        codec = self.spec.outputs[topic]
        return [
            (r.key().decode(), codec.decode(r.value()) if r.value() is not None else None)
            for p in range(len(self.log.topics[topic]))
            for r in self.log.read(topic, p)
        ]

    def committed(self, partition: int = 0) -> int:
        """The group's committed input offset of ``partition`` (-1: none)."""
        return self.log.committed.get((self.spec.group, self.spec.input_topic, partition), -1)
