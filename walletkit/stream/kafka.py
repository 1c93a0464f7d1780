"""Client configuration shared by every Kafka client the toolkit creates."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from walletkit.stream.errors import BrokerUnavailable, ClientStuck

_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
log = logging.getLogger(__name__)


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError a confluent-kafka exception carries (None for anything else)."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return err if isinstance(err, KafkaError) else None


def init_transactions(
    producer: Any, transactional_id: str, deadline: float, attempt_timeout: float, calls: BoundedCalls | None = None
) -> None:
    """Register ``transactional_id``: fences an earlier producer with the same id and ends
    what it left open. Retried while the coordinator loads or moves, until ``deadline``
    (monotonic); BrokerUnavailable then, or at once on an error that is not retriable.
    With ``calls``, an attempt that overruns its timeout raises ClientStuck."""
    while True:
        try:
            timeout = max(1.0, min(attempt_timeout, deadline - time.monotonic()))
            if calls is None:
                producer.init_transactions(timeout)
            else:
                calls(timeout, producer.init_transactions, timeout)
            return
        except KafkaException as exc:
            err = kafka_error(exc)
            if err is None or not err.retriable() or time.monotonic() >= deadline:
                raise BrokerUnavailable(f"cannot register transactional id {transactional_id!r}: {exc}") from exc
            log.warning("init_transactions %s: %s; retrying", transactional_id, err.str())
            time.sleep(0.2)


#: Seconds a bounded call may overrun the timeout it was given before it counts as stuck.
STUCK_GRACE = 5.0


class BoundedCalls:
    """Blocking librdkafka calls, each given up on once it overran its own timeout.

    Some librdkafka calls wait longer than the timeout they are given when a coordinator
    goes away: ``send_offsets_to_transaction`` waits for the group coordinator's request
    without checking its timeout (librdkafka issues 5456, 5511, open in 2.16), so a
    processor whose coordinator node died stopped for good with nothing in its log. Each
    call here runs on a helper thread; the caller waits for ``timeout + STUCK_GRACE`` at
    most and then gets :class:`ClientStuck`, leaving the call (and its client) behind: a
    client with a call in progress must be neither used nor destroyed, so the caller
    replaces it (see ``ChangelogWriter``). The helper thread ends once the call returns.
    Costs one thread handoff per call (tens of microseconds, once per batch).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue | None = None

    def __call__(self, timeout: float, fn: Callable[..., Any], *args: Any) -> Any:
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(self._jobs,), name=self.name, daemon=True).start()
        done, box = threading.Event(), []
        self._jobs.put((fn, args, box, done))
        if not done.wait(timeout + STUCK_GRACE):
            jobs, self._jobs = self._jobs, None
            jobs.put(None)  # the helper ends when the call returns; the next call gets a new one
            raise ClientStuck(
                f"{getattr(fn, '__name__', fn)} did not return within {timeout + STUCK_GRACE:g} s "
                f"(its timeout was {timeout:g} s)",
                returned=done,
            )
        ok, value = box[0]
        if ok:
            return value
        raise value

    @staticmethod
    def _serve(jobs: queue.SimpleQueue) -> None:
        while (job := jobs.get()) is not None:
            fn, args, box, done = job
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # handed to the caller
                box.append((False, exc))
            done.set()


#: How consumers prefetch. librdkafka (>= 2.2) stops fetching a partition for
#: ``fetch.queue.backoff.ms`` (default 1000) whenever its local queue passes
#: ``queued.min.messages`` (default 100,000). A consumer slower than the broker (every
#: processor, restore and view catching up) hits that threshold and then starves for up
#: to a second at a time: restores ran at ~60 % of the pace the broker and the merge allow.
#: A smaller queue refilled promptly keeps records flowing and the prefetch's memory
#: (and cache footprint) small. ``make bench`` measures it: the raw consume loop went
#: 124k -> 245k-296k records/s, restores 117k-161k -> 261k-272k, the processors
#: 126k/86k -> 150k-173k/89k-99k records/s.
#:
#: ``fetch.wait.max.ms`` 100 (default 500): how long the broker holds a fetch that finds
#: nothing new. Records never wait for it (a fetch returns as soon as one arrives), but
#: "nothing new" does: a reader learns it reached a partition's end only from an empty
#: answer, and a partition resumed after its restore joins the next fetch request, after
#: the one in flight returned. Both cost up to the whole wait on every takeover; an empty
#: changelog partition took 0.55 s to report its end, 0.10 s with this (the idle cost:
#: ten empty fetches a second per broker and consumer instead of two).
CONSUMER_PREFETCH: dict[str, Any] = {
    "queued.min.messages": 20_000,
    "fetch.queue.backoff.ms": 20,
    "fetch.wait.max.ms": 100,
}


def parse_kafka_config(text: str) -> dict[str, str]:
    """librdkafka properties written ``key=value,key=value`` (KAFKA_CONFIG, --kafka-config)."""
    extra: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not key=value")
        extra[key.strip()] = value.strip()
    return extra


@dataclass(frozen=True)
class KafkaSettings:
    """Where the cluster is and how to talk to it.

    ``extra`` holds any further librdkafka properties (``security.protocol``,
    ``sasl.*``, ``ssl.*`` ...) and is applied to every client.
    """

    bootstrap_servers: str
    client_id: str = "wallet"
    #: Consumer-group session timeout. A SIGKILLed member holds its partitions this long.
    session_timeout_ms: int = 10_000
    #: Static group membership (``group.instance.id``), e.g. a StatefulSet pod
    #: name: a restarted member gets its partitions back without a rebalance.
    instance_id: str | None = None
    #: How long a produced record may wait for the broker's ack before it fails.
    delivery_timeout_ms: int = 10_000
    extra: dict[str, str] = field(default_factory=dict)

    def common(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            # librdkafka's own log lines go through Python logging (JSON in the services).
            "logger": _LIBRDKAFKA_LOG,
        }
        conf.update(self.extra)
        return conf

    def _build(self, defaults: dict[str, Any], required: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
        """Tunable defaults, then ``extra`` (an operator may change any of them), then the
        settings the guarantees rest on and what the calling code asks for."""
        conf = self.common()
        conf.update(defaults)
        conf.update(self.extra)
        conf.update(required)
        conf.update(overrides)
        return conf

    def producer(self, **overrides: Any) -> dict[str, Any]:
        return self._build(
            {
                "linger.ms": 2,
                "message.timeout.ms": self.delivery_timeout_ms,
                "socket.connection.setup.timeout.ms": min(self.delivery_timeout_ms, 10_000),
                # A transaction left open by a member that died or froze blocks readers of its
                # partitions (read_committed) until the broker aborts it after this long; Kafka
                # Streams uses the same 10 s under exactly-once.
                "transaction.timeout.ms": 10_000,
            },
            {
                # An acknowledged record is on every in-sync replica, once and in order.
                "acks": "all",
                "enable.idempotence": True,
            },
            overrides,
        )

    def group_consumer(self, group: str, **overrides: Any) -> dict[str, Any]:
        required: dict[str, Any] = {
            "group.id": group,
            # Eager range assignment keeps partition p of every co-partitioned
            # topic on the same member (cooperative protocols are not needed:
            # a processor drains and commits on every revocation anyway).
            "partition.assignment.strategy": "range",
            # Offsets are committed only for durable batches.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # Only committed deposits are processed (a transactional emitter's aborted
            # records never count).
            "isolation.level": "read_committed",
            # A partition without a committed offset, or whose offset fell out of the log,
            # is read from the log's start: a deposit is never skipped (partitions are
            # assigned at explicit offsets; see Processor._on_assign).
            "auto.offset.reset": "earliest",
        }
        defaults: dict[str, Any] = {
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.session_timeout_ms // 5),
            **CONSUMER_PREFETCH,
        }
        if self.instance_id:
            defaults["group.instance.id"] = self.instance_id
        return self._build(defaults, required, overrides)

    def reader(self, **overrides: Any) -> dict[str, Any]:
        """A consumer that reads assigned partitions outside any group (restores, views)."""
        return self._build(
            {
                **CONSUMER_PREFETCH,
            },
            {
                # Records of aborted or still open transactions are never part of a table.
                "isolation.level": "read_committed",
                # librdkafka needs a group.id even for manual assignment; nothing is committed.
                "group.id": f"{self.client_id}-reader",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # End of partition tells restores and views they caught up; an offset out of
                # range tells them their checkpoint is not in the topic any more.
                "enable.partition.eof": True,
                "auto.offset.reset": "error",
            },
            overrides,
        )

    def admin(self) -> dict[str, Any]:
        return self.common()


def consume_ready(consumer: Any, max_messages: int, timeout: float) -> list[Any]:
    """Up to ``max_messages`` records, waiting up to ``timeout`` only while none are ready.

    ``Consumer.consume(n, timeout)`` waits until it has ``n`` records *or* the
    timeout passed, so at a low rate every batch costs the whole timeout in latency.
    Here a batch is whatever librdkafka has prefetched: full batches under load,
    single records at once when traffic is light.
    """
    msgs = consumer.consume(max_messages, 0)
    if msgs:
        return msgs
    first = consumer.poll(timeout)
    if first is None:
        return []
    if max_messages <= 1:
        return [first]
    return [first, *consumer.consume(max_messages - 1, 0)]


def log_end_offsets(
    admin: Any, topic: str, partitions: list[int], timeout: float = 5.0, pending: list[Any] | None = None
) -> dict[int, int]:
    """The log end (high watermark) of each partition, open transactions included.

    A ``read_committed`` reader ends at the last stable offset, which stays at the first
    record of the oldest open transaction: comparing the two tells whether one is open.
    Raises :class:`KafkaException` when the broker does not answer in ``timeout`` seconds.
    """
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    if not partitions:
        return {}
    futures = admin.list_offsets(
        {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions},
        isolation_level=IsolationLevel.READ_UNCOMMITTED,
        request_timeout=timeout,
    )
    if pending is not None:  # the caller keeps the client until these are answered
        pending.extend(futures.values())
    return {tp.partition: future.result(timeout=timeout + 1).offset for tp, future in futures.items()}


class LeftBehind:
    """Clients replaced while calls of theirs were in progress, each kept until those calls
    returned: destroying a librdkafka client with a call or request in progress can block or
    crash the process. The one place that rule lives (transactional producers, admin clients)."""

    def __init__(self) -> None:
        self._kept: list[tuple[Any, Callable[[], bool]]] = []

    def keep(self, client: Any, done: Callable[[], bool]) -> None:
        """Keep ``client`` until ``done()`` says its calls returned."""
        self._kept.append((client, done))

    def prune(self) -> None:
        """Let go of the clients whose calls returned."""
        self._kept = [(client, done) for client, done in self._kept if not done()]

    def __len__(self) -> int:
        return len(self._kept)


class LogEnds:
    """``log_end_offsets`` of one topic through an admin client that is replaced after a failure.

    librdkafka's admin client sends the partition leaders' epochs it last learnt, and after a
    broker was fenced and came back (a pause, a restart) it may go on sending stale ones, each
    answered FENCED_LEADER_EPOCH, without refreshing them: a fresh client asks anew. A replaced
    client is kept until librdkafka answered everything it asked (destroying one with
    requests pending can block or crash the process), then dropped.
    """

    def __init__(self, make_admin: Callable[[], Any], topic: str, timeout: float = 5.0) -> None:
        self._make_admin = make_admin
        self.topic = topic
        self.timeout = timeout
        self._admin: Any = None
        self._pending: list[Any] = []  # futures of the current client's requests
        self._retired = LeftBehind()

    def __call__(self, partitions: list[int]) -> dict[int, int]:
        self._retired.prune()
        if self._admin is None:
            self._admin = self._make_admin()
            self._pending = []
        try:
            return log_end_offsets(self._admin, self.topic, partitions, self.timeout, self._pending)
        except (KafkaException, TimeoutError):
            pending = self._pending
            self._retired.keep(self._admin, lambda: all(f.done() for f in pending))
            self._admin = None  # the next call starts from fresh metadata
            raise
        finally:
            self._pending[:] = [f for f in self._pending if not f.done()]


class KafkaClients:
    """Builds the Kafka clients a processor or view uses (Goka's options builders inject them).

    The default builds confluent-kafka clients from :class:`KafkaSettings`; a test can pass
    a subclass that wraps or replaces them.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings

    def group_consumer(self, group: str, **overrides: Any) -> Any:
        from confluent_kafka import Consumer

        return Consumer(self.settings.group_consumer(group, **overrides))

    def reader(self, **overrides: Any) -> Any:
        from confluent_kafka import Consumer

        return Consumer(self.settings.reader(**overrides))

    def producer(self, **overrides: Any) -> Any:
        from confluent_kafka import Producer

        return Producer(self.settings.producer(**overrides))

    def admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.settings.admin())

    def topics(self) -> Any:
        from walletkit.stream.topics import TopicManager

        return TopicManager(self.settings)
