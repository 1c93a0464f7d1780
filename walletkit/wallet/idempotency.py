"""Idempotency keys: a wallet's deposit with a given key counts once within a horizon.

Both processors keep the keyed deposits of the last ``horizon`` (measured back from
the newest keyed deposit of the same shard), so a retried deposit (same wallet, same
key) that reaches the topic twice is applied once, across crashes and rebuilt disks
too (the entries travel in the changelog). The API reads the same entries from its
balance view to answer a retry like the original.

They are not kept in the wallet's own value, which would grow with the wallet's
traffic until it no longer fits a Kafka record: each wallet's keys are spread over
``SHARDS`` side entries of the same table, keyed ``<wallet>\\0k<shard>``, in the
partition of the wallet's deposits. A wallet with tens of thousands of keyed deposits
a day keeps a few hundred in each, and finding a key reads one of them.

Cost: one entry (key, deposit id, amount, time, offset; about 60-100 bytes) per keyed
deposit per wallet within the horizon, in each of the two tables.

Keys are scoped to the principal that sent them (``scoped``): with authentication on,
two clients using the same key for the same wallet make two deposits.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, MutableSequence
from typing import Any

from walletkit.wallet.wallet_pb2 import DepositRequest, KeyedDeposit, Quarantined

#: Default horizon: retries later than this after the original are new deposits.
DEFAULT_HORIZON_SECONDS = 24 * 3600
#: Side entries a wallet's keys are spread over.
SHARDS = 64
#: Separates a wallet id from the name of one of its side entries. Wallet ids never
#: contain it (the API allows [A-Za-z0-9._:-]; processors skip deposits whose key does).
SEPARATOR = "\0"
#: Quarantine notes kept per wallet (the newest; ~20 bytes each). Older ones are dropped and
#: only the newest dropped offset is kept: deposits at or below it can no longer be told apart.
QUARANTINE_NOTES = 1024


def is_side_key(key: str) -> bool:
    return SEPARATOR in key


def owner(key: str) -> str:
    """The wallet a table key belongs to (itself, or the owner of a side entry)."""
    return key.split(SEPARATOR, 1)[0]


def shard_key(wallet_id: str, idempotency_key: str) -> str:
    """The side entry that holds ``idempotency_key`` of ``wallet_id`` (stable: crc32, not hash())."""
    return f"{wallet_id}{SEPARATOR}k{zlib.crc32(idempotency_key.encode()) % SHARDS:02d}"


def quarantine_key(wallet_id: str) -> str:
    """The side entry that lists the wallet's quarantined deposits."""
    return f"{wallet_id}{SEPARATOR}q"


def scoped(idempotency_key: str, principal: str | None) -> str:
    """The key as stored: ``<principal>/<key>`` when authenticated. Keys contain no ``/``, so
    the last one splits it unambiguously."""
    return f"{principal}/{idempotency_key}" if principal else idempotency_key


def find(recent: MutableSequence[KeyedDeposit], key: str) -> KeyedDeposit | None:
    for entry in recent:
        if entry.IdempotencyKey == key:
            return entry
    return None


def find_applied(
    shard: MutableSequence[KeyedDeposit], legacy: MutableSequence[KeyedDeposit], key: str
) -> KeyedDeposit | None:
    """The applied deposit with ``key``: in its side entry, else in the wallet's own value
    (where keys were kept before side entries)."""
    found = find(shard, key)
    return found if found is not None else find(legacy, key)


def conflict(original: KeyedDeposit, amount_micros: int) -> str | None:
    """Why a deposit whose key was already applied is not applied: None for a retry (the same
    amount), else the reason its consistency token answers with (409).

    Two replicas can each accept the same key with different amounts before either sees the
    other's (the API checks its view, which lags): the processors apply the first in the
    partition and note the other as not applied, so its client learns it from the token.
    """
    if original.AmountMicros == amount_micros:
        return None
    return (
        f"its Idempotency-Key was already used for another Amount; the deposit at offset "
        f"{original.Offset} was applied instead"
    )


def remember(
    recent: MutableSequence[KeyedDeposit],
    deposit: DepositRequest,
    amount_micros: int,
    at_micros: int,
    offset: int,
    horizon_micros: int,
) -> None:
    """Add a keyed deposit and forget those older than the horizon."""
    recent.append(
        KeyedDeposit(
            IdempotencyKey=deposit.IdempotencyKey,
            DepositID=deposit.DepositID,
            AmountMicros=amount_micros,
            CreatedAtMicros=at_micros,
            Offset=offset,
        )
    )
    forget_older(recent, max(e.CreatedAtMicros for e in recent) - horizon_micros)


def forget_older(recent: MutableSequence[KeyedDeposit], oldest_micros: int) -> None:
    stale = [e for e in recent if e.CreatedAtMicros < oldest_micros]
    for e in stale:
        recent.remove(e)


def note_quarantine(
    notes: MutableSequence[Quarantined], offset: int, reason: str, keep: int = QUARANTINE_NOTES
) -> int | None:
    """Record that the deposit at ``offset`` was not applied, keeping the newest ``keep`` notes;
    the newest offset whose note was dropped, if one was."""
    if not any(n.Offset == offset for n in notes):
        notes.append(Quarantined(Offset=offset, Reason=reason))
    dropped = notes[:-keep]
    if not dropped:
        return None
    forgotten = max(n.Offset for n in dropped)
    del notes[:-keep]
    return forgotten


def record_quarantine(
    ctx: Any,
    reason: str,
    empty: Callable[[], Any],
    notes_of: Callable[[Any], Any],
    forget_through: Callable[[Any, int], None],
) -> None:
    """A group's quarantine hook: note ``ctx``'s record in its wallet's quarantine entry. A note
    that would not fit under the table's value limit drops older notes (halving) until it does,
    remembering the newest forgotten offset (``forget_through``)."""
    from walletkit.stream import ValueTooLarge

    key = quarantine_key(ctx.key)
    value = ctx.value_of(key)
    if value is None:
        value = empty()
    keep = QUARANTINE_NOTES
    while True:
        forgotten = note_quarantine(notes_of(value), ctx.offset, reason, keep)
        if forgotten is not None:
            forget_through(value, forgotten)
        try:
            ctx.set_value_of(key, value)
            return
        except ValueTooLarge:
            if keep <= 1:
                raise
            keep = max(min(keep, len(notes_of(value))) // 2, 1)


def quarantined(notes: MutableSequence[Quarantined], offset: int) -> str | None:
    """Why the deposit at ``offset`` was quarantined, or None."""
    return next((n.Reason for n in notes if n.Offset == offset), None)
