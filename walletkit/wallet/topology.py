"""Names shared by every wallet service: topics, groups and the table registry (contracts,
see DESIGN.md).

The registry (:data:`TABLES`) is the one list of the processor groups' tables: each with its
base name (version 1's group, the key of its versions), the codec of its values, the console
script of its processor and whether the API keeps a view of it. The runtime asks it for a
group's topics, the API opens its views from it, walletctl decodes and rebuilds from it,
and a test holds the chart's processor list to it. A new processor adds one entry here.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from confluent_kafka import KafkaException

from walletkit.stream import (
    BrokerUnavailable,
    TableCodec,
    TableVersion,
    TableVersions,
    TopicManager,
    TopicsMissing,
    table_topic,
)
from walletkit.wallet.codecs import WALLET, WALLET_INFO_LIST

DEPOSIT_TOPIC = "deposit"
BALANCE_GROUP = "balance"
ABOVE_THRESHOLD_GROUP = "above_threshold"
BALANCE_TABLE = table_topic(BALANCE_GROUP)  # "balance-table"
ABOVE_THRESHOLD_TABLE = table_topic(ABOVE_THRESHOLD_GROUP)  # "above_threshold-table"
ALL_TOPICS = (DEPOSIT_TOPIC, BALANCE_TABLE, ABOVE_THRESHOLD_TABLE)
#: Which group serves each table now (walletkit.stream.versions; written by walletctl rebuild).
TABLE_VERSIONS_TOPIC = "table-versions"
DEFAULT_PARTITIONS = 8


@dataclass(frozen=True)
class Table:
    """One processor group's table (see the module doc)."""

    #: Version 1's group, and the key of the table's versions (walletkit.stream.versions).
    base: str
    codec: TableCodec
    #: The console script (and image, and chart component) of its processor.
    service: str
    #: The API keeps a view of it (GET /details reads it).
    viewed: bool = True

    @property
    def topic(self) -> str:
        """Version 1's changelog topic (a rebuilt version's is ``table_topic(version.group)``)."""
        return table_topic(self.base)


TABLES = (
    Table(BALANCE_GROUP, WALLET, "wallet-balance"),
    Table(ABOVE_THRESHOLD_GROUP, WALLET_INFO_LIST, "wallet-above-threshold"),
)
#: The processor groups, by base name (version 1's group and the key of their versions).
GROUPS = tuple(t.base for t in TABLES)


def table(base: str) -> Table:
    """The registry's entry for ``base``; ValueError naming the known ones otherwise."""
    for entry in TABLES:
        if entry.base == base:
            return entry
    raise ValueError(f"no table {base!r}; the tables are {', '.join(GROUPS)}")


def live_groups(versions: dict[str, TableVersion]) -> dict[str, str]:
    """The group serving each table now (its base name until a rebuild switched it)."""
    return {base: versions[base].group if base in versions else base for base in GROUPS}


def ensure_topics(topics: TopicManager, partitions: int, *, create: bool) -> int:
    """Create the wallet topics if asked, then check they are co-partitioned.

    The tables are those of the live versions (walletkit.stream.versions): a table
    rebuilt by ``walletctl rebuild`` is checked (and created) under its new name, and a
    retired one is not brought back. Returns the common partition count; raises
    CoPartitioningError when the existing topics disagree (a key's input and table
    would be split).
    """
    if create:
        topics.ensure_stream(DEPOSIT_TOPIC, partitions)
        topics.ensure_table(TABLE_VERSIONS_TOPIC, 1)
    tables = [
        table_topic(group)
        for group in live_groups(TableVersions(topics.settings, TABLE_VERSIONS_TOPIC).read()).values()
    ]
    if create:
        for table in tables:
            topics.ensure_table(table, partitions)
    return topics.ensure_copartitioned([DEPOSIT_TOPIC, *tables])


#: Seconds between two looks for missing topics, and between two log lines about them.
TOPICS_RECHECK_SECONDS = 2.0
TOPICS_LOG_INTERVAL = 30.0


def wait_for_topics(
    topics: TopicManager,
    partitions: int,
    *,
    create: bool,
    stop: threading.Event,
    service: str,
    log: logging.Logger,
    on_wait=None,
) -> int | None:
    """``ensure_topics``, again and again while topics are missing or Kafka cannot be reached.

    On a fresh install the topics may not exist yet (Strimzi's topic operator creates them a
    moment after the pods start) and the brokers may still be starting: a service that exited
    would crash-loop with growing back-off and start long after everything is there. It waits
    instead, unready, and says so every TOPICS_LOG_INTERVAL seconds; it goes on within
    TOPICS_RECHECK_SECONDS of the topics appearing. ``on_wait(missing or None)`` reports
    what it waits for (None once done). None if ``stop`` was set meanwhile. Other errors (the
    topics disagree on partition counts) are raised: waiting cannot mend them.
    """
    last_log = 0.0
    while True:
        try:
            count = ensure_topics(topics, partitions, create=create)
            if on_wait is not None:
                on_wait(None)
            if last_log:
                log.info("%s: the topics are there; starting", service)
            return count
        except (TopicsMissing, BrokerUnavailable, KafkaException) as exc:
            missing = exc.topics if isinstance(exc, TopicsMissing) else []
            if on_wait is not None:
                on_wait(missing)
            now = time.monotonic()
            if now - last_log >= TOPICS_LOG_INTERVAL:
                last_log = now
                if missing:
                    log.warning(
                        "%s: waiting for topics %s (unready meanwhile): %s; checking every %gs",
                        service,
                        ", ".join(missing),
                        "they are being created, or set WALLET_CREATE_TOPICS=true to create them"
                        if not create
                        else "they could not be created yet",
                        TOPICS_RECHECK_SECONDS,
                        extra={"missing_topics": missing},
                    )
                else:
                    log.warning(
                        "%s: waiting for Kafka (unready meanwhile): %s; checking every %gs",
                        service,
                        exc,
                        TOPICS_RECHECK_SECONDS,
                    )
        if stop.wait(TOPICS_RECHECK_SECONDS):
            return None
