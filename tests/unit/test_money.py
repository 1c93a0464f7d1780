"""Exact money (walletkit.wallet.money): DESIGN "Money"."""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest

from walletkit.wallet import money
from walletkit.wallet.money import (
    AmountError,
    decimal_to_micros,
    double_to_micros,
    format_decimal,
    format_micros,
    micros_to_float,
)

S = money.SCALE


def test_scale_is_micro_units():
    assert money.SCALE_DIGITS == 6
    assert S == 1_000_000
    assert money.MAX_BALANCE == Decimal("9223372036854.775807")


# --- exactness --------------------------------------------------------------------------


def test_ten_deposits_of_0_1_make_exactly_1():
    total = sum(decimal_to_micros(Decimal("0.1")) for _ in range(10))
    assert total == S == decimal_to_micros(Decimal("1"))
    assert format_micros(total) == "1"
    # the doubles a Go emitter sends add up exactly too (unlike float addition)
    assert sum(double_to_micros(0.1) for _ in range(10)) == S
    assert sum([0.1] * 10) != 1.0  # why micro-units exist


@pytest.mark.parametrize(
    "value, micros",
    [
        (0.1, 100_000),
        (0.2, 200_000),
        (0.3, 300_000),
        (1e-6, 1),
        (123456.78, 123_456_780_000),
        (8000.0, 8_000_000_000),
        (1.0, S),
        (0.07, 70_000),
        (999999999.999999, 999_999_999_999_999),
        (1e9, 1_000_000_000 * S),
        (2.675, 2_675_000),  # its double is below 2.675, its shortest repr is 2.675
    ],
)
def test_double_read_as_shortest_round_tripping_decimal(value, micros):
    assert double_to_micros(value) == micros


def test_double_that_is_not_a_short_decimal_is_rejected_not_rounded():
    # 0.1 + 0.2 is 0.30000000000000004: 17 decimals, more than the 6 of the unit
    with pytest.raises(AmountError, match="at most 6 decimal places"):
        double_to_micros(0.1 + 0.2)
    with pytest.raises(AmountError, match="at most 6 decimal places"):
        double_to_micros(1e-7)


@pytest.mark.parametrize(
    "text, micros",
    [
        ("0.1", 100_000),
        ("1", S),
        ("1.000000", S),
        ("12.5", 12_500_000),
        ("0.000001", 1),
        ("1E+3", 1_000 * S),
        ("1e3", 1_000 * S),
        ("1000000000", 1_000_000_000 * S),
        ("999999999.999999", 999_999_999_999_999),
        ("0.10", 100_000),
    ],
)
def test_decimal_to_micros_exact(text, micros):
    assert decimal_to_micros(Decimal(text)) == micros


def test_decimal_to_micros_is_exact_for_random_amounts():
    rng = random.Random(11)
    for _ in range(2000):
        micros = rng.randint(1, 1_000_000_000 * S)
        text = f"{micros // S}.{micros % S:06d}"
        assert decimal_to_micros(Decimal(text)) == micros


def test_double_to_micros_round_trips_every_micros_value_through_its_double():
    # micros_to_float then double_to_micros is the identity for amounts a Go reader sees
    rng = random.Random(12)
    for _ in range(2000):
        micros = rng.randint(1, 1_000_000_000 * S)
        assert double_to_micros(micros_to_float(micros)) == micros


# --- rejections -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("0", "greater than 0"),
        ("0.000000", "greater than 0"),
        ("-0", "greater than 0"),
        ("-1", "greater than 0"),
        ("-0.000001", "greater than 0"),
        ("NaN", "finite"),
        ("sNaN", "finite"),
        ("-NaN", "finite"),
        ("Infinity", "finite"),
        ("-Infinity", "finite"),
        ("1000000000.000001", "at most 1000000000"),
        ("1E+10", "at most 1000000000"),
        ("1E+400", "at most 1000000000"),
        ("0.0000001", "at most 6 decimal places"),
        ("1E-7", "at most 6 decimal places"),
        ("1.0000001", "at most 6 decimal places"),
    ],
)
def test_decimal_to_micros_rejections_name_the_problem(text, message):
    with pytest.raises(AmountError, match=message):
        decimal_to_micros(Decimal(text))


@pytest.mark.parametrize(
    "decimals, ok, bad",
    [
        (0, "5", "5.1"),
        (2, "0.01", "0.001"),
        (2, "10000.01", "10000.011"),
        (2, "1.10", "1.101"),
        (6, "0.000001", "0.0000001"),
    ],
)
def test_decimals_parameter(decimals, ok, bad):
    assert decimal_to_micros(Decimal(ok), decimals=decimals) == int(Decimal(ok) * S)
    with pytest.raises(AmountError, match=f"at most {decimals} decimal places"):
        decimal_to_micros(Decimal(bad), decimals=decimals)


def test_maximum_parameter_is_inclusive_and_named_in_the_message():
    assert decimal_to_micros(Decimal("500"), maximum=Decimal(500)) == 500 * S
    with pytest.raises(AmountError, match="at most 500$"):
        decimal_to_micros(Decimal("500.01"), maximum=Decimal(500))
    with pytest.raises(AmountError, match="at most 12.5$"):
        decimal_to_micros(Decimal("13"), maximum=Decimal("12.50"))


def test_amount_error_is_a_value_error():
    assert issubclass(AmountError, ValueError)


@pytest.mark.parametrize(
    "value, message",
    [
        (0.0, "greater than 0"),
        (-0.0, "greater than 0"),
        (-1.5, "greater than 0"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (float("-inf"), "finite"),
        (1e9 + 1, "at most 1000000000"),
        (1e300, "at most 1000000000"),
        (5e-324, "at most 6 decimal places"),
    ],
)
def test_double_to_micros_rejections(value, message):
    with pytest.raises(AmountError, match=message):
        double_to_micros(value)


def test_double_to_micros_rejects_non_numbers_with_amount_error():
    with pytest.raises(AmountError, match="not a number"):
        double_to_micros("abc")  # type: ignore[arg-type]


def test_double_to_micros_maximum_parameter():
    assert double_to_micros(9_000_000_000_000.5, maximum=money.MAX_BALANCE) == 9_000_000_000_000_500_000
    with pytest.raises(AmountError, match="at most"):
        double_to_micros(9_000_000_000_000.5)


def test_more_than_28_significant_digits_are_not_rounded_away():
    with pytest.raises(AmountError, match="decimal places"):
        decimal_to_micros(Decimal("1.0000000000000000000000000000001"), decimals=2)


# --- micros_to_float --------------------------------------------------------------------


@pytest.mark.parametrize(
    "micros, value",
    [
        (0, 0.0),
        (100_000, 0.1),
        (300_000, 0.3),
        (1, 1e-6),
        (8_000 * S, 8000.0),
        (123_456_780_000, 123456.78),
    ],
)
def test_micros_to_float_is_the_nearest_double(micros, value):
    assert micros_to_float(micros) == value


def test_micros_to_float_is_correctly_rounded():
    rng = random.Random(13)
    samples = [money.MAX_BALANCE_MICROS, 2**53 + 1, 2**60 + 3, 10**18 + 1]
    samples += [rng.randint(1, money.MAX_BALANCE_MICROS) for _ in range(3000)]
    for micros in samples:
        assert micros_to_float(micros) == float(Fraction(micros, S)), micros


# --- formatting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "micros, text",
    [
        (8000 * S, "8000"),
        (1 * S, "1"),
        (12_500_000, "12.5"),
        (1, "0.000001"),
        (0, "0"),
        (100_000, "0.1"),
        (10_000, "0.01"),
        (1_000_010, "1.00001"),
        (-1_500_000, "-1.5"),
        (-1, "-0.000001"),
        (10**20 * S, "100000000000000000000"),
        (money.MAX_BALANCE_MICROS, "9223372036854.775807"),
    ],
)
def test_format_micros(micros, text):
    assert format_micros(micros) == text


def test_format_micros_never_uses_an_exponent_and_round_trips():
    rng = random.Random(14)
    for _ in range(3000):
        micros = rng.choice(
            [rng.randint(1, 10**6), rng.randint(1, 10**20), rng.randint(1, 10**3) * 10 ** rng.randint(0, 18)]
        )
        text = format_micros(micros)
        assert "e" not in text.lower()
        assert not (("." in text) and text.endswith("0"))
        assert Decimal(text) * S == micros


@pytest.mark.parametrize(
    "amount, text",
    [
        (Decimal("1E+3"), "1000"),
        (Decimal("1000000000"), "1000000000"),
        (Decimal("12.50"), "12.5"),
        (Decimal("0.000001"), "0.000001"),
        (Decimal("1E-7"), "0.0000001"),
    ],
)
def test_format_decimal(amount, text):
    assert format_decimal(amount) == text
