"""A processor's table, layered: store (RocksDB) → partition → transaction.

A :class:`TablePartition` is one partition of a group table: its store, the
changelog position the store reflects, and the changelog topic's id (so a table
whose topic was deleted and recreated is detected and rebuilt, not trusted).
A :class:`Transaction` is one processed batch: reads go through the partition's
cache of decoded values, writes stay in it until the batch is flushed, and every
changed key yields exactly one changelog record per batch.

The cache of decoded values outlives batches, so a hot key is decoded once, not
once per batch. It always equals what the store holds plus the current batch's
writes: a batch that is rewound, and a restore, clear it.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from walletkit.stream.changelog import position_key, stored_position, stored_topic_id
from walletkit.stream.codec import TableCodec, encoded_size
from walletkit.stream.errors import ValueTooLarge
from walletkit.stream.store import Store

#: Metadata name of the input topic incarnation a processor's table was built from.
INPUT_TOPIC_ID = "input_topic_id"


def trim_oldest(cache: dict[Any, Any], limit: int) -> None:
    """Keep an insertion-ordered cache within ``limit`` entries: drop the longest-cached first.

    A quarter of ``limit`` more than needed goes, so a full cache is not trimmed on
    every insertion.
    """
    over = len(cache) - limit
    if over > 0:
        for key in list(islice(cache, over + limit // 4)):
            del cache[key]


class TablePartition:
    """Partition ``partition`` of a group table, kept in its own store."""

    def __init__(
        self,
        store: Store,
        codec: TableCodec,
        partition: int,
        cache_entries: int = 10_000,
        max_value_bytes: int | None = None,
    ) -> None:
        self.store = store
        self.codec = codec
        self.partition = partition
        #: Largest encoded value a write may leave (None: no limit); see ValueTooLarge.
        self.max_value_bytes = max_value_bytes
        self.size_of = encoded_size(codec)
        #: Decoded values by key (``None`` for a key without a value); see the module doc.
        self.cache: dict[str, Any] = {}
        self.cache_entries = cache_entries

    def trim_cache(self) -> None:
        """Keep the cache within ``cache_entries``: drop the longest-cached keys first.

        Only between batches: a dirty value must stay cached until it is flushed.
        """
        trim_oldest(self.cache, self.cache_entries)

    @property
    def changelog_offset(self) -> int:
        """Next changelog offset this store has not seen (0 when empty)."""
        return stored_position(self.store, self.partition)

    @property
    def changelog_topic_id(self) -> str | None:
        return stored_topic_id(self.store)

    def checkpoint(self, next_offset: int) -> dict[str, int]:
        """The metadata that records ``next_offset`` as this partition's changelog position."""
        return {position_key(self.partition): next_offset}

    def get(self, key: str) -> Any | None:
        raw = self.store.get(key.encode())
        return self.codec.decode(raw) if raw is not None else None

    def begin(self) -> Transaction:
        return Transaction(self)

    def close(self) -> None:
        self.store.close()


class Transaction:
    """One batch's reads and writes of a :class:`TablePartition`, through its cache."""

    __slots__ = ("table", "_codec", "_cache", "_dirty", "_owners", "first_offset", "last_offset", "emitted")

    def __init__(self, part: TablePartition) -> None:
        #: The partition this transaction reads and will write.
        self.table = part
        self._codec = part.codec
        self._cache = part.cache
        self._dirty: set[str] = set()
        self._owners: dict[str, str] = {}  # side entry written in this batch -> its owner key
        #: Input offsets of the first and last record this batch consumed.
        self.first_offset = -1
        self.last_offset = -1
        #: Records the batch's callbacks emitted: (owner key, topic, key, encoded value or None).
        self.emitted: list[tuple[str, str, bytes, bytes | None]] = []

    def get(self, key: str) -> Any | None:
        try:
            return self._cache[key]
        except KeyError:
            value = self.table.get(key)
            self._cache[key] = value
            return value

    def set(self, key: str, value: Any, owner: str | None = None) -> None:
        """Write ``value`` for ``key`` (a side entry of ``owner``); ValueTooLarge (nothing
        written) if it exceeds the limit."""
        limit = self.table.max_value_bytes
        if limit is not None:
            size = self.table.size_of(value)
            if size > limit:
                raise ValueTooLarge(key, size, limit)
        self._cache[key] = value
        self._dirty.add(key)
        if owner is not None:
            self._owners[key] = owner

    def delete(self, key: str, owner: str | None = None) -> None:
        """Delete ``key``'s value: the store drops it, its changelog gets a tombstone."""
        self._cache[key] = None
        self._dirty.add(key)
        if owner is not None:
            self._owners[key] = owner

    def touch(self, key: str, owner: str) -> Any | None:
        """``get(key)`` for a side entry of ``owner``: its cached value may now be changed by a
        callback of ``owner``, so ``forget(owner)`` drops it too."""
        self._owners[key] = owner
        return self.get(key)

    def is_dirty(self, key: str) -> bool:
        return key in self._dirty

    def forget(self, owner: str) -> None:
        """Drop this batch's reads and writes of ``owner`` and its side entries: they read as
        stored again (the cached objects may have been changed in place)."""
        for key in [owner, *(k for k, o in self._owners.items() if o == owner)]:
            self._cache.pop(key, None)
            self._dirty.discard(key)
            self._owners.pop(key, None)
        if self.emitted:
            self.emitted = [e for e in self.emitted if e[0] != owner]

    def restore(self, key: str, raw: bytes | None, dirty: bool) -> None:
        """Put back a value as it was encoded before a record touched it (see Context snapshots)."""
        self._cache[key] = self._codec.decode(raw) if raw is not None else None
        if not dirty:
            self._dirty.discard(key)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        """One (key, encoded value) per changed key; None for a deleted one (a tombstone)."""
        encode = self._codec.encode
        cache = self._cache
        return [(k.encode(), encode(v) if (v := cache[k]) is not None else None) for k in self._dirty]
