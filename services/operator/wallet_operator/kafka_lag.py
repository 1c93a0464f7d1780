"""Reads a consumer group's lag on its input topic from Kafka. Knows Kafka, nothing of Kubernetes.

Three reads per call, all bounded by one timeout:

1. the topic's partitions: ``AdminClient.list_topics`` (cluster metadata);
2. the group's committed offsets: ``AdminClient.list_consumer_group_offsets``;
3. each partition's end offset, from a **fetch**, not from ListOffsets.

Why the fetch: the end offset is usually read with ListOffsets(latest) (``list_offsets`` /
``get_watermark_offsets``). The embedded broker the tests run on (Tansu) answers that request
wrongly (the last batch's base offset + 1: after one batch of 10 records it says 1), while every
fetch response carries the partition's true high watermark. So a short-lived consumer, outside any
group (``assign()``, never ``subscribe()``, nothing committed), starts each partition at the group's
committed offset with ``enable.partition.eof``: the first record (or the end-of-partition event)
of each partition arrives with the fetch response's high watermark in librdkafka's cache
(``get_watermark_offsets(cached=True)``); the partition is then paused. It reads at most about
1 KiB per partition (``max.partition.fetch.bytes``), and it is just as correct on Apache Kafka, so
production and tests share one code path. librdkafka's statistics (``hi_offset``) would also carry
the fetched high watermark, but only after a statistics interval; the fetch answer is immediate.

A partition without a committed offset starts at offset 0 with ``auto.offset.reset=earliest``:
the first record's offset (or the cached low watermark) is then the log start, and all records
from there on are lag, which is what the processors (``auto.offset.reset=earliest``) will read.

The calls block; the operator runs them on a thread pool with this timeout.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from wallet_operator.decision import LagSnapshot, PartitionOffsets
from wallet_operator.errors import KafkaUnavailable, TopicNotFound

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
        self._admin_lock = threading.Lock()  # reads of several scalers run on several threads

    def _admin_client(self) -> AdminClient:
        with self._admin_lock:
            if self._admin is None:
                self._admin = AdminClient({**self._config,
                                           "socket.connection.setup.timeout.ms": max(1000, int(self.timeout * 1000))})
            return self._admin

    def read(self, group: str, topic: str) -> LagSnapshot:
        """The group's committed offsets and the topic's end offsets, partition by partition."""
        deadline = time.monotonic() + self.timeout
        partitions = self._partitions(topic, deadline)
        committed = self._committed(group, topic, partitions, deadline)
        ends, starts = self._end_offsets(topic, committed, deadline)
        return LagSnapshot(group=group, topic=topic, partitions=tuple(
            PartitionOffsets(partition=p, committed=committed[p], end=ends[p], start=starts[p]) for p in partitions))

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
            futures = self._admin_client().list_consumer_group_offsets([request], request_timeout=_remaining(deadline))
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

    def _end_offsets(self, topic: str, committed: dict[int, int | None],
                     deadline: float) -> tuple[dict[int, int], dict[int, int]]:
        """(end, start) offsets per partition from one fetch answer each (see the module doc)."""
        consumer = Consumer({
            **self._config,
            # Needed by librdkafka even for assign(); nothing joins this group or commits to it.
            "group.id": f"{self._config['client.id']}-lag-probe",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # The processors read committed records only: measure against the same end (the
            # last stable offset; equal to the high watermark without open transactions).
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 50,
            "max.partition.fetch.bytes": 1024,
            "socket.connection.setup.timeout.ms": max(1000, int(self.timeout * 1000)),
        })
        ends: dict[int, int] = {}
        starts: dict[int, int] = {}
        try:
            consumer.assign([TopicPartition(topic, p, 0 if c is None else c) for p, c in committed.items()])
            pending = set(committed)
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise KafkaUnavailable(f"no fetch answer for {topic} partitions {sorted(pending)} "
                                           f"within {self.timeout:g}s")
                for message in consumer.consume(num_messages=len(pending), timeout=min(left, 0.2)):
                    partition = message.partition()
                    error = message.error()
                    if error is not None and error.code() != KafkaError._PARTITION_EOF:
                        if error.fatal() or not error.retriable():
                            raise KafkaUnavailable(f"fetching {topic}: {error.str()}")
                        continue
                    if partition not in pending:
                        continue
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
                    if error is not None:  # end of partition: its offset is the end offset
                        end = message.offset()
                        first = end
                    else:
                        end = high
                        first = message.offset()
                    if end is None or end < 0:
                        continue  # no watermark yet; the next answer will carry it
                    ends[partition] = end
                    starts[partition] = low if 0 <= low <= first else first
                    pending.discard(partition)
                    consumer.pause([TopicPartition(topic, partition)])
        except KafkaException as exc:
            raise KafkaUnavailable(f"fetching {topic}: {_describe(exc)}") from exc
        finally:
            consumer.close()
        return ends, starts

    def close(self) -> None:
        self._admin = None  # AdminClient has no close(); dropping it stops its threads


def _remaining(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _describe(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)
