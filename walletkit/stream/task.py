"""One partition of a processor member: its table partition, its state, its offsets.

A :class:`PartitionTask` is what a member holds of partition ``p`` of its group (Goka's
partition processor). It has exactly one :class:`TaskState` at a time::

             assign               restored                resumed
    IDLE ───────────▶ RESTORING ───────────▶ ACTIVATING ───────────▶ RUNNING
    ▲  │ planned                                  │ table lost          ▲
    │  ▼ (assign: RESTORING)                      ▼                     │ rebuilt
    STANDBY                                   REBUILDING ───────────────┘

    revoked, from any assigned state: IDLE, or STANDBY when warm copies are kept

- RESTORING: assigned, paused in the group consumer, catching up with its changelog.
- ACTIVATING: restored; resumed at its committed offset once Kafka answers (a broker away
  keeps it here, retried each turn of the loop).
- RUNNING: its input is processed.
- REBUILDING: processed, but its table was lost while the group had consumed the input up to
  ``rebuild_until``: rebuilt from the input's first record, not ready until past that offset.
- STANDBY: another member's partition, kept warm by following its changelog.
- IDLE: revoked, its store kept open in case it comes back.

A move the diagram does not allow raises (a bug in the caller, never a runtime condition).
The task also refuses to start over a table it must not trust: one built from another
incarnation of the input topic, one another program wrote, or one lost with no input left
to rebuild it from (each raises with what the operator can do).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition

from walletkit.stream.codec import raw_applied_offset
from walletkit.stream.errors import ForeignTable, SkipRecord, StreamError
from walletkit.stream.group import GroupSpec
from walletkit.stream.table import INPUT_TOPIC_ID, TablePartition

log = logging.getLogger("walletkit.stream.processor")


class TaskState(enum.Enum):
    RESTORING = "restoring"
    ACTIVATING = "activating"
    RUNNING = "running"
    REBUILDING = "rebuilding"
    STANDBY = "standby"
    IDLE = "idle"


_ASSIGNED = frozenset({TaskState.RESTORING, TaskState.ACTIVATING, TaskState.RUNNING, TaskState.REBUILDING})
_MOVES: dict[TaskState, frozenset[TaskState]] = {
    TaskState.IDLE: frozenset({TaskState.RESTORING, TaskState.STANDBY}),
    TaskState.STANDBY: frozenset({TaskState.RESTORING, TaskState.IDLE}),
    TaskState.RESTORING: frozenset({TaskState.ACTIVATING}),
    TaskState.ACTIVATING: frozenset({TaskState.RUNNING, TaskState.REBUILDING}),
    TaskState.REBUILDING: frozenset({TaskState.RUNNING}),
    TaskState.RUNNING: frozenset(),
}


@dataclass(eq=False)
class PartitionTask:
    partition: int
    table: TablePartition
    state: TaskState = TaskState.IDLE
    #: The group's committed input offset, read at assignment (-1: none; None: not read yet).
    resume_at: int | None = None
    #: REBUILDING: the input offset the group had consumed when the table was found lost.
    rebuild_until: int | None = None
    #: Next input offset of the batches made durable but not committed yet (applied-offsets).
    pending_commit: int | None = None
    #: Local copies of the joined tables' partition (GroupSpec.joins), by changelog topic.
    joined: dict[str, TablePartition] = field(default_factory=dict)
    #: RESTORING: the changelogs (its own table's, the joined ones) not read to their end yet.
    unrestored: set[str] = field(default_factory=set)

    @property
    def assigned(self) -> bool:
        return self.state in _ASSIGNED

    @property
    def owned(self) -> bool:
        """Its input is being processed (RUNNING or REBUILDING)."""
        return self.state is TaskState.RUNNING or self.state is TaskState.REBUILDING

    @property
    def restoring(self) -> bool:
        """Assigned, but not resumed yet (RESTORING or ACTIVATING)."""
        return self.state is TaskState.RESTORING or self.state is TaskState.ACTIVATING

    def move(self, to: TaskState) -> None:
        """Go to ``to``: a revoke (to IDLE or STANDBY) from any assigned state, an assignment from
        any state, else only the moves the module's diagram shows."""
        allowed = (
            to is TaskState.RESTORING
            or (self.assigned and to in (TaskState.IDLE, TaskState.STANDBY))
            or to in _MOVES[self.state]
        )
        if not allowed:
            raise RuntimeError(f"partition {self.partition}: {self.state.value} cannot become {to.value}")
        if to in (TaskState.RESTORING, TaskState.IDLE, TaskState.STANDBY):
            self.rebuild_until = None  # its next owner (this member again, maybe) decides anew
            self.pending_commit = None  # committed on revocation, or not ours to commit any more
        self.state = to

    def close(self) -> None:
        """Close its store and its joined copies (their files stay)."""
        self.table.close()
        for joined in self.joined.values():
            joined.close()
        self.joined.clear()

    def passed(self, next_offset: int) -> bool:
        """A REBUILDING task whose input reached ``next_offset`` is rebuilt: RUNNING again (True)."""
        if self.state is TaskState.REBUILDING and self.rebuild_until is not None and next_offset >= self.rebuild_until:
            self.move(TaskState.RUNNING)
            return True
        return False

    def activate(self, spec: GroupSpec, consumer: Consumer, input_topic_id: str) -> bool:
        """ACTIVATING: check the table, then resume the partition in the group consumer at its
        committed offset (RUNNING), or at the input's first record to rebuild a lost table
        (REBUILDING). False when Kafka cannot answer now (a broker away), or when the partition
        was revoked meanwhile (a broker call may serve the consumer's callbacks)."""
        p = self.partition
        self.table.cache.clear()  # another owner may have changed the table meanwhile
        self.check_input_incarnation(spec, input_topic_id)
        tp = TopicPartition(spec.input_topic, p)
        try:
            if self.resume_at is None:
                self.resume_at = consumer.committed([tp], timeout=2)[0].offset
            committed = self.resume_at
            self.refuse_foreign_table(spec, committed)
            rebuild_from = self.lost_table_start(
                spec, committed, lambda: consumer.get_watermark_offsets(tp, timeout=10)[0]
            )
            if self.state is not TaskState.ACTIVATING:
                return False
            # Explicitly from the committed offset: whatever was fetched before the pause is
            # discarded, so no record is skipped on the way.
            start = rebuild_from if rebuild_from is not None else max(committed, 0)
            consumer.seek(TopicPartition(spec.input_topic, p, start))
        except KafkaException as exc:
            log.info("group %s: partition %d restored but not resumable yet (%s); trying again", spec.group, p, exc)
            return False
        if rebuild_from is not None:
            self.move(TaskState.REBUILDING)
            self.rebuild_until = committed
        else:
            self.move(TaskState.RUNNING)
        consumer.resume([tp])
        return True

    # -- what the task refuses to start over ---------------------------------------

    def check_input_incarnation(self, spec: GroupSpec, input_topic_id: str) -> None:
        """Refuse a table built from another incarnation of the input topic.

        Table values carry input offsets; if the input topic was deleted and recreated its
        offsets start again, and records would be taken for replays and silently skipped.
        That needs an operator's decision (reset the group's tables and offsets), not a guess.
        """
        store = self.table.store
        known = store.meta(INPUT_TOPIC_ID)
        if known is None:
            store.write([], {INPUT_TOPIC_ID: input_topic_id})
        elif known.decode() != input_topic_id:
            raise StreamError(
                f"topic {spec.input_topic!r} was deleted and recreated since table {spec.table_topic!r} "
                f"partition {self.partition} was built from it: its applied offsets no longer match. Reset the "
                f"group {spec.group!r} (delete {spec.table_topic!r}, its committed offsets and the local "
                "state) to rebuild the table from the new topic"
            )

    def refuse_foreign_table(self, spec: GroupSpec, committed: int) -> None:
        """ForeignTable if the partition would start at the input's first record over values
        another program wrote.

        With nothing committed the group begins at the first record. Over values this toolkit
        wrote that is safe: each carries the offset it reflects, and replays are skipped. A
        value without one was written by someone else, typically a Goka processor taking the
        same group and table whose offset commits the broker refused (goka v1.1.7 with Sarama
        1.38 on Kafka 4): every record would be applied again on top of it. Scans the partition
        only when nothing is committed and the table is not empty (a takeover, or offsets that
        expired), and stops at the first foreign value.
        """
        if committed >= 0:
            return
        applied = raw_applied_offset(spec.table_codec)
        for key, data in self.table.store.items():
            try:
                if applied(data) >= 0:
                    continue
            except SkipRecord:
                pass  # not even our format
            raise ForeignTable(
                spec.group, spec.table_topic, spec.input_topic, self.partition, key.decode(errors="replace")
            )

    def lost_table_start(self, spec: GroupSpec, committed: int, input_start: Callable[[], int]) -> int | None:
        """Where to rebuild a table partition that is empty although the group consumed its
        input (``input_start()``: the input partition's first offset now): its changelog was
        deleted and recreated (or emptied), so resuming at the committed offset would reset
        every value to what the newer records alone make. None when the table is not lost: a
        partition whose changelog this store has read or written (a position past 0 in this
        topic incarnation) is merely empty, its keys deleted (tombstones).
        If the input no longer holds its first records, refuse: there is nothing to rebuild from.
        """
        if committed <= 0 or self.table.store.has_values() or self.table.changelog_offset > 0:
            return None  # never consumed, not empty, or emptied by deletes its changelog holds
        topic, p = spec.input_topic, self.partition
        low = input_start()
        if low > 0:
            raise StreamError(
                f"table {spec.table_topic!r} partition {p} is empty, but group "
                f"{spec.group!r} already consumed {topic!r}[{p}] up to offset {committed}, and "
                f"that partition now starts at offset {low}: the table cannot be rebuilt from it. Restore "
                f"{spec.table_topic!r} from a backup, or, if starting from an empty table is intended, "
                "delete the group's committed offsets"
            )
        log.warning(
            "group %s: table %s[%d] is empty but the input was consumed up to offset %d (its changelog "
            "was recreated?): rebuilding it from %s[%d] offset %d; not ready until done",
            spec.group,
            spec.table_topic,
            p,
            committed,
            topic,
            p,
            low,
        )
        return low


class PartitionTasks:
    """A member's tasks by partition; ``open_table(p)`` opens partition ``p``'s store."""

    def __init__(
        self,
        open_table: Callable[[int], TablePartition],
        open_joined: Callable[[str, int], TablePartition] | None = None,
        joins: tuple[str, ...] = (),
    ) -> None:
        self._open_table = open_table
        self._open_joined = open_joined
        self._joins = joins
        self._tasks: dict[int, PartitionTask] = {}

    def __iter__(self) -> Iterator[PartitionTask]:
        return iter(list(self._tasks.values()))

    def get(self, p: int) -> PartitionTask | None:
        return self._tasks.get(p)

    def task(self, p: int) -> PartitionTask:
        """Partition ``p``'s task, its store opened (IDLE) if the member held none."""
        task = self._tasks.get(p)
        if task is None:
            task = self._tasks[p] = PartitionTask(p, self._open_table(p))
        return task

    def open_joined(self, task: PartitionTask) -> None:
        """Open the task's local copies of the joined tables (an assigned task reads them)."""
        for topic in self._joins:
            if topic not in task.joined:
                task.joined[topic] = self._open_joined(topic, task.partition)

    def joined(self, topic: str, *states: TaskState) -> dict[int, TablePartition]:
        """The local copies of joined ``topic`` of the tasks in any of ``states``."""
        return {p: t.joined[topic] for p, t in self._tasks.items() if t.state in states and topic in t.joined}

    def partitions(self, *states: TaskState) -> list[int]:
        """The partitions in any of ``states``, in order."""
        return sorted(p for p, task in self._tasks.items() if task.state in states)

    def tables(self, *states: TaskState) -> dict[int, TablePartition]:
        return {p: task.table for p, task in self._tasks.items() if task.state in states}

    def any(self, *states: TaskState) -> bool:
        return any(task.state in states for task in self._tasks.values())

    def close_idle(self, keep: set[int] = frozenset()) -> None:
        """Close the stores of IDLE tasks not in ``keep`` (their files stay)."""
        for p, task in list(self._tasks.items()):
            if p not in keep and task.state is TaskState.IDLE:
                del self._tasks[p]
                task.close()

    def close(self) -> None:
        for task in self._tasks.values():
            task.close()
        self._tasks.clear()
