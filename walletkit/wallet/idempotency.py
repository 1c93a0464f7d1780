"""Idempotency keys: a wallet's deposit with a given key counts once within a horizon.

Both processors keep, in their table value, the keyed deposits of the last
``horizon`` (measured back from the newest keyed deposit), so a retried deposit
(same wallet, same key) that reaches the topic twice is applied once, across
crashes and rebuilt disks too (the list travels in the changelog). The API reads
the same list from its balance view to answer a retry like the original.

Cost: one entry (key, deposit id, amount, time, offset; about 60-100 bytes) per
keyed deposit per wallet within the horizon, in each of the two tables.
"""

from __future__ import annotations

from collections.abc import MutableSequence

from walletkit.wallet.wallet_pb2 import DepositRequest, KeyedDeposit

#: Default horizon: retries later than this after the original are new deposits.
DEFAULT_HORIZON_SECONDS = 24 * 3600


def find(recent: MutableSequence[KeyedDeposit], key: str) -> KeyedDeposit | None:
    for entry in recent:
        if entry.IdempotencyKey == key:
            return entry
    return None


def remember(recent: MutableSequence[KeyedDeposit], deposit: DepositRequest, amount_micros: int, at_micros: int,
             offset: int, horizon_micros: int) -> None:
    """Add a keyed deposit and forget those older than the horizon."""
    recent.append(KeyedDeposit(IdempotencyKey=deposit.IdempotencyKey, DepositID=deposit.DepositID,
                               AmountMicros=amount_micros, CreatedAtMicros=at_micros, Offset=offset))
    newest = max(e.CreatedAtMicros for e in recent)
    stale = [e for e in recent if e.CreatedAtMicros < newest - horizon_micros]
    for e in stale:
        recent.remove(e)
