"""No wallet's table value grows with its traffic: keyed deposits and crowded windows.

The callbacks run against a real TablePartition over RocksDB (no broker: the record is
only asked for its timestamp, which these callbacks never do).
"""

from __future__ import annotations

import random

import pytest

from wallet_above_threshold.processor import WINDOW_STATE, above_threshold_group
from wallet_above_threshold.threshold import MAX_ENTRIES, MICROS, Entry, Rule, WindowState, flagged_by_definition
from wallet_balance.processor import balance_group
from walletkit.stream.context import Context
from walletkit.stream.errors import ValueTooLarge
from walletkit.stream.store import Store
from walletkit.stream.table import TablePartition
from walletkit.wallet import idempotency, money
from walletkit.wallet.codecs import WALLET, set_wallet_balance, wallet_balance_micros
from walletkit.wallet.wallet_pb2 import DepositRequest, Wallet

S = money.SCALE
T0 = 1_800_000_000 * MICROS
LIMIT = 512 * 1024


def deposit(amount_micros: int, at: int, key: str = "", wallet: str = "busy") -> DepositRequest:
    d = DepositRequest(
        WalletID=wallet,
        Amount=amount_micros / S,
        CreatedAt=at // MICROS,
        AmountMicros=amount_micros,
        CreatedAtMicros=at,
        DepositID=f"id-{key or at}",
    )
    if key:
        d.IdempotencyKey = key
    return d


class Table:
    """One partition's table, with callbacks run one record at a time as the processor does."""

    def __init__(self, tmp_path, spec, max_value_bytes: int | None = LIMIT) -> None:
        self.spec = spec
        self.part = TablePartition(Store(tmp_path / spec.group), spec.table_codec, 0, max_value_bytes=max_value_bytes)
        self.txn = self.part.begin()
        self.offset = 0

    def apply(self, dep: DepositRequest) -> None:
        current = self.txn.get(dep.WalletID)
        if current is None or self.spec.table_codec.applied_offset(current) < self.offset:
            self.spec.callback(Context(self.txn, self.spec.table_codec, dep.WalletID, 0, self.offset, None), dep)
        self.offset += 1

    def sizes(self) -> dict[str, int]:
        return {k.decode(): len(v) for k, v in self.txn.changes()}

    def get(self, key: str):
        return self.txn.get(key)


def test_ten_thousand_keyed_deposits_keep_every_balance_value_small_and_every_key_known(tmp_path):
    table = Table(tmp_path, balance_group())
    for i in range(10_000):
        table.apply(deposit(S, T0 + i * 1000, key=f"k-{i}"))
    sizes = table.sizes()
    assert sizes["busy"] < 200, "the wallet's own value does not hold its keys"
    assert len(sizes) == 1 + idempotency.SHARDS
    assert max(sizes.values()) < 32 * 1024, max(sizes.values())
    assert wallet_balance_micros(table.get("busy")) == 10_000 * S
    # Retries of the first and the last key are recognised: charged once.
    for key in ("k-0", "k-9999"):
        table.apply(deposit(S, T0 + 20_000_000, key=key))
    wallet = table.get("busy")
    assert wallet_balance_micros(wallet) == 10_000 * S
    # ... and the retry is stamped, so its consistency token resolves.
    assert WALLET.applied_offset(wallet) == table.offset - 1


def test_ten_thousand_keyed_deposits_inside_one_window_stay_bounded(tmp_path):
    table = Table(tmp_path, above_threshold_group(Rule()))
    for i in range(10_000):  # 0.01 each, all within 10 seconds: 100 in all, never flagged
        table.apply(deposit(10_000, T0 + i * 1000, key=f"k-{i}"))
    state: WindowState = table.get("busy")
    assert not state.flagged
    assert len(state.entries) <= MAX_ENTRIES and state.resolution > 1
    sizes = table.sizes()
    assert max(sizes.values()) < LIMIT // 4, max(sizes.values())
    assert sum(e.amount for e in state.entries) == 10_000 * 10_000  # coalesced, nothing lost
    # Still judged: 9,901 more inside the same window flags it (100 + 9,901 > 10,000) ...
    table.apply(deposit(9_901 * S, T0 + 11 * MICROS))
    assert table.get("busy").flagged
    # ... and a retry of a key is still recognised after all that.
    before = table.sizes()
    table.apply(deposit(10_000, T0 + 12 * MICROS, key="k-5"))
    assert idempotency.find(table.get(idempotency.shard_key("busy", "k-5")).recent, "k-5") is not None
    assert table.sizes()["busy"] == before["busy"]


def test_a_crowded_wallet_is_judged_like_the_definition_away_from_window_edges():
    rng = random.Random(7)
    rule = Rule()
    for _ in range(5):
        state, deposits = WindowState(), []
        # 1,500 deposits in 150 s on whole seconds (the coarsest resolution: exact there).
        for offset in range(1500):
            at = T0 + rng.randrange(0, 150) * MICROS
            amount = rng.randrange(1, 8 * S)
            deposits.append((at, amount))
            state.add(Entry(at=at, offset=offset, amount=amount), rule)
        assert len(state.entries) <= MAX_ENTRIES
        assert state.flagged == flagged_by_definition(deposits, rule)


def test_a_wallet_returns_to_exact_times_once_it_is_quiet_again():
    rule = Rule()
    state = WindowState()
    for i in range(MAX_ENTRIES + 10):  # one every 5 ms: coalesced to 10 ms, still crowded
        state.add(Entry(at=T0 + i * 5000, offset=i, amount=1), rule)
    assert state.resolution == 10_000 and MAX_ENTRIES // 8 < len(state.entries) <= MAX_ENTRIES
    later = T0 + 600 * MICROS  # every kept deposit is past the horizon now
    state.add(Entry(at=later + 7, offset=10_000, amount=1), rule)
    state.add(Entry(at=later + 9, offset=10_001, amount=1), rule)
    assert state.resolution == 1 and [e.at for e in state.entries][-1] == later + 9
    decoded = WINDOW_STATE.decode(WINDOW_STATE.encode(state))
    assert decoded.resolution == 1 and len(decoded.entries) == len(state.entries)


def test_resolution_and_quarantine_notes_survive_encoding_exactly_like_protobuf():
    state = WindowState(
        entries=[Entry(at=T0 + 100_000, offset=1, amount=5, cumulative=5)], wallet_id="w", resolution=100_000
    )
    idempotency.note_quarantine(state.quarantine, 9, "value_too_large: test")
    assert WINDOW_STATE.encode(state) == WINDOW_STATE.encode_plain(state)
    decoded = WINDOW_STATE.decode(WINDOW_STATE.encode(state))
    assert decoded.resolution == 100_000 and decoded.entries[0].at == T0 + 100_000
    assert idempotency.quarantined(decoded.quarantine, 9) == "value_too_large: test"
    assert WINDOW_STATE.encoded_size(state) >= len(WINDOW_STATE.encode(state))


def test_a_balance_beyond_int64_is_exact_and_never_overflows(tmp_path):
    table = Table(tmp_path, balance_group())
    near = money.MAX_BALANCE_MICROS - 5 * S
    wallet = Wallet(WalletID="rich")
    set_wallet_balance(wallet, near)
    table.txn.set("rich", wallet)
    table.apply(deposit(1_000_000_000 * S, T0, wallet="rich"))
    table.apply(deposit(1, T0 + 1, wallet="rich"))
    stored = WALLET.decode(dict(table.txn.changes())[b"rich"])
    assert wallet_balance_micros(stored) == near + 1_000_000_000 * S + 1
    assert not stored.HasField("BalanceMicros") and stored.BalanceMicrosText
    assert money.format_micros(wallet_balance_micros(stored)) == "9224372036849.775808"


def test_a_value_over_the_limit_is_refused_and_leaves_the_table_unchanged(tmp_path):
    table = Table(tmp_path, balance_group(), max_value_bytes=1024)
    table.apply(deposit(S, T0, key="small"))
    before = table.sizes()
    big = Wallet(WalletID="busy", Recent=[idempotency.KeyedDeposit(IdempotencyKey=f"k{i}" * 8) for i in range(100)])
    with pytest.raises(ValueTooLarge) as refused:
        table.txn.set("busy", big)
    assert refused.value.size > 1024 and refused.value.key == "busy"
    assert table.sizes() == before


def test_a_deposit_keyed_like_a_side_entry_is_skipped():
    from walletkit.stream.errors import SkipRecord

    spec = balance_group()
    with pytest.raises(SkipRecord, match="reserved_key"):
        spec.callback(Context(None, WALLET, "w\0k01", 0, 1, None), deposit(S, T0, wallet="w\0k01"))
