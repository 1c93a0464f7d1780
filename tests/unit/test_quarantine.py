"""Quarantine in the processor: a refused record changes nothing, and the tables come out the
same however the records are batched (a replay after a crash decides exactly as the first run).

Records are fed to the BatchRunner over a real TablePartition on RocksDB, as a batch is; the
"flush" writes the batch's changes to the store, as Checkpoint.flush does (no broker).
"""

from __future__ import annotations

import zlib

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

from wallet_above_threshold.processor import above_threshold_group
from wallet_above_threshold.threshold import Rule
from wallet_balance.processor import balance_group
from walletkit.stream.batch import BatchRunner
from walletkit.stream.store import Store
from walletkit.stream.table import TablePartition
from walletkit.wallet import idempotency, money
from walletkit.wallet.codecs import wallet_balance_micros
from walletkit.wallet.wallet_pb2 import DepositRequest

S = money.SCALE
T0 = 1_800_000_000_000  # ms


class Record:
    """The parts of a consumed record the processor reads."""

    def __init__(self, key: str, value: bytes, offset: int, ts_ms: int) -> None:
        self._key, self._value, self._offset, self._ts = key.encode(), value, offset, ts_ms

    def error(self):
        return None

    def partition(self):
        return 0

    def offset(self):
        return self._offset

    def key(self):
        return self._key

    def value(self):
        return self._value

    def timestamp(self):
        return TIMESTAMP_LOG_APPEND_TIME, self._ts


def records(n: int, *, wallets=("w",), keyed=True, shard: int | None = 5) -> list[Record]:
    keys = (k for k in (f"key-{i}" for i in range(10**6)) if shard is None or zlib.crc32(k.encode()) % 64 == shard)
    out = []
    for offset in range(n):
        wallet = wallets[offset % len(wallets)]
        d = DepositRequest(
            WalletID=wallet, Amount=1.0, CreatedAt=0, AmountMicros=S, DepositID=f"d{offset}", CreatedAtMicros=1
        )
        if keyed:
            d.IdempotencyKey = next(keys)
        out.append(Record(wallet, d.SerializeToString(), offset, T0 + offset))
    return out


class Table:
    def __init__(self, tmp_path, spec, limit: int) -> None:
        self.runner = BatchRunner(spec)
        self.part = TablePartition(Store(tmp_path), spec.table_codec, 0, max_value_bytes=limit)

    def run(self, recs: list[Record], batch_size: int) -> list[str]:
        outcomes = []
        for start in range(0, len(recs), batch_size):
            msgs = recs[start : start + batch_size]
            batch = self.runner.run(msgs, {0: self.part})
            outcomes += batch.outcomes
            self.part.store.write(batch.txns[0].changes(), {})
        return outcomes


def stored(part: TablePartition, keys) -> dict[str, bytes | None]:
    return {k: part.store.get(k.encode()) for k in keys}


def side_keys(wallets) -> list[str]:
    return [
        k
        for w in wallets
        for k in [w, idempotency.quarantine_key(w), *(f"{w}{idempotency.SEPARATOR}k{s:02d}" for s in range(64))]
    ]


@pytest.mark.parametrize("group", ["balance", "above_threshold"])
def test_the_tables_are_the_same_however_the_records_are_batched(tmp_path, group):
    spec = balance_group() if group == "balance" else above_threshold_group(Rule())
    recs = records(300, wallets=("w", "v"))
    results = {}
    for size in (1, 7, 300):
        table = Table(tmp_path / str(size), spec, 1024)
        outcomes = table.run(recs, size)
        results[size] = (outcomes, stored(table.part, side_keys(("w", "v"))))
    assert "quarantined" in results[300][0] and "processed" in results[300][0]
    assert results[1] == results[7] == results[300]


def test_a_refused_side_entry_leaves_no_trace_in_the_cache(tmp_path):
    spec = balance_group()
    table = Table(tmp_path, spec, 1024)
    outcomes = table.run(records(60), 60)
    refused = outcomes.index("quarantined")
    # Every entry the batch cached equals what the store now holds (the cache is the store
    # plus the batch's writes, and the batch is flushed).
    for key, value in table.part.cache.items():
        raw = table.part.store.get(key.encode())
        assert (spec.table_codec.encode(value) if value is not None else None) == raw, key
    wallet = spec.table_codec.decode(table.part.store.get(b"w"))
    assert wallet_balance_micros(wallet) == refused * S
    notes = spec.table_codec.decode(table.part.store.get(idempotency.quarantine_key("w").encode()))
    # Every refused record is noted, or older than the newest forgotten note (the note entry
    # is under the same value limit: older notes go first).
    noted = {n.Offset for n in notes.Quarantine}
    assert noted and noted <= {i for i, o in enumerate(outcomes) if o == "quarantined"}
    assert all(
        i in noted or i <= notes.QuarantineForgottenThrough for i, o in enumerate(outcomes) if o == "quarantined"
    )
    assert refused in noted or refused <= notes.QuarantineForgottenThrough


def test_a_refused_record_of_a_busy_key_is_undone_in_place(tmp_path):
    """After its first refusal in a batch a key runs with snapshots: later refusals are undone
    without running the key's records again, and its neighbours are unaffected."""
    spec = balance_group()
    table = Table(tmp_path, spec, 1024)
    busy = records(2000)  # keyed, all into one shard of "w": it fills after a few dozen
    calm = records(2000, wallets=("calm",), keyed=False)
    mixed = [
        Record(r.key().decode(), r.value(), i, T0 + i)
        for i, r in enumerate(x for pair in zip(busy, calm) for x in pair)
    ]
    outcomes = table.run(mixed, len(mixed))
    assert outcomes.count("quarantined") > 1900
    assert wallet_balance_micros(spec.table_codec.decode(table.part.store.get(b"calm"))) == 2000 * S
