"""A corpus of malformed requests, sent over real HTTP to a running API.

Every case must be answered with the documented 4xx, as JSON ``{"error": ...}`` whose
message names the field or the problem; none may reach Kafka (the ``deposit`` topic
is counted before and after the whole corpus), none may be a 5xx, and the API must
keep serving afterwards. The contract is services/api/wallet_api/openapi.yaml and
docs/api.md.

Cases are data: add a row to the table it belongs to.
"""

from __future__ import annotations

import gzip
import http.client
import json
import re
import socket
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from api_http import Reply, get, post_json, request
from support import read_topic

pytestmark = pytest.mark.integration

MAX_BODY = 4096
SEED_WALLET = "corpus-seed"  # has a deposit before the corpus runs (for token cases)
KEYED_WALLET = "corpus-keyed"  # has a deposit with KEYED_KEY before the corpus runs
KEYED_KEY = "corpus-key-1"
KEYED_AMOUNT = 7

# What the error message must say (case-insensitive regular expressions).
BODY_OBJECT = r"body must be a JSON object"
NOT_JSON = r"not valid JSON"
UTF8 = r"UTF-8"
UTF8_OR_JSON = r"UTF-8|not valid JSON"
TOO_BIG = rf"body must be at most {MAX_BODY} bytes"
WID_REQUIRED = r"WalletID is required"
WID_STRING = r"WalletID must be a string"
WID_EMPTY = r"WalletID must not be empty"
WID_LONG = r"WalletID must be at most 64 characters"
WID_CHARS = r"WalletID may contain only letters, digits"
WID_LONG_OR_CHARS = rf"{WID_LONG}|{WID_CHARS}"
AMT_REQUIRED = r"Amount is required"
AMT_NUMBER = r"Amount must be a JSON number"
AMT_POSITIVE = r"Amount must be greater than 0"
AMT_MAX = r"Amount (must be|is out of range: it must be) at most 1000000000"
AMT_DECIMALS = r"Amount must have at most 2 decimal places"
AMT_FINITE = r"Amount must be a finite number"
IDEM = r"Idempotency-Key must be 1-64 characters"
IDEM_REUSED = r"Idempotency-Key was already used"
TOKEN = r"token"
TOKEN_OTHER = r"token belongs to .*another wallet"
NO_ENDPOINT = r"no such endpoint"
NOT_ALLOWED = r"method \w+ not allowed"


@dataclass(frozen=True)
class Case:
    """One malformed request and the answer it must get."""

    id: str
    body: bytes | None = None
    status: int = 400
    message: str = ""  # regex the "error" must match
    method: str = "POST"
    path: str = "/deposit"  # may hold placeholders of Api.vars (values known at run time)
    headers: tuple[tuple[str, str | bytes], ...] = ()
    chunks: tuple[bytes, ...] | None = None  # send chunked instead of with a Content-Length
    pieces: tuple[bytes, ...] | None = None  # send with a Content-Length, in several writes
    gap: float = 0.0  # seconds between the writes of head, chunks or pieces
    content_length: bool = True
    marks: tuple[Any, ...] = ()
    #: The WalletID a wrongly accepted request would be stored under (see test_corpus_emitted_nothing).
    wallet: str | None = None


def deposit_body(wallet: Any = "corpus", amount_text: str = "5") -> bytes:
    """A body whose Amount is the raw JSON text ``amount_text``."""
    return b'{"WalletID": ' + json.dumps(wallet).encode() + b', "Amount": ' + amount_text.encode() + b"}"


def wallet_body(wallet_json: str | bytes) -> bytes:
    """A body whose WalletID is the raw JSON text ``wallet_json``."""
    raw = wallet_json if isinstance(wallet_json, bytes) else wallet_json.encode()
    return b'{"WalletID": ' + raw + b', "Amount": 5}'


def padded(body: bytes, size: int) -> bytes:
    """``body`` (a JSON object) padded with whitespace before its final brace to exactly ``size`` bytes."""
    assert body.endswith(b"}") and len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


VALID = deposit_body("corpus", "5")

# ---------------------------------------------------------------------------------------------
# 1. The body is not one JSON object.
BODY: list[Case] = [
    Case("empty body", b"", message=BODY_OBJECT),
    Case("no body, no Content-Length", None, message=BODY_OBJECT),
    Case("whitespace only", b" \r\n\t ", message=BODY_OBJECT),
    Case("null", b"null", message=BODY_OBJECT),
    Case("true", b"true", message=BODY_OBJECT),
    Case("false", b"false", message=BODY_OBJECT),
    Case("number", b"8000", message=BODY_OBJECT),
    Case("negative number", b"-1", message=BODY_OBJECT),
    Case("string", b'"walletID001"', message=BODY_OBJECT),
    Case("empty array", b"[]", message=BODY_OBJECT),
    Case("array of a deposit", b"[" + VALID + b"]", message=BODY_OBJECT),
    Case("array of two deposits", b"[" + VALID + b"," + VALID + b"]", message=BODY_OBJECT),
    Case("empty object", b"{}", message=WID_REQUIRED),
    Case("plain text", b"not json", message=NOT_JSON),
    Case("form encoded", b"WalletID=corpus&Amount=5", message=NOT_JSON),
    Case("xml", b'<deposit WalletID="corpus" Amount="5"/>', message=NOT_JSON),
    Case("yaml", b"WalletID: corpus\nAmount: 5\n", message=NOT_JSON),
    Case("open brace", b"{", message=NOT_JSON),
    Case("close brace", b"}", message=NOT_JSON),
    Case("unterminated object", b'{"WalletID": "corpus", "Amount": 5', message=NOT_JSON),
    Case("unterminated string", b'{"WalletID": "corpus, "Amount": 5}', message=NOT_JSON),
    Case("single quotes", b"{'WalletID': 'corpus', 'Amount': 5}", message=NOT_JSON),
    Case("unquoted keys", b'{WalletID: "corpus", Amount: 5}', message=NOT_JSON),
    Case("trailing comma", b'{"WalletID": "corpus", "Amount": 5,}', message=NOT_JSON),
    Case("missing comma", b'{"WalletID": "corpus" "Amount": 5}', message=NOT_JSON),
    Case("missing colon", b'{"WalletID" "corpus", "Amount": 5}', message=NOT_JSON),
    Case("block comment", b'{"WalletID": "corpus", /* c */ "Amount": 5}', message=NOT_JSON),
    Case("line comment", b'{"WalletID": "corpus", // c\n "Amount": 5}', message=NOT_JSON),
    Case("two objects", VALID + VALID, message=NOT_JSON),
    Case("two objects, newline delimited", VALID + b"\n" + VALID + b"\n", message=NOT_JSON),
    Case("trailing garbage", VALID + b" x", message=NOT_JSON),
    Case("trailing NUL", VALID + b"\x00", message=NOT_JSON),
    Case("leading NUL", b"\x00" + VALID, message=NOT_JSON),
    Case("raw newline in a string", b'{"WalletID": "cor\npus", "Amount": 5}', message=NOT_JSON),
    Case("raw tab in a string", b'{"WalletID": "cor\tpus", "Amount": 5}', message=NOT_JSON),
    Case("invalid escape", b'{"WalletID": "\\x41", "Amount": 5}', message=NOT_JSON),
    Case("truncated unicode escape", b'{"WalletID": "\\u12", "Amount": 5}', message=NOT_JSON),
    Case("nested arrays beyond the parser's depth", b"[" * 2000 + b"]" * 2000, message=NOT_JSON),
    Case(
        "deep nesting inside an extra field",
        b'{"WalletID": "corpus", "Amount": 5, "x": ' + b"[" * 1500 + b"]" * 1500 + b"}",
        message=NOT_JSON,
    ),
    Case("amount with a leading zero", deposit_body("corpus", "05"), message=NOT_JSON),
    Case("amount with a plus sign", deposit_body("corpus", "+5"), message=NOT_JSON),
    Case("amount starting with a dot", deposit_body("corpus", ".5"), message=NOT_JSON),
    Case("amount ending with a dot", deposit_body("corpus", "5."), message=NOT_JSON),
    Case("hexadecimal amount", deposit_body("corpus", "0x10"), message=NOT_JSON),
    Case("amount with underscores", deposit_body("corpus", "1_000"), message=NOT_JSON),
    Case("amount with a decimal comma", deposit_body("corpus", "1,5"), message=NOT_JSON),
    Case("amount with an empty exponent", deposit_body("corpus", "1e"), message=NOT_JSON),
    Case("amount with a signed empty exponent", deposit_body("corpus", "1e+"), message=NOT_JSON),
    Case("amount double minus", deposit_body("corpus", "--1"), message=NOT_JSON),
    Case("amount minus space", deposit_body("corpus", "- 1"), message=NOT_JSON),
    Case("amount missing", b'{"WalletID": "corpus", "Amount": }', message=NOT_JSON),
    Case("amount undefined", deposit_body("corpus", "undefined"), message=NOT_JSON),
]

# ---------------------------------------------------------------------------------------------
# 2. Encodings: the body must be UTF-8 (whatever Content-Type or charset says), without a BOM.
_VALID_TEXT = '{"WalletID": "corpus", "Amount": 5}'
ENCODING: list[Case] = [
    Case("UTF-8 BOM before a valid deposit", b"\xef\xbb\xbf" + VALID, message=r"BOM"),
    Case("UTF-16 LE with BOM", _VALID_TEXT.encode("utf-16"), message=UTF8),
    Case("UTF-16 BE with BOM", b"\xfe\xff" + _VALID_TEXT.encode("utf-16-be"), message=UTF8),
    Case("UTF-16 LE without BOM", _VALID_TEXT.encode("utf-16-le"), message=UTF8_OR_JSON),
    Case("UTF-16 BE without BOM", _VALID_TEXT.encode("utf-16-be"), message=UTF8_OR_JSON),
    Case("UTF-32 with BOM", _VALID_TEXT.encode("utf-32"), message=UTF8),
    Case("UTF-32 LE without BOM", _VALID_TEXT.encode("utf-32-le"), message=UTF8_OR_JSON),
    Case(
        "UTF-16 declared in the Content-Type",
        _VALID_TEXT.encode("utf-16"),
        message=UTF8,
        headers=(("Content-Type", "application/json; charset=utf-16"),),
    ),
    Case("Latin-1 wallet id", '{"WalletID": "café", "Amount": 5}'.encode("latin-1"), message=UTF8),
    Case(
        "Latin-1 declared in the Content-Type",
        '{"WalletID": "café", "Amount": 5}'.encode("latin-1"),
        message=UTF8,
        headers=(("Content-Type", "application/json; charset=iso-8859-1"),),
    ),
    Case(
        "Latin-1 in an unknown key", '{"WalletID": "corpus", "Amount": 5, "Größe": 1}'.encode("latin-1"), message=UTF8
    ),
    Case("cp1252 smart quotes", b"{\x93WalletID\x94: \x93corpus\x94, \x93Amount\x94: 5}", message=UTF8),
    Case("invalid UTF-8: lone continuation byte", wallet_body(b'"w\x80"'), message=UTF8),
    Case("invalid UTF-8: 0xFF", wallet_body(b'"w\xff"'), message=UTF8),
    Case("invalid UTF-8: overlong slash", wallet_body(b'"w\xc0\xaf"'), message=UTF8),
    Case("invalid UTF-8: overlong NUL (modified UTF-8)", wallet_body(b'"w\xc0\x80"'), message=UTF8),
    Case("invalid UTF-8: encoded surrogate", wallet_body(b'"w\xed\xa0\x80"'), message=UTF8),
    Case("invalid UTF-8: truncated sequence", wallet_body(b'"w\xe2\x82"'), message=UTF8),
    Case("invalid UTF-8: beyond U+10FFFF", wallet_body(b'"w\xf4\x90\x80\x80"'), message=UTF8),
    Case("invalid UTF-8: 5-byte sequence", wallet_body(b'"w\xf8\x88\x80\x80\x80"'), message=UTF8),
    Case("invalid UTF-8 at the very end", VALID + b"\xe2", message=UTF8),
    Case(
        "gzip-encoded body with a bad amount",
        gzip.compress(deposit_body("corpus", "0")),
        message=AMT_POSITIVE,
        headers=(("Content-Encoding", "gzip"),),
    ),
    Case(
        "deflate-encoded body with a bad wallet id",
        zlib.compress(wallet_body('"a b"')),
        message=WID_CHARS,
        headers=(("Content-Encoding", "deflate"),),
    ),
    Case(
        "gzip bomb: 4 MiB of spaces",
        gzip.compress(b"{" + b" " * (4 << 20) + b"}"),
        status=413,
        message=TOO_BIG,
        headers=(("Content-Encoding", "gzip"),),
    ),
    Case(
        "gzip bomb wrapping a valid deposit",
        gzip.compress(padded(VALID, 100_000)),
        status=413,
        message=TOO_BIG,
        headers=(("Content-Encoding", "gzip"),),
    ),
    Case(
        "Content-Encoding gzip on a body that is not gzip",
        VALID,
        message=r"gzip|encod",
        headers=(("Content-Encoding", "gzip"),),
    ),
    Case(
        "Content-Encoding deflate on a body that is not deflate",
        VALID,
        message=r"deflate|encod",
        headers=(("Content-Encoding", "deflate"),),
    ),
]

# ---------------------------------------------------------------------------------------------
# 2b. A body that reaches the server in several TCP segments is still one body.
_SPLIT = deposit_body("corpus-split", "5")
SEGMENTS: list[Case] = [
    Case(
        "a valid object, then trailing garbage in a later segment",
        None,
        pieces=(_SPLIT, b" trailing garbage"),
        gap=0.2,
        message=NOT_JSON,
        wallet="corpus-split",
    ),
    Case(
        "a valid object, then a second object in a later segment",
        None,
        pieces=(_SPLIT, _SPLIT),
        gap=0.2,
        message=NOT_JSON,
        wallet="corpus-split",
    ),
    Case(
        "a valid object, then an unknown field in a later segment",
        None,
        pieces=(_SPLIT[:-1], b', "extra": 1}'),
        gap=0.2,
        message=r"unknown field.*'extra'",
        wallet="corpus-split",
    ),
    Case(
        "chunked: a valid object, then a second object in a later chunk",
        None,
        chunks=(_SPLIT, _SPLIT),
        gap=0.2,
        message=NOT_JSON,
        wallet="corpus-split",
    ),
    Case(
        "chunked: an amount completed by a later chunk",
        None,
        chunks=(deposit_body("corpus-split", "5")[:-1], b"0.001}"),
        gap=0.2,
        message=AMT_DECIMALS,
        wallet="corpus-split",
    ),
    Case(
        "an invalid body split in three segments",
        None,
        pieces=(b'{"WalletID": "corpus-split", ', b'"Amount": ', b"0}"),
        gap=0.1,
        message=AMT_POSITIVE,
    ),
]

# ---------------------------------------------------------------------------------------------
# 3. Sizes: at most 4096 bytes, however the body is framed.
SIZE: list[Case] = [
    Case(
        "exactly 4096 bytes, bad amount: parsed, not refused for size",
        padded(deposit_body("corpus", "0"), MAX_BODY),
        message=AMT_POSITIVE,
    ),
    Case(
        "exactly 4096 bytes, unknown field",
        b'{"WalletID": "corpus", "Amount": 5, "pad": "' + b"x" * (MAX_BODY - 47) + b'"}',
        message=r"unknown field.*'pad'",
    ),
    Case("4097 bytes: a valid deposit padded", padded(VALID, MAX_BODY + 1), status=413, message=TOO_BIG),
    Case("4097 bytes of garbage", b"x" * (MAX_BODY + 1), status=413, message=TOO_BIG),
    Case("8 KiB valid deposit padded", padded(VALID, 8192), status=413, message=TOO_BIG),
    Case("64 KiB", padded(VALID, 65536), status=413, message=TOO_BIG),
    Case("1 MiB", padded(VALID, 1 << 20), status=413, message=TOO_BIG),
    Case(
        "4097 bytes chunked, no Content-Length",
        None,
        chunks=(padded(VALID, MAX_BODY + 1),),
        status=413,
        message=TOO_BIG,
    ),
    Case(
        "4097 bytes in 1-byte chunks",
        None,
        chunks=tuple(bytes([b]) for b in padded(VALID, MAX_BODY + 1)),
        status=413,
        message=TOO_BIG,
    ),
    Case(
        "4096 bytes chunked, bad amount: parsed",
        None,
        chunks=(padded(deposit_body("corpus", "-1"), MAX_BODY),),
        message=AMT_POSITIVE,
    ),
    Case(
        "Content-Length 4097 announced with Expect: 100-continue, no body sent",
        b"",
        status=413,
        message=TOO_BIG,
        content_length=False,
        headers=(("Content-Length", "4097"), ("Expect", "100-continue")),
    ),
    Case(
        "Content-Length 10 GB announced, no body sent",
        b"",
        status=413,
        message=TOO_BIG,
        content_length=False,
        headers=(("Content-Length", "10000000000"), ("Expect", "100-continue")),
    ),
    Case(
        "4097 bytes, the padding arriving in a later TCP segment",
        None,
        chunks=(_SPLIT, b" " * (MAX_BODY + 1)),
        gap=0.2,
        status=413,
        message=TOO_BIG,
        wallet="corpus-split",
    ),
    Case("4000-character wallet id inside the limit", deposit_body("a" * 4000), message=WID_LONG),
    Case("4000-digit amount inside the limit", deposit_body("corpus", "9" * 4000), message=AMT_MAX),
    Case("4000-digit fraction inside the limit", deposit_body("corpus", "1." + "0" * 3990 + "1"), message=AMT_DECIMALS),
]

# ---------------------------------------------------------------------------------------------
# 4. WalletID: a string of 1-64 characters of [A-Za-z0-9._:-].
WALLET: list[Case] = (
    [
        Case("WalletID missing", b'{"Amount": 5}', message=WID_REQUIRED),
        Case("WalletID null", wallet_body("null"), message=WID_STRING),
        Case("WalletID integer", wallet_body("5"), message=WID_STRING),
        Case("WalletID float", wallet_body("5.5"), message=WID_STRING),
        Case("WalletID negative", wallet_body("-1"), message=WID_STRING),
        Case("WalletID 1e400", wallet_body("1e400"), message=WID_STRING),
        Case("WalletID true", wallet_body("true"), message=WID_STRING),
        Case("WalletID false", wallet_body("false"), message=WID_STRING),
        Case("WalletID empty array", wallet_body("[]"), message=WID_STRING),
        Case("WalletID array of a string", wallet_body('["corpus"]'), message=WID_STRING),
        Case("WalletID object", wallet_body('{"id": "corpus"}'), message=WID_STRING),
        Case("WalletID empty string", wallet_body('""'), message=WID_EMPTY),
        Case("WalletID 65 characters", deposit_body("a" * 65), message=WID_LONG),
        Case("WalletID 100 characters", deposit_body("a" * 100), message=WID_LONG),
        Case("WalletID 1000 characters", deposit_body("a" * 1000), message=WID_LONG),
        Case("WalletID 65 two-byte characters", deposit_body("é" * 65), message=WID_LONG_OR_CHARS),
        Case("WalletID 64 two-byte characters", deposit_body("é" * 64), message=WID_CHARS),
        Case(
            "WalletID 64 characters is fine: the amount is what is wrong",
            deposit_body("a" * 64, "0"),
            message=AMT_POSITIVE,
        ),
        Case("WalletID 1 character is fine: the amount is what is wrong", deposit_body("a", "0"), message=AMT_POSITIVE),
        Case(
            "WalletID of every allowed punctuation is fine: the amount is what is wrong",
            deposit_body("._:-", "0"),
            message=AMT_POSITIVE,
        ),
    ]
    + [
        Case(f"WalletID with {label}", deposit_body(value), message=WID_CHARS)
        for label, value in [
            ("only a space", " "),
            ("a leading space", " corpus"),
            ("a trailing space", "corpus "),
            ("an inner space", "cor pus"),
            ("a tab", "cor\tpus"),
            ("a newline", "cor\npus"),
            ("CRLF header injection", "corpus\r\nX-Injected: 1"),
            ("a slash", "a/b"),
            ("only a slash", "/"),
            ("path traversal", "../../etc/passwd"),
            ("a backslash", "a\\b"),
            ("a question mark", "a?b"),
            ("a hash", "a#b"),
            ("a percent", "a%b"),
            ("a percent-encoded space", "a%20b"),
            ("an ampersand", "a&b"),
            ("an equals sign", "a=b"),
            ("a plus", "a+b"),
            ("an at sign", "a@b"),
            ("an exclamation mark", "a!b"),
            ("an asterisk", "*"),
            ("a single quote", "a'b"),
            ("a double quote", 'a"b'),
            ("html", "<script>alert(1)</script>"),
            ("braces", "{}"),
            ("a bracket", "a[0]"),
            ("a tilde", "~a"),
            ("a comma", "a,b"),
            ("a semicolon", "a;b"),
            ("a dollar", "$where"),
            ("a caret", "a^b"),
            ("a pipe", "a|b"),
            ("a backtick", "a`b"),
            ("NUL", "a\x00b"),
            ("DEL", "a\x7fb"),
            ("NEL", "a\x85b"),
            ("an e-acute", "café"),
            ("an umlaut", "über"),
            ("an emoji", "wallet💰"),
            ("a fullwidth letter", "Ａ"),
            ("a Cyrillic homoglyph", "wаllet"),
            ("a right-to-left override", "a\u202eb"),
            ("a zero-width space", "a\u200bb"),
            ("a non-breaking space", "a\u00a0b"),
            ("Arabic-Indic digits", "\u0661\u0662\u0663"),
            ("a dotless i", "\u0131d"),
            ("the Kelvin sign", "\u212a"),
            ("a titlecase digraph", "\u01c5"),
        ]
    ]
    + [
        Case("WalletID with a lone high surrogate escape", wallet_body(r'"a\ud800b"'), message=WID_CHARS),
        Case("WalletID with a lone low surrogate escape", wallet_body(r'"\udfff"'), message=WID_CHARS),
        Case("WalletID with an escaped NUL", wallet_body(r'"a\u0000b"'), message=WID_CHARS),
        Case("WalletID with an escaped slash is a slash", wallet_body(r'"a\/b"'), message=WID_CHARS),
    ]
)

# ---------------------------------------------------------------------------------------------
# 5. Amount: a JSON number > 0, <= 1000000000, at most 2 decimal places.
AMOUNT: list[Case] = [Case("Amount missing", b'{"WalletID": "corpus"}', message=AMT_REQUIRED)] + [
    Case(f"Amount {text}", deposit_body("corpus", text), message=msg)
    for text, msg in [
        # zero, in every spelling
        ("0", AMT_POSITIVE),
        ("-0", AMT_POSITIVE),
        ("0.0", AMT_POSITIVE),
        ("-0.0", AMT_POSITIVE),
        ("0.00", AMT_POSITIVE),
        ("0e0", AMT_POSITIVE),
        ("0E+5", AMT_POSITIVE),
        ("-0e-5", AMT_POSITIVE),
        ("0.000000000000000000000", AMT_POSITIVE),
        # negative
        ("-1", AMT_POSITIVE),
        ("-0.01", AMT_POSITIVE),
        ("-1000000000", AMT_POSITIVE),
        ("-1e400", AMT_POSITIVE),
        ("-1e-400", AMT_POSITIVE),
        ("-99999999999999999999999", AMT_POSITIVE),
        # more than 2 decimal places
        ("0.001", AMT_DECIMALS),
        ("0.009", AMT_DECIMALS),
        ("0.005", AMT_DECIMALS),
        ("1.001", AMT_DECIMALS),
        ("1.999", AMT_DECIMALS),
        ("0.015", AMT_DECIMALS),
        ("999999999.999", AMT_DECIMALS),
        ("1e-3", AMT_DECIMALS),
        ("1E-7", AMT_DECIMALS),
        ("5e-324", AMT_DECIMALS),
        ("1e-400", AMT_DECIMALS),
        ("12345e-5", AMT_DECIMALS),
        ("1.00001e2", AMT_DECIMALS),
        ("0.1000000000000000055511151231257827", AMT_DECIMALS),
        ("0.30000000000000004", AMT_DECIMALS),
        ("1.0000000000000000000000000000001", AMT_DECIMALS),
        # above the maximum
        ("1000000000.01", AMT_MAX),
        ("1000000000.001", AMT_MAX),
        ("1000000000.1", AMT_MAX),
        ("1000000001", AMT_MAX),
        ("1.00000000001e9", AMT_MAX),
        ("1e10", AMT_MAX),
        ("1E+10", AMT_MAX),
        ("10000000000", AMT_MAX),
        ("1e400", AMT_MAX),
        ("1e999999999", AMT_MAX),
        ("1e99999999999999999999", AMT_MAX),
        ("18446744073709551616", AMT_MAX),
        ("340282366920938463463374607431768211457", AMT_MAX),
        ("9223372036854775807", AMT_MAX),
        ("1.7976931348623157e308", AMT_MAX),
        # not finite
        ("NaN", AMT_FINITE),
        ("Infinity", AMT_FINITE),
        ("-Infinity", AMT_FINITE),
        # not a number
        ('"5"', AMT_NUMBER),
        ('"5.00"', AMT_NUMBER),
        ('""', AMT_NUMBER),
        ('"abc"', AMT_NUMBER),
        ('"NaN"', AMT_NUMBER),
        ('"Infinity"', AMT_NUMBER),
        ('"1e3"', AMT_NUMBER),
        ('" 5"', AMT_NUMBER),
        ("true", AMT_NUMBER),
        ("false", AMT_NUMBER),
        ("null", AMT_NUMBER),
        ("[]", AMT_NUMBER),
        ("[5]", AMT_NUMBER),
        ("[5, 6]", AMT_NUMBER),
        ("{}", AMT_NUMBER),
        ('{"value": 5}', AMT_NUMBER),
        ('{"Amount": 5}', AMT_NUMBER),
    ]
]

# ---------------------------------------------------------------------------------------------
# 6. Exactly the two fields: no repeated, unknown or mis-cased ones.
FIELDS: list[Case] = [
    Case(
        "WalletID twice, same value",
        b'{"WalletID": "corpus", "WalletID": "corpus", "Amount": 5}',
        message=r"'WalletID' appears more than once",
    ),
    Case(
        "WalletID twice, different values",
        b'{"WalletID": "a", "WalletID": "b", "Amount": 5}',
        message=r"'WalletID' appears more than once",
    ),
    Case(
        "Amount twice, same value",
        b'{"WalletID": "corpus", "Amount": 5, "Amount": 5}',
        message=r"'Amount' appears more than once",
    ),
    Case(
        "Amount twice, different values",
        b'{"WalletID": "corpus", "Amount": 5, "Amount": 50000}',
        message=r"'Amount' appears more than once",
    ),
    Case(
        "Amount twice, the first one invalid",
        b'{"WalletID": "corpus", "Amount": -5, "Amount": 5}',
        message=r"'Amount' appears more than once",
    ),
    Case(
        "both fields twice",
        b'{"WalletID": "a", "Amount": 5, "WalletID": "b", "Amount": 6}',
        message=r"appears more than once",
    ),
    Case(
        "WalletID twice, once spelled with an escape",
        b'{"WalletID": "a", "Wallet\\u0049D": "b", "Amount": 5}',
        message=r"'WalletID' appears more than once",
    ),
    Case(
        "an unknown field twice",
        b'{"WalletID": "corpus", "Amount": 5, "x": 1, "x": 2}',
        message=r"'x' appears more than once|unknown field",
    ),
    Case(
        "a repeated key in a nested unknown object",
        b'{"WalletID": "corpus", "Amount": 5, "x": {"a": 1, "a": 2}}',
        message=r"appears more than once|unknown field",
    ),
    Case("only unknown fields", b'{"wallet": "corpus", "amount": 5}', message=r"unknown field"),
] + [
    Case(
        f"unknown field {name!r}",
        VALID[:-1] + b", " + json.dumps(name).encode() + b": 1}",
        message=r"unknown field.*" + re.escape(repr(name)),
    )
    for name in [
        "extra",
        "walletid",
        "WALLETID",
        "walletID",
        "Walletid",
        "wallet_id",
        "amount",
        "AMOUNT",
        " WalletID",
        "WalletID ",
        "",
        "CreatedAt",
        "CreatedAtMicros",
        "DepositID",
        "Partition",
        "Offset",
        "ConsistencyToken",
        "Balance",
        "AboveThreshold",
        "IdempotencyKey",
        "Idempotency-Key",
        "__proto__",
        "constructor",
        "$where",
        "Amount\u0000",
    ]
]


# ---------------------------------------------------------------------------------------------
# 7. Headers: the Idempotency-Key must be 1-64 characters of [A-Za-z0-9._:-]; a key is one deposit.
# Each case would emit under its own wallet if it were (wrongly) accepted.
def _idem(label: str, key: str | bytes, wallet: str, **kw: Any) -> Case:
    return Case(
        f"Idempotency-Key {label}",
        deposit_body(wallet),
        message=kw.pop("message", IDEM),
        headers=(("Idempotency-Key", key),),
        wallet=wallet,
        **kw,
    )


HEADERS: list[Case] = [
    _idem(label, key, f"corpus-idem-{i}")
    for i, (label, key) in enumerate(
        [
            ("empty", ""),
            ("65 characters", "k" * 65),
            ("200 characters", "k" * 200),
            ("4000 characters", "k" * 4000),
            ("with an inner space", "a b"),
            ("with a tab", "a\tb"),
            ("with a slash", "a/b"),
            ("with a comma", "a,b"),
            ("with a semicolon", "a;b"),
            ("with an equals sign", "a=b"),
            ("with angle brackets", "<key>"),
            ("quoted", '"key"'),
            ("with a plus", "a+b"),
            ("with an at sign", "a@b"),
            ("percent-encoded", "a%20b"),
            ("an asterisk", "*"),
            ("with braces", "{key}"),
            ("with a backslash", "a\\b"),
            ("in UTF-8 Cyrillic", "ключ"),
            ("with a Latin-1 byte", b"caf\xe9"),
            ("with an invalid UTF-8 byte", b"k\xff"),
            ("an emoji", "🔑"),
        ]
    )
] + [
    Case(
        "Idempotency-Key reused for another Amount",
        deposit_body(KEYED_WALLET, str(KEYED_AMOUNT + 1)),
        status=409,
        message=IDEM_REUSED,
        headers=(("Idempotency-Key", KEYED_KEY),),
        wallet=KEYED_WALLET,
    ),
]

# ---------------------------------------------------------------------------------------------
# 8. Methods and routes.
ROUTES: list[Case] = [
    Case("GET /deposit", None, status=405, method="GET", message=NOT_ALLOWED),
    Case("PUT /deposit", VALID, status=405, method="PUT", message=NOT_ALLOWED),
    Case("PATCH /deposit", VALID, status=405, method="PATCH", message=NOT_ALLOWED),
    Case("DELETE /deposit", None, status=405, method="DELETE", message=NOT_ALLOWED),
    Case("OPTIONS /deposit", None, status=405, method="OPTIONS", message=NOT_ALLOWED),
    Case("POST /deposit/ (trailing slash)", VALID, status=404, path="/deposit/", message=NO_ENDPOINT),
    Case("POST /Deposit (case)", VALID, status=404, path="/Deposit", message=NO_ENDPOINT),
    Case("POST /deposits", VALID, status=404, path="/deposits", message=NO_ENDPOINT),
    Case(
        "POST /deposit with the fields in the query, no body",
        b"",
        path="/deposit?WalletID=corpus&Amount=5",
        message=BODY_OBJECT,
    ),
    Case("POST /details/{id}", VALID, status=405, path=f"/details/{SEED_WALLET}", message=NOT_ALLOWED),
    Case(
        "POST /healthz (operations are not on the public port)", b"", status=404, path="/healthz", message=NO_ENDPOINT
    ),
    Case(
        "GET /metrics (operations are not on the public port)",
        None,
        status=404,
        method="GET",
        path="/metrics",
        message=NO_ENDPOINT,
    ),
    Case("GET /", None, status=404, method="GET", path="/", message=NO_ENDPOINT),
    Case("GET /detail/{id} (typo)", None, status=404, method="GET", path=f"/detail/{SEED_WALLET}", message=NO_ENDPOINT),
]


# ---------------------------------------------------------------------------------------------
# 9. GET /details/{wallet_id}: malformed ids and consistency tokens.
def _get(label: str, path: str, status: int = 400, message: str = WID_CHARS, **kw: Any) -> Case:
    return Case(f"GET {label}", None, status=status, method="GET", path=path, message=message, **kw)


_SEED = f"/details/{SEED_WALLET}"
DETAILS: list[Case] = (
    [
        _get("id of 65 characters", "/details/" + "a" * 65, message=WID_LONG),
        _get("id of 1000 characters", "/details/" + "a" * 1000, message=WID_LONG),
        _get("id of 8000 characters", "/details/" + "a" * 8000, message=WID_LONG),
        _get("id of 64 characters is well-formed: unknown", "/details/" + "a" * 64, status=404, message=r"not found"),
        _get("empty id", "/details/", status=404, message=NO_ENDPOINT),
        _get("id with a slash", "/details/a/b", status=404, message=NO_ENDPOINT),
    ]
    + [
        _get(f"id {label}", "/details/" + raw)
        for label, raw in [
            ("percent-encoded space", "%20"),
            ("with a percent-encoded space", "a%20b"),
            ("percent-encoded slash", "a%2Fb"),
            ("percent-encoded backslash", "a%5Cb"),
            ("percent-encoded NUL", "a%00b"),
            ("percent-encoded newline", "a%0Ab"),
            ("percent-encoded CRLF injection", "a%0D%0ASet-Cookie:%20x=1"),
            ("percent-encoded e-acute", "caf%C3%A9"),
            ("percent-encoded RTL override", "a%E2%80%AEb"),
            ("percent-encoded emoji", "%F0%9F%92%B0"),
            ("percent-encoded invalid UTF-8", "a%FFb"),
            ("percent-encoded overlong slash", "a%C0%AFb"),
            ("bad percent escape", "a%ZZb"),
            ("lone percent", "%"),
            ("double percent", "%%"),
            ("truncated escape", "a%2"),
            ("percent-encoded percent", "a%25b"),
            ("percent-encoded question mark", "a%3Fb"),
            ("percent-encoded hash", "a%23b"),
            ("percent-encoded html", "%3Cscript%3E"),
            ("a tilde", "~a"),
            ("an exclamation mark", "a!b"),
            ("a single quote", "a'b"),
            ("an asterisk", "a*b"),
            ("parentheses", "a(b)"),
            ("a dollar", "$where"),
            ("an at sign", "a@b"),
            ("a plus", "a+b"),
            ("an equals sign", "a=b"),
            ("a comma", "a,b"),
            ("a semicolon", "a;b"),
        ]
    ]
    + [
        # Consistency tokens (on a wallet that exists, so only the token can be wrong).
        _get(f"token {label}", f"{_SEED}?token={raw}", **{"message": TOKEN, **kw})
        for label, raw, kw in [
            ("word", "abc", {}),
            ("without an offset", "1", {}),
            ("negative", "-1", {}),
            ("without an offset after -", "1-", {}),
            ("only a dash", "-", {}),
            ("double dash", "1--2", {}),
            ("negative partition", "-1-2", {}),
            ("three parts", "1-2-3", {}),
            ("plus sign", "%2B1-2", {}),
            ("plus offset", "1-%2B2", {}),
            ("leading space", "%201-2", {}),
            ("trailing space", "1-2%20", {}),
            ("decimal", "1.0-2", {}),
            ("hexadecimal", "0x1-2", {}),
            ("trailing letter", "1-2x", {}),
            ("underscore", "1_0-2", {}),
            ("colon instead of dash", "1:2", {}),
            ("41 characters", "1-" + "0" * 39, {}),
            ("NUL", "1-2%00", {}),
            ("fullwidth digits", "%EF%BC%91-%EF%BC%92", {}),
            ("of a partition that does not exist", "8-0", {"message": TOKEN_OTHER}),
            ("of a huge partition", "99999999999999999999-0", {}),
            ("of another wallet's partition", "@OTHER_PARTITION@-0", {"message": TOKEN_OTHER}),
            ("empty", "", {}),
            ("with superscript digits", "%C2%B2-0", {}),
            ("with Arabic-Indic digits", "@SEED_DIGITS@-0", {}),
        ]
    ]
    + [
        _get(
            f"Consistency-Token header {label}",
            _SEED,
            headers=(("Consistency-Token", raw),),
            **{"message": TOKEN, **kw},
        )
        for label, raw, kw in [
            ("word", "abc", {}),
            ("empty", "", {}),
            ("three parts", "1-2-3", {}),
            ("negative", "-1", {}),
            ("of another wallet's partition", "@OTHER_PARTITION@-0", {"message": TOKEN_OTHER}),
            ("with superscript digits", "²-0", {}),
        ]
    ]
)

CORPUS: list[Case] = BODY + ENCODING + SEGMENTS + SIZE + WALLET + AMOUNT + FIELDS + HEADERS + ROUTES + DETAILS


def _params() -> list[Any]:
    seen: set[str] = set()
    out = []
    for case in CORPUS:
        assert case.id not in seen, f"duplicate case id {case.id!r}"
        seen.add(case.id)
        out.append(pytest.param(case, id=case.id.encode("ascii", "backslashreplace").decode(), marks=case.marks))
    return out


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 150, len(CORPUS)
    assert sum(c.method == "GET" for c in CORPUS) >= 40


# ---------------------------------------------------------------------------------------------
@dataclass
class Api:
    """The module's running API, and what the corpus needs to know about it."""

    port: int
    bootstrap: str
    vars: dict[str, str]  # placeholders in Case.path and header values -> their run-time values
    records_before: int  # records in the deposit topic before the corpus
    ops_port: int = 0  # the operations listener (/healthz, /readyz, /metrics)
    sent: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def api(module_cluster) -> Api:
    module_cluster.start_all()
    port = module_cluster.services["api-0"].port
    seed = post_json(port, {"WalletID": SEED_WALLET, "Amount": 1})
    keyed = post_json(port, {"WalletID": KEYED_WALLET, "Amount": KEYED_AMOUNT}, [("Idempotency-Key", KEYED_KEY)])
    assert seed.status == 202 and keyed.status == 202, (seed, keyed)
    for wallet, receipt in ((SEED_WALLET, seed.doc), (KEYED_WALLET, keyed.doc)):
        # Wait until both deposits are in the views: the keyed one must be replayable from there.
        reply = get(port, f"/details/{wallet}?token={receipt['ConsistencyToken']}")
        assert reply.status == 200, reply
    partition = seed.doc["Partition"]
    variables = {"@OTHER_PARTITION@": str((partition + 1) % 8), "@SEED_DIGITS@": _arabic_indic(partition)}
    return Api(
        port,
        module_cluster.broker.bootstrap,
        variables,
        len(read_topic(module_cluster.broker.bootstrap, "deposit")),
        ops_port=module_cluster.services["api-0"].ops_port,
    )


def _arabic_indic(number: int) -> str:
    """``number`` written in Arabic-Indic digits (U+0660-U+0669), percent-encoded for a URL."""
    return urllib.parse.quote("".join(chr(0x660 + int(d)) for d in str(number)))


def send(api: Api, case: Case) -> Reply:
    def fmt(text: str | bytes) -> str | bytes:
        if isinstance(text, str):
            for name, value in api.vars.items():
                text = text.replace(name, value)
        return text

    return request(
        api.port,
        case.method,
        fmt(case.path),
        body=case.body,
        headers=[(k, fmt(v)) for k, v in case.headers],
        chunks=list(case.chunks) if case.chunks is not None else None,
        pieces=list(case.pieces) if case.pieces is not None else None,
        gap=case.gap,
        content_length=case.content_length,
    )


@pytest.mark.parametrize("case", _params())
def test_malformed_request_gets_a_useful_4xx_json_error(api: Api, case: Case):
    api.sent.append(case.id)
    reply = send(api, case)
    shown = f"{case.id}: {reply.status} {reply.content_type} {reply.body[:300]!r}"
    assert reply.status < 500, f"server error: {shown}"
    assert reply.status == case.status, f"expected {case.status}: {shown}"
    assert reply.content_type.startswith("application/json"), f"not JSON: {shown}"
    assert isinstance(reply.doc, dict) and isinstance(reply.error, str) and reply.error, f"no error message: {shown}"
    assert re.search(case.message, reply.error, re.IGNORECASE), f"the message should match {case.message!r}: {shown}"
    assert len(reply.error) < 400 and "Traceback" not in reply.error, f"message too raw: {shown}"


# Requests that break HTTP/1.1 itself are refused by aiohttp's parser before any handler
# runs (wallet_api/server.py words the answer). They must still be a 4xx with a JSON error,
# never repeat what the client sent (its headers may be credentials), never reach Kafka, and
# leave the server serving.
def _raw(request_line: bytes, *headers: bytes, body: bytes = b"", length: bool = True) -> bytes:
    head = [request_line, b"Host: x", b"Connection: close", *headers]
    if length:
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


_POST = b"POST /deposit HTTP/1.1"
#: A bearer token far over aiohttp's 8190-byte header line limit (what a client sent, by mistake
#: or to probe): its start is what aiohttp's own answer used to quote.
SECRET_TOKEN = b"eyJhbGciOiJSUzI1NiJ9." + b"c2VjcmV0LWNyZWRlbnRpYWw" * 4400
PROTOCOL: list[tuple[str, bytes]] = [
    ("raw space in the path", _raw(b"GET /details/a b HTTP/1.1", length=False)),
    ("raw UTF-8 in the path", _raw(b"GET /details/caf\xc3\xa9 HTTP/1.1", length=False)),
    ("path longer than 8190 bytes", _raw(b"GET /details/" + b"a" * 9000 + b" HTTP/1.1", length=False)),
    ("garbage request line", b"GARBAGE\r\n\r\n"),
    ("NUL in a header value", _raw(_POST, b"X-A: a\x00b", body=VALID)),
    ("DEL in the Idempotency-Key", _raw(_POST, b"Idempotency-Key: a\x7fb", body=VALID)),
    ("control character in a header name", _raw(_POST, b"Idem\x01: x", body=VALID)),
    ("non-numeric Content-Length", _raw(_POST, b"Content-Length: abc", body=VALID, length=False)),
    ("two different Content-Lengths", _raw(_POST, b"Content-Length: 2", body=VALID)),
    ("Content-Length with Transfer-Encoding (smuggling)", _raw(_POST, b"Transfer-Encoding: chunked", body=VALID)),
    ("Content-Encoding br (no brotli decoder)", _raw(_POST, b"Content-Encoding: br", body=VALID)),
    (
        "Authorization header of 100 KB",
        _raw(b"GET /details/corpus-seed HTTP/1.1", b"Authorization: Bearer " + SECRET_TOKEN),
    ),
    ("Authorization header of 100 KB on a deposit", _raw(_POST, b"Authorization: Bearer " + SECRET_TOKEN, body=VALID)),
]


def _windows(data: bytes, size: int = 24) -> set[bytes]:
    return {data[i : i + size] for i in range(0, max(len(data) - size, 0) + 1)}


@pytest.mark.parametrize("raw", [pytest.param(r, id=i) for i, r in PROTOCOL])
def test_malformed_http_is_refused_with_a_4xx(api: Api, raw: bytes):
    api.sent.append("protocol")
    with socket.create_connection(("127.0.0.1", api.port), timeout=15) as sock:
        sock.sendall(raw)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
    assert 400 <= resp.status < 500, resp.status
    assert resp.getheader("Content-Type", "").startswith("application/json"), (resp.status, body[:300])
    assert isinstance(json.loads(body).get("error"), str), body[:300]
    # Nothing the client sent comes back: no 24-byte run of the request is in the answer.
    echoed = [w for w in _windows(raw) if w in body and b"\r\n" not in w]
    assert not echoed, f"the answer repeats the request: {echoed[:3]} in {body[:300]!r}"


def test_an_oversized_credential_is_neither_echoed_nor_logged(api: Api, module_cluster):
    """The answer was checked above; the API's log must not hold the token either."""
    api.sent.append("protocol")
    with socket.create_connection(("127.0.0.1", api.port), timeout=15) as sock:
        sock.sendall(_raw(b"GET /details/corpus-seed HTTP/1.1", b"Authorization: Bearer " + SECRET_TOKEN))
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 400 and b"8190 bytes" in resp.read()
    time.sleep(0.5)  # the log line, if any, is written
    log = module_cluster.services["api-0"].log_path.read_bytes()
    assert SECRET_TOKEN[:24] not in log and b"eyJhbGciOi" not in log


def test_corpus_emitted_nothing_and_the_api_keeps_serving(api: Api):
    """After every case above: nothing reached Kafka, and a valid deposit still works."""
    if not api.sent:
        pytest.skip("run together with the corpus")
    time.sleep(0.5)  # let any (wrongly) emitted record land
    # Cases marked as known bugs may have been accepted; their records are excused by wallet.
    excused = {c.wallet for c in CORPUS if c.marks and c.wallet}
    records = read_topic(api.bootstrap, "deposit")
    excused_records = sum(1 for _p, _o, key, _v in records if key and key.decode() in excused)
    unexpected = len(records) - api.records_before - excused_records
    assert unexpected == 0, f"{unexpected} record(s) reached the deposit topic during the bad-input corpus"
    assert get(api.ops_port, "/healthz").status == 200
    assert get(api.ops_port, "/readyz").status == 200
    reply = post_json(api.port, {"WalletID": "corpus-after", "Amount": 12.34})
    assert reply.status == 202, reply
    details = get(api.port, f"/details/corpus-after?token={reply.doc['ConsistencyToken']}")
    assert (details.status, details.body) == (
        200,
        b'{"WalletID":"corpus-after","Balance":12.34,"AboveThreshold":false}',
    )


def test_a_valid_body_arriving_in_several_segments_is_accepted(api: Api):
    """The other side of the same bug: a slow client's valid deposit must not be a 400.

    (After the emission check above, as it stores a deposit.)"""
    body = deposit_body("corpus-segments", "5")
    reply = request(api.port, "POST", "/deposit", pieces=[body[:10], body[10:25], body[25:]], gap=0.1)
    assert reply.status == 202, reply
