"""Codecs of the wallet topics, and how to read the reference fields exactly."""

from __future__ import annotations

from walletkit.stream import ProtobufCodec, ProtobufTableCodec, SkipRecord
from walletkit.wallet import money
from walletkit.wallet.wallet_pb2 import DepositRequest, Wallet, WalletInfo, WalletInfoList

__all__ = [
    "DEPOSIT",
    "WALLET",
    "WALLET_INFO_LIST",
    "DepositRequest",
    "Wallet",
    "WalletInfo",
    "WalletInfoList",
    "deposit_amount_micros",
    "deposit_time_micros",
    "wallet_balance_micros",
    "wallet_flagged",
]

DEPOSIT = ProtobufCodec(DepositRequest)
WALLET = ProtobufTableCodec(Wallet, "AppliedOffset")
WALLET_INFO_LIST = ProtobufTableCodec(WalletInfoList, "AppliedOffset")


def deposit_amount_micros(dep: DepositRequest) -> int:
    """Exact amount: ``AmountMicros`` when present, else the double read as a decimal.

    Raises SkipRecord for an amount no API of ours would have accepted.
    """
    try:
        if dep.HasField("AmountMicros"):
            micros = dep.AmountMicros
            if micros <= 0 or micros > money.DEFAULT_MAX_AMOUNT * money.SCALE:
                raise money.AmountError(f"AmountMicros {micros} out of range")
            return micros
        return money.double_to_micros(dep.Amount)
    except money.AmountError as exc:
        raise SkipRecord("invalid_amount", str(exc)) from exc


def deposit_time_micros(dep: DepositRequest, log_append_time_ms: int | None = None) -> int:
    """Deposit time in Unix microseconds.

    A deposit from our API (it carries ``CreatedAtMicros``) is timed by the broker when
    the topic stamps records with LogAppendTime: API pods' wall clocks may disagree by
    minutes, the broker's clock is the one they share (docs/security.md, "Time"). Else
    ``CreatedAtMicros``; a record with only the reference's fields is timed by its
    ``CreatedAt`` seconds, as the reference does.
    """
    if dep.HasField("CreatedAtMicros"):
        if log_append_time_ms is not None and log_append_time_ms > 0:
            return log_append_time_ms * 1000
        return dep.CreatedAtMicros
    return dep.CreatedAt * 1_000_000


def wallet_balance_micros(w: Wallet) -> int:
    """Exact balance (a value written by the Go reference has only the double)."""
    if w.HasField("BalanceMicros"):
        return w.BalanceMicros
    if w.HasField("BalanceMicrosText"):
        return int(w.BalanceMicrosText)
    return money.stored_double_to_micros(w.Balance)


def set_wallet_balance(w: Wallet, micros: int) -> None:
    """Store an exact balance of any size: an int64 while it fits, else decimal digits."""
    if micros <= money.MAX_BALANCE_MICROS:
        w.BalanceMicros = micros
        w.ClearField("BalanceMicrosText")
    else:
        w.BalanceMicrosText = str(micros)
        w.ClearField("BalanceMicros")
    w.Balance = money.micros_to_float(micros)


def wallet_flagged(info: WalletInfoList) -> bool:
    """The sticky above-threshold flag of an above_threshold-table value."""
    if info.HasField("AboveThreshold"):
        return info.AboveThreshold
    return any(i.AboveThreshold for i in info.List)
