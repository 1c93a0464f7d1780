"""Validation of what clients send: pure functions, no HTTP, no Kafka.

Every rule raises :class:`InvalidRequest` with a message that says what is wrong
and what is accepted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from walletkit.wallet import money


class InvalidRequest(ValueError):
    """The request cannot be accepted as sent."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What a deposit may look like (all configurable, see ``wallet-api --help``)."""

    max_body_bytes: int = 4096
    wallet_id_max_length: int = 64
    amount_decimals: int = 2
    max_amount: Decimal = money.DEFAULT_MAX_AMOUNT
    #: Requests served at once on /deposit and /details; more get 429.
    max_in_flight: int = 1024
    #: How long GET /details with a consistency token waits for the deposit to show.
    consistency_timeout: float = 5.0
    #: How long a request body may take to arrive in full (408 after; it holds no slot meanwhile).
    body_timeout: float = 10.0


#: Wallet ids: letters, digits and ``. _ : -`` (safe in URLs, logs and Kafka keys).
WALLET_ID_CHARS = re.compile(r"[A-Za-z0-9._:-]+")
DEPOSIT_FIELDS = ("WalletID", "Amount")


@dataclass(frozen=True, slots=True)
class DepositInput:
    wallet_id: str
    amount_micros: int


def check_wallet_id(value: Any, limits: Limits) -> str:
    if not isinstance(value, str):
        raise InvalidRequest("WalletID must be a string")
    if not value:
        raise InvalidRequest("WalletID must not be empty")
    if len(value) > limits.wallet_id_max_length:
        raise InvalidRequest(f"WalletID must be at most {limits.wallet_id_max_length} characters")
    if not WALLET_ID_CHARS.fullmatch(value):
        raise InvalidRequest("WalletID may contain only letters, digits and . _ : -")
    return value


IDEMPOTENCY_KEY_MAX_LENGTH = 64


def check_idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header: absent, or 1-64 characters like a wallet id."""
    if value is None:
        return None
    if not value or len(value) > IDEMPOTENCY_KEY_MAX_LENGTH or not WALLET_ID_CHARS.fullmatch(value):
        raise InvalidRequest(
            f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX_LENGTH} characters of letters, digits and . _ : -"
        )
    return value


def _reject_constant(name: str) -> Any:
    raise InvalidRequest(f"{name} is not a valid amount: Amount must be a finite number")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise InvalidRequest(f"field {key!r} appears more than once")
        obj[key] = value
    return obj


def parse_deposit(body: bytes, limits: Limits) -> DepositInput:
    """Parse and validate a ``POST /deposit`` body."""
    if len(body) > limits.max_body_bytes:
        raise InvalidRequest(f"body must be at most {limits.max_body_bytes} bytes")
    if not body.strip():
        raise InvalidRequest('body must be a JSON object like {"WalletID": "walletID001", "Amount": 8000}')
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("body must be UTF-8 encoded JSON") from exc
    try:
        doc = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=_unique_object)
    except InvalidRequest:
        raise
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from exc
    except (ArithmeticError, ValueError) as exc:  # a number beyond Decimal's exponent or int's digit limit
        raise InvalidRequest(
            f"Amount is out of range: it must be at most {money.format_decimal(limits.max_amount)}"
        ) from exc
    if not isinstance(doc, dict):
        raise InvalidRequest('body must be a JSON object like {"WalletID": "walletID001", "Amount": 8000}')
    unknown = sorted(set(doc) - set(DEPOSIT_FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown field(s) {', '.join(map(repr, unknown))}; accepted: WalletID, Amount")
    for name in DEPOSIT_FIELDS:
        if name not in doc:
            raise InvalidRequest(f"{name} is required")
    wallet_id = check_wallet_id(doc["WalletID"], limits)
    amount = doc["Amount"]
    if isinstance(amount, bool) or not isinstance(amount, (int, Decimal)):
        raise InvalidRequest("Amount must be a JSON number")
    if isinstance(amount, int):
        if amount.bit_length() > 128:
            raise InvalidRequest(f"Amount must be at most {money.format_decimal(limits.max_amount)}")
        amount = Decimal(amount)
    try:
        micros = money.decimal_to_micros(amount, decimals=limits.amount_decimals, maximum=limits.max_amount)
    except money.AmountError as exc:
        raise InvalidRequest(str(exc)) from exc
    return DepositInput(wallet_id, micros)
