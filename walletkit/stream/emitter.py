"""Emitter: writes records to a topic, keyed by string (Goka's Emitter).

``emit()`` resolves only once the broker acknowledged the record (``acks=all``): an
acknowledged record is in the log, on every in-sync replica. Two ways to get there,
chosen by ``transactional_id``:

- **Transactional** (a transactional id; the API under exactly-once). Records wait in a
  queue; each of a few *lanes* (:mod:`~walletkit.stream.lanes`: a thread with its own
  :class:`~walletkit.stream.producer.TransactionalProducer`, the one a processor's changelog
  writer uses too) takes everything waiting into one transaction and commits it, and only
  then are its records acknowledged (group commit: while some lanes commit, the queue fills
  for the next). A transaction that fails is aborted, which makes its records invisible to
  ``read_committed`` readers, and its records are produced again in the next one until their
  deadline passes. So a record is stored once however the
  brokers fail: an idempotent producer alone cannot promise that, because librdkafka
  re-sends in-flight batches under a bumped epoch during some leader changes, and the
  broker then stores them twice (librdkafka issue 4953).
- **Idempotent** (no transactional id; brokers without working transactions): each
  record is produced on its own, ordered and deduplicated by the idempotent producer
  as far as it can.

Lanes run their transactions side by side because one producer's transactions cannot
overlap, and each costs a few broker round trips (registering partitions, the produce,
the commit; a broker refuses the next registration until the last commit's markers are
written, and librdkafka retries it 20 ms later). Producers are served by background
threads; results are handed to the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from walletkit.stream import metrics
from walletkit.stream.codec import Codec
from walletkit.stream.errors import BrokerUnavailable, EmitError
from walletkit.stream.kafka import KafkaSettings
from walletkit.stream.lanes import Delivery, Lane, Waiting
from walletkit.stream.partitioner import partition_for

log = logging.getLogger(__name__)


class EmitterState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    CLOSED = "closed"


#: Records a transactional emitter holds waiting for a transaction; more fail at once
#: (the API answers 503) rather than queue without bound.
MAX_WAITING = 50_000
#: Records per transaction at most (the rest wait for the next one).
MAX_TRANSACTION_RECORDS = 10_000
#: Transactional producers working side by side (see the module doc).
DEFAULT_LANES = 4


class Emitter:
    """Emits records with ``codec``-encoded values to ``topic``; transactional with a
    ``transactional_id`` (its lanes use ``<id>-0`` .. ``<id>-<lanes - 1>``)."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        codec: Codec,
        *,
        connect_timeout: float = 10.0,
        transactional_id: str | None = None,
        lanes: int = DEFAULT_LANES,
    ) -> None:
        if lanes < 1:
            raise ValueError("an emitter needs at least one lane")
        self.topic = topic
        self.codec = codec
        self.transactional_id = transactional_id
        self.state = EmitterState.CREATED
        self._m_ack = metrics.EMIT_SECONDS.labels(topic)
        self._m_failures = metrics.EMIT_FAILURES.labels(topic)
        metrics.EMITTER_CONNECTED.labels(topic).set_function(lambda: 1.0 if self.connected else 0.0)
        self._settings = settings
        self._connect_timeout = connect_timeout
        self._timeout = settings.delivery_timeout_ms / 1000
        self.abort_timeout = self._timeout
        self._producer: Producer | None = None  # idempotent mode; metadata and probes in both
        self._partitions = 0
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._connected = False
        self._fatal = False
        self._last_error: str | None = None
        self._lanes = [Lane(self, f"{transactional_id}-{i}") for i in range(lanes)] if transactional_id else []
        self._waiting: collections.deque[Waiting] = collections.deque()
        self._wake = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_probe = 0.0
        # Set by an "all brokers down" report, cleared by the probe that confirms or refutes it.
        self._suspect = False

    @property
    def transactional(self) -> bool:
        return self.transactional_id is not None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Connect and learn the topic's partitions; BrokerUnavailable if unreachable."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._start_sync)

    def _start_sync(self) -> None:
        # Idempotent: the producer of the records. Transactional: metadata and probes only.
        self._producer = Producer(self._settings.producer(error_cb=self._on_error))
        deadline = time.monotonic() + self._connect_timeout
        while True:
            try:
                md = self._producer.list_topics(topic=self.topic, timeout=max(0.5, deadline - time.monotonic()))
                meta = md.topics.get(self.topic)
                if meta is not None and meta.error is None and meta.partitions:
                    self._partitions = len(meta.partitions)
                    break
                reason = f"topic {self.topic!r} not found" if meta is None or meta.error else "no partitions"
            except KafkaException as exc:
                reason = str(exc.args[0]) if exc.args else str(exc)
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"cannot reach Kafka at {self._settings.bootstrap_servers} or use topic {self.topic!r} "
                    f"within {self._connect_timeout:.0f}s ({reason}); check KAFKA_BOOTSTRAP_SERVERS and that the broker is up"
                )
            time.sleep(0.2)
        for lane in self._lanes:
            lane.start(deadline=max(deadline, time.monotonic() + 10))
        self._connected = True
        self.state = EmitterState.RUNNING
        if self.transactional:
            self._threads = [
                threading.Thread(target=lane.serve, name=f"emitter-{self.topic}-{i}", daemon=True)
                for i, lane in enumerate(self._lanes)
            ]
        else:
            self._threads = [threading.Thread(target=self._serve, name=f"emitter-{self.topic}", daemon=True)]
        for thread in self._threads:
            thread.start()

    async def close(self, timeout: float = 10.0) -> None:
        """Wait for outstanding deliveries (up to ``timeout``), then stop."""
        if self.state is not EmitterState.RUNNING:
            return
        await asyncio.to_thread(self._close_sync, timeout)

    def _close_sync(self, timeout: float) -> None:
        assert self._producer is not None
        if self.transactional:
            self.state = EmitterState.CLOSED  # no new records; the lanes commit those waiting, then end
            self._stop.set()
            with self._wake:
                self._wake.notify_all()
            for thread in self._threads:
                thread.join(timeout=timeout + 5)
            left = list(self._waiting)
            self._waiting.clear()
            self.settle(left, EmitError("the emitter closed before the record was committed"))
            for lane in self._lanes:
                lane.close()
        else:
            remaining = self._producer.flush(timeout)
            if remaining:
                log.warning("emitter closed with %d records unacknowledged", remaining)
            self._stop.set()
            for thread in self._threads:
                thread.join(timeout=5)
        self.state = EmitterState.CLOSED

    # -- emitting ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """False while the broker is known to be unreachable."""
        return self.state is EmitterState.RUNNING and self._connected

    @property
    def partitions(self) -> int:
        return self._partitions

    def partition_of(self, key: str) -> int:
        return partition_for(key.encode(), self._partitions)

    async def emit(self, key: str, value: Any, headers: list[tuple[str, bytes]] | None = None) -> Delivery:
        """Emit and wait for the broker's acknowledgement; EmitError if it fails.

        Idempotent: a record refused because the producer was fenced (the broker rejected
        it: it is not stored) is produced once more with the replacement producer.
        """
        if self.state is not EmitterState.RUNNING or self._producer is None:
            raise EmitError(f"emitter for {self.topic!r} is {self.state.value}")
        if not self._connected:
            # Fail fast: a record produced now would wait out the delivery timeout.
            self._m_failures.inc()
            raise EmitError(
                f"Kafka at {self._settings.bootstrap_servers} is unreachable ({self._last_error or 'no answer'})"
            )
        if self.transactional:
            return await self._emit_transactional(key, value, headers)
        try:
            return await self._emit_once(key, value, headers)
        except EmitError as exc:
            if not exc.producer_replaced:
                raise
            for _ in range(40):  # the emitter thread replaces the producer within a poll
                if not self._fatal:
                    break
                await asyncio.sleep(0.025)
            log.info("emitter: producing again after the producer was fenced")
            return await self._emit_once(key, value, headers)

    async def _emit_transactional(self, key: str, value: Any, headers: list[tuple[str, bytes]] | None) -> Delivery:
        if len(self._waiting) >= MAX_WAITING:
            self._m_failures.inc()
            raise EmitError("too many records are waiting for a transaction; retry shortly")
        kb = key.encode()
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Delivery] = loop.create_future()
        self._waiting.append(
            Waiting(
                kb,
                self.codec.encode(value),
                partition_for(kb, self._partitions),
                headers,
                fut,
                time.monotonic() + self._timeout,
            )
        )
        with self._wake:
            self._wake.notify()
        # Bounded here too: while every lane is busy ending a failed transaction (an abort, a
        # new producer's registration), a record still waiting must not wait longer. A lane
        # that has not taken it yet drops it; one that has may still commit it (503, unknown).
        expiry = loop.call_later(self._timeout + 1.0, _expire, fut)
        try:
            delivery = await fut
        except EmitError:
            self._m_failures.inc()
            raise
        finally:
            expiry.cancel()
        self._m_ack.observe(time.perf_counter() - started)
        return delivery

    async def _emit_once(self, key: str, value: Any, headers: list[tuple[str, bytes]] | None) -> Delivery:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Delivery] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Any) -> None:  # runs on the emitter thread
            if err is not None:
                if err.code() == KafkaError._MSG_TIMED_OUT and self._connected:
                    log.warning("emitter: delivery timed out; treating Kafka as unreachable until a probe succeeds")
                    self._connected = False
                elif err.fatal() or err.code() == KafkaError.PRODUCER_FENCED:
                    self._fatal = True
            loop.call_soon_threadsafe(_settle, fut, err, msg)

        kb = key.encode()
        started = time.perf_counter()
        try:
            self._producer.produce(
                self.topic,
                self.codec.encode(value),
                kb,
                partition=partition_for(kb, self._partitions),
                on_delivery=delivered,
                headers=headers,
            )
        except BufferError as exc:
            self._m_failures.inc()
            raise EmitError("the producer's queue is full; retry shortly") from exc
        except KafkaException as exc:
            self._m_failures.inc()
            raise EmitError(str(exc)) from exc
        try:
            delivery = await fut
        except EmitError:
            self._m_failures.inc()
            raise
        self._m_ack.observe(time.perf_counter() - started)
        return delivery

    # -- background ------------------------------------------------------------

    def _serve(self) -> None:
        """Idempotent mode's thread: serves the producer's callbacks."""
        while not self._stop.is_set():
            if self._fatal:
                self._replace_producer()
            producer = self._producer
            assert producer is not None
            producer.poll(0.05)
            self._probe()

    def _probe(self) -> None:
        """While Kafka is unreachable or reported so, ask for metadata about once a second.

        A report of "all brokers down" is checked here before deposits fail fast on it: the
        report can arrive late (each producer's callbacks are served when it is polled, and a
        frozen broker's connections time out one by one), after Kafka answered again."""
        if (self._connected and not self._suspect) or time.monotonic() < self._next_probe:
            return
        self._next_probe = time.monotonic() + 1.0
        answered = self._answers()
        if self._suspect:
            self._suspect = False
            if self._connected and not answered:
                log.warning("emitter lost Kafka: %s", self._last_error)
                self._connected = False
            return
        if answered:
            self._connected = True
            log.info("emitter reconnected to Kafka")

    def _answers(self) -> bool:
        """Whether any broker answers a metadata request within a second."""
        try:
            self._producer.list_topics(topic=self.topic, timeout=1.0)
            return True
        except KafkaException:
            return False

    def _replace_producer(self) -> None:
        old = self._producer
        self._fatal = False
        self._producer = Producer(self._settings.producer(error_cb=self._on_error))
        if old is not None:
            old.purge()
            old.poll(0)  # deliver the failures of what it still held

    # -- what the lanes ask of their emitter (lanes.LaneHost) ------------------------

    def make_producer(self, **config: Any) -> Producer:
        return Producer(self._settings.producer(**config))

    def on_error(self, err: KafkaError) -> None:
        self._on_error(err)

    def check_reachable(self) -> None:
        if self._connected and not self._answers():
            # No broker answers (not just a leader moving between brokers): fail new records
            # fast until a probe reaches Kafka.
            log.warning(
                "emitter: records unacknowledged in time and no broker answers; treating "
                "Kafka as unreachable until a probe succeeds"
            )
            self._connected = False

    def take(self, lane: Lane) -> list[Waiting] | None:
        """For ``lane``: everything waiting (up to a transaction's worth); None once closed.
        While idle, a lane serves its producer's callbacks, and the first one also the
        metadata producer's (which notice a lost broker) and the reconnection probe."""
        waiting = self._waiting
        while True:
            with self._wake:
                if not waiting:
                    if self._stop.is_set():
                        return None
                    self._wake.wait(0.05)
                if waiting:
                    return [waiting.popleft() for _ in range(min(len(waiting), MAX_TRANSACTION_RECORDS))]
            if lane.producer is not None:
                lane.producer.poll(0)
            if lane is self._lanes[0]:
                self._producer.poll(0)
                self._probe()

    def settle(self, batch: list[Waiting], error: EmitError | None) -> None:
        if self._loop is not None and batch:
            self._loop.call_soon_threadsafe(_settle_batch, batch, error)

    def _on_error(self, err: KafkaError) -> None:
        self._last_error = err.str()
        # Only "all brokers down" means unreachable: a transport or resolve error names one
        # broker, and with three of them a dead one is replaced as leader within seconds
        # while the others keep acknowledging (a single broker's failure raises both).
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            # Confirmed (or not) by the next probe, within about a second; a delivery or commit
            # that times out meanwhile marks Kafka unreachable on its own.
            self._suspect = True
            self._next_probe = 0.0
        elif err.fatal() and not self.transactional:
            # e.g. the idempotent producer fenced after a broker outage: this producer is
            # finished; its pending records fail (never acknowledged) and a new one takes over.
            log.error("emitter fatal error: %s; replacing the producer", err.str())
            self._fatal = True
            self._connected = False
        else:
            log.info("emitter: %s", err.str())


def _expire(fut: asyncio.Future[Delivery]) -> None:  # on the loop
    if not fut.done():
        fut.set_exception(EmitError("not acknowledged by Kafka in time; the outcome is unknown"))


def _settle_batch(batch: list[Waiting], error: EmitError | None) -> None:  # on the loop
    for w in batch:
        if w.fut.done():
            continue
        if error is None:
            w.fut.set_result(w.delivery)
        else:
            w.fut.set_exception(error)


def _settle(fut: asyncio.Future[Delivery], err: KafkaError | None, msg: Any) -> None:  # on the loop
    if fut.done():
        return
    if err is not None:
        exc = EmitError(f"not acknowledged by Kafka: {err.str()}")
        # A fenced or fatally failed producer is replaced; the broker refused the record.
        exc.producer_replaced = err.fatal() or err.code() == KafkaError.PRODUCER_FENCED
        fut.set_exception(exc)
    else:
        fut.set_result(Delivery.of(msg))
