"""What the balance group does with one deposit."""

from __future__ import annotations

from prometheus_client import Counter

from walletkit.stream import Context, GroupSpec, SkipRecord
from walletkit.wallet import idempotency
from walletkit.wallet.codecs import (
    DEPOSIT,
    WALLET,
    DepositRequest,
    Wallet,
    deposit_amount_micros,
    deposit_time_micros,
    set_wallet_balance,
    wallet_balance_micros,
)
from walletkit.wallet.topology import BALANCE_GROUP, DEPOSIT_TOPIC

RETRIES = Counter(
    "wallet_balance_retried_deposits_total",
    "Deposits whose Idempotency-Key was already applied to the wallet (retries, not counted again).",
)
CONFLICTS = Counter(
    "wallet_balance_conflicting_deposits_total",
    "Deposits whose Idempotency-Key was already applied to the wallet with another Amount (not "
    "applied; their consistency token answers 409).",
)


def note_quarantine(ctx: Context, reason: str) -> None:
    """A deposit the table refused: listed in the wallet's quarantine entry, for the API to report."""

    def forget_through(notes: Wallet, offset: int) -> None:
        notes.QuarantineForgottenThrough = max(offset, notes.QuarantineForgottenThrough)

    idempotency.record_quarantine(ctx, reason, lambda: Wallet(WalletID=ctx.key), lambda n: n.Quarantine, forget_through)


def balance_group(idempotency_horizon_seconds: float = idempotency.DEFAULT_HORIZON_SECONDS) -> GroupSpec:
    horizon = int(idempotency_horizon_seconds * 1_000_000)

    def on_deposit(ctx: Context, deposit: DepositRequest) -> None:
        """Add the deposit's exact amount to the wallet's balance (once per idempotency key)."""
        if idempotency.is_side_key(ctx.key):
            raise SkipRecord("reserved_key", "a wallet id must not contain NUL")
        amount = deposit_amount_micros(deposit)
        wallet: Wallet | None = ctx.value()
        if wallet is None:
            wallet = Wallet(WalletID=ctx.key)
        key = deposit.IdempotencyKey if deposit.HasField("IdempotencyKey") else ""
        if key:
            at = deposit_time_micros(deposit, ctx.log_append_time_ms)
            shard = idempotency.shard_key(ctx.key, key)
            keys: Wallet = ctx.value_of(shard) or Wallet(WalletID=ctx.key)
            original = idempotency.find_applied(keys.Recent, wallet.Recent, key)
            if original is not None:
                reason = idempotency.conflict(original, amount)
                if reason is None:
                    RETRIES.inc()
                else:
                    CONFLICTS.inc()
                    note_quarantine(ctx, reason)
                # Unchanged, but stamped: a retry's consistency token resolves like the original's,
                # a conflicting deposit's answers with the note.
                ctx.set_value(wallet)
                return
            idempotency.remember(keys.Recent, deposit, amount, at, ctx.offset, horizon)
            ctx.set_value_of(shard, keys)
            if wallet.Recent:  # kept in the value itself before side entries: they age out
                idempotency.forget_older(wallet.Recent, at - horizon)
        set_wallet_balance(wallet, wallet_balance_micros(wallet) + amount)
        ctx.set_value(wallet)

    return GroupSpec(
        group=BALANCE_GROUP,
        input_topic=DEPOSIT_TOPIC,
        input_codec=DEPOSIT,
        table_codec=WALLET,
        callback=on_deposit,
        quarantine=note_quarantine,
    )
