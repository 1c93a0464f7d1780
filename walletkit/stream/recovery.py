"""Recovery: bring table partitions up to date with their changelog, a step at a time.

A :class:`Restorer` follows two kinds of partitions with one reader consumer (a
:class:`~walletkit.stream.changelog.ChangelogFollower`, the reader views use too):

- *restoring*: assigned to this member and paused in its group consumer until they reached
  their changelog's end; :meth:`Restorer.step` reports each as it gets there;
- *standby*: warm copies of partitions another member owns, followed for as long as they
  are kept, so that taking one over restores only the tail (see ``standby.py``).

Nothing here blocks for longer than the ``budget`` a step is given: the processor calls
``step()`` from its main loop between polls of its group consumer, so a restore of any
length never outlasts ``max.poll.interval.ms`` and never holds up the partitions that are
ready. A partition's progress lives in its store (the changelog position is written with
every batch), so a rebalance that hands it back resumes the restore where it was.

A partition whose local state cannot be trusted is wiped and read from the beginning: a
store of another topic incarnation, or one whose checkpoint the broker reports out of range.

A restoring partition is done only at its log's end, not merely at the end a
``read_committed`` reader sees (its last stable offset). A member that died inside a
transaction leaves it open until the broker aborts it (``transaction.timeout.ms``), and
until then the last stable offset stays at that transaction's first record, while the
committed transactions of the owners after it lie beyond. Resuming the group's committed
offset on a table restored only that far would build every later value on stale ones, so
the partition waits (``log_ends`` tells where each log really ends) and is read again
once the transaction is over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException

from walletkit.stream import metrics
from walletkit.stream.changelog import ChangelogFollower
from walletkit.stream.codec import TableCodec
from walletkit.stream.errors import RestoreError
from walletkit.stream.table import TablePartition

log = logging.getLogger(__name__)

#: Seconds between two progress lines of a running restore.
PROGRESS_INTERVAL = 5.0
#: Seconds between two looks at a restored partition that waits for an open transaction.
WAIT_RECHECK_INTERVAL = 0.5


@dataclass
class _Progress:
    """One partition's restore: where it began, how far it got."""

    started: float
    first_position: int
    read: int = 0


class Restorer:
    """Restores and warms table partitions of changelog ``topic`` (see the module doc)."""

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        codec: TableCodec,
        *,
        batch_size: int = 10_000,
        should_stop: Callable[[], bool] = lambda: False,
        log_ends: Callable[[list[int]], dict[int, int]] | None = None,
    ) -> None:
        self.follower = ChangelogFollower(consumer, topic, codec, batch_size=batch_size)
        self.topic = topic
        self._should_stop = should_stop
        #: Log end of each partition, open transactions included (None: the changelog is not
        #: written in transactions, so a reader's end is the log's end).
        self._log_ends = log_ends
        #: Restoring partitions at their readable end, waiting for an open transaction to end:
        #: partition -> when to read it again.
        self.waiting: dict[int, float] = {}
        self._ends_failure_logged = 0.0
        #: Log ends asked of the broker for partitions no fetch has answered for yet.
        self._asked_ends: dict[int, int] = {}
        self._ends_asked = 0.0
        self._held: set[int] = set()  # waiting partitions seen held back by an open transaction
        self._topic_id: str | None = None
        self.restoring: dict[int, TablePartition] = {}
        self.standby: dict[int, TablePartition] = {}
        self._progress: dict[int, _Progress] = {}
        self._assigned: dict[int, TablePartition] = {}  # what the follower follows now
        self._last_log = 0.0
        self._restore_started = 0.0
        #: Changelog records read into restoring partitions, in total.
        self.records_restored = 0
        self._at_end: set[int] = set()  # followed partitions whose last read reached their end
        self._m_restored = metrics.RESTORED_RECORDS.labels(topic)
        self._m_standby = metrics.STANDBY_RECORDS.labels(topic)
        self._m_remaining = metrics.RESTORE_REMAINING.labels(topic)
        self._m_waiting = metrics.RESTORE_WAITING.labels(topic)
        self._m_remaining_records = metrics.RESTORE_REMAINING_RECORDS.labels(topic)
        self._m_progress = metrics.RESTORE_PROGRESS.labels(topic)
        self._m_eta = metrics.RESTORE_ETA.labels(topic)
        self._m_standby_partitions = metrics.STANDBY_PARTITIONS.labels(topic)
        self._m_standby_lag = metrics.STANDBY_LAG.labels(topic)
        metrics.RESTORE_SECONDS.labels(topic)  # present (zero) before the first restore
        self._m_progress.set(1)

    # -- what to follow ----------------------------------------------------------

    def follow(self, restoring: dict[int, TablePartition], standby: dict[int, TablePartition], topic_id: str) -> None:
        """Follow these partitions from now on; restores already under way go on where they are."""
        self._topic_id = topic_id
        standby = {p: part for p, part in standby.items() if p not in restoring}
        now = time.monotonic()
        wiped: set[int] = set()
        for p, part in {**restoring, **standby}.items():
            if part.changelog_topic_id != topic_id and not (part.changelog_topic_id is None and part.store.is_empty()):
                log.warning("table %s[%d]: local state belongs to another topic incarnation; rebuilding", self.topic, p)
                part.store.wipe()
                wiped.add(p)
        for p, part in restoring.items():
            if p not in self._progress:
                self._progress[p] = _Progress(now, part.changelog_offset)
        for p in list(self._progress):
            if p not in restoring:
                del self._progress[p]
        self._asked_ends = {p: end for p, end in self._asked_ends.items() if p in restoring}
        for p in list(self.waiting):
            if p not in restoring:
                del self.waiting[p]
        self._held &= set(restoring)
        if restoring and not self.restoring:
            self._restore_started = now
            self._restore_first_count = self.records_restored
            self._restore_parts: set[int] = set()
        if restoring:
            self._restore_parts |= set(restoring)
        # A standby copy taken over starts again from its checkpoint, so that it reports its
        # end after it became restoring, not before.
        again = {p for p in restoring if p in self._assigned and p not in self.restoring} | wiped
        self.restoring, self.standby = dict(restoring), standby
        self._sync(again)

    def _sync(self, again: set[int] = frozenset()) -> None:
        """Follow exactly the restoring and standby partitions, touching only those that changed."""
        wanted = {**self.restoring, **self.standby}
        follower = self.follower
        restarted = {p for p in wanted if p not in self._assigned or p in again}
        if follower.topic_id != self._topic_id:
            follower.assign({p: part.store for p, part in wanted.items()}, self._topic_id or "")
            restarted = set(wanted)
        else:
            follower.remove([p for p in self._assigned if p not in wanted])
            follower.add({p: part.store for p, part in wanted.items() if p in restarted})
        self._assigned = wanted
        self._at_end &= set(wanted) - restarted
        self._m_standby_partitions.set(len(self.standby))
        self._report(force=False)

    @property
    def busy(self) -> bool:
        return bool(self._assigned)

    # -- reading -------------------------------------------------------------------

    def step(self, budget: float) -> list[int]:
        """Read for up to ``budget`` seconds (less once nothing is ready); the restoring
        partitions that reached their changelog's end, which are no longer followed."""
        if not self._assigned:
            return []
        deadline = time.monotonic() + budget
        finished: list[int] = []
        self._recheck_waiting()
        while True:
            if self._should_stop():
                raise RestoreError(f"restore of {self.topic} interrupted by shutdown")
            batch = self.follower.poll(0 if finished else min(0.05, budget))
            if batch.topic_gone:
                raise RestoreError(f"changelog {self.topic} disappeared during the restore")
            self._at_end.difference_update(batch.counts)
            self._at_end.update(batch.ended)
            for p, n in batch.counts.items():
                progress = self._progress.get(p)
                if progress is not None:
                    progress.read += n
                    self.records_restored += n
                    self._m_restored.inc(n)
                else:
                    self._m_standby.inc(n)
            if batch.out_of_range:
                for p in sorted(batch.out_of_range):
                    part = self._assigned[p]
                    log.warning(
                        "table %s[%d]: local checkpoint %d is outside the changelog; rebuilding",
                        self.topic,
                        p,
                        part.changelog_offset,
                    )
                    part.store.wipe()
                    if p in self._progress:
                        self._progress[p] = _Progress(time.monotonic(), 0)
                self._sync(set(batch.out_of_range))
                continue
            done = self._settled(sorted(batch.ended & set(self.restoring)))
            if done:
                finished.extend(done)
                self._finish(done)
            if not batch.counts or time.monotonic() >= deadline:
                break
        self._report(force=bool(finished))
        return finished

    def _settled(self, ended: list[int]) -> list[int]:
        """Of the restoring partitions a reader just saw the end of, those at their log's end;
        the others wait for the transaction that holds them (see the module doc)."""
        if not ended or self._log_ends is None:
            return ended
        try:
            ends = self._log_ends(ended)
        except (KafkaException, TimeoutError) as exc:  # asked again shortly
            now = time.monotonic()
            if now - self._ends_failure_logged >= PROGRESS_INTERVAL:
                self._ends_failure_logged = now
                log.info("table %s: log ends of %s not readable now (%s); asking again", self.topic, ended, exc)
            ends = {}
        settled = []
        for p in ended:
            position, end = self.follower.positions.get(p, 0), ends.get(p)
            if end is not None and position >= end:
                settled.append(p)
                self.waiting.pop(p, None)
                if p in self._held:
                    self._held.discard(p)
                    log.info("table %s[%d]: the open transaction ended; the partition is restored", self.topic, p)
                continue
            if p not in self._held and end is not None:
                self._held.add(p)
                log.warning(
                    "table %s[%d]: restored up to offset %d, but the log ends at %d: a transaction an "
                    "earlier owner left open holds the rest back; waiting for it to end (the broker "
                    "aborts it after transaction.timeout.ms) before resuming the partition",
                    self.topic,
                    p,
                    position,
                    end,
                    extra={"partition": p, "offset": position},
                )
            self.waiting[p] = time.monotonic() + WAIT_RECHECK_INTERVAL
        self._m_waiting.set(len(self.waiting))
        return settled

    def _recheck_waiting(self) -> None:
        """Read the waiting partitions again from their checkpoint (their end), when due: the
        reader reports their end anew, where it is now."""
        now = time.monotonic()
        due = {p for p, at in self.waiting.items() if at <= now and p in self.restoring}
        if due:
            for p in due:  # its end is seen again soon; if not, it is read again after a while
                self.waiting[p] = now + 10 * WAIT_RECHECK_INTERVAL
            self._sync(due)

    def _finish(self, partitions: list[int]) -> None:
        now = time.monotonic()
        for p in partitions:
            progress = self._progress.pop(p)
            self.restoring.pop(p)
            self._asked_ends.pop(p, None)
            elapsed = now - progress.started
            log.info(
                "table %s[%d] restored: %d records in %.2fs, from changelog offset %d",
                self.topic,
                p,
                progress.read,
                elapsed,
                progress.first_position,
                extra={"partition": p, "records": progress.read},
            )
        if not self.restoring:
            elapsed = now - self._restore_started
            metrics.RESTORE_SECONDS.labels(self.topic).observe(elapsed)
            log.info(
                "table %s restored partitions %s: %d records in %.2fs",
                self.topic,
                sorted(self._restore_parts),
                self.records_restored - self._restore_first_count,
                elapsed,
            )
        # Restored partitions are the processor's now: it writes them, nobody follows them.
        self._sync()

    def _report(self, *, force: bool) -> None:
        """Metrics every step, a progress line every PROGRESS_INTERVAL (and when a restore ends)."""
        follower = self.follower
        ends = {**self._asked_ends, **follower.end_offsets(self._assigned)}
        self._ask_unknown_ends([p for p in self.restoring if p not in ends], ends)
        remaining = {p: max(ends[p] - follower.positions.get(p, 0), 0) for p in self.restoring if p in ends}
        self._m_remaining.set(len(self.restoring))
        self._m_waiting.set(len(self.waiting))
        left = sum(remaining.values())
        self._m_remaining_records.set(left)
        # A partition at its end is 0 behind, whatever its end counts after the last record
        # (a transaction's commit marker).
        self._m_standby_lag.set(
            sum(
                max(ends[p] - follower.positions.get(p, 0), 0)
                for p in self.standby
                if p in ends and p not in self._at_end
            )
        )
        if not self.restoring:
            self._m_progress.set(1)
            self._m_eta.set(0)
            return
        read = sum(progress.read for progress in self._progress.values())
        elapsed = max(time.monotonic() - min(progress.started for progress in self._progress.values()), 1e-3)
        rate = read / elapsed
        ratio = read / (read + left) if read + left else 0.0
        eta = left / rate if rate > 0 else float("inf")
        self._m_progress.set(ratio)
        self._m_eta.set(eta if eta != float("inf") else -1)
        now = time.monotonic()
        if force or now - self._last_log >= PROGRESS_INTERVAL:
            self._last_log = now
            log.info(
                "restoring %s: %.0f%% (%d records read, %d to go), %.0f records/s, ETA %s; partitions %s",
                self.topic,
                100 * ratio,
                read,
                left,
                rate,
                f"{eta:.0f}s" if eta != float("inf") else "unknown",
                sorted(self.restoring),
                extra={
                    "progress": round(ratio, 4),
                    "records_per_second": round(rate),
                    "eta_seconds": None if eta == float("inf") else round(eta, 1),
                },
            )

    def _ask_unknown_ends(self, partitions: list[int], ends: dict[int, int]) -> None:
        """Ends of restoring partitions no fetch has answered for yet, asked of the broker (at
        most once a second): until a first fetch returns, which a throttled or slow broker may
        delay for long, "records to go" would read 0 while nothing is restored yet."""
        now = time.monotonic()
        if not partitions or now - self._ends_asked < 1.0:
            return
        self._ends_asked = now
        try:
            asked = (self._log_ends or self.follower.ask_end_offsets)(partitions)
        except (KafkaException, TimeoutError):
            return  # the next report asks again
        self._asked_ends.update(asked)
        ends.update(asked)

    # -- a whole restore at once (tools, benchmarks) ---------------------------------

    def restore(self, parts: list[TablePartition], topic_id: str) -> int:
        """Catch every partition in ``parts`` up with the changelog's end, blocking; records read."""
        before = self.records_restored
        self.follow({p.partition: p for p in parts}, {}, topic_id)
        while self.restoring:
            self.step(1.0)
        return self.records_restored - before

    def close(self) -> None:
        self.follower.close()
