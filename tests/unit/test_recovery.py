"""merge_changelog (walletkit.stream.changelog) on a real RocksDB, with the balance-table codec."""

from __future__ import annotations

import random

import pytest

from walletkit.stream.changelog import CHANGELOG_TOPIC_ID, merge_changelog, position_key
from walletkit.stream.store import Store
from walletkit.wallet.codecs import WALLET, Wallet, wallet_balance_micros

CHANGELOG_OFFSET = position_key(0)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db")
    yield s
    s.close()


def wallet(balance_micros: int, applied: int | None, wallet_id: str = "w") -> bytes:
    w = Wallet(WalletID=wallet_id, Balance=balance_micros / 1e6, BalanceMicros=balance_micros)
    if applied is not None:
        WALLET.stamp(w, applied)
    return WALLET.encode(w)


def stored(store: Store, key: bytes) -> tuple[int, int] | None:
    """(balance micros, applied offset) of a stored value."""
    raw = store.get(key)
    if raw is None:
        return None
    w = WALLET.decode(raw)
    return wallet_balance_micros(w), WALLET.applied_offset(w)


META = {CHANGELOG_OFFSET: 10, CHANGELOG_TOPIC_ID: "topic-1"}


def test_applies_records_and_meta_in_one_write(store):
    n = merge_changelog(store, WALLET, [(b"a", wallet(1, 0)), (b"b", wallet(2, 1))], META)
    assert n == 2
    assert stored(store, b"a") == (1, 0)
    assert stored(store, b"b") == (2, 1)
    assert store.meta_int(CHANGELOG_OFFSET) == 10
    assert store.meta(CHANGELOG_TOPIC_ID) == b"topic-1"


@pytest.mark.parametrize("order", [[3, 9, 5], [9, 3, 5], [5, 3, 9], [3, 5, 9], [9, 5, 3]])
def test_highest_applied_offset_wins_within_a_batch(store, order):
    records = [(b"k", wallet(off * 100, off)) for off in order]
    assert merge_changelog(store, WALLET, records, META) == 1
    assert stored(store, b"k") == (900, 9)


def test_equal_offsets_within_a_batch_the_later_record_wins(store):
    merge_changelog(store, WALLET, [(b"k", wallet(1, 5)), (b"k", wallet(2, 5))], META)
    assert stored(store, b"k") == (2, 5)


def test_stale_lower_offset_does_not_overwrite_stored_value(store):
    merge_changelog(store, WALLET, [(b"k", wallet(1000, 10))], META)
    n = merge_changelog(store, WALLET, [(b"k", wallet(700, 7))], {CHANGELOG_OFFSET: 11})
    assert n == 0
    assert stored(store, b"k") == (1000, 10)
    # the checkpoint still advances past the stale record
    assert store.meta_int(CHANGELOG_OFFSET) == 11


def test_value_without_applied_offset_does_not_overwrite_a_stamped_one(store):
    merge_changelog(store, WALLET, [(b"k", wallet(1000, 0))], META)
    merge_changelog(store, WALLET, [(b"k", wallet(5, None))], META)
    assert stored(store, b"k") == (1000, 0)


def test_higher_offset_overwrites_stored_value(store):
    merge_changelog(store, WALLET, [(b"k", wallet(1000, 10))], META)
    assert merge_changelog(store, WALLET, [(b"k", wallet(1100, 11))], META) == 1
    assert stored(store, b"k") == (1100, 11)


def test_equal_offset_rewrites_stored_value(store):
    merge_changelog(store, WALLET, [(b"k", wallet(1000, 10))], META)
    assert merge_changelog(store, WALLET, [(b"k", wallet(1000, 10))], META) == 1
    assert stored(store, b"k") == (1000, 10)


def test_mixed_batch_against_stored_values(store):
    merge_changelog(store, WALLET, [(b"a", wallet(1, 5)), (b"b", wallet(2, 5)), (b"c", wallet(3, 5))], META)
    records = [
        (b"a", wallet(10, 4)),  # stale
        (b"b", wallet(20, 6)),  # newer
        (b"b", wallet(21, 4)),  # stale within the batch
        (b"d", wallet(40, 1)),  # new key
        (b"c", wallet(30, 3)),
        (b"c", wallet(31, 5)),  # stale, then equal to stored
    ]
    assert merge_changelog(store, WALLET, records, {CHANGELOG_OFFSET: 20}) == 3
    assert [(k, stored(store, k)) for k, _ in store.items()] == [
        (b"a", (1, 5)),
        (b"b", (20, 6)),
        (b"c", (31, 5)),
        (b"d", (40, 1)),
    ]


def test_tombstone_deletes_a_stored_value(store):
    merge_changelog(store, WALLET, [(b"a", wallet(1, 5)), (b"b", wallet(2, 5))], META)
    assert merge_changelog(store, WALLET, [(b"a", None)], META) == 1
    assert store.get(b"a") is None
    assert stored(store, b"b") == (2, 5)


def test_tombstone_after_a_value_in_the_same_batch_deletes(store):
    merge_changelog(store, WALLET, [(b"a", wallet(1, 5)), (b"a", wallet(2, 6)), (b"a", None)], META)
    assert store.get(b"a") is None


def test_tombstone_of_an_unknown_key(store):
    assert merge_changelog(store, WALLET, [(b"x", None)], META) == 1
    assert store.get(b"x") is None
    assert store.meta_int(CHANGELOG_OFFSET) == 10


def test_undecodable_record_is_ignored_and_others_applied(store):
    merge_changelog(store, WALLET, [(b"a", wallet(1, 5))], META)
    n = merge_changelog(store, WALLET, [(b"a", b"\xff\xff"), (b"b", wallet(2, 1))], {CHANGELOG_OFFSET: 12})
    assert n == 1
    assert stored(store, b"a") == (1, 5)
    assert stored(store, b"b") == (2, 1)
    assert store.meta_int(CHANGELOG_OFFSET) == 12


def test_empty_batch_writes_meta_only(store):
    assert merge_changelog(store, WALLET, [], {CHANGELOG_OFFSET: 99, CHANGELOG_TOPIC_ID: "t"}) == 0
    assert store.meta_int(CHANGELOG_OFFSET) == 99
    assert list(store.items()) == []


def test_records_are_stored_byte_for_byte(store):
    raw = wallet(123, 7, wallet_id="walletID001")
    merge_changelog(store, WALLET, [(b"walletID001", raw)], META)
    assert store.get(b"walletID001") == raw


def test_result_does_not_depend_on_batch_boundaries_after_a_tombstone(tmp_path):
    records = [(b"k", wallet(500, 5)), (b"k", None), (b"k", wallet(700, 7))]
    one = Store(tmp_path / "one")
    split = Store(tmp_path / "split")
    try:
        merge_changelog(one, WALLET, records, META)
        merge_changelog(split, WALLET, records[:2], META)
        merge_changelog(split, WALLET, records[2:], META)
        assert stored(one, b"k") == stored(split, b"k")
    finally:
        one.close()
        split.close()


def test_batch_boundaries_do_not_matter_for_stamped_values(tmp_path):
    # without tombstones, any split of the changelog gives the same table
    rng = random.Random(8)
    records = [(rng.choice([b"a", b"b", b"c"]), wallet(rng.randint(1, 10**6), rng.randint(0, 30))) for _ in range(60)]
    whole = Store(tmp_path / "whole")
    try:
        merge_changelog(whole, WALLET, records, META)
        expected = {k: stored(whole, k) for k, _ in whole.items()}
    finally:
        whole.close()
    for trial in range(5):
        s = Store(tmp_path / f"split{trial}")
        try:
            cuts = sorted(rng.sample(range(1, len(records)), rng.randint(1, 10)))
            for lo, hi in zip([0] + cuts, cuts + [len(records)]):
                merge_changelog(s, WALLET, records[lo:hi], META)
            got = {k: stored(s, k) for k, _ in s.items()}
        finally:
            s.close()
        # the same value per key: the highest offset, the last record among equal offsets
        assert got == expected
    best: dict[bytes, tuple[int, int]] = {}
    for k, raw in records:
        w = WALLET.decode(raw)
        if k not in best or WALLET.applied_offset(w) >= best[k][1]:
            best[k] = (wallet_balance_micros(w), WALLET.applied_offset(w))
    assert expected == best
