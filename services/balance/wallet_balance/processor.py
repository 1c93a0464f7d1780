"""What the balance group does with one deposit."""

from __future__ import annotations

from walletkit.stream import Context, GroupSpec, SkipRecord
from walletkit.wallet import money
from walletkit.wallet.codecs import DEPOSIT, WALLET, DepositRequest, Wallet, deposit_amount_micros, wallet_balance_micros
from walletkit.wallet.topology import BALANCE_GROUP, DEPOSIT_TOPIC


def on_deposit(ctx: Context, deposit: DepositRequest) -> None:
    """Add the deposit's exact amount to the wallet's balance."""
    amount = deposit_amount_micros(deposit)
    wallet: Wallet | None = ctx.value()
    if wallet is None:
        wallet = Wallet(WalletID=ctx.key)
    balance = wallet_balance_micros(wallet) + amount
    if balance > money.MAX_BALANCE_MICROS:
        raise SkipRecord("balance_overflow", f"wallet {ctx.key} would exceed the largest balance")
    wallet.BalanceMicros = balance
    wallet.Balance = money.micros_to_float(balance)
    ctx.set_value(wallet)


def balance_group() -> GroupSpec:
    return GroupSpec(group=BALANCE_GROUP, input_topic=DEPOSIT_TOPIC, input_codec=DEPOSIT,
                     table_codec=WALLET, callback=on_deposit)
