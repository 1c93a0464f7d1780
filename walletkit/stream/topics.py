"""Topic manager: makes sure stream and table topics exist and are co-partitioned."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from walletkit.stream.errors import BrokerUnavailable, CoPartitioningError, StreamError, TopicsMissing
from walletkit.stream.kafka import KafkaSettings

log = logging.getLogger(__name__)


def table_topic(group: str) -> str:
    """The changelog topic of a group table, named as Goka names it."""
    return f"{group}-table"


class TopicManager:
    """Creates missing topics with the right policy and checks partition counts."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        replication_factor: int = -1,
        min_insync_replicas: int = -1,
        timeout: float = 30.0,
    ) -> None:
        self._settings = settings
        self._admin = AdminClient(settings.admin())
        self._replication = replication_factor  # -1: the broker's default
        self._min_insync = min_insync_replicas  # -1: the broker's default
        self._timeout = timeout

    @property
    def settings(self) -> KafkaSettings:
        return self._settings

    def partitions(self, topics: list[str]) -> dict[str, int]:
        """Partition count of each existing topic (missing topics are left out)."""
        md = self._metadata()
        return {t: len(md.topics[t].partitions) for t in topics if t in md.topics and md.topics[t].error is None}

    def topic_ids(self, topics: list[str]) -> dict[str, str]:
        """The cluster's id of each topic: it changes when a topic is deleted and recreated."""
        futures = self._admin.describe_topics(TopicCollection(topics), request_timeout=self._timeout)
        return {name: str(f.result().topic_id) for name, f in futures.items()}

    def ensure_stream(
        self, topic: str, partitions: int, retention_ms: int = -1, timestamp_type: str = "LogAppendTime"
    ) -> None:
        """A delete-policy stream topic; ``retention_ms=-1`` keeps it forever (a ledger).

        Its records carry the broker's LogAppendTime by default: one clock for every
        producer, whatever their own clocks say.
        """
        self._ensure(
            topic,
            partitions,
            {"cleanup.policy": "delete", "retention.ms": str(retention_ms), "message.timestamp.type": timestamp_type},
        )

    def ensure_table(self, topic: str, partitions: int) -> None:
        """A compacted changelog topic of a group table."""
        self._ensure(topic, partitions, {"cleanup.policy": "compact"})

    def ensure_copartitioned(self, topics: list[str], settle_seconds: float = 5.0) -> int:
        """Return the common partition count; CoPartitioningError if the counts differ.

        Each metadata request may go to another broker, and a topic just created on one
        reaches the others' metadata a moment later: a missing topic is looked for again
        for up to ``settle_seconds`` before it counts as missing.
        """
        deadline = time.monotonic() + settle_seconds
        while True:
            counts = self.partitions(topics)
            missing = [t for t in topics if t not in counts]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if missing:
            raise TopicsMissing(missing)
        if len(set(counts.values())) != 1:
            detail = ", ".join(f"{t}={n}" for t, n in counts.items())
            raise CoPartitioningError(
                f"topics must have equal partition counts to keep a key's input and table together ({detail}); "
                "recreate or repartition them to one count"
            )
        return next(iter(counts.values()))

    def _ensure(self, topic: str, partitions: int, config: dict[str, str]) -> None:
        existing = self.partitions([topic])
        if topic in existing:
            return
        # Durability is the topic's, not left to broker defaults: an acknowledged record is
        # never given up for an out-of-sync replica's history.
        config = {**config, "unclean.leader.election.enable": "false"}
        if self._min_insync > 0:
            config["min.insync.replicas"] = str(self._min_insync)
        futures = self._admin.create_topics(
            [NewTopic(topic, partitions, self._replication, config=config)], request_timeout=self._timeout
        )
        try:
            futures[topic].result()
            log.info("created topic %s (%d partitions, %s)", topic, partitions, config)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StreamError(f"cannot create topic {topic!r}: {exc.args[0].str()}") from exc
        self._wait_visible(topic)

    def _wait_visible(self, topic: str) -> None:
        deadline = time.monotonic() + self._timeout
        while topic not in self.partitions([topic]):
            if time.monotonic() > deadline:
                raise StreamError(f"topic {topic!r} was created but never appeared in metadata")
            time.sleep(0.1)

    def _metadata(self):
        try:
            return self._admin.list_topics(timeout=self._timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {self._settings.bootstrap_servers} within {self._timeout:.0f}s: "
                f"{exc.args[0].str() if exc.args else exc}; check KAFKA_BOOTSTRAP_SERVERS and that the broker is up"
            ) from exc
