"""Local state (walletkit.stream.store.Store) on a real RocksDB in tmp_path."""

from __future__ import annotations

import pytest

from walletkit.stream.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db")
    yield s
    s.close()


def test_new_store_is_empty(store):
    assert store.is_empty()
    assert store.get(b"k") is None
    assert store.meta("changelog_offset") is None
    assert store.meta_int("changelog_offset") == -1
    assert store.meta_int("changelog_offset", 0) == 0
    assert list(store.items()) == []


def test_write_values_and_meta_together(store):
    store.write([(b"a", b"1"), (b"b", b"2")], {"changelog_offset": 17, "changelog_topic_id": "abc", "raw": b"\x00\x01"})
    assert store.get(b"a") == b"1"
    assert store.get(b"b") == b"2"
    assert store.meta_int("changelog_offset") == 17
    assert store.meta("changelog_offset") == b"17"
    assert store.meta("changelog_topic_id") == b"abc"
    assert store.meta("raw") == b"\x00\x01"
    assert not store.is_empty()


def test_meta_only_makes_the_store_non_empty_but_not_the_table(store):
    store.write([], {"changelog_offset": 3})
    assert not store.is_empty()
    assert list(store.items()) == []


def test_values_and_meta_do_not_collide(store):
    # a value key that spells a meta name, and a meta name that spells a value key
    store.write([(b"changelog_offset", b"value")], {"changelog_offset": 5, "k": "meta"})
    assert store.get(b"changelog_offset") == b"value"
    assert store.meta_int("changelog_offset") == 5
    assert store.get(b"k") is None
    assert list(store.items()) == [(b"changelog_offset", b"value")]


def test_none_deletes_and_later_puts_in_one_batch_apply_in_order(store):
    store.write([(b"a", b"1"), (b"b", b"2")])
    store.write([(b"a", None), (b"b", None), (b"b", b"3")])
    assert store.get(b"a") is None
    assert store.get(b"b") == b"3"
    assert list(store.items()) == [(b"b", b"3")]


def test_delete_of_missing_key_is_harmless(store):
    store.write([(b"nope", None)], {"changelog_offset": 1})
    assert store.get(b"nope") is None
    assert store.meta_int("changelog_offset") == 1


def test_write_is_atomic_a_failing_batch_writes_nothing(store):
    store.write([(b"a", b"1")], {"changelog_offset": 1})
    with pytest.raises(Exception):
        store.write([(b"a", b"2"), (b"b", b"2"), (b"c", 12345)], {"changelog_offset": 2})  # type: ignore[list-item]
    assert store.get(b"a") == b"1"
    assert store.get(b"b") is None
    assert store.meta_int("changelog_offset") == 1


def test_items_in_key_order_without_meta(store):
    keys = [b"\xff\xff", b"z", b"m", b"a", b"\x00", b"walletID010", b"walletID002", b"d", b"", b"mm"]
    store.write([(k, b"v" + k) for k in keys], {"changelog_offset": 9, "zzz": "x"})
    assert list(store.items()) == [(k, b"v" + k) for k in sorted(keys)]


def test_get_many_preserves_order_and_reports_missing(store):
    store.write([(b"a", b"1"), (b"c", b"3")])
    assert store.get_many([b"c", b"b", b"a", b"c"]) == [b"3", None, b"1", b"3"]
    assert store.get_many([]) == []


def test_binary_values_round_trip(store):
    value = bytes(range(256)) * 10
    store.write([(b"bin", value), (b"empty", b"")])
    assert store.get(b"bin") == value
    assert store.get(b"empty") == b""


def test_data_and_meta_survive_reopen(tmp_path):
    s = Store(tmp_path / "db")
    s.write([(b"a", b"1")], {"changelog_offset": 42})
    s.close()
    s = Store(tmp_path / "db")
    try:
        assert s.get(b"a") == b"1"
        assert s.meta_int("changelog_offset") == 42
    finally:
        s.close()


def test_wipe_removes_data_and_meta_and_leaves_a_usable_store(store, tmp_path):
    store.write([(b"a", b"1"), (b"b", b"2")], {"changelog_offset": 42, "changelog_topic_id": "t"})
    store.wipe()
    assert store.is_empty()
    assert store.get(b"a") is None
    assert store.meta("changelog_offset") is None
    assert list(store.items()) == []
    store.write([(b"c", b"3")], {"changelog_offset": 1})
    assert list(store.items()) == [(b"c", b"3")]
    assert store.meta_int("changelog_offset") == 1


def test_wipe_is_durable(tmp_path):
    s = Store(tmp_path / "db")
    s.write([(b"a", b"1")], {"changelog_offset": 42})
    s.wipe()
    s.close()
    s = Store(tmp_path / "db")
    try:
        assert s.is_empty()
    finally:
        s.close()


def test_closed_store_raises(tmp_path):
    s = Store(tmp_path / "db")
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        s.get(b"a")
    with pytest.raises(RuntimeError, match="closed"):
        s.write([(b"a", b"1")])


def test_size_bytes_grows_with_data(store):
    empty = store.size_bytes()
    store.write([(str(i).encode(), b"x" * 1000) for i in range(200)])
    assert store.size_bytes() > empty


_CRASHING_WRITER = """
import os, sys
from walletkit.stream.store import Store
store = Store(sys.argv[1])
for n in range(1, int(sys.argv[2]) + 1):
    store.write([(b"k%d" % (n % 7), b"%d" % n), (b"last", b"%d" % n)], {"changelog_offset": n})
    if n == int(sys.argv[3]):
        store.db.flush()  # part of the history reaches the table files
os._exit(9)  # a crash: no close, no flush
"""


def test_a_crash_keeps_the_checkpoint_and_the_values_it_covers_together(tmp_path):
    """Without a write-ahead log a crash loses the writes still in memory; what survives must be a
    prefix of the batches, the checkpoint included, so a restore from it is exact."""
    import subprocess
    import sys

    path = tmp_path / "db"
    done = subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(path), "300", "120"], timeout=60)
    assert done.returncode == 9
    store = Store(path)
    try:
        checkpoint = store.meta_int("changelog_offset")
        assert 120 <= checkpoint <= 300  # the flushed prefix survived, maybe more
        assert store.get(b"last") == b"%d" % checkpoint
        for k in range(7):  # every key holds its value as of the checkpoint
            expected = max(n for n in range(1, checkpoint + 1) if n % 7 == k)
            assert store.get(b"k%d" % k) == b"%d" % expected
    finally:
        store.close()


def test_close_persists_what_was_in_memory(tmp_path):
    store = Store(tmp_path / "db")
    store.write([(b"a", b"1")], {"changelog_offset": 5})
    store.close()
    reopened = Store(tmp_path / "db")
    assert (reopened.get(b"a"), reopened.meta_int("changelog_offset")) == (b"1", 5)
    reopened.close()


def test_table_cache_is_trimmed_oldest_first_with_headroom(tmp_path):
    from walletkit.stream.table import TablePartition
    from walletkit.wallet.codecs import WALLET

    part = TablePartition(Store(tmp_path / "db"), WALLET, 0, cache_entries=8)
    try:
        for i in range(8):
            part.cache[f"k{i}"] = i
        part.trim_cache()
        assert len(part.cache) == 8  # within the bound: nothing dropped
        for i in range(8, 12):
            part.cache[f"k{i}"] = i
        part.trim_cache()
        # over by 4: those 4 plus a quarter of the bound go, the oldest first
        assert list(part.cache) == [f"k{i}" for i in range(6, 12)]
    finally:
        part.close()
