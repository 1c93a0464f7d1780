"""Table versions: which group (and so which table topic) is the live one of a table.

A table is rebuilt for a rule change or a bug fix by a new group that reads the input
from its start into its own table topic, beside the live one (``walletctl rebuild``).
When it has caught up, the switch is one record in a small compacted topic: key the
table's base group (``balance``), value the group now serving it (``balance-v2``) and
its version. Everyone who runs or reads a table follows that record:

- processors start the current version's group, and when the record changes they drain,
  commit and start the new one (its committed offsets are where the rebuild stopped);
- views (the API) open the new table beside the old one, and swap readers once it has
  caught up with the live group (see the API's ledger);
- the operator reads the lag of the current group.

No record for a table means version 1: the group is the base name, its table
``<base>-table`` (the contract names). A missing versions topic means the same, so a
deployment that never rebuilt needs nothing.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from walletkit.stream.changelog import Outcome, classify
from walletkit.stream.errors import StreamError
from walletkit.stream.kafka import KafkaSettings

log = logging.getLogger(__name__)

_VERSIONED = re.compile(r"^(?P<base>.+)-v(?P<n>[0-9]+)$")


@dataclass(frozen=True)
class TableVersion:
    """The live version of one table."""

    base: str
    group: str
    version: int

    @classmethod
    def first(cls, base: str) -> TableVersion:
        return cls(base, base, 1)

    def next(self) -> TableVersion:
        return TableVersion(self.base, f"{self.base}-v{self.version + 1}", self.version + 1)


def version_of(base: str, group: str) -> int:
    """The version number a group name carries (``balance`` is 1, ``balance-v3`` is 3)."""
    if group == base:
        return 1
    match = _VERSIONED.match(group)
    if not match or match["base"] != base:
        raise ValueError(f"group {group!r} is not a version of table {base!r}")
    return int(match["n"])


def _decode(key: bytes | None, value: bytes | None) -> TableVersion | None:
    if key is None or value is None:
        return None
    try:
        base = key.decode()
        doc = json.loads(value)
        group = str(doc["group"])
        return TableVersion(base, group, version_of(base, group))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring an unreadable table-version record %r: %s", key, exc)
        return None


class TableVersions:
    """Reads and writes the versions topic ``topic`` (one partition, compacted)."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self.settings = settings
        self.topic = topic

    def read(self, timeout: float = 10.0) -> dict[str, TableVersion]:
        """Every table's live version that differs from version 1, read to the topic's end."""
        reader = _Reader(self.settings, self.topic)
        try:
            return reader.read_to_end(timeout)
        finally:
            reader.close()

    def current(self, base: str, timeout: float = 10.0) -> TableVersion:
        return self.read(timeout).get(base, TableVersion.first(base))

    def publish(self, version: TableVersion, timeout: float = 30.0) -> None:
        """Make ``version`` the live one of its table (acknowledged by every in-sync replica)."""
        producer = Producer(self.settings.producer())
        errors: list[KafkaError] = []
        producer.produce(
            self.topic,
            json.dumps({"group": version.group, "version": version.version}).encode(),
            version.base.encode(),
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
        left = producer.flush(timeout)
        if left or errors:
            raise KafkaException(errors[0] if errors else KafkaError(KafkaError._TIMED_OUT))

    def watch(self, on_change: Callable[[dict[str, TableVersion]], None], *, interval: float = 1.0) -> VersionWatch:
        """Call ``on_change(versions)`` from a thread once they were read whole, then whenever they
        change. Callers compare with what they run: a call that changes nothing is harmless."""
        return VersionWatch(self, on_change, interval)


class _Reader:
    """A consumer of the versions topic's one partition, from its start."""

    def __init__(self, settings: KafkaSettings, topic: str, timeout: float = 10.0) -> None:
        self.topic = topic
        self.consumer = Consumer(settings.reader())
        self.versions: dict[str, TableVersion] = {}
        # No versions topic (a deployment that never rebuilt, its topics made by hand): every
        # table is at version 1. Assigning a missing topic would only wait.
        found = self.consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        self.missing = found is None or found.error is not None
        if not self.missing:
            self.consumer.assign([TopicPartition(topic, 0, 0)])

    def poll(self, timeout: float) -> bool:
        """Read what is there; True once the end was reached (or the topic does not exist)."""
        if self.missing:
            return True
        ended = False
        for m in self.consumer.consume(1000, timeout):
            err = m.error()
            if err is not None:  # named as the changelog follower names them (changelog.py)
                try:
                    outcome = classify(err)
                except StreamError:  # a fatal consumer error: the next read tells more
                    log.warning("table versions: %s", err.str())
                    continue
                if outcome is Outcome.END or outcome is Outcome.TOPIC_GONE:
                    ended = True  # no versions topic: every table is at version 1
                elif outcome is Outcome.OUT_OF_RANGE:
                    self.consumer.assign([TopicPartition(self.topic, 0, -2)])  # the log's start
                else:
                    log.debug("table versions: %s", err.str())
                continue
            version = _decode(m.key(), m.value())
            if version is not None:
                if version.group == version.base:
                    self.versions.pop(version.base, None)
                else:
                    self.versions[version.base] = version
            elif m.key() is not None and m.value() is None:
                self.versions.pop(m.key().decode(errors="replace"), None)
        return ended

    def read_to_end(self, timeout: float) -> dict[str, TableVersion]:
        import time

        deadline = time.monotonic() + timeout
        while not self.poll(0.2):
            if time.monotonic() > deadline:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"reading {self.topic} timed out"))
        return dict(self.versions)

    def close(self) -> None:
        self.consumer.close()


class VersionWatch:
    """Follows the versions topic in a daemon thread; see :meth:`TableVersions.watch`."""

    def __init__(
        self, versions: TableVersions, on_change: Callable[[dict[str, TableVersion]], None], interval: float
    ) -> None:
        self._versions = versions
        self._on_change = on_change
        self._interval = interval
        self._stop = threading.Event()
        self.seen: dict[str, TableVersion] | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{versions.topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        reader: Any = None
        synced = False  # reached the end once: what it holds is the whole topic
        while not self._stop.is_set():
            try:
                if reader is None:
                    reader = _Reader(self._versions.settings, self._versions.topic)
                    synced = False  # a new reader holds nothing until it read to the end
                synced = reader.poll(self._interval) or synced
                now = dict(reader.versions)
                if reader.missing:  # looked for again later: it may be created meanwhile
                    reader.close()
                    reader = None
                    self._stop.wait(5 * self._interval)
            except KafkaException as exc:  # a broker away: tried again
                log.debug("table versions: %s", exc)
                self._stop.wait(self._interval)
                continue
            if not synced:
                continue
            # Also at the first complete read: a switch between the caller's own read of the
            # versions and this watch's start would otherwise go unnoticed.
            if self.seen is None or now != self.seen:
                if self.seen is not None:
                    log.info("table versions changed: %s", {b: v.group for b, v in now.items()})
                try:
                    self._on_change(now)
                except Exception:  # noqa: BLE001 - the watch goes on
                    log.exception("reacting to a table-version change")
            self.seen = now
        if reader is not None:
            reader.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def committed_offsets(
    settings: KafkaSettings, group: str, topic: str, timeout: float = 10.0, admin: Any = None
) -> dict[int, int]:
    """The offsets ``group`` committed on ``topic``, per partition (those it committed); pass
    ``admin`` when asking repeatedly, so one client serves every call."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    admin = admin or AdminClient(settings.admin())
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)[group]
    result = future.result(timeout=timeout + 1)
    return {
        tp.partition: tp.offset
        for tp in result.topic_partitions
        if tp.topic == topic and tp.error is None and tp.offset >= 0
    }


def group_has_passed(settings: KafkaSettings, group: str, other: str, topic: str, admin: Any = None) -> bool:
    """Whether ``group`` committed at least as far as ``other`` on every partition of ``topic``."""
    mine = committed_offsets(settings, group, topic, admin=admin)
    theirs = committed_offsets(settings, other, topic, admin=admin)
    return all(mine.get(p, -1) >= offset for p, offset in theirs.items())


def readable_ends(settings: KafkaSettings, topic: str, partitions: int, timeout: float = 10.0) -> dict[int, int]:
    """Where a ``read_committed`` reader of each partition of ``topic`` ends now."""
    consumer = Consumer(settings.reader())
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in range(partitions)
        }
    finally:
        consumer.close()
