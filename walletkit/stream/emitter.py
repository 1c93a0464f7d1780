"""Emitter: writes records to a topic, keyed by string (Goka's Emitter).

``emit()`` resolves only once the broker acknowledged the record (``acks=all``,
idempotent producer): an acknowledged deposit is in the log. The producer is
served by one background thread; deliveries are handed to the event loop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from walletkit.stream import metrics
from walletkit.stream.codec import Codec
from walletkit.stream.errors import BrokerUnavailable, EmitError
from walletkit.stream.kafka import KafkaSettings
from walletkit.stream.partitioner import partition_for

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where an acknowledged record was stored."""

    topic: str
    partition: int
    offset: int


class EmitterState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    CLOSED = "closed"


class Emitter:
    """Emits records with ``codec``-encoded values to ``topic``."""

    def __init__(self, settings: KafkaSettings, topic: str, codec: Codec, *, connect_timeout: float = 10.0) -> None:
        self.topic = topic
        self.codec = codec
        self.state = EmitterState.CREATED
        self._m_ack = metrics.EMIT_SECONDS.labels(topic)
        self._m_failures = metrics.EMIT_FAILURES.labels(topic)
        metrics.EMITTER_CONNECTED.labels(topic).set_function(lambda: 1.0 if self.connected else 0.0)
        self._settings = settings
        self._connect_timeout = connect_timeout
        self._producer: Producer | None = None
        self._partitions = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._connected = False
        self._fatal = False
        self._last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Connect and learn the topic's partitions; BrokerUnavailable if unreachable."""
        await asyncio.to_thread(self._start_sync)

    def _start_sync(self) -> None:
        conf = self._settings.producer(error_cb=self._on_error)
        self._producer = Producer(conf)
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
        self._connected = True
        self.state = EmitterState.RUNNING
        self._thread = threading.Thread(target=self._serve, name=f"emitter-{self.topic}", daemon=True)
        self._thread.start()

    async def close(self, timeout: float = 10.0) -> None:
        """Wait for outstanding deliveries (up to ``timeout``), then stop."""
        if self.state is not EmitterState.RUNNING:
            return
        await asyncio.to_thread(self._close_sync, timeout)

    def _close_sync(self, timeout: float) -> None:
        assert self._producer is not None
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("emitter closed with %d records unacknowledged", remaining)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
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

        A record refused because the producer was fenced (the broker rejected it:
        it is not stored) is produced once more with the replacement producer.
        """
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

    async def _emit_once(self, key: str, value: Any, headers: list[tuple[str, bytes]] | None) -> Delivery:
        if self.state is not EmitterState.RUNNING or self._producer is None:
            raise EmitError(f"emitter for {self.topic!r} is {self.state.value}")
        if not self._connected:
            # Fail fast: a record produced now would wait out the delivery timeout.
            self._m_failures.inc()
            raise EmitError(f"Kafka at {self._settings.bootstrap_servers} is unreachable ({self._last_error or 'no answer'})")
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
                self.topic, self.codec.encode(value), kb,
                partition=partition_for(kb, self._partitions), on_delivery=delivered, headers=headers,
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

    # -- background --------------------------------------------------------

    def _serve(self) -> None:
        next_probe = 0.0
        while not self._stop.is_set():
            if self._fatal:
                self._replace_producer()
            producer = self._producer
            assert producer is not None
            producer.poll(0.05)
            if not self._connected and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + 1.0
                try:
                    producer.list_topics(topic=self.topic, timeout=1.0)
                    self._connected = True
                    log.info("emitter reconnected to Kafka")
                except KafkaException:
                    pass

    def _replace_producer(self) -> None:
        old = self._producer
        self._fatal = False
        self._producer = Producer(self._settings.producer(error_cb=self._on_error))
        if old is not None:
            old.purge()
            old.poll(0)  # deliver the failures of what it still held

    def _on_error(self, err: KafkaError) -> None:
        self._last_error = err.str()
        # Only "all brokers down" means unreachable: a transport or resolve error names one
        # broker, and with three of them a dead one is replaced as leader within seconds
        # while the others keep acknowledging (a single broker's failure raises both).
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self._connected:
                log.warning("emitter lost Kafka: %s", err.str())
            self._connected = False
        elif err.fatal():
            # e.g. the idempotent producer fenced after a broker outage: this producer is
            # finished; its pending records fail (never acknowledged) and a new one takes over.
            log.error("emitter fatal error: %s; replacing the producer", err.str())
            self._fatal = True
            self._connected = False
        else:
            log.info("emitter: %s", err.str())


def _settle(fut: asyncio.Future[Delivery], err: KafkaError | None, msg: Any) -> None:  # on the loop
    if fut.done():
        return
    if err is not None:
        exc = EmitError(f"not acknowledged by Kafka: {err.str()}")
        # A fenced or fatally failed producer is replaced; the broker refused the record.
        exc.producer_replaced = err.fatal() or err.code() == KafkaError.PRODUCER_FENCED
        fut.set_exception(exc)
    else:
        fut.set_result(Delivery(msg.topic(), msg.partition(), msg.offset()))
