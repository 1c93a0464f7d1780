"""What the balance group does with one deposit."""

from __future__ import annotations

from prometheus_client import Counter

from walletkit.stream import Context, GroupSpec, SkipRecord
from walletkit.wallet import idempotency, money
from walletkit.wallet.codecs import (
    DEPOSIT, WALLET, DepositRequest, Wallet, deposit_amount_micros, deposit_time_micros, wallet_balance_micros,
)
from walletkit.wallet.topology import BALANCE_GROUP, DEPOSIT_TOPIC

RETRIES = Counter("wallet_balance_retried_deposits_total",
                  "Deposits whose Idempotency-Key was already applied to the wallet (retries, not counted again).")


def balance_group(idempotency_horizon_seconds: float = idempotency.DEFAULT_HORIZON_SECONDS) -> GroupSpec:
    horizon = int(idempotency_horizon_seconds * 1_000_000)

    def on_deposit(ctx: Context, deposit: DepositRequest) -> None:
        """Add the deposit's exact amount to the wallet's balance (once per idempotency key)."""
        amount = deposit_amount_micros(deposit)
        wallet: Wallet | None = ctx.value()
        if wallet is None:
            wallet = Wallet(WalletID=ctx.key)
        key = deposit.IdempotencyKey if deposit.HasField("IdempotencyKey") else ""
        if key and idempotency.find(wallet.Recent, key) is not None:
            RETRIES.inc()
            return
        balance = wallet_balance_micros(wallet) + amount
        if balance > money.MAX_BALANCE_MICROS:
            raise SkipRecord("balance_overflow", f"wallet {ctx.key} would exceed the largest balance")
        wallet.BalanceMicros = balance
        wallet.Balance = money.micros_to_float(balance)
        if key:
            idempotency.remember(wallet.Recent, deposit, amount, deposit_time_micros(deposit), ctx.offset, horizon)
        ctx.set_value(wallet)

    return GroupSpec(group=BALANCE_GROUP, input_topic=DEPOSIT_TOPIC, input_codec=DEPOSIT,
                     table_codec=WALLET, callback=on_deposit)
