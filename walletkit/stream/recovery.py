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

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from walletkit.stream import metrics
from walletkit.stream.codec import TableCodec
from walletkit.stream.errors import RestoreError, SkipRecord
from walletkit.stream.store import Store
from walletkit.stream.table import CHANGELOG_OFFSET, CHANGELOG_TOPIC_ID, TablePartition

log = logging.getLogger(__name__)

_TOMBSTONE_OFFSET = 1 << 62


def merge_changelog(store: Store, codec: TableCodec, records: Iterable[tuple[bytes, bytes | None]],
                    meta: dict[str, Any]) -> int:
    """Apply changelog records to ``store`` with ``meta``, in one write; return keys written.

    Per key the record with the highest applied offset wins, within the batch and
    against the stored value; a tombstone (``None``) deletes.
    """
    latest: dict[bytes, tuple[int, bytes | None]] = {}
    decode, applied = codec.decode, codec.applied_offset
    for key, value in records:
        if value is None:
            latest[key] = (_TOMBSTONE_OFFSET, None)
            continue
        try:
            off = applied(decode(value))
        except SkipRecord as exc:
            log.warning("ignoring undecodable changelog record for key %r: %s", key, exc)
            continue
        prev = latest.get(key)
        if prev is None or off >= prev[0]:
            latest[key] = (off, value)
    keys = list(latest)
    puts: list[tuple[bytes, bytes | None]] = []
    for key, current in zip(keys, store.get_many(keys)):
        off, value = latest[key]
        if value is not None and current is not None and applied(decode(current)) > off:
            continue  # the stored value is newer: a stale (zombie) write
        puts.append((key, value))
    store.write(puts, meta)
    return len(puts)


class Restorer:
    """Restores table partitions from their changelog with one reader consumer."""

    def __init__(self, consumer: Consumer, topic: str, codec: TableCodec, *, batch_size: int = 10_000,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
        self._consumer = consumer
        self.topic = topic
        self._codec = codec
        self._batch = batch_size
        self._should_stop = should_stop

    def restore(self, part: TablePartition, topic_id: str) -> int:
        """Catch ``part`` up with the changelog's end; return records read.

        A store whose checkpoint names another topic id (the topic was deleted and
        recreated), or whose offset the broker reports out of range, is wiped and
        rebuilt from the beginning: local state ahead of the broker is never trusted.
        """
        started = time.monotonic()
        if part.changelog_topic_id not in (None, topic_id) or (part.changelog_topic_id is None and not part.store.is_empty()):
            log.warning("table %s[%d]: local state belongs to another topic incarnation; rebuilding",
                        self.topic, part.partition)
            part.store.wipe()
        try:
            total = self._read(part, topic_id)
        except _OutOfRange:
            log.warning("table %s[%d]: local checkpoint %d is outside the changelog; rebuilding",
                        self.topic, part.partition, part.changelog_offset)
            part.store.wipe()
            total = self._read(part, topic_id)
        elapsed = time.monotonic() - started
        metrics.RESTORE_SECONDS.labels(self.topic).observe(elapsed)
        log.info("table %s[%d] restored: %d records in %.2fs, next offset %d",
                 self.topic, part.partition, total, elapsed, part.changelog_offset)
        return total

    def _read(self, part: TablePartition, topic_id: str) -> int:
        start = part.changelog_offset
        consumer = self._consumer
        consumer.assign([TopicPartition(self.topic, part.partition, start if start > 0 else OFFSET_BEGINNING)])
        total = 0
        next_offset = start
        last_log = time.monotonic()
        try:
            while True:
                if self._should_stop():
                    raise RestoreError(f"restore of {self.topic}[{part.partition}] interrupted by shutdown")
                msgs = consumer.consume(self._batch, 0.5)
                records: list[tuple[bytes, bytes | None]] = []
                done = False
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            done = True
                            continue
                        if err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                            raise _OutOfRange()
                        if err.fatal():
                            raise RestoreError(f"restoring {self.topic}[{part.partition}]: {err.str()}")
                        log.warning("restoring %s[%d]: %s", self.topic, part.partition, err.str())
                        continue
                    records.append((m.key(), m.value()))
                    next_offset = m.offset() + 1
                if records or done:
                    merge_changelog(part.store, self._codec, records,
                                    {CHANGELOG_OFFSET: next_offset, CHANGELOG_TOPIC_ID: topic_id})
                    total += len(records)
                    metrics.RESTORED_RECORDS.labels(self.topic).inc(len(records))
                if done:
                    return total
                if time.monotonic() - last_log > 5:
                    last_log = time.monotonic()
                    log.info("restoring %s[%d]: %d records so far, at offset %d",
                             self.topic, part.partition, total, next_offset)
        finally:
            consumer.unassign()


class _OutOfRange(Exception):
    pass
