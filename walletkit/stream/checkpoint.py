"""A processor batch's way to durability: the checkpoint, and the producer it writes with.

The processing guarantee is one setting (:class:`Guarantee`), as in Kafka Streams:

- ``exactly_once`` (Kafka transactions, in the shape of Kafka Streams' ``exactly_once_v2``,
  KIP-447): each member owns one transactional producer; a batch's changelog records and
  its input offsets, sent with the consumer's group metadata, commit in one transaction.
  A member whose partitions moved on (a new group generation) cannot commit: the broker
  refuses its offsets, the transaction aborts and none of its changelog records are ever
  seen by a ``read_committed`` reader. That fences a paused ("zombie") member.
- ``applied_offsets`` (brokers without working transactions, such as the embedded
  default of ``make run``): an idempotent producer; every table value carries the input
  offset it reflects, so a replayed record is recognised and skipped, and readers keep
  the value with the highest applied offset. Input offsets are committed after the
  batch is durable, asynchronously. The applied-offset check stays on in both modes as a
  second line of defence.

A :class:`Checkpoint` owns one batch and goes through numbered steps, each a state:

1. ``prepare()``: OPEN -> PREPARED. One changelog record per changed key, acknowledged by
   every in-sync replica (inside the member's transaction under exactly-once).
2. ``commit()``: PREPARED -> COMMITTED. Exactly-once: the input offsets join the
   transaction and it commits; changelog and offsets become visible together or not at
   all. Applied-offsets: nothing more to do (the acks of step 1 made the changelog
   durable; the offsets follow in step 4).
3. ``flush()``: COMMITTED -> FLUSHED. The local stores: values and changelog position in
   one atomic RocksDB write per partition. Under exactly-once the store is written only
   once the transaction committed, so it never holds what the changelog may lose.
4. Applied-offsets only: the processor commits the returned input offsets later.

``abort()`` (any state before FLUSHED -> ABORTED): the transaction is aborted, the
partitions' caches (which hold the batch's writes) are dropped and the consumer rewinds
to the batch's first offsets; callbacks are deterministic, so the re-run produces the
same values. A crash between any two steps is reconciled by restore (the changelog from
the store's position, ``read_committed``) and by the committed offsets.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from walletkit.stream import metrics
from walletkit.stream.errors import ClientStuck, StreamError
from walletkit.stream.faults import CrashInjector
from walletkit.stream.kafka import kafka_error
from walletkit.stream.partitioner import partition_for
from walletkit.stream.producer import TransactionalProducer
from walletkit.stream.table import Transaction

log = logging.getLogger(__name__)


class Guarantee(str, enum.Enum):  # noqa: UP042 - str() and format() stay as they were
    """The processing guarantee of a processor (``WALLET_PROCESSING_GUARANTEE``)."""

    EXACTLY_ONCE = "exactly_once"
    APPLIED_OFFSETS = "applied_offsets"


class CheckpointState(enum.Enum):
    OPEN = "open"
    PREPARED = "prepared"
    COMMITTED = "committed"
    FLUSHED = "flushed"
    ABORTED = "aborted"


class CheckpointFailed(StreamError):
    """A batch could not be made durable; it is aborted and re-run. ``fenced`` marks a
    refusal because this member no longer owns its partitions (or its producer id)."""

    def __init__(self, reason: str, *, fenced: bool = False) -> None:
        super().__init__(reason)
        self.fenced = fenced


#: Broker answers that mean "another member owns this now": the batch can never commit.
_FENCED_CODES = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError._FENCED,
}


class ChangelogWriter:
    """The member's changelog producer: transactional under exactly-once, idempotent otherwise.

    ``make_producer(config_overrides)`` builds the client (the processor's options inject
    it). Under exactly-once it is a :class:`~walletkit.stream.producer.TransactionalProducer`
    (the emitter's lanes use the same), replaced when it fails fatally (fenced by a newer
    instance of the same transactional id), cannot abort, or is stuck in a call.
    """

    def __init__(
        self,
        make_producer: Callable[..., Producer],
        group: str,
        guarantee: Guarantee,
        *,
        transactional_id: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if guarantee is Guarantee.EXACTLY_ONCE and not transactional_id:
            raise ValueError("exactly-once needs a transactional id")
        self._make_producer = make_producer
        self.group = group
        self.guarantee = guarantee
        self.transactional_id = transactional_id
        self.timeout = timeout
        self._txn = (
            TransactionalProducer(
                make_producer,
                transactional_id,
                name=f"{group}-transactions",
                config={"linger.ms": 1},
                on_error=self._on_error,
            )
            if self.transactional
            else None
        )
        self._plain: Producer | None = None  # the idempotent producer (applied-offsets)
        self._plain_fatal = False
        self.delivered: dict[int, int] = {}
        self.errors: list[KafkaError] = []

    @property
    def transactional(self) -> bool:
        return self.guarantee is Guarantee.EXACTLY_ONCE

    @property
    def producer(self) -> Producer | None:
        """The current client."""
        return self._txn.producer if self._txn is not None else self._plain

    def start(self) -> None:
        """Create the producer; under exactly-once, register the transactional id (this fences
        and aborts whatever an earlier instance with the same id left open)."""
        if self._txn is not None:
            self._txn.start(time.monotonic() + max(self.timeout, 60.0), self.timeout)
            return
        self._plain_fatal = False
        self._plain = self._make_producer(**{"linger.ms": 1, "error_cb": self._on_error})

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._plain_fatal = True  # (the transactional producer marks itself)
        log.warning("group %s changelog producer: %s", self.group, err.str())

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(err)
            return
        p, off = msg.partition(), msg.offset()
        if off > self.delivered.get(p, -1):
            self.delivered[p] = off

    def _produce(self, topic: str, value: bytes | None, key: bytes, partition: int, on_delivery: Any) -> None:
        producer = self.producer
        while True:
            try:
                producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery)
                return
            except BufferError:
                producer.poll(0.05)

    def _on_output_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:  # only the changelog's offsets position the stores
            self.errors.append(err)

    def begin(self) -> None:
        self.delivered = {}
        self.errors = []
        if self._txn is not None:
            try:
                self._txn.begin()
            except KafkaException as exc:
                raise self._failed("begin transaction", exc) from exc

    def send(
        self,
        topic: str,
        changes: dict[int, list[tuple[bytes, bytes | None]]],
        outputs: list[tuple[str, int, bytes, bytes | None]] = (),
    ) -> int:
        """Queue every change (and every emitted record: topic, partition, key, value); wait
        until all are acknowledged; return how many changes."""
        count = 0
        try:
            for p, kvs in changes.items():
                for key, value in kvs:
                    self._produce(topic, value, key, p, self._on_delivery)
                    count += 1
            for out_topic, p, key, value in outputs:
                self._produce(out_topic, value, key, p, self._on_output_delivery)
        except KafkaException as exc:
            raise self._failed("produce", exc) from exc
        remaining = self.producer.flush(self.timeout) if count or outputs else 0
        if remaining or self.errors:
            reason = self.errors[0].str() if self.errors else f"{remaining} records unacknowledged"
            raise CheckpointFailed(
                f"changelog write failed: {reason}", fenced=any(e.code() in _FENCED_CODES for e in self.errors)
            )
        return count

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        """Exactly-once: send the input offsets with the group metadata the batch was consumed
        under, and commit the transaction."""
        txn = self._txn
        if txn is None:
            return
        started = time.monotonic()
        try:
            txn.send_offsets(offsets, group_metadata, self.timeout)
        except KafkaException as exc:
            raise self._failed("send offsets", exc) from exc
        except ClientStuck as exc:
            raise self._stuck_in("send offsets", exc) from exc
        try:
            txn.commit(time.monotonic() + self.timeout)
        except KafkaException as exc:
            raise self._failed("commit transaction", exc) from exc
        except ClientStuck as exc:
            raise self._stuck_in("commit transaction", exc) from exc
        metrics.TRANSACTIONS.labels(self.group, "committed").inc()
        metrics.COMMIT_SECONDS.labels(self.group).observe(time.monotonic() - started)

    def _stuck_in(self, step: str, exc: ClientStuck) -> CheckpointFailed:
        """A call that never returned: the producer is left behind and replaced by ``abort()``.
        Its transaction is aborted by the new producer's registration, or had committed: the
        batch is redone from the stores (written only after a commit) and gives the same values
        either way."""
        self._txn.leave_behind(exc)
        return CheckpointFailed(f"{step}: {exc}; replacing the changelog producer")

    def _failed(self, step: str, exc: KafkaException) -> CheckpointFailed:
        err = kafka_error(exc)
        if err is not None and err.fatal():
            if self._txn is not None:
                self._txn.fatal = True
            else:
                self._plain_fatal = True
        fenced = err is not None and (err.code() in _FENCED_CODES or "fenced" in err.str().lower())
        return CheckpointFailed(f"{step}: {err.str() if err is not None else exc}", fenced=fenced)

    def abort(self) -> None:
        """Drop what the batch wrote: abort the transaction (or purge unsent records); replace a
        producer that failed, could not abort or is stuck in a call."""
        txn = self._txn
        if txn is None:
            if self._plain is None:
                return
            self._plain.purge(in_queue=True, in_flight=False)
            self._plain.flush(1)
            if self._plain_fatal:
                log.warning("group %s: replacing the changelog producer after a fatal error", self.group)
                self.close()
                self.start()
            return
        if txn.stuck is None and txn.in_transaction:
            if txn.fatal or txn.abort(self.timeout):
                metrics.TRANSACTIONS.labels(self.group, "aborted").inc()
        if txn.stuck is not None:
            log.warning(
                "group %s: the changelog producer is stuck in a call (%s); replacing it: the new one "
                "fences it and ends its transaction",
                self.group,
                txn.stuck,
            )
            metrics.TRANSACTIONS.labels(self.group, "abandoned").inc()
            self.start()
        elif txn.fatal:
            log.warning(
                "group %s: replacing the changelog producer after a fatal error or an unfinished abort", self.group
            )
            txn.close()
            self.start()
        txn.in_transaction = False

    def close(self) -> None:
        if self._txn is not None:
            self._txn.close()
            return
        producer, self._plain = self._plain, None
        if producer is not None:
            try:
                producer.flush(5)
            except KafkaException as exc:
                log.info("group %s: closing the changelog producer: %s", self.group, exc)


class Checkpoint:
    """One batch of a processor on its way to durability (see the module doc for the steps)."""

    def __init__(
        self,
        txns: dict[int, Transaction],
        writer: ChangelogWriter,
        consumer: Consumer,
        *,
        input_topic: str,
        table_topic: str,
        member: tuple[str | None, Any],
        faults: CrashInjector | None = None,
        output_partitions: dict[str, int] | None = None,
    ) -> None:
        self.txns = txns
        self.writer = writer
        self.consumer = consumer
        #: (member id, group metadata) of the consumer when it handed out the batch's records.
        self.member_id, self.group_metadata = member
        self.input_topic = input_topic
        self.table_topic = table_topic
        self.faults = faults
        self.state = CheckpointState.OPEN
        self.changes = {p: txn.changes() for p, txn in txns.items()}
        #: What the batch's callbacks emitted, placed by the toolkit's partitioner (Goka's).
        counts = output_partitions or {}
        self.outputs = [
            (topic, partition_for(key, counts[topic]), key, value)
            for txn in txns.values()
            for _, topic, key, value in txn.emitted
        ]
        self.records = 0

    def _expect(self, state: CheckpointState) -> None:
        if self.state is not state:
            raise RuntimeError(f"checkpoint is {self.state.value}, expected {state.value}")

    @property
    def next_offsets(self) -> dict[int, int]:
        """Input offset to resume from, per partition, once this batch is durable."""
        return {p: txn.last_offset + 1 for p, txn in self.txns.items()}

    def _check_membership(self) -> None:
        """The member that consumed the batch must still be this consumer's identity.

        librdkafka forgets its member id as soon as a heartbeat learns the member was
        removed (its session expired while it was paused), before the application hears
        of the lost partitions. Group metadata without a member would be accepted by the
        broker's transactional offset commit (as from a producer outside any group), so
        a batch whose member is gone is refused here; one whose member is only stale
        carries the metadata it was consumed under and the broker refuses it.
        """
        if self.faults is not None and not getattr(self.faults, "local_fence", True):
            return  # the fence tests' knob: the broker's fence alone
        current = self.consumer.memberid()
        if not self.member_id or current != self.member_id:
            raise CheckpointFailed(
                f"the group membership changed during the batch (member {self.member_id!r} is now {current!r})",
                fenced=True,
            )

    # 1.
    def prepare(self) -> None:
        self._expect(CheckpointState.OPEN)
        if self.faults:
            self.faults.maybe_crash("pause_before_changelog")
        self._check_membership()  # the last moment before anything is written
        self.writer.begin()
        self.records = self.writer.send(self.table_topic, self.changes, self.outputs)
        self.state = CheckpointState.PREPARED
        if self.faults:
            self.faults.maybe_crash("after_changelog")

    # 2.
    def commit(self) -> None:
        self._expect(CheckpointState.PREPARED)
        if self.writer.transactional:
            self._check_membership()
        self.writer.commit(
            [TopicPartition(self.input_topic, p, off) for p, off in self.next_offsets.items()], self.group_metadata
        )
        self.state = CheckpointState.COMMITTED
        if self.faults:
            self.faults.maybe_crash("after_commit")

    # 3.
    def flush(self) -> dict[int, int]:
        """Write the stores; return the input offsets still to commit (applied-offsets mode)."""
        self._expect(CheckpointState.COMMITTED)
        delivered = self.writer.delivered
        for p, kvs in self.changes.items():
            if kvs:  # a batch of only replays or skips changes nothing locally
                part = self.txns[p].table
                part.store.write(kvs, part.checkpoint(delivered[p] + 1))
        self.state = CheckpointState.FLUSHED
        if self.faults:
            self.faults.maybe_crash("after_store")
        for txn in self.txns.values():
            txn.table.trim_cache()
        return {} if self.writer.transactional else self.next_offsets

    def abort(self, reason: CheckpointFailed, owned: set[int]) -> None:
        """Undo the batch: abort its transaction, drop the caches, rewind the owned partitions."""
        if self.state is CheckpointState.FLUSHED:
            raise RuntimeError("a flushed checkpoint cannot be aborted")
        self.state = CheckpointState.ABORTED
        group = self.writer.group
        metrics.FLUSH_FAILURES.labels(group).inc()
        if reason.fenced:
            metrics.FENCED.labels(group).inc()
            log.error(
                "group %s: fenced, the batch's writes are refused and aborted (%s): another member "
                "owns these partitions now",
                group,
                reason,
            )
        else:
            log.error("group %s: batch not made durable (%s); aborting and rewinding it", group, reason)
        self.writer.abort()
        for p, txn in self.txns.items():
            txn.table.cache.clear()  # it holds the batch's writes, which were not made durable
            if p in owned and txn.first_offset >= 0:
                try:
                    self.consumer.seek(TopicPartition(self.input_topic, p, txn.first_offset))
                except KafkaException as exc:
                    log.warning("rewinding %s[%d]: %s", self.input_topic, p, exc)


class OffsetCommits:
    """Input offsets committed by the group consumer (applied-offsets; exactly-once commits them
    in the batch's transaction).

    A commit only saves replays: the state is already durable, and a record replayed after a
    lost commit is a no-op (its offset is applied). So commits are asynchronous and batched,
    synchronous only on revocation and shutdown; failures are counted and logged.
    """

    def __init__(self, group: str) -> None:
        self.group = group
        #: When the latest commit was sent (monotonic; 0: never).
        self.last = 0.0
        self._sent = 0.0

    def commit(self, consumer: Consumer, offsets: list[TopicPartition], *, asynchronous: bool) -> None:
        self.last = started = time.monotonic()
        try:
            if asynchronous:
                self._sent = started
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
                metrics.COMMIT_SECONDS.labels(self.group).observe(time.monotonic() - started)
        except KafkaException as exc:
            self._failed(exc.args[0] if exc.args else exc)

    def on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Result of an asynchronous commit (served by consume(), on the processor's thread)."""
        failed = err if err is not None else next((tp.error for tp in partitions if tp.error is not None), None)
        if failed is not None:
            self._failed(failed)
        elif self._sent:
            metrics.COMMIT_SECONDS.labels(self.group).observe(time.monotonic() - self._sent)

    def _failed(self, err: Any) -> None:
        metrics.COMMIT_FAILURES.labels(self.group).inc()
        log.warning(
            "group %s: commit refused (%s); records will replay as duplicates",
            self.group,
            err.str() if isinstance(err, KafkaError) else err,
        )
