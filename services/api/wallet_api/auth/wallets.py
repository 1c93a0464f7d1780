"""Who may touch which wallet: the wallet rule of a token's claim, and the principal a valid token makes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wallet_api.auth.errors import (
    InvalidClaims,
)
from wallet_api.auth.settings import (
    _WALLET_ID,
    _WALLET_PATTERN,
    TIME_CLAIMS,
    WALLET_ID_MAX_LENGTH,
)


@dataclass(frozen=True, slots=True)
class WalletRule:
    """Which wallets a principal may touch: exact wallet ids and ``*`` patterns.

    ``*`` stands for any run of wallet-id characters, including none (``acme-*`` matches
    ``acme-1`` and ``acme-`` but not ``acme``; ``*`` alone matches every wallet). No other
    character is special: the patterns are matched segment by segment, never turned into
    a regular expression, so ``acme.*`` means the literal prefix ``acme.``. An empty rule
    matches nothing.
    """

    patterns: tuple[str, ...] = ()
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _globs: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact: set[str] = set()
        globs: list[tuple[str, ...]] = []
        for pattern in self.patterns:
            if (
                not isinstance(pattern, str)
                or len(pattern) > WALLET_ID_MAX_LENGTH
                or not _WALLET_PATTERN.fullmatch(pattern)
            ):
                raise InvalidClaims(
                    f"wallet entries must be wallet ids or '*' patterns of 1-{WALLET_ID_MAX_LENGTH} "
                    "letters, digits and . _ : - *"
                )
            if "*" in pattern:
                globs.append(tuple(re.sub(r"\*+", "*", pattern).split("*")))
            else:
                exact.add(pattern)
        object.__setattr__(self, "_exact", frozenset(exact))
        object.__setattr__(self, "_globs", tuple(globs))

    def allows(self, wallet_id: str) -> bool:
        """Whether ``wallet_id`` (a valid wallet id) is covered; invalid ids never are."""
        if not isinstance(wallet_id, str) or not _WALLET_ID.fullmatch(wallet_id):
            return False
        return wallet_id in self._exact or any(_glob_match(segments, wallet_id) for segments in self._globs)


def _glob_match(segments: tuple[str, ...], text: str) -> bool:
    """``text`` against a pattern split at its ``*``s (at least two segments).

    The first segment is a prefix, the last a suffix, the middle ones must appear in
    order between them; taking each at its leftmost place is enough for ``*``-only
    patterns, so this is linear and needs no backtracking.
    """
    first, *middle, last = segments
    start, end = len(first), len(text) - len(last)
    if end < start or not text.startswith(first) or not text.endswith(last):
        return False
    for segment in middle:
        at = text.find(segment, start, end)
        if at < 0:
            return False
        start = at + len(segment)
    return True


NO_WALLETS = WalletRule()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for, and what it grants.

    ``scopes`` joins the space-separated ``scope`` claim (RFC 9068) and the ``scp`` list
    some issuers send. ``wallets`` comes from the wallets claim; a token without it may
    touch no wallet: access is granted by the issuer, never assumed.
    """

    subject: str
    scopes: frozenset[str] = frozenset()
    wallets: WalletRule = NO_WALLETS

    def may_touch(self, wallet_id: str) -> bool:
        """Whether this principal's wallet rule covers ``wallet_id``."""
        return self.wallets.allows(wallet_id)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], wallets_claim: str = "wallets") -> Principal:
        """The principal of verified ``claims``; :class:`InvalidClaims` when they are malformed."""
        for name in TIME_CLAIMS:
            # RFC 7519 NumericDate: a JSON number. PyJWT also takes a numeric string ("exp":
            # "9999999999"), which no conforming issuer writes.
            value = claims.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            ):
                raise InvalidClaims(f"the {name} claim must be a NumericDate: a JSON number of seconds")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidClaims("the sub claim must be a non-empty string")
        scopes: set[str] = set()
        scope = claims.get("scope")
        if scope is not None:
            if not isinstance(scope, str):
                raise InvalidClaims("the scope claim must be a space-separated string")
            scopes.update(scope.split())
        scp = claims.get("scp")
        if scp is not None:
            if isinstance(scp, str):
                scopes.update(scp.split())
            elif isinstance(scp, list) and all(isinstance(item, str) for item in scp):
                scopes.update(scp)
            else:
                raise InvalidClaims("the scp claim must be a list of strings")
        wallets = claims.get(wallets_claim)
        if wallets is None:
            rule = NO_WALLETS
        elif isinstance(wallets, list):
            try:
                rule = WalletRule(tuple(wallets))
            except InvalidClaims as exc:
                raise InvalidClaims(f"the {wallets_claim} claim is invalid: {exc}") from None
        else:
            raise InvalidClaims(f"the {wallets_claim} claim must be a list of wallet ids and patterns")
        return cls(subject, frozenset(scopes), rule)
