"""Reading a table's changelog into local stores: one follower for restores and views.

Goka's partition_table.go serves processors and views with one changelog-backed
table; here :class:`ChangelogFollower` is that shared half. It reads assigned
partitions of a changelog topic (``read_committed``: records of aborted or open
transactions are never seen), merges each batch into the stores with the
checkpoint that says how far they reach (one atomic write per store), and
classifies what the broker says into a few named outcomes. What to *do* about
them is the caller's: a restore stops at the end of every partition, a view keeps
following; both rebuild a partition whose checkpoint is outside the topic.

The checkpoint has one schema wherever it is kept: ``changelog_offset:<p>`` (the
next offset to read of partition ``p``) and ``changelog_topic_id`` (the topic
incarnation the store reflects), whether a store holds one partition (processors)
or all of them (views).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from walletkit.stream.codec import TableCodec, raw_applied_offset
from walletkit.stream.errors import SkipRecord, StreamError
from walletkit.stream.kafka import consume_ready
from walletkit.stream.store import Store

log = logging.getLogger(__name__)

#: Checkpoint metadata names (see the module doc).
CHANGELOG_TOPIC_ID = "changelog_topic_id"


def position_key(partition: int) -> str:
    """Metadata name of partition ``partition``'s changelog position."""
    return f"changelog_offset:{partition}"


def stored_position(store: Store, partition: int) -> int:
    """Next changelog offset of ``partition`` that ``store`` has not seen (0 when none)."""
    return max(store.meta_int(position_key(partition), 0), 0)


def stored_topic_id(store: Store) -> str | None:
    raw = store.meta(CHANGELOG_TOPIC_ID)
    return raw.decode() if raw is not None else None


def merge_changelog(
    store: Store, codec: TableCodec, records: Iterable[tuple[bytes, bytes | None]], meta: dict[str, Any]
) -> int:
    """Apply changelog records to ``store`` with ``meta``, in one write; return keys written.

    Per key the record with the highest applied offset wins, within the batch and
    against the stored value; a tombstone (``None``) deletes. This is the second line
    of defence behind transactions: a stale value that still reaches the changelog (a
    zombie without fencing) never replaces a newer one while both are in the log.
    """
    # key -> (applied offset, value or None for a tombstone, whether a tombstone came first in this batch)
    latest: dict[bytes, tuple[int, bytes | None, bool]] = {}
    applied = raw_applied_offset(codec)
    for key, value in records:
        if value is None:
            latest[key] = (-1, None, True)  # deletes; any later value in the batch replaces it
            continue
        try:
            off = applied(value)
        except SkipRecord as exc:
            log.warning("ignoring undecodable changelog record for key %r: %s", key, exc)
            continue
        prev = latest.get(key)
        if prev is None or prev[1] is None or off >= prev[0]:
            latest[key] = (off, value, prev is not None and prev[2])
    keys = list(latest)
    puts: list[tuple[bytes, bytes | None]] = []
    for key, current in zip(keys, store.get_many(keys)):
        off, value, after_tombstone = latest[key]
        if value is not None and not after_tombstone and current is not None and applied(current) > off:
            continue  # the stored value is newer: a stale (zombie) write
        puts.append((key, value))
    store.write(puts, meta)
    return len(puts)


class Outcome(enum.Enum):
    """What a consumer event means to a changelog reader."""

    END = "end"  # reached the partition's end (its last stable offset)
    OUT_OF_RANGE = "out_of_range"  # the checkpoint is not in the topic any more: rebuild
    TOPIC_GONE = "topic_gone"  # the topic was deleted
    TRANSIENT = "transient"  # retried by the client; log and go on


def classify(err: KafkaError) -> Outcome:
    """Name a consumer error; a fatal one raises :class:`StreamError`."""
    code = err.code()
    if code == KafkaError._PARTITION_EOF:
        return Outcome.END
    if code in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
        return Outcome.OUT_OF_RANGE
    if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION):
        return Outcome.TOPIC_GONE
    if err.fatal():
        raise StreamError(f"changelog reader: {err.str()}")
    return Outcome.TRANSIENT


@dataclass
class FollowedBatch:
    """What one :meth:`ChangelogFollower.poll` read and applied."""

    #: (key, value) of every record applied, in read order.
    records: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    #: Records applied per partition.
    counts: dict[int, int] = field(default_factory=dict)
    #: Timestamp (ms) of the first record of each partition in the batch.
    first_timestamps: dict[int, int] = field(default_factory=dict)
    #: Partitions that reached their end in this batch.
    ended: set[int] = field(default_factory=set)
    #: Partitions whose checkpoint is outside the topic (they are no longer followed).
    out_of_range: set[int] = field(default_factory=set)
    #: The topic disappeared.
    topic_gone: bool = False


class ChangelogFollower:
    """Follows partitions of changelog ``topic`` into stores with one reader consumer.

    ``assign({partition: store})`` starts each partition at its store's checkpoint;
    every :meth:`poll` merges what it read and moves the checkpoints with it. Several
    partitions may share one store (a view): they are then written together.
    """

    def __init__(self, consumer: Consumer, topic: str, codec: TableCodec, *, batch_size: int = 10_000) -> None:
        self.consumer = consumer
        self.topic = topic
        self.codec = codec
        self.batch_size = batch_size
        self._stores: dict[int, Store] = {}
        #: Next offset to read, per followed partition.
        self.positions: dict[int, int] = {}
        self._written: dict[int, int] = {}  # positions as the stores hold them
        self._assigned: set[int] = set()  # what the consumer is assigned
        #: Partitions read from offset 0: explicitly, since a start at "the beginning" costs
        #: an offset lookup (~0.5 s before the first fetch); out of range means the log no
        #: longer starts at 0, and they are read from its beginning instead.
        self._from_zero: set[int] = set()
        self.topic_id: str | None = None

    def assign(self, stores: dict[int, Store], topic_id: str) -> None:
        self._stores = dict(stores)
        self.topic_id = topic_id
        self.positions = {p: stored_position(store, p) for p, store in self._stores.items()}
        self._written = {p: off for p, off in self.positions.items() if stored_topic_id(self._stores[p]) == topic_id}
        self._from_zero = {p for p, off in self.positions.items() if off <= 0}
        self.consumer.assign([TopicPartition(self.topic, p, max(off, 0)) for p, off in self.positions.items()])
        self._assigned = set(self.positions)

    def add(self, stores: dict[int, Store]) -> None:
        """Follow these partitions too, each from its store's checkpoint; the others go on
        untouched (a full ``assign`` would restart them all, and their end-of-partition
        events with them). A partition already followed starts again from its checkpoint,
        so it reports its end once more."""
        again = [p for p in stores if p in self._assigned]
        if again:
            self.remove(again)
        tps = []
        for p, store in stores.items():
            self._stores[p] = store
            off = self.positions[p] = stored_position(store, p)
            if stored_topic_id(store) == self.topic_id:
                self._written[p] = off
            else:
                self._written.pop(p, None)
            if off <= 0:
                self._from_zero.add(p)
            tps.append(TopicPartition(self.topic, p, max(off, 0)))
        if tps:
            self.consumer.incremental_assign(tps)
            self._assigned.update(stores)

    def remove(self, partitions: Iterable[int]) -> None:
        """Stop following these partitions; the others go on untouched."""
        gone = [p for p in partitions if p in self._assigned]
        for p in partitions:
            self._stores.pop(p, None)
            self.positions.pop(p, None)
            self._written.pop(p, None)
            self._from_zero.discard(p)
        if gone:
            self.consumer.incremental_unassign([TopicPartition(self.topic, p) for p in gone])
            self._assigned.difference_update(gone)

    def unassign(self) -> None:
        self._from_zero = set()
        self._stores = {}
        self.positions = {}
        self._written = {}
        self._assigned = set()
        try:
            self.consumer.unassign()
        except KafkaException as exc:  # a closed or broken consumer has nothing assigned
            log.debug("unassign %s: %s", self.topic, exc)

    @property
    def partitions(self) -> set[int]:
        return set(self._stores)

    def poll(self, timeout: float, apply_lock: Any = None) -> FollowedBatch:
        """Read what is ready (waiting up to ``timeout`` only while nothing is) and apply it
        (holding ``apply_lock``, if given, only while writing)."""
        batch = FollowedBatch()
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for m in consume_ready(self.consumer, self.batch_size, timeout):
            err = m.error()
            p = m.partition()
            if err is not None:
                outcome = classify(err)
                if outcome is Outcome.END:
                    batch.ended.add(p)
                    # The end may lie past the last record (a transaction's commit marker):
                    # the position moves there, so a caught-up partition is 0 behind.
                    if p in self.positions and m.offset() > self.positions[p]:
                        self.positions[p] = m.offset()
                elif outcome is Outcome.OUT_OF_RANGE and p in self._from_zero:
                    self._from_zero.discard(p)  # nothing was read: start where the log starts
                    self.consumer.incremental_unassign([TopicPartition(self.topic, p)])
                    self.consumer.incremental_assign([TopicPartition(self.topic, p, OFFSET_BEGINNING)])
                elif outcome is Outcome.OUT_OF_RANGE:
                    batch.out_of_range.add(p)
                elif outcome is Outcome.TOPIC_GONE:
                    batch.topic_gone = True
                else:
                    log.warning("changelog %s: %s", self.topic, err.str())
                continue
            if p in batch.out_of_range or p not in self._stores:
                continue
            recs = by_partition.get(p)
            if recs is None:
                recs = by_partition[p] = []
                batch.first_timestamps[p] = m.timestamp()[1]
            recs.append((m.key(), m.value()))
            self.positions[p] = m.offset() + 1
        if apply_lock is None:
            self._apply(by_partition, batch)
        else:
            with apply_lock:
                self._apply(by_partition, batch)
        for p in batch.out_of_range:
            self._stores.pop(p, None)
        return batch

    def _apply(self, by_partition: dict[int, list[tuple[bytes, bytes | None]]], batch: FollowedBatch) -> None:
        # Partitions that share a store are merged in one write with all their checkpoints.
        groups: dict[int, tuple[Store, list[tuple[bytes, bytes | None]], dict[str, Any]]] = {}
        # A partition that ended without new records still gets its checkpoint once (an
        # empty partition records the topic id it was restored from).
        unwritten = {p for p in batch.ended & set(self._stores) if self._written.get(p) != self.positions[p]}
        for p in set(by_partition) | unwritten:
            store = self._stores[p]
            entry = groups.get(id(store))
            if entry is None:
                entry = groups[id(store)] = (store, [], {CHANGELOG_TOPIC_ID: self.topic_id})
            recs = by_partition.get(p, [])
            entry[1].extend(recs)
            entry[2][position_key(p)] = self._written[p] = self.positions[p]
            if recs:
                batch.counts[p] = len(recs)
                batch.records.extend(recs)
        for store, recs, meta in groups.values():
            merge_changelog(store, self.codec, recs, meta)

    def end_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        """The last fetched end (high watermark) of each partition, where one was fetched."""
        out = {}
        for p in partitions:
            try:
                _low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                out[p] = high
        return out

    def ask_end_offsets(self, partitions: Iterable[int], timeout: float = 1.0) -> dict[int, int]:
        """The end (high watermark) of each partition, asked of the broker now."""
        out = {}
        for p in partitions:
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)
            if high >= 0:
                out[p] = high
        return out

    def close(self) -> None:
        self.consumer.close()
