"""Recovery: bring a processor's table partitions up to date with their changelog.

A :class:`Restorer` reads with a :class:`~walletkit.stream.changelog.ChangelogFollower`
(the reader views use too) until every partition reached its end, and decides what a
partition whose local state cannot be trusted needs: a store of another topic
incarnation, or whose checkpoint the broker reports out of range, is wiped and
rebuilt from the beginning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Consumer

from walletkit.stream import metrics
from walletkit.stream.changelog import ChangelogFollower
from walletkit.stream.codec import TableCodec
from walletkit.stream.errors import RestoreError
from walletkit.stream.table import TablePartition

log = logging.getLogger(__name__)


class Restorer:
    """Restores table partitions from their changelog with one reader consumer.

    All partitions of an assignment are read together, so an assignment of many
    small partitions costs one round trip, not one per partition.
    """

    def __init__(self, consumer: Consumer, topic: str, codec: TableCodec, *, batch_size: int = 10_000,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
        self.follower = ChangelogFollower(consumer, topic, codec, batch_size=batch_size)
        self.topic = topic
        self._should_stop = should_stop
        for metric in (metrics.RESTORED_RECORDS, metrics.RESTORE_SECONDS, metrics.RESTORE_REMAINING,
                       metrics.RESTORE_REMAINING_RECORDS):
            metric.labels(topic)  # present (zero) before the first restore

    def restore(self, parts: list[TablePartition], topic_id: str) -> int:
        """Catch every partition in ``parts`` up with the changelog's end; return records read."""
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
        follower = self.follower
        follower.assign({p: part.store for p, part in by_partition.items()}, topic_id)
        pending = set(by_partition)
        out_of_range: set[int] = set()
        total = 0
        last_log = time.monotonic()
        remaining = metrics.RESTORE_REMAINING.labels(self.topic)
        remaining.set(len(pending))
        remaining_records = metrics.RESTORE_REMAINING_RECORDS.labels(self.topic)
        restored = metrics.RESTORED_RECORDS.labels(self.topic)
        try:
            while pending:
                if self._should_stop():
                    raise RestoreError(f"restore of {self.topic} interrupted by shutdown")
                batch = follower.poll(0.1)
                if batch.topic_gone:
                    raise RestoreError(f"changelog {self.topic} disappeared during the restore")
                read = sum(batch.counts.values())
                total += read
                restored.inc(read)
                out_of_range |= batch.out_of_range
                pending -= batch.ended | batch.out_of_range
                remaining.set(len(pending))
                ends = follower.end_offsets(pending)
                remaining_records.set(sum(max(end - follower.positions[p], 0) for p, end in ends.items()))
                if time.monotonic() - last_log > 5:
                    last_log = time.monotonic()
                    log.info("restoring %s: %d records so far, %d partitions to go", self.topic, total, len(pending))
        finally:
            follower.unassign()
            remaining.set(0)
            remaining_records.set(0)
        return total, [by_partition[p] for p in sorted(out_of_range)]

    def close(self) -> None:
        self.follower.close()
