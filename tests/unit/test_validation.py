"""Validation of client input (wallet_api.validation): DESIGN "HTTP" and "Money"."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from wallet_api.validation import DepositInput, InvalidRequest, Limits, check_wallet_id, parse_deposit

S = 1_000_000
LIMITS = Limits()


def body(wallet_id: str = "walletID001", amount: str = "8000") -> bytes:
    """A body with the Amount given as raw JSON number text."""
    return ('{"WalletID": ' + json.dumps(wallet_id) + ', "Amount": ' + amount + "}").encode()


def raw_wallet(text: str) -> bytes:
    """A body whose WalletID is the raw JSON text ``text``."""
    return b'{"WalletID": ' + text.encode() + b', "Amount": 1}'


BODY_OBJECT = "body must be a JSON object"
NOT_JSON = "body is not valid JSON"
WID_CHARS = "WalletID may contain only letters, digits"
NUMBER = "Amount must be a JSON number"
POSITIVE = "Amount must be greater than 0"
FINITE = "Amount must be a finite number"
MAXIMUM = "Amount must be at most 1000000000"
DECIMALS = "Amount must have at most 2 decimal places"

MALFORMED: list[tuple[str, bytes, str]] = [
    # -- not a JSON object
    ("empty", b"", BODY_OBJECT),
    ("whitespace", b" \r\n\t ", BODY_OBJECT),
    ("plain text", b"WalletID=a&Amount=1", NOT_JSON),
    ("word", b"deposit", NOT_JSON),
    ("open brace", b"{", NOT_JSON),
    ("unterminated", b'{"WalletID": "a", "Amount": 1', NOT_JSON),
    ("unterminated string", b'{"WalletID": "a, "Amount": 1}', NOT_JSON),
    ("single quotes", b"{'WalletID': 'a', 'Amount': 1}", NOT_JSON),
    ("unquoted keys", b'{WalletID: "a", Amount: 1}', NOT_JSON),
    ("trailing comma", b'{"WalletID": "a", "Amount": 1,}', NOT_JSON),
    ("missing comma", b'{"WalletID": "a" "Amount": 1}', NOT_JSON),
    ("comment", b'{"WalletID": "a", "Amount": 1 /* one */}', NOT_JSON),
    ("two objects", b'{"WalletID": "a", "Amount": 1}{"WalletID": "a", "Amount": 1}', NOT_JSON),
    ("trailing garbage", b'{"WalletID": "a", "Amount": 1} x', NOT_JSON),
    ("array", b"[]", BODY_OBJECT),
    ("array of deposit", b'[{"WalletID": "a", "Amount": 1}]', BODY_OBJECT),
    ("string", b'"walletID001"', BODY_OBJECT),
    ("number", b"8000", BODY_OBJECT),
    ("null", b"null", BODY_OBJECT),
    ("true", b"true", BODY_OBJECT),
    ("deeply nested arrays", b"[" * 3000 + b"]" * 1000, NOT_JSON),
    ("deeply nested objects", b'{"a":' * 600, NOT_JSON),
    ("nested deposit", b'{"deposit": {"WalletID": "a", "Amount": 1}}', "unknown field(s) 'deposit'"),
    # -- duplicate, unknown and missing fields
    (
        "duplicate WalletID",
        b'{"WalletID": "a", "WalletID": "b", "Amount": 1}',
        "field 'WalletID' appears more than once",
    ),
    ("duplicate Amount", b'{"WalletID": "a", "Amount": 1, "Amount": 1}', "field 'Amount' appears more than once"),
    ("unknown field", b'{"WalletID": "a", "Amount": 1, "Currency": "EUR"}', "unknown field(s) 'Currency'"),
    ("CreatedAt from client", b'{"WalletID": "a", "Amount": 1, "CreatedAt": 1}', "unknown field(s) 'CreatedAt'"),
    ("lowercase names", b'{"walletid": "a", "amount": 1}', "unknown field(s) 'amount', 'walletid'"),
    ("empty key", b'{"WalletID": "a", "Amount": 1, "": 1}', "unknown field(s) ''"),
    ("empty object", b"{}", "WalletID is required"),
    ("missing WalletID", b'{"Amount": 1}', "WalletID is required"),
    ("missing Amount", b'{"WalletID": "a"}', "Amount is required"),
    # -- WalletID types
    ("WalletID number", b'{"WalletID": 123, "Amount": 1}', "WalletID must be a string"),
    ("WalletID null", raw_wallet("null"), "WalletID must be a string"),
    ("WalletID bool", raw_wallet("true"), "WalletID must be a string"),
    ("WalletID array", raw_wallet('["a"]'), "WalletID must be a string"),
    ("WalletID object", raw_wallet('{"id": "a"}'), "WalletID must be a string"),
    # -- WalletID values
    ("WalletID empty", body(""), "WalletID must not be empty"),
    ("WalletID too long", body("a" * 65), "WalletID must be at most 64 characters"),
    ("WalletID inner space", body("wallet 1"), WID_CHARS),
    ("WalletID leading space", body(" wallet1"), WID_CHARS),
    ("WalletID trailing newline", body("wallet1\n"), WID_CHARS),
    ("WalletID tab only", body("\t"), WID_CHARS),
    ("WalletID slash", body("wallet/1"), WID_CHARS),
    ("WalletID path traversal", body("../etc"), WID_CHARS),
    ("WalletID query", body("wallet?x=1"), WID_CHARS),
    ("WalletID percent", body("wallet%201"), WID_CHARS),
    ("WalletID NUL", body("wallet\x00"), WID_CHARS),
    ("WalletID umlaut", body("wället"), WID_CHARS),
    ("WalletID arabic digits", body("\u0661\u0662\u0663"), WID_CHARS),
    ("WalletID fullwidth", body("\uff57\uff41\uff4c\uff4c\uff45\uff54"), WID_CHARS),
    ("WalletID emoji", body("wallet\U0001f600"), WID_CHARS),
    ("WalletID lone surrogate", raw_wallet('"\\ud800"'), WID_CHARS),
    ("WalletID zero-width space", body("wallet\u200b1"), WID_CHARS),
    # -- Amount types
    ("Amount string", body(amount='"100"'), NUMBER),
    ("Amount true", body(amount="true"), NUMBER),
    ("Amount false", body(amount="false"), NUMBER),
    ("Amount null", body(amount="null"), NUMBER),
    ("Amount array", body(amount="[1]"), NUMBER),
    ("Amount object", body(amount='{"value": 1}'), NUMBER),
    # -- Amount values
    ("Amount NaN", body(amount="NaN"), FINITE),
    ("Amount Infinity", body(amount="Infinity"), FINITE),
    ("Amount -Infinity", body(amount="-Infinity"), FINITE),
    ("Amount 1e400", body(amount="1e400"), MAXIMUM),
    ("Amount 10**200", body(amount=str(10**200)), MAXIMUM),
    ("Amount 2**129", body(amount=str(2**129)), MAXIMUM),
    ("Amount 1e10", body(amount="1e10"), MAXIMUM),
    ("Amount just above max", body(amount="1000000000.01"), MAXIMUM),
    ("Amount negative", body(amount="-1"), POSITIVE),
    ("Amount negative cents", body(amount="-0.01"), POSITIVE),
    ("Amount zero", body(amount="0"), POSITIVE),
    ("Amount zero float", body(amount="0.0"), POSITIVE),
    ("Amount minus zero", body(amount="-0"), POSITIVE),
    ("Amount zero exponent", body(amount="0e5"), POSITIVE),
    ("Amount 3 decimals", body(amount="0.001"), DECIMALS),
    ("Amount 1.005", body(amount="1.005"), DECIMALS),
    ("Amount 1E-3", body(amount="1E-3"), DECIMALS),
    ("Amount micro", body(amount="0.000001"), DECIMALS),
    ("Amount 1e-400", body(amount="1e-400"), DECIMALS),
    ("Amount hex", body(amount="0x10"), NOT_JSON),
    ("Amount leading zero", body(amount="01"), NOT_JSON),
    ("Amount plus sign", body(amount="+1"), NOT_JSON),
    ("Amount leading dot", body(amount=".5"), NOT_JSON),
    ("Amount trailing dot", body(amount="1."), NOT_JSON),
    ("Amount thousands separator", body(amount="1,000"), NOT_JSON),
    ("Amount nan lowercase", body(amount="nan"), NOT_JSON),
    # -- encodings
    ("latin-1 body", '{"WalletID": "wället", "Amount": 1}'.encode("latin-1"), "body must be UTF-8 encoded JSON"),
    ("invalid UTF-8 byte", b'{"WalletID": "\xff", "Amount": 1}', "body must be UTF-8 encoded JSON"),
    ("truncated UTF-8", b'{"WalletID": "\xe2\x82", "Amount": 1}', "body must be UTF-8 encoded JSON"),
    ("overlong UTF-8", b'{"WalletID": "\xc0\xaf", "Amount": 1}', "body must be UTF-8 encoded JSON"),
    ("UTF-16 with BOM", '{"WalletID": "a", "Amount": 1}'.encode("utf-16"), "body must be UTF-8 encoded JSON"),
    ("UTF-16-LE without BOM", '{"WalletID": "a", "Amount": 1}'.encode("utf-16-le"), NOT_JSON),
    ("UTF-16-BE without BOM", '{"WalletID": "a", "Amount": 1}'.encode("utf-16-be"), NOT_JSON),
    ("UTF-32", '{"WalletID": "a", "Amount": 1}'.encode("utf-32"), "body must be UTF-8 encoded JSON"),
    # -- size
    ("oversized by one byte", body() + b" " * (4097 - len(body())), "body must be at most 4096 bytes"),
    ("oversized WalletID", body("a" * 5000), "body must be at most 4096 bytes"),
    ("oversized number", body(amount="1" * 5000), "body must be at most 4096 bytes"),
]


def test_corpus_is_large_and_names_are_unique():
    assert len(MALFORMED) >= 60
    assert len({name for name, _, _ in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize("data, message", [(d, m) for _, d, m in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_malformed_body_is_rejected_with_a_message_naming_the_problem(data, message):
    with pytest.raises(InvalidRequest) as info:
        parse_deposit(data, LIMITS)
    assert message in str(info.value)


def test_invalid_request_is_a_value_error():
    assert issubclass(InvalidRequest, ValueError)


# --- valid bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, wallet_id, micros",
    [
        (b'{"WalletID": "walletID001", "Amount": 8000}', "walletID001", 8000 * S),
        (b'{"WalletID":"walletID001","Amount":8000}', "walletID001", 8000 * S),
        (b'{"Amount": 8000, "WalletID": "walletID001"}', "walletID001", 8000 * S),
        (b'\r\n {"WalletID": "w", "Amount": 1} \n', "w", S),
        (body(amount="0.1"), "walletID001", 100_000),
        (body(amount="0.01"), "walletID001", 10_000),
        (body(amount="12.50"), "walletID001", 12_500_000),
        (body(amount="1.0"), "walletID001", S),
        (body(amount="100.000"), "walletID001", 100 * S),
        (body(amount="1e3"), "walletID001", 1000 * S),
        (body(amount="1E+3"), "walletID001", 1000 * S),
        (body(amount="1.5e1"), "walletID001", 15 * S),
        (body(amount="12345e-2"), "walletID001", 123_450_000),
        (body(amount="999999999.99"), "walletID001", 999_999_999_990_000),
        (body(amount="1000000000"), "walletID001", 1_000_000_000 * S),
        (body(amount="1000000000.00"), "walletID001", 1_000_000_000 * S),
        (body(amount="10000.01"), "walletID001", 10_000_010_000),
        (body("a" * 64), "a" * 64, 8000 * S),
        (body("a.b_c:d-E9"), "a.b_c:d-E9", 8000 * S),
        (body("0"), "0", 8000 * S),
        (raw_wallet('"\\u0061\\u0062"'), "ab", S),
    ],
)
def test_valid_body(data, wallet_id, micros):
    assert parse_deposit(data, LIMITS) == DepositInput(wallet_id, micros)


def test_ten_deposits_of_0_1_make_exactly_1():
    assert sum(parse_deposit(body(amount="0.1"), LIMITS).amount_micros for _ in range(10)) == S


def test_body_of_exactly_the_limit_is_accepted():
    data = body() + b" " * (4096 - len(body()))
    assert len(data) == 4096
    assert parse_deposit(data, LIMITS).amount_micros == 8000 * S


# --- configurable limits ------------------------------------------------------------------


def test_amount_decimals_limit():
    six = Limits(amount_decimals=6)
    assert parse_deposit(body(amount="0.000001"), six).amount_micros == 1
    with pytest.raises(InvalidRequest, match="at most 6 decimal places"):
        parse_deposit(body(amount="0.0000001"), six)
    zero = Limits(amount_decimals=0)
    assert parse_deposit(body(amount="5"), zero).amount_micros == 5 * S
    with pytest.raises(InvalidRequest, match="at most 0 decimal places"):
        parse_deposit(body(amount="5.5"), zero)


def test_max_amount_limit():
    small = Limits(max_amount=Decimal(500))
    assert parse_deposit(body(amount="500"), small).amount_micros == 500 * S
    with pytest.raises(InvalidRequest, match="Amount must be at most 500$"):
        parse_deposit(body(amount="500.01"), small)
    with pytest.raises(InvalidRequest, match="Amount must be at most 500$"):
        parse_deposit(body(amount=str(10**200)), small)


def test_body_and_wallet_id_limits():
    limits = Limits(max_body_bytes=40, wallet_id_max_length=3)
    assert parse_deposit(body("abc", "1"), limits) == DepositInput("abc", S)
    with pytest.raises(InvalidRequest, match="WalletID must be at most 3 characters"):
        parse_deposit(body("abcd", "1"), limits)
    with pytest.raises(InvalidRequest, match="body must be at most 40 bytes"):
        parse_deposit(body("abc", "1") + b" " * 40, limits)


def test_too_many_decimals_hidden_beyond_28_digits_is_rejected():
    with pytest.raises(InvalidRequest, match="decimal places"):
        parse_deposit(body(amount="1.0000000000000000000000000000001"), LIMITS)


@pytest.mark.parametrize("amount", ["1e99999999999999999999", "1E-99999999999999999999"])
def test_exponent_beyond_decimal_range_is_invalid_request(amount):
    with pytest.raises(InvalidRequest, match="Amount"):
        parse_deposit(body(amount=amount), LIMITS)


def test_integer_beyond_int_max_str_digits_is_invalid_request():
    with pytest.raises(InvalidRequest, match="Amount"):
        parse_deposit(body(amount="1" * 5000), Limits(max_body_bytes=10_000))


# --- check_wallet_id ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["walletID001", "a", "A-Z_0.9:x", "9" * 64])
def test_check_wallet_id_accepts(value):
    assert check_wallet_id(value, LIMITS) == value


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "WalletID must be a string"),
        (1, "WalletID must be a string"),
        (b"wallet", "WalletID must be a string"),
        (["a"], "WalletID must be a string"),
        ("", "WalletID must not be empty"),
        ("x" * 65, "WalletID must be at most 64 characters"),
        ("é" * 65, "WalletID must be at most 64 characters"),
        ("wallet 1", WID_CHARS),
        ("wallet\n", WID_CHARS),
        ("\nwallet", WID_CHARS),
        ("wallet#1", WID_CHARS),
        ("wallet\u00a0", WID_CHARS),
        ("ｗ", WID_CHARS),
        ("ß", WID_CHARS),
        ("K\u212a", WID_CHARS),  # Kelvin sign folds to k under IGNORECASE-style matching
    ],
)
def test_check_wallet_id_rejects(value, message):
    with pytest.raises(InvalidRequest) as info:
        check_wallet_id(value, LIMITS)
    assert message in str(info.value)


def test_check_wallet_id_length_is_configurable():
    assert check_wallet_id("x" * 100, Limits(wallet_id_max_length=100)) == "x" * 100
    with pytest.raises(InvalidRequest, match="at most 5 characters"):
        check_wallet_id("x" * 6, Limits(wallet_id_max_length=5))
