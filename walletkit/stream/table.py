"""A processor's table, layered: store (RocksDB) → partition → transaction.

A :class:`TablePartition` is one partition of a group table: its store, the
changelog position the store reflects, and the changelog topic's id (so a table
whose topic was deleted and recreated is detected and rebuilt, not trusted).
A :class:`Transaction` is the write-back cache of one processed batch: reads go
through it, writes stay in it until the batch is flushed, and every changed key
yields exactly one changelog record per batch.
"""

from __future__ import annotations

from typing import Any

from walletkit.stream.codec import TableCodec
from walletkit.stream.store import Store

#: Metadata names in a table store.
CHANGELOG_OFFSET = "changelog_offset"  # next changelog offset to read
CHANGELOG_TOPIC_ID = "changelog_topic_id"
INPUT_TOPIC_ID = "input_topic_id"  # the input topic incarnation the table was built from


class TablePartition:
    """Partition ``partition`` of a group table, kept in its own store."""

    def __init__(self, store: Store, codec: TableCodec, partition: int) -> None:
        self.store = store
        self.codec = codec
        self.partition = partition

    @property
    def changelog_offset(self) -> int:
        """Next changelog offset this store has not seen (0 when empty)."""
        return max(self.store.meta_int(CHANGELOG_OFFSET, 0), 0)

    @property
    def changelog_topic_id(self) -> str | None:
        raw = self.store.meta(CHANGELOG_TOPIC_ID)
        return raw.decode() if raw is not None else None

    def get(self, key: str) -> Any | None:
        raw = self.store.get(key.encode())
        return self.codec.decode(raw) if raw is not None else None

    def begin(self) -> Transaction:
        return Transaction(self)

    def close(self) -> None:
        self.store.close()


class Transaction:
    """Write-back cache over a :class:`TablePartition` for one batch."""

    __slots__ = ("table", "_codec", "_cache", "_dirty", "first_offset", "last_offset")

    def __init__(self, part: TablePartition) -> None:
        #: The partition this transaction reads and will write.
        self.table = part
        self._codec = part.codec
        self._cache: dict[str, Any] = {}
        self._dirty: set[str] = set()
        #: Input offsets of the first and last record this batch consumed.
        self.first_offset = -1
        self.last_offset = -1

    def get(self, key: str) -> Any | None:
        try:
            return self._cache[key]
        except KeyError:
            value = self.table.get(key)
            self._cache[key] = value
            return value

    def set(self, key: str, value: Any) -> None:
        self._cache[key] = value
        self._dirty.add(key)

    def consumed(self, offset: int) -> None:
        if self.first_offset < 0:
            self.first_offset = offset
        self.last_offset = offset

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def changes(self) -> list[tuple[bytes, bytes]]:
        """One (key, encoded value) per changed key."""
        encode = self._codec.encode
        cache = self._cache
        return [(k.encode(), encode(cache[k])) for k in self._dirty]
