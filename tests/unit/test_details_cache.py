"""The ledger's cache of wallet details (GET /details) on real RocksDB views.

The views are not started (no broker): the test writes their stores the way a view
batch does and calls the listener a view calls after each batch. Nothing connects.
"""

from __future__ import annotations

import asyncio

import pytest

from wallet_api.ledger import Ledger
from walletkit.stream.kafka import KafkaSettings
from walletkit.stream.partitioner import partition_for
from walletkit.wallet.codecs import WALLET, WALLET_INFO_LIST, Wallet, WalletInfoList


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(KafkaSettings("127.0.0.1:1"), tmp_path, partitions=8, create_topics=False)
    led.emitter._partitions = 8  # what start() learns from the broker; tokens name a partition
    yield led
    led.balances.stop()
    led.flags.stop()


def apply(
    ledger: Ledger, wallet_id: str, balance_micros: int, flagged: bool = False, *, notify: bool = True, applied: int = 0
) -> None:
    """What a batch of both views does: write the stores, then tell the listeners."""
    key = wallet_id.encode()
    wallet = WALLET.encode(
        Wallet(WalletID=wallet_id, Balance=balance_micros / 1e6, BalanceMicros=balance_micros, AppliedOffset=applied)
    )
    info = WALLET_INFO_LIST.encode(WalletInfoList(AboveThreshold=flagged, AppliedOffset=applied))
    ledger.balances._store.write([(key, wallet)])
    ledger.flags._store.write([(key, info)])
    if notify:
        ledger._on_view_batch([(key, wallet)])
        ledger._on_view_batch([(key, info)])


def balance(ledger: Ledger, wallet_id: str, token: str | None = None) -> int | None:
    """What GET /details answers: ``details()``, or with a consistency token ``details_reflecting()``."""
    found = (
        ledger.details(wallet_id)
        if token is None
        else asyncio.run(ledger.details_reflecting(wallet_id, token, timeout=1.0))
    )
    return None if found is None else found.balance_micros


def test_repeated_reads_come_from_memory_until_a_view_batch_changes_the_wallet(ledger):
    apply(ledger, "w1", 1_000_000)
    assert balance(ledger, "w1") == 1_000_000
    apply(ledger, "w1", 2_000_000, notify=False, applied=5)  # the store changed, no batch was announced
    assert balance(ledger, "w1") == 1_000_000  # so this read was served from the cache
    token = f"{partition_for(b'w1', 8)}-5"
    assert balance(ledger, "w1", token) == 2_000_000  # token reads bypass it
    ledger._on_view_batch([(b"w1", None)])
    assert balance(ledger, "w1") == 2_000_000


def test_a_batch_drops_only_the_wallets_it_changed(ledger):
    apply(ledger, "a", 1)
    apply(ledger, "b", 1)
    assert (balance(ledger, "a"), balance(ledger, "b")) == (1, 1)
    apply(ledger, "a", 2, notify=False)
    apply(ledger, "b", 2, notify=False)
    ledger._on_view_batch([(b"a", None)])
    assert (balance(ledger, "a"), balance(ledger, "b")) == (2, 1)


def test_unknown_wallets_are_cached_until_their_first_batch(ledger):
    assert ledger.details("new") is None
    apply(ledger, "new", 5)  # the batch that creates the wallet drops the cached miss
    assert balance(ledger, "new") == 5


def test_a_wiped_view_empties_the_cache(ledger):
    apply(ledger, "w", 1)
    assert balance(ledger, "w") == 1
    apply(ledger, "w", 7, notify=False)
    ledger._on_view_batch(None)  # what a view announces after wiping its replica
    assert balance(ledger, "w") == 7


def test_a_read_overlapping_a_batch_does_not_cache_what_it_read(ledger, monkeypatch):
    apply(ledger, "w", 1)
    real_get = ledger.flags.get

    def get_while_a_batch_lands(wallet_id):
        # Between this read's two lookups a batch changes the wallet and is announced:
        # the value read before it is stale and must not stay cached.
        value = real_get(wallet_id)
        apply(ledger, "w", 9)
        return value

    monkeypatch.setattr(ledger.flags, "get", get_while_a_batch_lands)
    assert balance(ledger, "w") == 1  # read before the batch
    monkeypatch.setattr(ledger.flags, "get", real_get)
    assert balance(ledger, "w") == 9
