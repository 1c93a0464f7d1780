"""What the above_threshold group does with one deposit, and how its table is stored.

The table value is a ``WalletInfoList``: one ``WalletInfo`` per deposit still kept
(reference fields plus exact extensions), each carrying the wallet's sticky flag,
so a Go Goka view reading only the reference fields reads the right flag.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from wallet_above_threshold.threshold import MICROS, Entry, Rule, WindowState
from walletkit.stream import Context, GroupSpec, SkipRecord, parse_message
from walletkit.wallet import idempotency, money
from walletkit.wallet.codecs import (
    DEPOSIT,
    DepositRequest,
    WalletInfo,
    WalletInfoList,
    deposit_amount_micros,
    deposit_time_micros,
)
from walletkit.wallet.topology import ABOVE_THRESHOLD_GROUP, DEPOSIT_TOPIC

log = logging.getLogger(__name__)

FLAGGED = Counter("wallet_flagged_total", "Wallets flagged above the threshold (each wallet once).")


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64: two's complement, ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: Most bytes one List element takes besides its WalletID's characters: the WalletID's tag and
#: length, two doubles, a bool, five varints of at most ten bytes (each with its tag), and the
#: element's own tag and length.
_ENTRY_MAX_BYTES = 3 + 2 * 9 + 2 + 5 * 11 + 3
_LIST_TAG = b"\x0a"  # WalletInfoList.List: field 1, length-delimited
_APPLIED_TAG = b"\x10"  # WalletInfoList.AppliedOffset: field 2, varint
_FLAG = (b"\x18\x00", b"\x18\x01")  # WalletInfoList.AboveThreshold: field 3, varint (explicit presence)


class WindowStateCodec:
    """Table codec: ``WindowState`` ⇄ ``WalletInfoList`` bytes.

    Encoding is the hot path (once per changed wallet per batch) and a state holds
    up to window + lateness worth of deposits, most unchanged since the last
    encoding. So each entry keeps its own encoded ``List`` element, valid while the
    fields it was made from are unchanged, and a value is those elements followed
    by the top-level fields: the same bytes protobuf would write (a test checks).
    """

    def encode(self, state: WindowState) -> bytes:
        return b"".join(self._chunks(state))

    def encoded_size(self, state: WindowState) -> int:
        """An upper bound of ``len(encode(state))`` in O(1) for the entries (the value-size
        limit is checked on every write). It depends only on the state, never on what happens
        to be cached, so a replay decides exactly as the first run did."""
        size = 32 + len(state.entries) * (_ENTRY_MAX_BYTES + len(state.wallet_id.encode()))
        if state.recent or state.quarantine:
            size += sum(r.ByteSize() + 4 for r in state.recent) + sum(q.ByteSize() + 4 for q in state.quarantine) + 11
        return size

    def _chunks(self, state: WindowState) -> list[bytes]:
        flagged = state.flagged
        wallet_id = state.wallet_id
        chunks = []
        for e in state.entries:
            # The rule changes only an entry's cumulative sum (and the state's flag);
            # time, offset and amount are fixed when the entry is made.
            wire = e.wire
            if wire is None or wire[0] != e.cumulative or wire[1] is not flagged or wire[2] != wallet_id:
                item = WalletInfo(
                    WalletID=wallet_id,
                    LastDepositAmount=money.micros_to_float(e.amount),
                    RollingPeriodCumulative=money.micros_to_float(e.cumulative),
                    AboveThreshold=flagged,
                    CreatedAt=e.at // MICROS,
                    LastDepositMicros=e.amount,
                    RollingPeriodCumulativeMicros=e.cumulative,
                    CreatedAtMicros=e.at,
                    DepositOffset=e.offset,
                ).SerializeToString()
                wire = e.wire = (e.cumulative, flagged, wallet_id, _LIST_TAG + _varint(len(item)) + item)
            chunks.append(wire[3])
        chunks.append(_APPLIED_TAG + _varint(state.applied_offset))
        chunks.append(_FLAG[flagged])
        if state.recent or state.resolution > 1 or state.quarantine or state.quarantine_forgotten >= 0:
            chunks.append(self._tail(state).SerializeToString())
        return chunks

    @staticmethod
    def _tail(state: WindowState) -> WalletInfoList:
        """Fields 4-6, after the entries and the top-level scalars (protobuf's field order)."""
        tail = WalletInfoList(Recent=state.recent, Quarantine=state.quarantine)
        if state.resolution > 1:
            tail.TimeResolutionMicros = state.resolution
        if state.quarantine_forgotten >= 0:
            tail.QuarantineForgottenThrough = state.quarantine_forgotten
        return tail

    def encode_plain(self, state: WindowState) -> bytes:
        """The same value through protobuf's own serializer (reference for tests)."""
        msg = WalletInfoList()
        msg.AppliedOffset = state.applied_offset
        msg.AboveThreshold = state.flagged
        msg.Recent.extend(state.recent)
        msg.Quarantine.extend(state.quarantine)
        if state.resolution > 1:
            msg.TimeResolutionMicros = state.resolution
        if state.quarantine_forgotten >= 0:
            msg.QuarantineForgottenThrough = state.quarantine_forgotten
        for e in state.entries:
            msg.List.append(
                WalletInfo(
                    WalletID=state.wallet_id,
                    LastDepositAmount=money.micros_to_float(e.amount),
                    RollingPeriodCumulative=money.micros_to_float(e.cumulative),
                    AboveThreshold=state.flagged,
                    CreatedAt=e.at // MICROS,
                    LastDepositMicros=e.amount,
                    RollingPeriodCumulativeMicros=e.cumulative,
                    CreatedAtMicros=e.at,
                    DepositOffset=e.offset,
                )
            )
        return msg.SerializeToString()

    def decode(self, data: bytes) -> WindowState:
        msg = parse_message(WalletInfoList, data)
        state = WindowState(
            entries=[
                Entry(
                    at=i.CreatedAtMicros if i.HasField("CreatedAtMicros") else i.CreatedAt * MICROS,
                    offset=i.DepositOffset if i.HasField("DepositOffset") else -1,
                    amount=i.LastDepositMicros
                    if i.HasField("LastDepositMicros")
                    else money.stored_double_to_micros(i.LastDepositAmount),
                    cumulative=i.RollingPeriodCumulativeMicros
                    if i.HasField("RollingPeriodCumulativeMicros")
                    else money.stored_double_to_micros(i.RollingPeriodCumulative),
                )
                for i in msg.List
            ],
            flagged=msg.AboveThreshold if msg.HasField("AboveThreshold") else any(i.AboveThreshold for i in msg.List),
            applied_offset=msg.AppliedOffset if msg.HasField("AppliedOffset") else -1,
            wallet_id=msg.List[0].WalletID if msg.List else "",
            recent=list(msg.Recent),
            resolution=msg.TimeResolutionMicros if msg.HasField("TimeResolutionMicros") else 1,
            quarantine=list(msg.Quarantine),
            quarantine_forgotten=msg.QuarantineForgottenThrough if msg.HasField("QuarantineForgottenThrough") else -1,
        )
        state.entries.sort()
        return state

    def applied_offset(self, state: WindowState) -> int:
        return state.applied_offset

    def applied_offset_of(self, data: bytes) -> int:
        """``applied_offset(decode(data))`` without building the state (restores, views)."""
        msg = parse_message(WalletInfoList, data)
        return msg.AppliedOffset if msg.HasField("AppliedOffset") else -1

    def stamp(self, state: WindowState, offset: int) -> None:
        state.applied_offset = offset


WINDOW_STATE = WindowStateCodec()


def note_quarantine(ctx: Context, reason: str) -> None:
    """A deposit the table refused: listed in the wallet's quarantine entry, for the API to report."""

    def forget_through(notes: WindowState, offset: int) -> None:
        notes.quarantine_forgotten = max(offset, notes.quarantine_forgotten)

    idempotency.record_quarantine(ctx, reason, WindowState, lambda n: n.quarantine, forget_through)


def above_threshold_group(
    rule: Rule, idempotency_horizon_seconds: float = idempotency.DEFAULT_HORIZON_SECONDS
) -> GroupSpec:
    horizon = int(idempotency_horizon_seconds * MICROS)

    def on_deposit(ctx: Context, deposit: DepositRequest) -> None:
        if idempotency.is_side_key(ctx.key):
            raise SkipRecord("reserved_key", "a wallet id must not contain NUL")
        amount = deposit_amount_micros(deposit)
        at = deposit_time_micros(deposit, ctx.log_append_time_ms)
        if at <= 0:
            raise SkipRecord("invalid_time", f"CreatedAt {deposit.CreatedAt} is not a time")
        state: WindowState | None = ctx.value()
        if state is None:
            state = WindowState()
        state.wallet_id = ctx.key
        key = deposit.IdempotencyKey if deposit.HasField("IdempotencyKey") else ""
        if key:
            shard = idempotency.shard_key(ctx.key, key)
            keys: WindowState = ctx.value_of(shard) or WindowState()
            original = idempotency.find_applied(keys.recent, state.recent, key)
            if original is not None:
                reason = idempotency.conflict(original, amount)
                if reason is not None:
                    note_quarantine(ctx, reason)
                # A retry of a deposit already counted: unchanged, but stamped, so the retry's
                # consistency token resolves like the original's (a conflicting one's answers
                # with the note).
                ctx.set_value(state)
                return
            idempotency.remember(keys.recent, deposit, amount, at, ctx.offset, horizon)
            ctx.set_value_of(shard, keys)
            if state.recent:  # kept in the value itself before side entries: they age out
                idempotency.forget_older(state.recent, at - horizon)
        if state.add(Entry(at=at, offset=ctx.offset, amount=amount), rule):
            FLAGGED.inc()
            log.info(
                "wallet flagged above threshold",
                extra={"wallet_id": ctx.key, "offset": ctx.offset, "request_id": ctx.request_id},
            )
        ctx.set_value(state)

    return GroupSpec(
        group=ABOVE_THRESHOLD_GROUP,
        input_topic=DEPOSIT_TOPIC,
        input_codec=DEPOSIT,
        table_codec=WINDOW_STATE,
        callback=on_deposit,
        quarantine=note_quarantine,
    )
