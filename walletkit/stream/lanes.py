"""The lanes of a transactional emitter: records waiting, and the transactions that commit them.

Records wait in the emitter's queue as :class:`Waiting`; each :class:`Lane` (a thread with
its own :class:`~walletkit.stream.producer.TransactionalProducer`) takes everything waiting
into one transaction and commits it, and only then are its records acknowledged (group
commit: while some lanes commit, the queue fills for the next). A transaction that fails is
aborted, which makes its records invisible to ``read_committed`` readers, and its records
are produced again in the next one until their deadline passes. One whose outcome is unknown
(the commit was asked for, the producer was lost) is never produced again: its records fail
with "retry with an Idempotency-Key".

A lane knows its emitter only through :class:`LaneHost`: where records wait, how to settle
them, how to make a client, and whom to tell that Kafka seems unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, KafkaError, KafkaException, Producer

from walletkit.stream import metrics
from walletkit.stream.errors import BrokerUnavailable, ClientStuck, EmitError
from walletkit.stream.kafka import kafka_error
from walletkit.stream.producer import TransactionalProducer

log = logging.getLogger("walletkit.stream.emitter")


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where an acknowledged record was stored."""

    topic: str
    partition: int
    offset: int
    #: The broker's LogAppendTime in milliseconds when the topic has the broker stamp its
    #: records (message.timestamp.type=LogAppendTime), else None.
    log_append_time_ms: int | None = None

    @classmethod
    def of(cls, msg: Any) -> Delivery:
        ts_type, ts_ms = msg.timestamp()
        return cls(msg.topic(), msg.partition(), msg.offset(), ts_ms if ts_type == TIMESTAMP_LOG_APPEND_TIME else None)


@dataclass(slots=True, eq=False)
class Waiting:
    """A record of a transactional emitter on its way into a transaction."""

    key: bytes
    value: bytes
    partition: int
    headers: list[tuple[str, bytes]] | None
    fut: asyncio.Future
    deadline: float  # monotonic; after it the record fails (503)
    delivery: Delivery | None = None
    error: KafkaError | None = None


class Abort(Exception):
    """The transaction failed. ``aborted``: it certainly was aborted, so its records are
    invisible and may be produced again; otherwise its outcome is unknown (it may have
    committed), and producing them again could store them twice."""

    def __init__(self, reason: str, aborted: bool) -> None:
        super().__init__(reason)
        self.aborted = aborted


class LaneHost(Protocol):
    """What a lane needs of its emitter."""

    topic: str
    #: Seconds an abort may wait for the coordinator before the producer is replaced instead.
    abort_timeout: float

    def make_producer(self, **config: Any) -> Producer: ...

    def take(self, lane: Lane) -> list[Waiting] | None:
        """Everything waiting (up to a transaction's worth); None once the emitter closed."""
        ...

    def settle(self, batch: list[Waiting], error: EmitError | None) -> None: ...

    def on_error(self, err: KafkaError) -> None: ...

    def check_reachable(self) -> None:
        """Records went unacknowledged in time: if no broker answers now, treat Kafka as
        unreachable (new records fail fast) until a probe reaches it."""
        ...


class Lane:
    """One transactional producer of an emitter and the thread that commits with it."""

    def __init__(self, host: LaneHost, transactional_id: str) -> None:
        self.host = host
        self.transactional_id = transactional_id
        self.txn = TransactionalProducer(
            host.make_producer, transactional_id, name=f"emitter-lane-{transactional_id}", on_error=self._on_error
        )
        self._m_committed = metrics.EMIT_TRANSACTIONS.labels(host.topic, "committed")
        self._m_aborted = metrics.EMIT_TRANSACTIONS.labels(host.topic, "aborted")

    @property
    def producer(self) -> Producer | None:
        """The lane's current client (None while one stuck in a call waits to be replaced)."""
        return self.txn.producer

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("emitter lane %s: fatal error: %s; replacing its producer", self.transactional_id, err.str())
        self.host.on_error(err)

    def start(self, deadline: float) -> None:
        """Register the lane's transactional id (fencing an earlier producer with the same id,
        ending what it left open); retried while the coordinator loads, until ``deadline``."""
        self.txn.start(deadline, deadline - time.monotonic())

    def _leave_behind(self, exc: ClientStuck) -> None:
        """A producer stuck in a call: never called again nor destroyed until the call returns;
        the next batch registers a new one, which fences it and ends its transaction."""
        log.warning("emitter lane %s: %s; replacing the producer", self.transactional_id, exc)
        self.txn.leave_behind(exc)

    def close(self) -> None:
        self.txn.close(timeout=1.0)

    def serve(self) -> None:
        while (batch := self.host.take(self)) is not None:
            self.commit(batch)

    def commit(self, batch: list[Waiting]) -> None:
        """Commit ``batch`` in one transaction, in as many attempts as its deadlines allow."""
        settle = self.host.settle
        failure = "no attempt"
        while True:
            now = time.monotonic()
            late = {w for w in batch if w.deadline <= now or w.fut.done()}
            if late:
                settle(list(late), EmitError(f"not acknowledged by Kafka in time ({failure})"))
                batch = [w for w in batch if w not in late]
            if not batch:
                return
            deadline = min(w.deadline for w in batch)
            try:
                if self.txn.fatal:
                    self.start(deadline)
                self._transaction(batch, deadline)
            except Abort as exc:
                failure = str(exc)
                if self.txn.fatal:
                    self._replace(deadline)
                if not exc.aborted:
                    log.warning(
                        "emitter lane %s: transaction of %d records failed with an unknown outcome (%s)",
                        self.transactional_id,
                        len(batch),
                        failure,
                    )
                    settle(batch, EmitError(f"the outcome is unknown ({failure}); retry with an Idempotency-Key"))
                    return
                self._m_aborted.inc()
                log.info(
                    "emitter lane %s: transaction of %d records aborted (%s); producing them again",
                    self.transactional_id,
                    len(batch),
                    failure,
                )
                continue
            except BrokerUnavailable as exc:
                failure = str(exc)
                continue
            self._m_committed.inc()  # the flush before it reported every record's delivery
            settle(batch, None)
            return

    def _replace(self, deadline: float) -> None:
        """Register a new producer now, not at the next batch: the registration ends the
        transaction the failed one left open, which until then holds every read_committed
        reader of its partitions (views, processors, the ledger) at its first record for up
        to transaction.timeout.ms. If Kafka is unreachable the next batch tries again."""
        try:
            self.start(max(deadline, time.monotonic() + 1.0))
        except BrokerUnavailable as exc:
            log.warning(
                "emitter lane %s: replacing the producer: %s; trying again with the next batch",
                self.transactional_id,
                exc,
            )

    def _produce_all(self, batch: list[Waiting]) -> None:
        """Produce every record of ``batch``; a record the producer refuses on its own (say, too
        large) fails alone and leaves the batch, the others go on."""
        producer, topic = self.txn.producer, self.host.topic
        refused = []
        for w in batch:
            w.delivery = w.error = None
            while True:
                try:
                    producer.produce(
                        topic,
                        w.value,
                        w.key,
                        partition=w.partition,
                        headers=w.headers,
                        on_delivery=lambda err, msg, w=w: _delivered(w, err, msg),
                    )
                    break
                except BufferError:
                    producer.poll(0.01)
                except KafkaException as exc:
                    err = kafka_error(exc)
                    if err is None or err.txn_requires_abort() or err.fatal():
                        raise
                    refused.append(w)
                    self.host.settle([w], EmitError(f"refused by the producer: {err.str()}"))
                    break
        if refused:
            batch[:] = [w for w in batch if w not in refused]

    def _transaction(self, batch: list[Waiting], deadline: float) -> None:
        txn = self.txn
        committing = False  # once the commit was asked for, a failure's outcome may be "committed"
        try:
            txn.begin()
            self._produce_all(batch)
            # Every record acknowledged (or failed) before the commit is asked for: a failure
            # up to here (a fenced producer, a lost leader) certainly leaves it uncommitted.
            remaining = txn.producer.flush(max(0.1, deadline - time.monotonic()))
            failed = next((w.error for w in batch if w.error is not None), None)
            if remaining or failed is not None:
                reason = failed.str() if failed is not None else f"{remaining} records unacknowledged in time"
                if remaining:
                    self.host.check_reachable()
                self._abandon(failed if failed is not None and failed.fatal() else None)
                raise Abort(reason, aborted=True)
            committing = True
            txn.commit(deadline)
        except KafkaException as exc:
            err = kafka_error(exc)
            aborted = self._abandon(err) or not committing
            raise Abort(err.str() if err is not None else str(exc), aborted) from exc
        except ClientStuck as exc:  # in the commit: its outcome is unknown
            self._leave_behind(exc)
            raise Abort(str(exc), aborted=False) from exc

    def _abandon(self, err: KafkaError | None) -> bool:
        """End a failed transaction so the next can begin; True if it certainly aborted.

        Aborts it, or replaces the producer when it is fenced, fatally failed or cannot
        abort: a new producer with the same transactional id ends the old one's
        transaction when it registers, committing it if its commit had begun, so then
        the outcome is unknown."""
        txn = self.txn
        if err is None or not err.fatal():
            # Short: an abort that cannot reach the coordinator soon is settled by replacing
            # the producer (its successor's registration ends the transaction).
            if txn.abort(min(self.host.abort_timeout, 2.0)):
                return True
            if txn.stuck is not None:
                return False
        else:
            log.warning("emitter lane %s: producer failed (%s); replacing it", self.transactional_id, err.str())
        txn.fatal = True
        if txn.producer is not None:
            txn.producer.purge()
        return False


def _delivered(w: Waiting, err: KafkaError | None, msg: Any) -> None:  # on a lane's thread
    if err is None:
        w.delivery = Delivery.of(msg)
    else:
        w.error = err
