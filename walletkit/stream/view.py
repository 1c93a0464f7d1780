"""View: a local replica of a group table, followed from its changelog (Goka's View).

A background thread follows every partition of the changelog topic with a
:class:`~walletkit.stream.changelog.ChangelogFollower` (the reader restores use) into
one local RocksDB, each partition's next offset checkpointed in the same atomic write
as the values it covers, so a restarted view resumes where it stopped. The view is
*caught up* once it reached the end of every partition since it started.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from walletkit.stream import metrics
from walletkit.stream.changelog import ChangelogFollower, stored_topic_id
from walletkit.stream.codec import TableCodec
from walletkit.stream.kafka import KafkaSettings
from walletkit.stream.store import Store
from walletkit.stream.topics import TopicManager

log = logging.getLogger(__name__)


class ViewState(enum.Enum):
    CREATED = "created"
    CATCHING_UP = "catching_up"
    RUNNING = "running"  # caught up at least once; keeps following
    STOPPED = "stopped"
    FAILED = "failed"


class View:
    """Replica of ``topic`` under ``path``; ``get(key)`` reads it."""

    def __init__(
        self, settings: KafkaSettings, topic: str, codec: TableCodec, path: str | Path, *, batch_size: int = 5000
    ) -> None:
        self.topic = topic
        self.codec = codec
        self.state = ViewState.CREATED
        self._settings = settings
        self._path = Path(path)
        self._batch = batch_size
        self._store = Store(self._path)
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self._wipe_lock = threading.Lock()
        self.error: BaseException | None = None
        self._listeners: list[Callable[[list[tuple[bytes, bytes | None]] | None], None]] = []
        self._m_records = metrics.VIEW_RECORDS.labels(topic)
        self._m_caught_up = metrics.VIEW_CAUGHT_UP.labels(topic)
        self._m_delay = metrics.VIEW_RECORD_DELAY.labels(topic)
        self._m_caught_up.set(0)
        self._lag: dict[int, int] = {}
        #: Set when a newer version of the table is replacing this one (walletkit.stream.versions):
        #: the topic's deletion then ends the following instead of wiping the replica.
        self.retiring = False

    # -- reading -------------------------------------------------------------

    def get(self, key: str) -> Any | None:
        raw = self.get_raw(key)
        return self.codec.decode(raw) if raw is not None else None

    def get_raw(self, key: str) -> bytes | None:
        with self._wipe_lock:
            return self._store.get(key.encode())

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    def wait_caught_up(self, timeout: float | None = None) -> bool:
        return self._caught_up.wait(timeout)

    @property
    def path(self) -> Path:
        return self._path

    def wait_reaches(self, ends: dict[int, int], timeout: float) -> bool:
        """Wait until the replica has read every partition up to ``ends`` (offsets to reach)."""
        deadline = time.monotonic() + timeout
        while not all(self._positions.get(p, 0) >= end for p, end in ends.items()):
            if time.monotonic() > deadline or self.state is ViewState.FAILED:
                return False
            time.sleep(0.05)
        return True

    def offsets(self) -> dict[int, int]:
        """Next offset to read, per partition (what the replica reflects)."""
        return dict(self._positions)

    @property
    def behind(self) -> int | None:
        """Changelog records the replica is behind, from the last fetches' ends (None before the first)."""
        return sum(self._lag.values()) if self._lag else None

    def subscribe(self, listener: Callable[[list[tuple[bytes, bytes | None]] | None], None]) -> None:
        """Call ``listener(records)`` (on the view's thread) after each applied batch.

        ``records`` is the batch's (key, value) list; listeners must not keep it.
        ``None`` means the replica was wiped to be rebuilt: any key may have changed.
        """
        self._listeners.append(listener)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self._positions: dict[int, int] = {}
        self._lag: dict[int, int] = {}
        self._started = time.monotonic()
        self._resumed_at = 0  # changelog records the local replica already held at start
        self._read_since_start = 0
        self._thread = threading.Thread(target=self._run, name=f"view-{self.topic}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._store.close()
        if self.state is not ViewState.FAILED:
            self.state = ViewState.STOPPED

    def _run(self) -> None:
        self.state = ViewState.CATCHING_UP
        try:
            while not self._stop.is_set():
                try:
                    self._follow()
                except _Rebuild as exc:
                    if self.retiring:
                        # A newer version of the table replaces this one: what the replica holds
                        # is served, unchanged, until the readers move.
                        log.info(
                            "view %s: %s; the table is being retired, so the replica stays as it is", self.topic, exc
                        )
                        return
                    log.warning("view %s: %s; rebuilding from the beginning", self.topic, exc)
                    self._caught_up.clear()
                    self._m_caught_up.set(0)
                    self.state = ViewState.CATCHING_UP
                    with self._wipe_lock:
                        self._store.wipe()
                    for listener in self._listeners:
                        listener(None)
        except BaseException as exc:  # surfaced through state/readiness, never silently
            self.error = exc
            self.state = ViewState.FAILED
            self._m_caught_up.set(0)
            log.exception("view %s failed", self.topic)

    def _topic_layout(self) -> tuple[int, str]:
        topics = TopicManager(self._settings)
        while not self._stop.is_set():
            counts = topics.partitions([self.topic])
            if self.topic in counts:
                return counts[self.topic], topics.topic_ids([self.topic])[self.topic]
            log.info("view %s: waiting for the topic to exist", self.topic)
            self._stop.wait(1.0)
        raise _Stopped()

    def _follow(self) -> None:
        try:
            partitions, topic_id = self._topic_layout()
        except _Stopped:
            return
        stored_id = stored_topic_id(self._store)
        if stored_id is not None and stored_id != topic_id:
            raise _Rebuild(f"local replica belongs to topic id {stored_id}, the topic now has {topic_id}")
        follower = ChangelogFollower(Consumer(self._settings.reader()), self.topic, self.codec, batch_size=self._batch)
        self._follower = follower
        pending_eof = set(range(partitions))
        try:
            follower.assign({p: self._store for p in range(partitions)}, topic_id)
            self._positions = follower.positions
            self._resumed_at = sum(follower.positions.values())
            log.info(
                "view %s: following %d partitions from %s (%s)",
                self.topic,
                partitions,
                dict(follower.positions),
                f"local state resumed, {self._resumed_at} changelog records already held"
                if self._resumed_at
                else "empty local state",
            )
            while not self._stop.is_set():
                batch = follower.poll(0.1, apply_lock=self._wipe_lock)
                if batch.out_of_range:
                    raise _Rebuild(f"offset out of range on partitions {sorted(batch.out_of_range)}")
                if batch.topic_gone:
                    raise _Rebuild("the topic disappeared")
                for p in batch.ended:
                    metrics.VIEW_LAG.labels(self.topic, str(p)).set(0)
                    self._lag[p] = 0
                if pending_eof and batch.ended:
                    pending_eof -= batch.ended
                    if not pending_eof:
                        self._mark_caught_up()
                if batch.records:
                    self._m_records.inc(len(batch.records))
                    self._read_since_start += len(batch.records)
                    self._observe_batch(follower, batch.first_timestamps)
                    for listener in self._listeners:
                        listener(batch.records)
        finally:
            follower.close()

    def _observe_batch(self, follower: ChangelogFollower, first_ts: dict[int, int]) -> None:
        """Lag of the partitions a batch touched (from the fetch's high watermark) and, once caught
        up, the delay of the batch's oldest record."""
        for p, high in follower.end_offsets(first_ts).items():
            self._lag[p] = lag = max(high - follower.positions[p], 0)
            metrics.VIEW_LAG.labels(self.topic, str(p)).set(lag)
        oldest = min((ts for ts in first_ts.values() if ts > 0), default=0)
        if oldest and self._caught_up.is_set():
            self._m_delay.observe(max(time.time() - oldest / 1000, 0.0))

    def _mark_caught_up(self) -> None:
        if not self._caught_up.is_set():
            log.info(
                "view %s: caught up in %.2fs: read %d changelog records%s",
                self.topic,
                time.monotonic() - self._started,
                self._read_since_start,
                f" on top of the {self._resumed_at} the local state already held" if self._resumed_at else "",
                extra={"records": self._read_since_start, "resumed_records": self._resumed_at},
            )
        self._caught_up.set()
        self._m_caught_up.set(1)
        self.state = ViewState.RUNNING


class _Rebuild(Exception):
    pass


class _Stopped(Exception):
    pass
