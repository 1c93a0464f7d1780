"""Processor: consumes an input stream as a consumer group and keeps a group table.

``Processor`` keeps group membership and cadence; everything else is passed in or
lives in its own module:

- the clients (:class:`~walletkit.stream.kafka.KafkaClients`) and the stores
  (:class:`LocalStores`) come from the options, not from ``run()``;
- a batch's way to durability is a :class:`~walletkit.stream.checkpoint.Checkpoint`
  (prepare the changelog, commit, flush the stores; or abort and rewind), under the
  processing guarantee in force (:class:`~walletkit.stream.checkpoint.Guarantee`);
- restoring a partition, and keeping standby copies warm, is the
  :class:`~walletkit.stream.recovery.Restorer`'s; which copies to keep is
  :mod:`~walletkit.stream.standby`'s.

A rebalance callback does no reading: an assigned partition is paused in the group
consumer and restored by the main loop, a bounded step between two polls, so a restore of
any length never outlasts ``max.poll.interval.ms`` and the partitions already restored keep
being processed. A restored partition is resumed at its committed offset.

The life of one batch (``_process``): consume up to ``batch_size`` records; for each,
skip it if the key's table value already reflects its offset (a replay), else run the
callback, whose writes land in the partition's write-back cache; then the checkpoint
makes the batch durable. Under applied-offsets the input offsets are then committed
asynchronously, at most every ``commit_interval`` seconds, when the input goes idle,
and synchronously on revocation and shutdown; under exactly-once they were part of
the batch's transaction.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from walletkit.stream import metrics
from walletkit.stream.checkpoint import Checkpoint, CheckpointFailed, ChangelogWriter, Guarantee
from walletkit.stream.codec import Codec, TableCodec, raw_applied_offset
from walletkit.stream.context import Context, request_id_of
from walletkit.stream.errors import ForeignTable, RestoreError, SkipRecord, StreamError, ValueTooLarge
from walletkit.stream.faults import CrashInjector
from walletkit.stream.kafka import KafkaClients, KafkaSettings, LogEnds, consume_ready, init_transactions
from walletkit.stream.recovery import Restorer
from walletkit.stream.standby import Member, MembershipWatch, sort_keys, standby_partitions
from walletkit.stream.store import Store, persistent_id
from walletkit.stream.table import INPUT_TOPIC_ID, TablePartition, Transaction
from walletkit.stream.topics import table_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupSpec:
    """What a processor group consumes, keeps and does (Goka's group graph)."""

    group: str
    input_topic: str
    input_codec: Codec
    table_codec: TableCodec
    #: ``callback(ctx, value)`` for every input record, in offset order per key.
    #: It must be deterministic given the table value and the record.
    callback: Callable[[Context, Any], None]
    #: ``quarantine(ctx, reason)`` for a record the table refused (ValueTooLarge): note it
    #: for its key (say, in a side entry) so readers can learn it was not applied. None: only
    #: counted and logged.
    quarantine: Callable[[Context, str], None] | None = None

    @property
    def table_topic(self) -> str:
        return table_topic(self.group)


@dataclass
class _BatchQuarantine:
    """What one batch quarantined: the records, the keys that run with snapshots since."""

    reasons: dict[tuple[int, int], str] = field(default_factory=dict)  # (partition, offset) -> why
    hot: set[tuple[int, str]] = field(default_factory=set)  # (partition, key)
    replaying: bool = False


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
#: What becomes of an input record (label of metrics.RECORDS).
_OUTCOMES = ("processed", "duplicate", "skipped", "quarantined")


class LocalStores:
    """Where a processor member keeps its state: one RocksDB per partition under ``root``,
    and the member's persistent id (its transactional id when no instance id is set, so
    a restart on the same disk fences whatever its predecessor left open)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def open(self, partition: int) -> Store:
        return Store(self.root / str(partition))

    def member_id(self) -> str:
        return persistent_id(self.root)


class Processor:
    """Runs one member of ``spec.group``; ``run()`` blocks until ``stop()``.

    ``Processor.create(spec, settings, state_dir, ...)`` builds the default clients and
    stores; the constructor takes them ready-made.
    """

    def __init__(self, spec: GroupSpec, clients: KafkaClients, stores: LocalStores, *,
                 guarantee: Guarantee = Guarantee.EXACTLY_ONCE,
                 batch_size: int = DEFAULT_BATCH_SIZE, poll_timeout: float = 0.05, flush_timeout: float = 30.0,
                 commit_interval: float = 0.1, cache_entries: int = DEFAULT_CACHE_ENTRIES,
                 max_value_bytes: int | None = DEFAULT_MAX_VALUE_BYTES, standby_replicas: int = 0,
                 faults: CrashInjector | None = None) -> None:
        self.spec = spec
        self._clients = clients
        self._settings = clients.settings
        self._stores_factory = stores
        self.guarantee = Guarantee(guarantee)
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout
        self._flush_timeout = flush_timeout
        self._commit_interval = commit_interval
        self._cache_entries = cache_entries  # decoded values kept across batches, per processor
        self._max_value_bytes = max_value_bytes
        #: Members whose failure at once still finds every moved partition warm (standby.py).
        self.standby_replicas = max(int(standby_replicas), 0)
        self._restoring: set[int] = set()  # assigned, paused until restored
        self._to_activate: set[int] = set()  # restored, to be resumed once Kafka answers
        self._standby: set[int] = set()    # warm copies of partitions other members own
        self._watch: MembershipWatch | None = None
        self._members: list[Member] = []  # the group's members as last read
        self._to_commit: dict[int, int] = {}  # partition -> next input offset, durable but not committed
        self._rebuilding: dict[int, int] = {}  # partition -> input offset its lost table is rebuilt up to
        self._last_commit = 0.0
        self._commit_sent = 0.0
        self._faults = faults
        self._stop = threading.Event()
        self.state = ProcessorState.CREATED
        self._stores: dict[int, TablePartition] = {}   # open stores (kept across revocations)
        self._owned: dict[int, TablePartition] = {}    # currently assigned partitions
        self._assigned_once = False
        self.member_id: str | None = None
        self._resume_at: dict[int, int] = {}  # partition -> committed offset at assignment
        self._last_tick = time.monotonic()
        self._m_outcomes = {outcome: metrics.RECORDS.labels(spec.group, outcome) for outcome in _OUTCOMES}
        self._m_delay = metrics.RECORD_DELAY.labels(spec.group)
        self._lag_reported: set[int] = set()
        metrics.init_processor(spec.group, lambda: self.ready, self.guarantee.value)

    @classmethod
    def create(cls, spec: GroupSpec, settings: KafkaSettings, state_dir: str | Path, **options: Any) -> "Processor":
        """A processor with the default Kafka clients and its stores under ``state_dir/<group>``."""
        return cls(spec, KafkaClients(settings), LocalStores(Path(state_dir) / spec.group), **options)

    @property
    def transactional_id(self) -> str:
        """This member's transactional id: stable across restarts of the same instance."""
        member = self._settings.instance_id or self._stores_factory.member_id()
        return f"{self.spec.group}-{member}"

    # -- health ----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Joined the group, every assigned partition is restored and none is being rebuilt."""
        return (self.state is ProcessorState.RUNNING and self._assigned_once and not self._rebuilding
                and not self._restoring)

    def alive(self, stall_seconds: float = 60.0) -> bool:
        """The loop is turning (restores run inside it, a step per turn)."""
        if self.state in (ProcessorState.FAILED, ProcessorState.STOPPED):
            return False
        return time.monotonic() - self._last_tick < stall_seconds

    @property
    def partitions(self) -> list[int]:
        return sorted(self._owned)

    @property
    def restoring(self) -> list[int]:
        """Assigned partitions still catching up with their changelog (paused meanwhile)."""
        return sorted(self._restoring)

    @property
    def waiting(self) -> list[int]:
        """Restoring partitions at their readable end, held back by a transaction an earlier
        owner left open on their changelog (see recovery.py)."""
        restorer = getattr(self, "_restorer", None)
        return sorted(restorer.waiting) if restorer is not None else []

    @property
    def standby(self) -> list[int]:
        """Partitions kept warm for a takeover (owned by other members)."""
        return sorted(self._standby)

    def stop(self) -> None:
        """Ask ``run()`` to finish its batch, flush, commit and return."""
        self._stop.set()

    # -- main loop -----------------------------------------------------------

    def run(self) -> None:
        self.state = ProcessorState.STARTING
        spec = self.spec
        try:
            clients = self._clients
            topics = clients.topics()
            topics.ensure_copartitioned([spec.input_topic, spec.table_topic])
            ids = topics.topic_ids([spec.input_topic, spec.table_topic])
            self._input_topic_id, self._table_topic_id = ids[spec.input_topic], ids[spec.table_topic]
            self._partition_count = topics.partitions([spec.input_topic])[spec.input_topic]
            transactional = self.guarantee is Guarantee.EXACTLY_ONCE
            self._writer = ChangelogWriter(clients.producer, spec.group, self.guarantee,
                                           transactional_id=self.transactional_id if transactional else None,
                                           timeout=self._flush_timeout)
            self._writer.start()
            log.info("group %s: processing guarantee %s%s", spec.group, self.guarantee.value,
                     f" (transactional id {self._writer.transactional_id})" if transactional else "")
            # A transactional restore checks that it reached the log's end (recovery.py).
            self._restorer = Restorer(clients.reader(), spec.table_topic, spec.table_codec,
                                      should_stop=self._stop.is_set,
                                      log_ends=LogEnds(clients.admin, spec.table_topic) if transactional else None)
            if self.standby_replicas or (transactional and self._settings.instance_id):
                self._watch = MembershipWatch(clients.admin(), spec.group)
            self._consumer = clients.group_consumer(
                spec.group, on_commit=self._on_commit,
                **metrics.statistics_config(self._settings.extra, self._on_stats))
            self._consumer.subscribe([spec.input_topic], on_assign=self._on_assign,
                                     on_revoke=self._on_revoke, on_lost=self._on_lost)
            self.state = ProcessorState.RUNNING
            consumer, batch_size, timeout = self._consumer, self._batch_size, self._poll_timeout
            restorer, watch = self._restorer, self._watch
            while not self._stop.is_set():
                if restorer.busy or self._to_activate:
                    self._restore_step()
                if watch is not None and (members := watch.poll()) is not None:
                    self._plan_standby(members)
                msgs = consume_ready(consumer, batch_size, 0 if self._restoring else timeout)
                self._last_tick = now = time.monotonic()
                if msgs:
                    self._process(msgs)
                if self._to_commit and (not msgs or now - self._last_commit >= self._commit_interval):
                    self._commit(asynchronous=True)
        except RestoreError:
            if self._stop.is_set():
                # Asked to stop while restoring: nothing was processed, nothing is lost; the
                # loop ends and the process exits cleanly (SIGTERM drains, it does not fail).
                log.info("group %s: restore interrupted by shutdown", spec.group)
                return
            self.state = ProcessorState.FAILED
            log.exception("group %s: restore failed", spec.group)
            raise
        except BaseException:
            self.state = ProcessorState.FAILED
            raise
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        if self.state is not ProcessorState.FAILED:
            self.state = ProcessorState.STOPPING
        consumer = getattr(self, "_consumer", None)
        if consumer is not None:
            if self._to_commit and self.state is not ProcessorState.FAILED:
                self._commit(asynchronous=False)
            try:
                # Revokes (leaves the group unless membership is static) and waits
                # for asynchronous commits in flight.
                consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing consumer: %s", exc)
        restorer = getattr(self, "_restorer", None)
        if restorer is not None:
            restorer.close()
        if self._watch is not None:
            self._watch.close()
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()
        for part in self._stores.values():
            part.close()
        self._stores.clear()
        self._owned.clear()
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
            self._open(p).cache_entries = per_partition
        self._close_unused(keep=set(assigned) | self._standby)
        if self._watch is not None and self._members:
            self._fence_departed(consumer)
        # Where each partition resumes once restored, read here: the previous owner committed
        # before this rebalance ended, and a blocking call later, from the loop, could serve
        # the next rebalance's callbacks in the middle of activating a partition.
        self._resume_at = {}
        if partitions:
            try:
                self._resume_at = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
            except KafkaException as exc:  # the coordinator is away: asked again at activation
                log.warning("group %s: committed offsets not readable now (%s); asking again once restored",
                            self.spec.group, exc)
        # Assigned at the committed offsets when known, so the client need not look them up
        # (with the coordinator away a partition would wait in that lookup and refuse a seek);
        # none committed: offset 0, not "the beginning", which costs an offset lookup (~0.5 s);
        # a log that no longer starts at 0 is out of range, and auto.offset.reset is earliest.
        topic = self.spec.input_topic
        consumer.assign([TopicPartition(topic, tp.partition, self._resume_at[tp.partition]
                                        if self._resume_at[tp.partition] >= 0 else 0)
                         if tp.partition in self._resume_at else tp for tp in partitions])
        if partitions:
            consumer.pause(partitions)  # nothing is fetched before the partition is restored
        #: The group member id of the latest assignment (read here, on the processor's thread:
        #: a consumer must not be called from another thread while it polls).
        self.member_id = consumer.memberid()
        self._restoring = set(assigned)
        self._follow()
        if self._watch is not None:
            self._watch.request(self.member_id)
        self.state = ProcessorState.RESTORING if self._restoring else ProcessorState.RUNNING
        self._assigned_once = True
        metrics.PARTITIONS.labels(self.spec.group).set(len(self._owned))

    def _open(self, p: int) -> TablePartition:
        part = self._stores.get(p)
        if part is None:
            part = self._stores[p] = TablePartition(self._stores_factory.open(p), self.spec.table_codec, p,
                                                    max_value_bytes=self._max_value_bytes)
        return part

    def _close_unused(self, keep: set[int]) -> None:
        """Close the stores of partitions neither owned, restoring nor kept warm (their files stay)."""
        for p in list(self._stores):
            if p not in keep and p not in self._owned and p not in self._restoring:
                self._stores.pop(p).close()

    def _follow(self) -> None:
        """Tell the restorer what to follow: the restoring partitions and the standby copies."""
        self._restorer.follow({p: self._stores[p] for p in self._restoring},
                              {p: self._stores[p] for p in self._standby
                               if p not in self._owned and p not in self._restoring},
                              self._table_topic_id)

    def _restore_step(self) -> None:
        if self._restorer.busy:
            for p in self._restorer.step(RESTORE_STEP_SECONDS if self._restoring else 0.0):
                if p in self._restoring:
                    self._to_activate.add(p)
        for p in sorted(self._to_activate):
            if p not in self._restoring or self._activate(p):
                self._to_activate.discard(p)

    def _activate(self, p: int) -> bool:
        """A restored partition: check it, then resume it at its committed offset. False when
        Kafka cannot answer now (a broker away): the next turn of the loop tries again."""
        part = self._stores[p]
        part.cache.clear()  # another owner may have changed the table meanwhile
        self._check_input_incarnation(part)
        tp = TopicPartition(self.spec.input_topic, p)
        try:
            if p not in self._resume_at:
                self._resume_at[p] = self._consumer.committed([tp], timeout=2)[0].offset
            committed = self._resume_at[p]
            self._refuse_foreign_table(part, committed)
            start = max(committed, 0)
            rebuild_from = self._lost_table_start(part, committed)
            if p not in self._restoring:
                return True  # revoked meanwhile (a broker call may serve the consumer's callbacks)
            if rebuild_from is not None:
                start = rebuild_from
            # Explicitly from the committed offset: whatever was fetched before the pause is
            # discarded, so no record is skipped on the way.
            self._consumer.seek(TopicPartition(self.spec.input_topic, p, start))
        except KafkaException as exc:
            log.info("group %s: partition %d restored but not resumable yet (%s); trying again",
                     self.spec.group, p, exc)
            return False
        if rebuild_from is not None:
            self._rebuilding[p] = committed
        self._consumer.resume([tp])
        self._restoring.discard(p)
        self._owned[p] = part
        metrics.PARTITIONS.labels(self.spec.group).set(len(self._owned))
        if not self._restoring and self.state is ProcessorState.RESTORING:
            self.state = ProcessorState.RUNNING
            log.info("group %s: every assigned partition restored: processing %s", self.spec.group,
                     sorted(self._owned))
        return True

    def _refuse_foreign_table(self, part: TablePartition, committed: int) -> None:
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
        applied = raw_applied_offset(self.spec.table_codec)
        for key, data in part.store.items():
            try:
                if applied(data) >= 0:
                    continue
            except SkipRecord:
                pass  # not even our format
            raise ForeignTable(self.spec.group, self.spec.table_topic, self.spec.input_topic, part.partition,
                               key.decode(errors="replace"))

    def _lost_table_start(self, part: TablePartition, committed: int) -> int | None:
        """Where to rebuild a table partition that is empty although the group consumed its
        input: its changelog was deleted and recreated (or emptied), so resuming at the
        committed offset would reset every value to what the newer records alone make. A
        rebuilt partition is not ready until it passed that offset again. If the input no
        longer holds its first records, refuse: there is nothing to rebuild from.
        """
        if committed <= 0 or part.store.has_values():
            return None
        topic, p = self.spec.input_topic, part.partition
        low, _ = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if low > 0:
            raise StreamError(
                f"table {self.spec.table_topic!r} partition {p} is empty, but group "
                f"{self.spec.group!r} already consumed {topic!r}[{p}] up to offset {committed}, and "
                f"that partition now starts at offset {low}: the table cannot be rebuilt from it. Restore "
                f"{self.spec.table_topic!r} from a backup, or, if starting from an empty table is intended, "
                "delete the group's committed offsets")
        log.warning("group %s: table %s[%d] is empty but the input was consumed up to offset %d (its changelog "
                    "was recreated?): rebuilding it from %s[%d] offset %d; not ready until done",
                    self.spec.group, self.spec.table_topic, p, committed, topic, p, low)
        return low

    def _fence_departed(self, consumer: Consumer) -> None:
        """End what a member that left without a word (killed, partitioned away) left open.

        Its open transaction holds its changelog partitions' last stable offset, and its
        offset commits keep ours from being read (committed offsets are fetched stable),
        until the broker aborts it after transaction.timeout.ms. With static membership its
        transactional id is known (``<group>-<instance id>``): registering it ends the
        transaction and fences the member now. Only members gone from the group are fenced.
        """
        if not self._settings.instance_id or self.guarantee is not Guarantee.EXACTLY_ONCE:
            return
        try:
            description = self._watch.describe_now(timeout=5.0)
        except Exception as exc:  # noqa: BLE001 - the broker's timeout ends it anyway
            log.info("group %s: cannot list members to fence departed ones: %s", self.spec.group, exc)
            return
        current = {m.instance_id for m in description}
        departed = sorted({m.instance_id for m in self._members if m.instance_id} - current
                          - {self._settings.instance_id})
        for instance in departed:
            transactional_id = f"{self.spec.group}-{instance}"
            started = time.monotonic()
            try:
                producer = self._clients.producer(**{"transactional.id": transactional_id})
                init_transactions(producer, transactional_id, time.monotonic() + 10.0, 5.0)
                producer.flush(0)
                log.info("group %s: fenced departed member %s (transactional id %s) in %.2fs, ending what it "
                         "left open", self.spec.group, instance, transactional_id, time.monotonic() - started)
            except StreamError as exc:
                log.warning("group %s: could not fence departed member %s: %s", self.spec.group, instance, exc)
        self._members = description

    def _plan_standby(self, members: list[Member]) -> None:
        """Keep warm what this member would own after the failures the plan covers (standby.py)."""
        self._members = members
        if not self.standby_replicas:
            return
        keys = sort_keys(members)
        static = all(m.instance_id for m in members)
        me = self._settings.instance_id if static else self.member_id
        plan = standby_partitions(me or "", keys, self._partition_count, self.standby_replicas)
        if plan != self._standby:
            log.info("group %s: keeping partitions %s warm (standby for %d failure%s among %d members)",
                     self.spec.group, sorted(plan), self.standby_replicas,
                     "" if self.standby_replicas == 1 else "s", len(members))
        self._standby = plan
        for p in plan:
            self._open(p)
        self._close_unused(keep=plan)
        self._follow()

    def _check_input_incarnation(self, part: TablePartition) -> None:
        """Refuse a table built from another incarnation of the input topic.

        Table values carry input offsets; if the input topic was deleted and
        recreated its offsets start again, and records would be taken for replays
        and silently skipped. That needs an operator's decision (reset the group's
        tables and offsets), not a guess.
        """
        known = part.store.meta(INPUT_TOPIC_ID)
        if known is None:
            part.store.write([], {INPUT_TOPIC_ID: self._input_topic_id})
        elif known.decode() != self._input_topic_id:
            raise StreamError(
                f"topic {self.spec.input_topic!r} was deleted and recreated since table {self.spec.table_topic!r} "
                f"partition {part.partition} was built from it: its applied offsets no longer match. Reset the "
                f"group {self.spec.group!r} (delete {self.spec.table_topic!r}, its committed offsets and the local "
                "state) to rebuild the table from the new topic")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every batch is flushed before the next consume(), so only offsets can be
        # pending here: commit them so the next owner does not replay those records.
        # The stores stay open in case the partitions come back.
        self._commit(asynchronous=False, partitions=[tp.partition for tp in partitions])
        revoked = {tp.partition for tp in partitions}
        for p in revoked:
            self._owned.pop(p, None)
            self._restoring.discard(p)  # its progress is in its store: a return resumes it
            self._to_activate.discard(p)
            self._rebuilding.pop(p, None)  # its next owner finishes the rebuild
        if self.standby_replicas:
            # Kept warm until the next plan: a partition handed straight back (or to the member
            # this one would take over from) is then current.
            self._standby |= revoked & set(self._stores)
        self._follow()
        log.info("group %s: revoked partitions %s", self.spec.group, sorted(revoked))
        metrics.PARTITIONS.labels(self.spec.group).set(len(self._owned))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("group %s: lost partitions %s (session expired)", self.spec.group,
                    sorted(tp.partition for tp in partitions))
        for tp in partitions:  # not ours any more: committing would be refused
            self._to_commit.pop(tp.partition, None)
        self._on_revoke(consumer, partitions)

    # -- batches -------------------------------------------------------------------

    def _process(self, msgs: list[Message]) -> None:
        spec = self.spec
        # Who consumed these records, and under which generation (see Checkpoint).
        consumer = self._consumer
        member = (consumer.memberid(), consumer.consumer_group_metadata()
                  if self.guarantee is Guarantee.EXACTLY_ONCE else None)
        txns: dict[int, Transaction] = {}
        batch = _BatchQuarantine()
        counts = dict.fromkeys(_OUTCOMES, 0)
        oldest_ms = 0  # timestamp of the batch's oldest record (the first of each partition)
        # One line per record at debug level, with the id of the request that caused it
        # (WALLET_LOG_LEVEL=info,walletkit.stream.processor=debug follows deposits through).
        trace = log.isEnabledFor(logging.DEBUG)
        started = time.perf_counter()
        for i, m in enumerate(msgs):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise StreamError(f"consumer: {err.str()}")
                log.warning("consumer: %s", err.str())
                continue
            p = m.partition()
            txn = txns.get(p)
            if txn is None:
                part = self._owned.get(p)
                if part is None:
                    continue  # revoked meanwhile: its new owner processes it
                txn = txns[p] = part.begin()
                txn.first_offset = m.offset()
                ts_type, ts_ms = m.timestamp()
                if ts_type and ts_ms > 0 and (not oldest_ms or ts_ms < oldest_ms):
                    oldest_ms = ts_ms
            offset = txn.last_offset = m.offset()
            raw_key = m.key()
            try:
                key = raw_key.decode() if raw_key is not None else None
            except UnicodeDecodeError:
                key = None
            if key is None:  # no table key: nothing it could change
                counts["skipped"] += 1
                log.warning("group %s: skipping record %s[%d]@%d: no UTF-8 key", spec.group, spec.input_topic, p, offset)
                continue
            outcome = self._apply(txn, key, m, msgs, i, batch)
            counts[outcome] += 1
            if trace:
                log.debug("group %s: record %s", spec.group, outcome, extra={
                    "record_key": key, "partition": p, "offset": offset, "request_id": request_id_of(m)})
        metrics.CALLBACK_SECONDS.labels(spec.group).observe(time.perf_counter() - started)
        if not txns:
            return
        metrics.BATCH_SIZE.labels(spec.group).observe(len(msgs))
        if self._flush(txns, member):
            for outcome, n in counts.items():
                self._m_outcomes[outcome].inc(n)
            if oldest_ms:
                self._m_delay.observe(max(time.time() - oldest_ms / 1000, 0.0))

    def _apply(self, txn: Transaction, key: str, m: Message, msgs: list[Message], index: int,
               batch: "_BatchQuarantine") -> str:
        """Apply one record to its key in ``txn``; its outcome (see metrics.RECORDS).

        A record the table refuses (ValueTooLarge) is quarantined, and nothing has left the
        process yet. The first time in a batch, the batch's writes of its key (and side
        entries) are dropped and the key's earlier records of the batch applied again; from
        then on the key's records run with snapshots, so a refusal is undone in place. Other
        keys are untouched either way, and a replay decides exactly the same.
        """
        spec = self.spec
        p, offset = m.partition(), m.offset()
        current = txn.get(key)
        if current is not None and spec.table_codec.applied_offset(current) >= offset:
            return "duplicate"
        reason = batch.reasons.get((p, offset))
        if reason is not None:  # only while re-applying the key's earlier records
            self._note_quarantine(txn, key, m, reason)
            return "quarantined"
        hot = (p, key) in batch.hot
        ctx = Context(txn, spec.table_codec, key, p, offset, m, snapshot=hot)
        try:
            # Only SkipRecord is tolerated: any other error (a bug) stops the processor
            # without committing, so the record is retried rather than lost.
            spec.callback(ctx, spec.input_codec.decode(m.value()))
            return "processed"
        except ValueTooLarge as exc:
            if batch.replaying:
                raise StreamError(f"group {spec.group}: re-applying {spec.input_topic}[{p}]@{offset} was refused "
                                  f"({exc}) although it was accepted before: callbacks must be deterministic") from exc
            log.error("group %s: quarantining record %s[%d]@%d: %s; the rest of the partition goes on",
                      spec.group, spec.input_topic, p, offset, exc,
                      extra={"record_key": key, "partition": p, "offset": offset})
            batch.reasons[(p, offset)] = str(exc)
            if hot:
                ctx.undo()
            else:
                txn.forget(key)
                batch.replaying = True
                try:
                    raw_key = m.key()
                    for earlier in msgs[:index]:
                        if earlier.error() is None and earlier.partition() == p and earlier.key() == raw_key:
                            self._apply(txn, key, earlier, msgs, 0, batch)
                finally:
                    batch.replaying = False
                batch.hot.add((p, key))
            self._note_quarantine(txn, key, m, str(exc))
            return "quarantined"
        except SkipRecord as exc:
            if hot:
                ctx.undo()  # the callback may have changed the value before it refused the record
            log.warning("group %s: skipping record %s[%d]@%d: %s", spec.group, spec.input_topic, p, offset, exc,
                        extra={"record_key": key, "partition": p, "offset": offset})
            return "skipped"

    def _note_quarantine(self, txn: Transaction, key: str, m: Message, reason: str) -> None:
        """The group's hook notes the record for its key; a note that does not fit is undone."""
        if self.spec.quarantine is None:
            return
        ctx = Context(txn, self.spec.table_codec, key, m.partition(), m.offset(), m, snapshot=True)
        try:
            self.spec.quarantine(ctx, reason)
        except ValueTooLarge as exc:  # even the note does not fit: counted and logged only
            ctx.undo()
            log.error("group %s: cannot note the quarantine of %s[%d]@%d: %s", self.spec.group,
                      self.spec.input_topic, m.partition(), m.offset(), exc)

    def _flush(self, txns: dict[int, Transaction], member: tuple[str | None, Any]) -> bool:
        """Make a batch durable through its checkpoint; on failure abort and rewind it."""
        spec = self.spec
        started = time.perf_counter()
        checkpoint = Checkpoint(txns, self._writer, self._consumer, input_topic=spec.input_topic,
                                table_topic=spec.table_topic, member=member, faults=self._faults)
        try:
            checkpoint.prepare()
            checkpoint.commit()
        except CheckpointFailed as exc:
            checkpoint.abort(exc, set(self._owned))
            self._stop.wait(0.2 if exc.fenced else 1.0)
            return False
        to_commit = checkpoint.flush()
        metrics.CHANGELOG_RECORDS.labels(spec.group).inc(checkpoint.records)
        metrics.FLUSH_SECONDS.labels(spec.group).observe(time.perf_counter() - started)
        self._to_commit.update(to_commit)
        for p, next_offset in checkpoint.next_offsets.items():
            if next_offset >= self._rebuilding.get(p, next_offset + 1):
                del self._rebuilding[p]
                log.info("group %s: table %s[%d] rebuilt from the input", spec.group, spec.table_topic, p)
        return True

    def _commit(self, *, asynchronous: bool, partitions: list[int] | None = None) -> None:
        """Commit the offsets of flushed batches (all, or those of ``partitions``).

        A commit only saves replays: the state is already durable, and a record
        replayed after a lost commit is a no-op (its offset is applied). So commits
        are asynchronous and batched; failures are counted and logged.
        """
        pending = self._to_commit
        if partitions is None:
            offsets = [TopicPartition(self.spec.input_topic, p, off) for p, off in pending.items()]
            pending.clear()
        else:
            offsets = [TopicPartition(self.spec.input_topic, p, pending.pop(p)) for p in partitions if p in pending]
        if not offsets:
            return
        self._last_commit = started = time.monotonic()
        try:
            if asynchronous:
                self._commit_sent = started
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                metrics.COMMIT_SECONDS.labels(self.spec.group).observe(time.monotonic() - started)
        except KafkaException as exc:
            self._commit_failed(exc.args[0] if exc.args else exc)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Result of an asynchronous commit (served by consume(), on this thread)."""
        failed = err if err is not None else next((tp.error for tp in partitions if tp.error is not None), None)
        if failed is not None:
            self._commit_failed(failed)
        elif self._commit_sent:
            metrics.COMMIT_SECONDS.labels(self.spec.group).observe(time.monotonic() - self._commit_sent)

    def _commit_failed(self, err: Any) -> None:
        metrics.COMMIT_FAILURES.labels(self.spec.group).inc()
        log.warning("group %s: commit refused (%s); records will replay as duplicates", self.spec.group,
                    err.str() if isinstance(err, KafkaError) else err)

    def _on_stats(self, stats: str) -> None:
        """librdkafka statistics (served by consume(), on this thread): lag per partition, state size."""
        lag = metrics.consumer_lag_from_statistics(stats, self.spec.input_topic)
        owned = self._owned
        self._lag_reported = metrics.set_partition_gauges(
            metrics.CONSUMER_LAG, self.spec.group, {p: v for p, v in lag.items() if p in owned}, self._lag_reported)
        metrics.STATE_BYTES.labels(self.spec.group).set(sum(part.store.size_bytes() for part in owned.values()))
