"""The context a processor callback gets for each input record (Goka's Context)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

from walletkit.stream.codec import Codec, TableCodec
from walletkit.stream.table import Transaction

#: The record header carrying the id of the request that caused the record (the API's
#: X-Request-ID), for log lines to carry end to end.
REQUEST_ID_HEADER = "request-id"


def request_id_of(msg: Any) -> str | None:
    """The ``request-id`` header of a consumed record, if it has one."""
    headers = msg.headers() if msg is not None else None
    if headers:
        for name, value in headers:
            if name == REQUEST_ID_HEADER and value is not None:
                return value.decode("utf-8", "replace")
    return None


class Context:
    """Access to the group table for the key of the record being processed.

    ``value()`` reads the key's current table value (``None`` if it has none);
    ``set_value(v)`` replaces it. Every value set is stamped with the record's
    offset, which is what makes a replayed record a no-op.
    """

    __slots__ = (
        "key",
        "offset",
        "partition",
        "_msg",
        "_txn",
        "_codec",
        "snapshots",
        "_outputs",
        "_emit_mark",
        "_joined",
    )

    def __init__(
        self,
        txn: Transaction,
        codec: TableCodec,
        key: str,
        partition: int,
        offset: int,
        msg: Any,
        *,
        snapshot: bool = False,
        outputs: Mapping[str, Codec] | None = None,
        joined: Mapping[str, Any] | None = None,
    ) -> None:
        self._txn = txn
        self._codec = codec
        self._outputs = outputs
        self._joined = joined
        self._emit_mark = len(txn.emitted) if txn is not None else 0  # this record's emits come after it
        #: With ``snapshot``: every entry this record reads, encoded as it was before
        #: (key -> (bytes or None, dirty)), so a refused write can be undone (Transaction.restore).
        self.snapshots: dict[str, tuple[bytes | None, bool]] | None = {} if snapshot else None
        #: The record's key (the table key).
        self.key = key
        self.partition = partition
        self.offset = offset
        self._msg = msg

    @property
    def timestamp(self) -> int:
        """Kafka record timestamp in milliseconds (read only when asked: most callbacks never do)."""
        return self._msg.timestamp()[1]

    @property
    def request_id(self) -> str | None:
        """The id of the request that caused the record (its ``request-id`` header), if any."""
        return request_id_of(self._msg)

    @property
    def log_append_time_ms(self) -> int | None:
        """The broker's LogAppendTime of the record (ms), when its topic has the broker stamp
        records (message.timestamp.type=LogAppendTime); None otherwise. It is one clock for
        every producer, stored with the record, so a replay sees the same time."""
        if self._msg is None:
            return None
        ts_type, ts_ms = self._msg.timestamp()
        return ts_ms if ts_type == TIMESTAMP_LOG_APPEND_TIME else None

    def value(self) -> Any | None:
        """The key's current value. It is the table's cached object: change it only
        to pass it to ``set_value``, and not before raising ``SkipRecord``."""
        value = self._txn.get(self.key)
        if self.snapshots is not None:
            self._snapshot(self.key, value)
        return value

    def _snapshot(self, key: str, value: Any | None) -> None:
        if key not in self.snapshots:
            self.snapshots[key] = (self._codec.encode(value) if value is not None else None, self._txn.is_dirty(key))

    def undo(self) -> None:
        """Put back every entry this record read as it was (needs ``snapshot``), and drop
        what it emitted."""
        for key, (raw, dirty) in self.snapshots.items():
            self._txn.restore(key, raw, dirty)
        self.discard_emits()

    def discard_emits(self) -> None:
        """Drop what this record emitted (it was refused: nothing of it may leave)."""
        del self._txn.emitted[self._emit_mark :]

    def delete(self) -> None:
        """Delete the key's value (Goka's Delete): the store drops it, the changelog gets a
        tombstone, views forget the key. The value's stamp goes with it: under applied-offsets
        a replay runs the key's earlier records of the batch again, and ends deleted again."""
        if self.snapshots is not None:
            self._snapshot(self.key, self._txn.get(self.key))
        self._txn.delete(self.key)

    def join(self, topic: str) -> Any | None:
        """This key's value in joined table ``topic`` (one of GroupSpec.joins; Goka's Join),
        None if it has none. It is read from the member's local copy of that table, which
        follows the other group's changelog: it may lag it, so a replay may see a newer value."""
        table = self._joined.get(topic) if self._joined else None
        if table is None:
            raise ValueError(f"{topic!r} is not a joined table of this group (GroupSpec.joins)")
        return table.get(self.key)

    def emit(self, topic: str, key: str, value: Any) -> None:
        """Send ``value`` (None: a tombstone) to ``topic``, one of the group's outputs, keyed
        by ``key`` (Goka's Emit). It leaves with the batch: under exactly-once in the batch's
        transaction (seen once by read_committed readers, or never), under applied-offsets
        after the batch's changelog (again on a replay)."""
        codec = self._outputs.get(topic) if self._outputs else None
        if codec is None:
            raise ValueError(f"{topic!r} is not an output of this group (GroupSpec.outputs)")
        raw = codec.encode(value) if value is not None else None
        self._txn.emitted.append((self.key, topic, key.encode(), raw))

    def set_value(self, value: Any) -> None:
        if self.snapshots is not None:
            self._snapshot(self.key, self._txn.get(self.key))
        self._codec.stamp(value, self.offset)
        self._txn.set(self.key, value)

    def value_of(self, key: str) -> Any | None:
        """The value of another key of this partition's table: a side entry of this
        record's key (e.g. ``<key>\\0...``), which lives where the key's records go."""
        value = self._txn.touch(key, self.key)
        if self.snapshots is not None:
            self._snapshot(key, value)
        return value

    def set_value_of(self, key: str, value: Any) -> None:
        """Replace a side entry's value (stamped like ``set_value``). Side entries keep a
        key's bookkeeping that grows with its traffic out of its own value."""
        if self.snapshots is not None:
            self._snapshot(key, self._txn.touch(key, self.key))
        self._codec.stamp(value, self.offset)
        self._txn.set(key, value, owner=self.key)
