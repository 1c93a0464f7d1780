"""Processor: consumes an input stream as a consumer group and keeps a group table.

The parts, in Goka's file map:

- ``Processor`` (here) keeps group membership, rebalances and the loop's timing;
- each partition it holds is a :class:`~walletkit.stream.task.PartitionTask` with one state
  (restoring → activating → running, rebuilding, standby, idle), its table partition, resume
  offset and pending commit;
- a batch of records goes through the callback in a
  :class:`~walletkit.stream.batch.BatchRunner` (apply, skip, quarantine; no clients), then to
  durability through a :class:`~walletkit.stream.checkpoint.Checkpoint` (prepare the changelog,
  commit, flush the stores; or abort and rewind), under the processing guarantee in force
  (:class:`~walletkit.stream.checkpoint.Guarantee`);
- restoring a partition, and keeping standby copies warm, is the
  :class:`~walletkit.stream.recovery.Restorer`'s; which copies to keep is
  :mod:`~walletkit.stream.standby`'s; fencing members that left without a word,
  :mod:`~walletkit.stream.fencing`'s;
- the clients (:class:`~walletkit.stream.kafka.KafkaClients`) and the stores
  (:class:`LocalStores`) come from the options, not from ``run()``.

A rebalance callback does no reading: an assigned partition is paused in the group
consumer and restored by the main loop, a bounded step between two polls, so a restore of
any length never outlasts ``max.poll.interval.ms`` and the partitions already restored keep
being processed. A restored partition is resumed at its committed offset.

Under applied-offsets the input offsets of durable batches are committed asynchronously, at
most every ``commit_interval`` seconds, when the input goes idle, and synchronously on
revocation and shutdown; under exactly-once they were part of the batch's transaction.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from walletkit.stream import metrics
from walletkit.stream.batch import OUTCOMES, BatchRunner
from walletkit.stream.checkpoint import ChangelogWriter, Checkpoint, CheckpointFailed, Guarantee, OffsetCommits
from walletkit.stream.errors import RestoreError, TopicsMissing
from walletkit.stream.faults import CrashInjector
from walletkit.stream.fencing import fence_departed, transactional_id
from walletkit.stream.group import GroupSpec  # noqa: F401 - also importable from here
from walletkit.stream.kafka import KafkaClients, KafkaSettings, LogEnds, consume_ready
from walletkit.stream.recovery import Restorer
from walletkit.stream.standby import Member, MembershipWatch, sort_keys, standby_partitions
from walletkit.stream.store import Store, persistent_id
from walletkit.stream.table import TablePartition, Transaction
from walletkit.stream.task import PartitionTask, PartitionTasks, TaskState

log = logging.getLogger(__name__)


class ProcessorState(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RESTORING = "restoring"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


#: Records per batch at most (a batch is what the consumer has ready, so at a low rate
#: batches stay small and fast). Large batches under load coalesce repeated keys: one
#: changelog record and one RocksDB write per changed key and batch. With 10k wallets,
#: 2,000 -> 10,000 took balance from ~150k to ~240k records/s and above_threshold from
#: ~90k to ~170k (``make bench``); a batch then takes tens of milliseconds.
DEFAULT_BATCH_SIZE = 10_000
#: Decoded table values kept across batches, over all assigned partitions.
DEFAULT_CACHE_ENTRIES = 50_000
#: Largest table value a record may leave: half of Kafka's default record limit (1 MiB), so
#: a value that passes is always accepted by a changelog topic with default settings.
DEFAULT_MAX_VALUE_BYTES = 512 * 1024
#: Seconds of changelog reading per turn of the main loop while partitions are restoring:
#: the processed partitions wait at most this long between two batches.
RESTORE_STEP_SECONDS = 0.1


class LocalStores:
    """Where a processor member keeps its state: one RocksDB per partition under ``root``,
    and the member's persistent id (its transactional id when no instance id is set, so
    a restart on the same disk fences whatever its predecessor left open)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def open(self, partition: int) -> Store:
        return Store(self.root / str(partition))

    def open_joined(self, topic: str, partition: int) -> Store:
        """The local copy of partition ``partition`` of joined table ``topic``."""
        return Store(self.root / "joined" / topic / str(partition))

    def member_id(self) -> str:
        return persistent_id(self.root)


class Processor:
    """Runs one member of ``spec.group``; ``run()`` blocks until ``stop()``.

    ``Processor.create(spec, settings, state_dir, ...)`` builds the default clients and
    stores; the constructor takes them ready-made.

    (About 440 lines as formatted, past the project's ~350: the member's life, the four rebalance
    callbacks and the batch path are kept together because they share one consumer, which
    must be called from this thread only; every per-partition decision is a task's, every
    batch step the runner's or the checkpoint's.)
    """

    def __init__(
        self,
        spec: GroupSpec,
        clients: KafkaClients,
        stores: LocalStores,
        *,
        guarantee: Guarantee = Guarantee.EXACTLY_ONCE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_timeout: float = 0.05,
        flush_timeout: float = 30.0,
        commit_interval: float = 0.1,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        max_value_bytes: int | None = DEFAULT_MAX_VALUE_BYTES,
        standby_replicas: int = 0,
        faults: CrashInjector | None = None,
    ) -> None:
        self.spec = spec
        self._clients = clients
        self._settings = clients.settings
        self._stores = stores
        self.guarantee = Guarantee(guarantee)
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout
        self._flush_timeout = flush_timeout
        self._commit_interval = commit_interval
        self._cache_entries = cache_entries  # decoded values kept across batches, per processor
        self._max_value_bytes = max_value_bytes
        #: Members whose failure at once still finds every moved partition warm (standby.py).
        self.standby_replicas = max(int(standby_replicas), 0)
        self._faults = faults
        self._runner = BatchRunner(spec)
        self._stop = threading.Event()
        self.state = ProcessorState.CREATED
        #: Every partition this member holds a store of, whatever its state (see task.py).
        self._tasks = PartitionTasks(
            lambda p: TablePartition(stores.open(p), spec.table_codec, p, max_value_bytes=max_value_bytes),
            lambda topic, p: TablePartition(stores.open_joined(topic, p), spec.joins[topic], p),
            tuple(spec.joins),
        )
        self._assigned_once = False
        #: The group member id of the latest assignment (read on the processor's thread:
        #: a consumer must not be called from another thread while it polls).
        self.member_id: str | None = None
        self._members: list[Member] = []  # the group's members as last read
        self._commits = OffsetCommits(spec.group)
        self._last_tick = time.monotonic()
        self._m_outcomes = {outcome: metrics.RECORDS.labels(spec.group, outcome) for outcome in OUTCOMES}
        self._m_delay = metrics.RECORD_DELAY.labels(spec.group)
        self._lag_reported: set[int] = set()
        # Made by run():
        self._consumer: Consumer | None = None
        self._writer: ChangelogWriter | None = None
        self._restorer: Restorer | None = None
        self._watch: MembershipWatch | None = None
        self._input_topic_id = self._table_topic_id = ""
        self._partition_count = 0
        self._output_partitions: dict[str, int] = {}
        self._joins: dict[str, Restorer] = {}  # a restorer per joined table (GroupSpec.joins)
        self._join_topic_ids: dict[str, str] = {}
        metrics.init_processor(spec.group, lambda: self.ready, self.guarantee.value)

    @classmethod
    def create(cls, spec: GroupSpec, settings: KafkaSettings, state_dir: str | Path, **options: Any) -> Processor:
        """A processor with the default Kafka clients and its stores under ``state_dir/<group>``."""
        return cls(spec, KafkaClients(settings), LocalStores(Path(state_dir) / spec.group), **options)

    @property
    def transactional_id(self) -> str:
        """This member's transactional id: stable across restarts of the same instance."""
        return transactional_id(self.spec.group, self._settings.instance_id or self._stores.member_id())

    # -- health ----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Joined the group, every assigned partition is restored and none is being rebuilt."""
        return (
            self.state is ProcessorState.RUNNING
            and self._assigned_once
            and not self._tasks.any(TaskState.RESTORING, TaskState.ACTIVATING, TaskState.REBUILDING)
        )

    def alive(self, stall_seconds: float = 60.0) -> bool:
        """The loop is turning (restores run inside it, a step per turn)."""
        if self.state in (ProcessorState.FAILED, ProcessorState.STOPPED):
            return False
        return time.monotonic() - self._last_tick < stall_seconds

    @property
    def partitions(self) -> list[int]:
        """Partitions whose input this member processes."""
        return self._tasks.partitions(TaskState.RUNNING, TaskState.REBUILDING)

    @property
    def restoring(self) -> list[int]:
        """Assigned partitions still catching up with their changelog (paused meanwhile)."""
        return self._tasks.partitions(TaskState.RESTORING, TaskState.ACTIVATING)

    @property
    def waiting(self) -> list[int]:
        """Restoring partitions at their readable end, held back by a transaction an earlier
        owner left open on their changelog (see recovery.py)."""
        return sorted(self._restorer.waiting) if self._restorer is not None else []

    @property
    def standby(self) -> list[int]:
        """Partitions kept warm for a takeover (owned by other members)."""
        return self._tasks.partitions(TaskState.STANDBY)

    @property
    def tables(self) -> dict[int, TablePartition]:
        """The table partitions whose input this member processes, by partition."""
        return self._tasks.tables(TaskState.RUNNING, TaskState.REBUILDING)

    def _joined_tables(self) -> dict[int, dict[str, TablePartition]]:
        return {t.partition: t.joined for t in self._tasks if t.owned}

    def stop(self) -> None:
        """Ask ``run()`` to finish its batch, flush, commit and return."""
        self._stop.set()

    # -- main loop -----------------------------------------------------------

    def run(self) -> None:
        self.state = ProcessorState.STARTING
        try:
            self._start()
            self.state = ProcessorState.RUNNING
            consumer, batch_size, timeout = self._consumer, self._batch_size, self._poll_timeout
            restorer, watch = self._restorer, self._watch
            while not self._stop.is_set():
                restoring = self._tasks.any(TaskState.RESTORING, TaskState.ACTIVATING)
                if restorer.busy or restoring or self._joins:
                    self._restore_step()
                if watch is not None and (members := watch.poll()) is not None:
                    self._plan_standby(members)
                msgs = consume_ready(consumer, batch_size, 0 if restoring else timeout)
                self._last_tick = now = time.monotonic()
                if msgs:
                    self._process(msgs)
                if not msgs or now - self._commits.last >= self._commit_interval:
                    self._commit(asynchronous=True)
        except RestoreError:
            if self._stop.is_set():
                # Asked to stop while restoring: nothing was processed, nothing is lost; the
                # loop ends and the process exits cleanly (SIGTERM drains, it does not fail).
                log.info("group %s: restore interrupted by shutdown", self.spec.group)
                return
            self.state = ProcessorState.FAILED
            log.exception("group %s: restore failed", self.spec.group)
            raise
        except BaseException:
            self.state = ProcessorState.FAILED
            raise
        finally:
            self._shutdown()

    def _start(self) -> None:
        """Check the topics, make the writer, the restorer and the group consumer, subscribe."""
        spec, clients = self.spec, self._clients
        topics = clients.topics()
        topics.ensure_copartitioned([spec.input_topic, spec.table_topic, *spec.joins])
        ids = topics.topic_ids([spec.input_topic, spec.table_topic, *spec.joins])
        self._join_topic_ids = {topic: ids[topic] for topic in spec.joins}
        self._input_topic_id, self._table_topic_id = ids[spec.input_topic], ids[spec.table_topic]
        self._partition_count = topics.partitions([spec.input_topic])[spec.input_topic]
        self._output_partitions = topics.partitions(list(spec.outputs))
        if missing := sorted(set(spec.outputs) - set(self._output_partitions)):
            raise TopicsMissing(missing)
        transactional = self.guarantee is Guarantee.EXACTLY_ONCE
        self._writer = ChangelogWriter(
            clients.producer,
            spec.group,
            self.guarantee,
            transactional_id=self.transactional_id if transactional else None,
            timeout=self._flush_timeout,
        )
        self._writer.start()
        log.info(
            "group %s: processing guarantee %s%s",
            spec.group,
            self.guarantee.value,
            f" (transactional id {self._writer.transactional_id})" if transactional else "",
        )
        # A transactional restore checks that it reached the log's end (recovery.py).
        self._restorer = Restorer(
            clients.reader(),
            spec.table_topic,
            spec.table_codec,
            should_stop=self._stop.is_set,
            log_ends=LogEnds(clients.admin, spec.table_topic) if transactional else None,
        )
        self._joins = {
            topic: Restorer(
                clients.reader(),
                topic,
                codec,
                should_stop=self._stop.is_set,
                log_ends=LogEnds(clients.admin, topic) if transactional else None,
            )
            for topic, codec in spec.joins.items()
        }
        if self.standby_replicas or (transactional and self._settings.instance_id):
            self._watch = MembershipWatch(clients.admin(), spec.group)
        self._consumer = clients.group_consumer(
            spec.group,
            on_commit=self._commits.on_commit,
            **metrics.statistics_config(self._settings.extra, self._on_stats),
        )
        self._consumer.subscribe(
            [spec.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _shutdown(self) -> None:
        if self.state is not ProcessorState.FAILED:
            self.state = ProcessorState.STOPPING
        if self._consumer is not None:
            if self.state is not ProcessorState.FAILED:
                self._commit(asynchronous=False)
            try:
                # Revokes (leaves the group unless membership is static) and waits
                # for asynchronous commits in flight.
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing consumer: %s", exc)
        for part in (self._restorer, *self._joins.values(), self._watch, self._writer):
            if part is not None:
                part.close()
        self._tasks.close()
        metrics.PARTITIONS.labels(self.spec.group).set(0)
        metrics.STATE_BYTES.labels(self.spec.group).set(0)
        self._lag_reported = metrics.set_partition_gauges(metrics.CONSUMER_LAG, self.spec.group, {}, self._lag_reported)
        if self.state is not ProcessorState.FAILED:
            self.state = ProcessorState.STOPPED

    # -- rebalancing -------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take the assignment paused; the main loop restores each partition and resumes it."""
        assigned = sorted(tp.partition for tp in partitions)
        log.info("group %s: assigned partitions %s", self.spec.group, assigned)
        per_partition = max(self._cache_entries // max(len(assigned), 1), 1)
        for p in assigned:
            self._tasks.task(p).table.cache_entries = per_partition
        self._tasks.close_idle(keep=set(assigned))
        if self._watch is not None and self._members:
            self._fence_departed()
        # Where each partition resumes once restored, read here: the previous owner committed
        # before this rebalance ended, and a blocking call later, from the loop, could serve
        # the next rebalance's callbacks in the middle of activating a partition.
        committed: dict[int, int] = {}
        if partitions:
            try:
                committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
            except KafkaException as exc:  # the coordinator is away: asked again at activation
                log.warning(
                    "group %s: committed offsets not readable now (%s); asking again once restored",
                    self.spec.group,
                    exc,
                )
        # Assigned at the committed offsets when known, so the client need not look them up
        # (with the coordinator away a partition would wait in that lookup and refuse a seek);
        # none committed: offset 0, not "the beginning", which costs an offset lookup (~0.5 s);
        # a log that no longer starts at 0 is out of range, and auto.offset.reset is earliest.
        topic = self.spec.input_topic
        consumer.assign(
            [
                TopicPartition(topic, tp.partition, max(committed[tp.partition], 0))
                if tp.partition in committed
                else tp
                for tp in partitions
            ]
        )
        if partitions:
            consumer.pause(partitions)  # nothing is fetched before the partition is restored
        self.member_id = consumer.memberid()
        for p in assigned:
            task = self._tasks.task(p)
            task.move(TaskState.RESTORING)
            task.resume_at = committed.get(p)
            task.unrestored = {self.spec.table_topic, *self.spec.joins}
            self._tasks.open_joined(task)
        self._follow()
        if self._watch is not None:
            self._watch.request(self.member_id)
        self.state = ProcessorState.RESTORING if assigned else ProcessorState.RUNNING
        self._assigned_once = True
        metrics.PARTITIONS.labels(self.spec.group).set(len(self.partitions))

    def _follow(self) -> None:
        """Tell the restorers what to follow: of the own table, the restoring partitions and the
        standby copies; of each joined table, the assigned partitions (restored first, then
        followed as long as they are assigned)."""
        tasks = self._tasks
        own = self.spec.table_topic
        restoring = {p: t for p, t in tasks.tables(TaskState.RESTORING).items() if own in tasks.task(p).unrestored}
        self._restorer.follow(restoring, tasks.tables(TaskState.STANDBY), self._table_topic_id)
        assigned = (TaskState.RESTORING, TaskState.ACTIVATING, TaskState.RUNNING, TaskState.REBUILDING)
        for topic, restorer in self._joins.items():
            copies = tasks.joined(topic, *assigned)
            unread = {p for p in copies if topic in tasks.task(p).unrestored}
            restorer.follow(
                {p: c for p, c in copies.items() if p in unread},
                {p: c for p, c in copies.items() if p not in unread},
                self._join_topic_ids[topic],
            )

    def _restore_step(self) -> None:
        restoring = self._tasks.any(TaskState.RESTORING)
        budget = RESTORE_STEP_SECONDS if restoring else 0.0
        read = False
        for topic, restorer in ((self.spec.table_topic, self._restorer), *self._joins.items()):
            if not restorer.busy:
                continue
            for p in restorer.step(budget / (1 + len(self._joins))):
                task = self._tasks.get(p)
                if task is not None and task.state is TaskState.RESTORING:
                    task.unrestored.discard(topic)
                    read = read or topic != self.spec.table_topic
        if read:  # joined copies read to their end: followed from now on
            self._follow()
        for task in self._tasks:
            if task.state is TaskState.RESTORING and not task.unrestored:
                task.move(TaskState.ACTIVATING)
        for p in self._tasks.partitions(TaskState.ACTIVATING):
            self._activate(self._tasks.task(p))

    def _activate(self, task: PartitionTask) -> None:
        """Resume a restored partition (task.py); it stays ACTIVATING while Kafka cannot answer."""
        if not task.activate(self.spec, self._consumer, self._input_topic_id):
            return
        metrics.PARTITIONS.labels(self.spec.group).set(len(self.partitions))
        if not self.restoring and self.state is ProcessorState.RESTORING:
            self.state = ProcessorState.RUNNING
            log.info("group %s: every assigned partition restored: processing %s", self.spec.group, self.partitions)

    def _fence_departed(self) -> None:
        """End what members that left without a word left open (fencing.py)."""
        if not self._settings.instance_id or self.guarantee is not Guarantee.EXACTLY_ONCE:
            return
        members = fence_departed(
            self.spec.group, self._settings.instance_id, self._watch, self._members, self._clients.producer
        )
        if members is not None:
            self._members = members

    def _plan_standby(self, members: list[Member]) -> None:
        """Keep warm what this member would own after the failures the plan covers (standby.py)."""
        self._members = members
        if not self.standby_replicas:
            return
        keys = sort_keys(members)
        static = all(m.instance_id for m in members)
        me = self._settings.instance_id if static else self.member_id
        plan = standby_partitions(me or "", keys, self._partition_count, self.standby_replicas)
        if plan != set(self.standby):
            log.info(
                "group %s: keeping partitions %s warm (standby for %d failure%s among %d members)",
                self.spec.group,
                sorted(plan),
                self.standby_replicas,
                "" if self.standby_replicas == 1 else "s",
                len(members),
            )
        for p in plan:
            task = self._tasks.task(p)
            if task.state is TaskState.IDLE:
                task.move(TaskState.STANDBY)
        for task in self._tasks:
            if task.state is TaskState.STANDBY and task.partition not in plan:
                task.move(TaskState.IDLE)
        self._tasks.close_idle()
        self._follow()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every batch is flushed before the next consume(), so only offsets can be
        # pending here: commit them so the next owner does not replay those records.
        # The stores stay open in case the partitions come back.
        revoked = sorted(tp.partition for tp in partitions)
        self._commit(asynchronous=False, partitions=revoked)
        for p in revoked:
            task = self._tasks.get(p)
            if task is not None and task.assigned:
                # Its progress is in its store: a return resumes it; its next owner finishes a
                # rebuild. Kept warm until the next plan when standby copies are kept: a partition
                # handed straight back (or to the member this one would take over from) is current.
                task.move(TaskState.STANDBY if self.standby_replicas else TaskState.IDLE)
        self._follow()
        log.info("group %s: revoked partitions %s", self.spec.group, revoked)
        metrics.PARTITIONS.labels(self.spec.group).set(len(self.partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "group %s: lost partitions %s (session expired)", self.spec.group, sorted(tp.partition for tp in partitions)
        )
        for tp in partitions:  # not ours any more: committing would be refused
            task = self._tasks.get(tp.partition)
            if task is not None:
                task.pending_commit = None
        self._on_revoke(consumer, partitions)

    # -- batches -------------------------------------------------------------------

    def _process(self, msgs: list[Message]) -> None:
        spec = self.spec
        # Who consumed these records, and under which generation (see Checkpoint).
        consumer = self._consumer
        member = (
            consumer.memberid(),
            consumer.consumer_group_metadata() if self.guarantee is Guarantee.EXACTLY_ONCE else None,
        )
        started = time.perf_counter()
        batch = self._runner.run(msgs, self.tables, self._joined_tables() if self._joins else None)
        metrics.CALLBACK_SECONDS.labels(spec.group).observe(time.perf_counter() - started)
        if not batch.txns:
            return
        metrics.BATCH_SIZE.labels(spec.group).observe(len(msgs))
        if self._flush(batch.txns, member):
            for outcome, n in batch.counts.items():
                self._m_outcomes[outcome].inc(n)
            if batch.oldest_ms:
                self._m_delay.observe(max(time.time() - batch.oldest_ms / 1000, 0.0))

    def _flush(self, txns: dict[int, Transaction], member: tuple[str | None, Any]) -> bool:
        """Make a batch durable through its checkpoint; on failure abort and rewind it."""
        spec = self.spec
        started = time.perf_counter()
        checkpoint = Checkpoint(
            txns,
            self._writer,
            self._consumer,
            input_topic=spec.input_topic,
            table_topic=spec.table_topic,
            member=member,
            faults=self._faults,
            output_partitions=self._output_partitions,
        )
        try:
            checkpoint.prepare()
            checkpoint.commit()
        except CheckpointFailed as exc:
            checkpoint.abort(exc, set(self.partitions))
            self._stop.wait(0.2 if exc.fenced else 1.0)
            return False
        to_commit = checkpoint.flush()
        metrics.CHANGELOG_RECORDS.labels(spec.group).inc(checkpoint.records)
        metrics.FLUSH_SECONDS.labels(spec.group).observe(time.perf_counter() - started)
        for p, next_offset in checkpoint.next_offsets.items():
            task = self._tasks.get(p)
            if task is None or not task.owned:
                continue  # revoked meanwhile: durable, and its next owner skips it as a replay
            if p in to_commit:
                task.pending_commit = to_commit[p]
            if task.passed(next_offset):
                log.info("group %s: table %s[%d] rebuilt from the input", spec.group, spec.table_topic, p)
        return True

    def _commit(self, *, asynchronous: bool, partitions: list[int] | None = None) -> None:
        """Commit the pending offsets of flushed batches (all, or those of ``partitions``)."""
        offsets = []
        for task in self._tasks:
            if task.pending_commit is not None and (partitions is None or task.partition in partitions):
                offsets.append(TopicPartition(self.spec.input_topic, task.partition, task.pending_commit))
                task.pending_commit = None
        if offsets:
            self._commits.commit(self._consumer, offsets, asynchronous=asynchronous)

    def _on_stats(self, stats: str) -> None:
        """librdkafka statistics (served by consume(), on this thread): lag per partition, state size."""
        lag = metrics.consumer_lag_from_statistics(stats, self.spec.input_topic)
        owned = self.tables
        self._lag_reported = metrics.set_partition_gauges(
            metrics.CONSUMER_LAG, self.spec.group, {p: v for p, v in lag.items() if p in owned}, self._lag_reported
        )
        metrics.STATE_BYTES.labels(self.spec.group).set(sum(part.store.size_bytes() for part in owned.values()))
