"""Exact money: amounts are integers of micro-units (10^-6 of the currency unit).

Every amount the service stores or adds is an ``int`` of micro-units, so ten
deposits of 0.1 make exactly 1. The API accepts at most ``API_DECIMALS`` fractional
digits (configurable, up to ``SCALE_DIGITS``); doubles from the wire (the Go
emitter's ``Amount``) are read as the shortest decimal that round-trips to them.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

#: Fractional digits of the internal unit (micro-units).
SCALE_DIGITS = 6
SCALE = 10**SCALE_DIGITS
#: Largest single deposit accepted by default, in currency units.
DEFAULT_MAX_AMOUNT = Decimal(1_000_000_000)
#: Largest balance a wallet can hold (int64 of micro-units).
MAX_BALANCE_MICROS = 2**63 - 1
MAX_BALANCE = Decimal(MAX_BALANCE_MICROS).scaleb(-SCALE_DIGITS)


class AmountError(ValueError):
    """An amount that is not a valid deposit; the message says why."""


def decimal_to_micros(amount: Decimal, *, decimals: int = SCALE_DIGITS, maximum: Decimal = DEFAULT_MAX_AMOUNT) -> int:
    """Validate a deposit amount and convert it to micro-units, exactly.

    Works on the decimal's digits and exponent with integer arithmetic: no
    Decimal context, so nothing is ever rounded (28-digit contexts would).
    """
    if not amount.is_finite():
        raise AmountError("Amount must be a finite number")
    if amount <= 0:
        raise AmountError("Amount must be greater than 0")
    if amount > maximum:
        raise AmountError(f"Amount must be at most {format_decimal(maximum)}")
    _sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    coefficient = int("".join(map(str, digits)))
    while exponent < 0 and coefficient % 10 == 0:  # 1.50 has one decimal place, not two
        coefficient //= 10
        exponent += 1
    if -exponent > decimals:
        raise AmountError(f"Amount must have at most {decimals} decimal places")
    # amount <= maximum bounds the exponent here, so the power stays small.
    return coefficient * 10 ** (SCALE_DIGITS + exponent)


def stored_double_to_micros(value: float) -> int:
    """A double from a table written by the Go reference, to the nearest micro-unit.

    Unlike a deposit amount, a stored balance may be an inexact sum of doubles
    (0.1 + 0.2 = 0.30000000000000004); the nearest micro-unit is its intended value.
    """
    return int((Decimal(repr(float(value))) * SCALE).to_integral_value(rounding=ROUND_HALF_EVEN))


def double_to_micros(value: float, *, maximum: Decimal = DEFAULT_MAX_AMOUNT) -> int:
    """A wire double read as the shortest decimal that round-trips to it (0.1 is 0.1)."""
    try:
        amount = Decimal(repr(float(value)))
    except (InvalidOperation, ValueError) as exc:
        raise AmountError(f"Amount {value!r} is not a number") from exc
    return decimal_to_micros(amount, maximum=maximum)


def micros_to_float(micros: int) -> float:
    """Nearest double (int/int true division is correctly rounded)."""
    return micros / SCALE


def format_micros(micros: int) -> str:
    """JSON number text: integral amounts without a decimal point, no trailing zeros."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), SCALE)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:0{SCALE_DIGITS}d}".rstrip("0")


def format_decimal(amount: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros (1E+3 → 1000)."""
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
