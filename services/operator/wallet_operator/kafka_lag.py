"""Reads a consumer group's lag on its input topic from Kafka. Knows Kafka, nothing of Kubernetes.

Three reads per call, all bounded by one timeout:

1. the topic's partitions: ``AdminClient.list_topics`` (cluster metadata);
2. the group's committed offsets: ``AdminClient.list_consumer_group_offsets``;
3. each partition's end and start offsets: ``AdminClient.list_offsets`` (ListOffsets, latest and
   earliest) with ``read_committed`` isolation, so the end is the last stable offset the
   processors (which read committed records only) can reach; equal to the high watermark when
   no transaction is open. This is what ``kafka-consumer-groups --describe`` reports as lag.

A partition without a committed offset counts from the log start: all its records are lag,
which is what the processors (``auto.offset.reset=earliest``) will read.

The calls block; the operator runs them on a thread pool with this timeout.

Closing waits for reads in flight and for requests librdkafka still holds (a read that timed
out leaves its request pending until the request timeout): destroying a client while its
background thread still answers requests can crash the process.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from wallet_operator.decision import LagSnapshot, PartitionOffsets
from wallet_operator.errors import KafkaUnavailable, TopicNotFound

log = logging.getLogger(__name__)

#: Clients closed with requests still unanswered, kept until the process exits.
_LEFT_OPEN: list[AdminClient | None] = []

#: librdkafka's "no offset" sentinel in committed-offset answers.
_NO_OFFSET = -1001


class LagReader:
    """Reads :class:`LagSnapshot` s. One AdminClient is kept for the process; probe consumers are per read.

    ``config`` holds the common librdkafka properties (bootstrap servers, security, logger).
    """

    def __init__(self, config: dict[str, Any], *, timeout: float = 10.0, client_id: str = "wallet-operator") -> None:
        self._config = {"client.id": client_id, **config}
        self.timeout = timeout
        self._admin: AdminClient | None = None
        self._admin_lock = threading.Condition()  # reads of several scalers run on several threads
        self._reading = 0  # reads in flight
        self._pending: set[concurrent.futures.Future] = set()  # requests librdkafka may still answer
        self._closed = False

    def _admin_client(self) -> AdminClient:
        with self._admin_lock:
            if self._closed:
                raise KafkaUnavailable("the lag reader is closed")
            if self._admin is None:
                self._admin = AdminClient(
                    {**self._config, "socket.connection.setup.timeout.ms": max(1000, int(self.timeout * 1000))}
                )
            return self._admin

    def read(self, group: str, topic: str) -> LagSnapshot:
        """The group's committed offsets and the topic's end offsets, partition by partition."""
        with self._admin_lock:
            self._reading += 1
        try:
            deadline = time.monotonic() + self.timeout
            partitions = self._partitions(topic, deadline)
            committed = self._committed(group, topic, partitions, deadline)
            ends, starts = self._end_offsets(topic, committed, deadline)
        finally:
            with self._admin_lock:
                self._reading -= 1
                self._admin_lock.notify_all()
        return LagSnapshot(
            group=group,
            topic=topic,
            partitions=tuple(
                PartitionOffsets(partition=p, committed=committed[p], end=ends[p], start=starts[p]) for p in partitions
            ),
        )

    def _track(self, futures: dict) -> dict:
        """Remember requests until they are answered, so that close() can wait for them."""
        with self._admin_lock:
            self._pending.update(f for f in futures.values() if not f.done())
            self._pending = {f for f in self._pending if not f.done()}
        return futures

    def _partitions(self, topic: str, deadline: float) -> list[int]:
        try:
            # All topics, not list_topics(topic=...): a metadata request naming a topic may make a
            # broker with auto.create.topics.enable create it.
            metadata = self._admin_client().list_topics(timeout=_remaining(deadline))
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot read cluster metadata: {_describe(exc)}") from exc
        found = metadata.topics.get(topic)
        if found is None or (found.error is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            raise TopicNotFound(f"topic {topic!r} does not exist")
        if found.error is not None:
            raise KafkaUnavailable(f"metadata of topic {topic!r}: {found.error.str()}")
        if not found.partitions:
            raise TopicNotFound(f"topic {topic!r} has no partitions")
        return sorted(found.partitions)

    def _committed(self, group: str, topic: str, partitions: list[int], deadline: float) -> dict[int, int | None]:
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
        try:
            futures = self._track(
                self._admin_client().list_consumer_group_offsets([request], request_timeout=_remaining(deadline))
            )
            answer = futures[group].result(timeout=_remaining(deadline))
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot read committed offsets of group {group!r}: {_describe(exc)}") from exc
        except TimeoutError as exc:  # concurrent.futures.TimeoutError is TimeoutError on 3.11
            raise KafkaUnavailable(f"committed offsets of group {group!r}: no answer within {self.timeout:g}s") from exc
        committed: dict[int, int | None] = {p: None for p in partitions}
        for tp in answer.topic_partitions:
            if tp.error is not None:
                raise KafkaUnavailable(f"committed offset of {topic}[{tp.partition}] for group {group!r}: {tp.error}")
            if tp.partition in committed and tp.offset >= 0:
                committed[tp.partition] = tp.offset
        return committed

    def _end_offsets(
        self, topic: str, committed: dict[int, int | None], deadline: float
    ) -> tuple[dict[int, int], dict[int, int]]:
        """(end, start) offsets per partition: ListOffsets latest and earliest, read_committed."""
        ends = self._list_offsets(topic, committed, OffsetSpec.latest(), deadline)
        starts = self._list_offsets(topic, committed, OffsetSpec.earliest(), deadline)
        return ends, starts

    def _list_offsets(
        self, topic: str, partitions: dict[int, int | None], spec: OffsetSpec, deadline: float
    ) -> dict[int, int]:
        request = {TopicPartition(topic, p): spec for p in partitions}
        try:
            futures = self._track(
                self._admin_client().list_offsets(
                    request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=_remaining(deadline)
                )
            )
            return {tp.partition: future.result(timeout=_remaining(deadline)).offset for tp, future in futures.items()}
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot list offsets of {topic}: {_describe(exc)}") from exc
        except TimeoutError as exc:
            raise KafkaUnavailable(f"offsets of {topic}: no answer within {self.timeout:g}s") from exc

    def close(self, grace: float | None = None) -> None:
        """Drop the client once no read or request is in flight (waits up to ``grace``, default timeout + 5 s).

        AdminClient has no close(); dropping the last reference destroys it, here in the calling
        thread. Requests still unanswered after ``grace`` keep it alive instead: a client leaked
        at shutdown is harmless, one destroyed under its own background thread is not.
        """
        deadline = time.monotonic() + (self.timeout + 5.0 if grace is None else grace)
        with self._admin_lock:
            self._closed = True
            while self._reading and self._admin_lock.wait(max(0.0, deadline - time.monotonic())):
                pass
            pending = set(self._pending)
        concurrent.futures.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        with self._admin_lock:
            if self._reading or any(not f.done() for f in pending):
                log.warning(
                    "closing the lag reader with Kafka requests unanswered; its client is left to the process exit"
                )
                _LEFT_OPEN.append(self._admin)  # never collected, so never destroyed from a librdkafka thread
                return
            admin, self._admin = self._admin, None
        del admin  # destroyed here, outside librdkafka's threads


def _remaining(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _describe(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)
