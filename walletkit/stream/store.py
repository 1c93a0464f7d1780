"""Local state: one RocksDB (rocksdict) holding a table's values and its checkpoint.

Values and metadata (changelog offsets, topic ids) live in one database under
different key prefixes, so a batch of values and the checkpoint that says how far
they reach are written by one atomic RocksDB write batch: after any crash the
checkpoint matches the data exactly.

There is no write-ahead log: the changelog topic is the durable copy (as in Kafka
Streams). A crash loses the writes still in memory, values and checkpoint
together, and the next restore reads them back from the changelog; closing the
store flushes them, so a clean restart restores nothing.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch, WriteOptions

_DATA = b"d"
_META = b"m"


def persistent_id(root: str | Path, name: str = "member-id") -> str:
    """An id kept in ``root/name``, made once: the same across restarts on the same disk.

    A process's transactional id is built from it when no instance id is set, so a
    restart fences (and aborts) whatever its predecessor left open."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        made = uuid.uuid4().hex[:12]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(made + "\n")
        os.replace(tmp, path)
        return made


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    # Point lookups by key dominate, many of them for keys not stored yet (a new
    # wallet, every key of a restore from scratch): a bloom filter answers those
    # without reading the table files.
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    opts.set_max_background_jobs(2)
    opts.increase_parallelism(2)
    return opts


class Store:
    """A RocksDB at ``path`` with bytes keys and values plus named metadata."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._db: Rdict | None = Rdict(str(self.path), options=_options())
        # No WAL (see the module doc): it doubled the cost of every batch write.
        self._write_opts = WriteOptions()
        self._write_opts.disable_wal = True

    @property
    def db(self) -> Rdict:
        if self._db is None:
            raise RuntimeError(f"store {self.path} is closed")
        return self._db

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(_DATA + key)

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        return self.db.get([_DATA + k for k in keys])

    def meta(self, name: str) -> bytes | None:
        return self.db.get(_META + name.encode())

    def meta_int(self, name: str, default: int = -1) -> int:
        raw = self.meta(name)
        return int(raw) if raw is not None else default

    def write(self, puts: Iterable[tuple[bytes, bytes | None]], meta: Mapping[str, bytes | str | int] = {}) -> None:
        """Write values (``None`` deletes) and metadata in one atomic batch."""
        batch = WriteBatch(raw_mode=True)
        for key, value in puts:
            if value is None:
                batch.delete(_DATA + key)
            else:
                batch.put(_DATA + key, value)
        for name, value in meta.items():
            if isinstance(value, int):
                value = str(value)
            if isinstance(value, str):
                value = value.encode()
            batch.put(_META + name.encode(), value)
        self.db.write(batch, self._write_opts)

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        """Every (key, value) pair of the table, in key order."""
        for key, value in self.db.items(from_key=_DATA):
            if not key.startswith(_DATA):
                break
            yield key[1:], value

    def has_values(self) -> bool:
        """Whether the table holds any value (metadata aside)."""
        for _ in self.items():
            return True
        return False

    def is_empty(self) -> bool:
        for _ in self.db.keys():
            return False
        return True

    def size_bytes(self) -> int:
        """Approximate bytes on disk and in memtables."""
        db = self.db
        total = 0
        for prop in ("rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"):
            total += db.property_int_value(prop) or 0
        return total

    def wipe(self) -> None:
        """Delete everything, data and checkpoint, and start empty."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(self.path), options=_options())

    def close(self) -> None:
        if self._db is not None:
            self._db.flush()  # without a WAL, what is still in memory would be restored again
            self._db.close()
            self._db = None
