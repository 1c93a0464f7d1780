"""Recovery: bring a local store up to date with a table's changelog.

Used by processors (restoring a partition on assignment) and by views (following
a changelog). Both keep, per key, the value with the highest applied input offset:
a stale write that lands late in the changelog never replaces a newer value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from walletkit.stream import metrics
from walletkit.stream.codec import TableCodec, raw_applied_offset
from walletkit.stream.errors import RestoreError, SkipRecord
from walletkit.stream.kafka import consume_ready
from walletkit.stream.store import Store
from walletkit.stream.table import CHANGELOG_OFFSET, CHANGELOG_TOPIC_ID, TablePartition

log = logging.getLogger(__name__)


def merge_changelog(store: Store, codec: TableCodec, records: Iterable[tuple[bytes, bytes | None]],
                    meta: dict[str, Any]) -> int:
    """Apply changelog records to ``store`` with ``meta``, in one write; return keys written.

    Per key the record with the highest applied offset wins, within the batch and
    against the stored value; a tombstone (``None``) deletes.
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


class Restorer:
    """Restores table partitions from their changelog with one reader consumer.

    All partitions of an assignment are read together, so an assignment of many
    small partitions costs one round trip, not one per partition.
    """

    def __init__(self, consumer: Consumer, topic: str, codec: TableCodec, *, batch_size: int = 10_000,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
        self._consumer = consumer
        self.topic = topic
        self._codec = codec
        self._batch = batch_size
        self._should_stop = should_stop
        for metric in (metrics.RESTORED_RECORDS, metrics.RESTORE_SECONDS, metrics.RESTORE_REMAINING,
                       metrics.RESTORE_REMAINING_RECORDS):
            metric.labels(topic)  # present (zero) before the first restore

    def restore(self, parts: list[TablePartition], topic_id: str) -> int:
        """Catch every partition in ``parts`` up with the changelog's end; return records read.

        A store whose checkpoint names another topic id (the topic was deleted and
        recreated), or whose offset the broker reports out of range, is wiped and
        rebuilt from the beginning: local state ahead of the broker is never trusted.
        """
        started = time.monotonic()
        for part in parts:
            if part.changelog_topic_id != topic_id and not (part.changelog_topic_id is None and part.store.is_empty()):
                log.warning("table %s[%d]: local state belongs to another topic incarnation; rebuilding",
                            self.topic, part.partition)
                part.store.wipe()
        total = 0
        pending = list(parts)
        while pending:
            read, out_of_range = self._read(pending, topic_id)
            total += read
            for part in out_of_range:
                log.warning("table %s[%d]: local checkpoint %d is outside the changelog; rebuilding",
                            self.topic, part.partition, part.changelog_offset)
                part.store.wipe()
            pending = out_of_range
        elapsed = time.monotonic() - started
        if parts:
            metrics.RESTORE_SECONDS.labels(self.topic).observe(elapsed)
            log.info("table %s restored partitions %s: %d records in %.2fs", self.topic,
                     [p.partition for p in parts], total, elapsed)
        return total

    def _read(self, parts: list[TablePartition], topic_id: str) -> tuple[int, list[TablePartition]]:
        by_partition = {part.partition: part for part in parts}
        next_offset = {p: part.changelog_offset for p, part in by_partition.items()}
        consumer = self._consumer
        consumer.assign([TopicPartition(self.topic, p, off if off > 0 else OFFSET_BEGINNING)
                         for p, off in next_offset.items()])
        pending = set(by_partition)
        out_of_range: set[int] = set()
        total = 0
        last_log = time.monotonic()
        remaining = metrics.RESTORE_REMAINING.labels(self.topic)
        remaining.set(len(pending))
        remaining_records = metrics.RESTORE_REMAINING_RECORDS.labels(self.topic)
        try:
            while pending - out_of_range:
                if self._should_stop():
                    raise RestoreError(f"restore of {self.topic} interrupted by shutdown")
                msgs = consume_ready(consumer, self._batch, 0.1)
                records: dict[int, list[tuple[bytes, bytes | None]]] = {}
                finished: set[int] = set()
                for m in msgs:
                    err = m.error()
                    p = m.partition()
                    if err is not None:
                        code = err.code()
                        if code == KafkaError._PARTITION_EOF:
                            finished.add(p)
                        elif code in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                            out_of_range.add(p)
                        elif err.fatal():
                            raise RestoreError(f"restoring {self.topic}: {err.str()}")
                        else:
                            log.warning("restoring %s: %s", self.topic, err.str())
                        continue
                    if p in out_of_range:
                        continue
                    records.setdefault(p, []).append((m.key(), m.value()))
                    next_offset[p] = m.offset() + 1
                for p in set(records) | (finished & pending):
                    recs = records.get(p, [])
                    merge_changelog(by_partition[p].store, self._codec, recs,
                                    {CHANGELOG_OFFSET: next_offset[p], CHANGELOG_TOPIC_ID: topic_id})
                    total += len(recs)
                    metrics.RESTORED_RECORDS.labels(self.topic).inc(len(recs))
                pending -= finished
                remaining.set(len(pending))
                remaining_records.set(self._records_to_go(pending - out_of_range, next_offset))
                if time.monotonic() - last_log > 5:
                    last_log = time.monotonic()
                    log.info("restoring %s: %d records so far, %d partitions to go", self.topic, total, len(pending))
        finally:
            consumer.unassign()
            remaining.set(0)
            remaining_records.set(0)
        return total, [by_partition[p] for p in sorted(out_of_range)]

    def _records_to_go(self, partitions: set[int], next_offset: dict[int, int]) -> int:
        """Records between each partition's restore position and the last fetch's high watermark."""
        total = 0
        for p in partitions:
            try:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                total += max(high - max(next_offset[p], low), 0)
        return total
