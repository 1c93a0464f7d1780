"""Bearer-token (OIDC access token, JWT) authentication and authorization.

Pure: no HTTP framework, no Kafka. The API turns the named errors into responses:
:class:`Unauthorized` is 401, :class:`Forbidden` is 403, and each carries the
``WWW-Authenticate`` value RFC 6750 asks for.

Trust comes only from the configured JWKS (a URL or a file). Whatever a token's
header says about keys (``jku``, ``x5u``, an embedded ``jwk``) is ignored, and only
asymmetric algorithms are accepted: a JWKS publishes public keys, so with an HMAC
algorithm anyone holding the public key could forge tokens.

A request is allowed when the token is valid (:meth:`Authenticator.authenticate`)
and names both the scope of the operation and the wallet (:meth:`Authenticator.authorize`).
Wallets come from a claim (``wallets`` by default): a list of exact wallet ids and
``*`` patterns. A token without that claim may touch no wallet.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jwt
from jwt import PyJWK

log = logging.getLogger(__name__)

#: The algorithms that may be configured: signatures checked with a public key.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
_KEY_TYPE = {"RS256": "RSA", "RS384": "RSA", "RS512": "RSA", "PS256": "RSA", "ES256": "EC", "ES384": "EC"}
_CURVE = {"ES256": "P-256", "ES384": "P-384"}
#: Smaller RSA keys are factorable at a cost well within an attacker's reach.
MIN_RSA_BITS = 2048
#: Claims a token must carry; ``iat`` and ``nbf`` are checked when present.
REQUIRED_CLAIMS = ("exp", "iss", "aud", "sub")
#: Claims that are times (RFC 7519 NumericDate: a JSON number of seconds since the epoch).
TIME_CLAIMS = ("exp", "nbf", "iat")
#: A published JWKS is a few kilobytes; more is a misconfigured or hostile endpoint.
MAX_JWKS_BYTES = 1 << 20
WALLET_ID_MAX_LENGTH = 64

_WALLET_ID = re.compile(r"[A-Za-z0-9._:-]+")
_WALLET_PATTERN = re.compile(r"[A-Za-z0-9._:*-]+")
# RFC 6749 scope-token and RFC 6750 error_description: printable ASCII without '"' and '\'.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
_QUOTABLE = re.compile(r"[\x20\x21\x23-\x5B\x5D-\x7E]*")
_UNQUOTABLE = re.compile(r"[^\x20\x21\x23-\x5B\x5D-\x7E]")
# Three base64url segments; the signature may be empty (alg "none"), which is refused later
# with a message that says why.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_ALG_NAME = re.compile(r"[A-Za-z0-9+-]{1,16}")


# --- errors -------------------------------------------------------------------------------------


class AuthConfigError(ValueError):
    """Authentication is configured wrongly; ``setting`` names the field or variable."""

    def __init__(self, setting: str, detail: str) -> None:
        super().__init__(f"{setting}: {detail}")
        self.setting = setting
        self.detail = detail


class KeySetError(Exception):
    """A JWKS could not be read, or holds no key usable for the configured algorithms."""


class AuthError(Exception):
    """A request refused by authentication or authorization.

    ``str(error)`` is safe to show the client: it never contains the token.
    """

    status: ClassVar[int]

    def __init__(self, message: str, *, error: str | None, realm: str = "wallet", scope: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The RFC 6750 error code, or None when the request carried no bearer token at all.
        self.error = error
        self.realm = realm
        self.scope = scope

    @property
    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` header value for the response (RFC 6750 section 3)."""
        parts = [f'Bearer realm="{_quotable(self.realm)}"']
        if self.error is not None:
            parts.append(f'error="{self.error}"')
            parts.append(f'error_description="{_quotable(self.message)}"')
        if self.scope is not None:
            parts.append(f'scope="{_quotable(self.scope)}"')
        return ", ".join(parts)


class Unauthorized(AuthError):
    """No valid bearer token: answer 401 with :attr:`www_authenticate`."""

    status = 401

    def __init__(self, message: str, *, error: str | None = "invalid_token", realm: str = "wallet") -> None:
        super().__init__(message, error=error, realm=realm)


class KeysUnavailable(Unauthorized):
    """The issuer's signing keys could not be fetched, so the token could not be checked.

    Still a 401 (the request is not authenticated), but the fault is on the server's
    side: a client may retry, and operators should look at the logs.
    """


class Forbidden(AuthError):
    """A valid token that does not grant the operation: answer 403 with :attr:`www_authenticate`."""

    status = 403

    def __init__(self, message: str, *, realm: str = "wallet", scope: str | None = None) -> None:
        super().__init__(message, error="insufficient_scope", realm=realm, scope=scope)


class InvalidClaims(ValueError):
    """A verified token whose claims do not have the shape this API needs."""


def _quotable(text: str) -> str:
    """``text`` with what a quoted-string in WWW-Authenticate may not hold replaced."""
    return text if _QUOTABLE.fullmatch(text) else _UNQUOTABLE.sub("?", text)


# --- settings -----------------------------------------------------------------------------------


#: The environment variable of each setting (see :func:`from_env`).
ENV_VARS = {
    "mode": "WALLET_AUTH",
    "issuer": "WALLET_AUTH_ISSUER",
    "audience": "WALLET_AUTH_AUDIENCE",
    "jwks_url": "WALLET_AUTH_JWKS_URL",
    "jwks_file": "WALLET_AUTH_JWKS_FILE",
    "jwks": "WALLET_AUTH_JWKS_URL or WALLET_AUTH_JWKS_FILE",
    "algorithms": "WALLET_AUTH_ALGORITHMS",
    "leeway_seconds": "WALLET_AUTH_LEEWAY_SECONDS",
    "deposit_scope": "WALLET_AUTH_DEPOSIT_SCOPE",
    "read_scope": "WALLET_AUTH_READ_SCOPE",
    "wallets_claim": "WALLET_AUTH_WALLETS_CLAIM",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    """How bearer tokens are checked. Validated at construction (:class:`AuthConfigError`)."""

    #: The ``iss`` tokens must carry, exactly (the OIDC issuer URL).
    issuer: str
    #: The ``aud`` tokens must carry (or include, when a list): this API's identifier.
    audience: str
    #: Where the issuer publishes its keys (https; http only to a loopback host). Exactly
    #: one of ``jwks_url`` and ``jwks_file``.
    jwks_url: str | None = None
    #: A JWKS document on disk (for example a mounted ConfigMap).
    jwks_file: Path | None = None
    #: Accepted signature algorithms; only asymmetric ones (:data:`ASYMMETRIC_ALGORITHMS`).
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    #: Clock skew tolerated on ``exp``, ``nbf`` and ``iat``, 0-300 s.
    leeway_seconds: int = 30
    deposit_scope: str = "wallet:deposit"
    read_scope: str = "wallet:read"
    #: The claim listing the wallets a token may touch.
    wallets_claim: str = "wallets"
    realm: str = "wallet"
    #: Longer Authorization headers are refused before any parsing.
    max_header_length: int = 8192
    #: Bound on one JWKS fetch (connect, send, read all of it).
    jwks_timeout_seconds: float = 5.0
    #: Fetches for an unknown ``kid`` are at least this far apart, so a flood of tokens
    #: naming random key ids cannot make the API hammer the issuer.
    jwks_min_refresh_seconds: float = 30.0
    #: Keys older than this are refreshed in the background, so a key the issuer
    #: withdrew stops being trusted.
    jwks_max_age_seconds: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("issuer", "audience"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise AuthConfigError(name, "must be a non-empty string")
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise AuthConfigError("jwks", "set exactly one: the issuer's JWKS URL or a JWKS file")
        if self.jwks_url is not None:
            problem = jwks_url_problem(self.jwks_url)
            if problem:
                raise AuthConfigError("jwks_url", problem)
        if self.jwks_file is not None and not isinstance(self.jwks_file, Path):
            object.__setattr__(self, "jwks_file", Path(self.jwks_file))
        object.__setattr__(self, "algorithms", _check_algorithms(self.algorithms))
        leeway = self.leeway_seconds
        if isinstance(leeway, bool) or not isinstance(leeway, int) or not 0 <= leeway <= 300:
            raise AuthConfigError("leeway_seconds", f"must be a whole number of seconds from 0 to 300, got {leeway!r}")
        for name in ("deposit_scope", "read_scope"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _SCOPE_TOKEN.fullmatch(value):
                raise AuthConfigError(
                    name,
                    f"must be one scope name (printable ASCII without spaces, quotes or backslashes), got {value!r}",
                )
        if not isinstance(self.wallets_claim, str) or not self.wallets_claim.strip():
            raise AuthConfigError("wallets_claim", "must be a non-empty claim name")
        if not isinstance(self.realm, str) or not self.realm or not _QUOTABLE.fullmatch(self.realm):
            raise AuthConfigError("realm", "must be non-empty printable ASCII without quotes or backslashes")
        if not 256 <= self.max_header_length <= 65536:
            raise AuthConfigError("max_header_length", "must be from 256 to 65536")
        if not 0 < self.jwks_timeout_seconds <= 60:
            raise AuthConfigError("jwks_timeout_seconds", "must be more than 0 and at most 60")
        if not 0 <= self.jwks_min_refresh_seconds <= 3600:
            raise AuthConfigError("jwks_min_refresh_seconds", "must be from 0 to 3600")
        if not self.jwks_min_refresh_seconds <= self.jwks_max_age_seconds:
            raise AuthConfigError("jwks_max_age_seconds", "must be at least jwks_min_refresh_seconds")


def _check_algorithms(algorithms: Iterable[str]) -> tuple[str, ...]:
    if isinstance(algorithms, str):
        algorithms = (algorithms,)
    chosen: list[str] = []
    accepted = ", ".join(ASYMMETRIC_ALGORITHMS)
    for alg in algorithms:
        if not isinstance(alg, str):
            raise AuthConfigError("algorithms", f"must be algorithm names; accepted: {accepted}")
        if alg.upper().startswith("HS"):
            raise AuthConfigError(
                "algorithms",
                f"{alg} is a shared-secret algorithm: with keys from a JWKS anyone "
                f"holding the public key could sign tokens; accepted: {accepted}",
            )
        if alg.lower() == "none":
            raise AuthConfigError(
                "algorithms", f"'none' means unsigned tokens, which anyone can make; accepted: {accepted}"
            )
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise AuthConfigError("algorithms", f"{alg!r} is not supported; accepted: {accepted}")
        if alg not in chosen:
            chosen.append(alg)
    if not chosen:
        raise AuthConfigError("algorithms", f"name at least one algorithm; accepted: {accepted}")
    return tuple(chosen)


def jwks_url_problem(url: str) -> str | None:
    """Why ``url`` may not serve signing keys, or None when it may.

    Whoever can alter the JWKS in transit can sign tokens, so plain http is accepted
    only to a loopback host (a sidecar, a test issuer); in a cluster use https or mount
    the JWKS as a file.
    """
    if not isinstance(url, str):
        return "must be a URL string"
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return f"{url!r} is not a valid URL"
    if parts.scheme not in ("https", "http") or not host:
        return f"{url!r} must be an https:// URL with a host"
    if parts.scheme == "http" and not _is_loopback(host):
        return f"{url!r} uses plain http to a non-loopback host: use https, or a JWKS file"
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def from_env(environ: Mapping[str, str] | None = None) -> AuthSettings | None:
    """Settings from ``WALLET_AUTH*`` variables; None when ``WALLET_AUTH`` is ``none`` or unset.

    ``WALLET_AUTH=jwt`` needs ``WALLET_AUTH_ISSUER``, ``WALLET_AUTH_AUDIENCE`` and one of
    ``WALLET_AUTH_JWKS_URL`` / ``WALLET_AUTH_JWKS_FILE``. When ``WALLET_AUTH`` is unset but
    another ``WALLET_AUTH_*`` variable is set, this refuses instead of running open: a
    forgotten switch must not turn authentication off. Errors name the variable and say
    what it accepts (:class:`AuthConfigError`).
    """
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(ENV_VARS[name])
        return value.strip() if value is not None and value.strip() else None

    mode = get("mode")
    if mode is None:
        configured = sorted(
            var for key, var in ENV_VARS.items() if key not in ("mode", "jwks") and get(key) is not None
        )
        if configured:
            raise AuthConfigError(
                "WALLET_AUTH",
                f"is unset but {', '.join(configured)} is set: set WALLET_AUTH=jwt "
                "to check bearer tokens, or WALLET_AUTH=none to run without",
            )
        return None
    if mode.lower() == "none":
        return None
    if mode.lower() != "jwt":
        raise AuthConfigError("WALLET_AUTH", f"must be none or jwt, got {mode!r}")

    values: dict[str, Any] = {}
    for name in ("issuer", "audience"):
        value = get(name)
        if value is None:
            raise AuthConfigError(ENV_VARS[name], "is required when WALLET_AUTH=jwt")
        values[name] = value
    values["jwks_url"] = get("jwks_url")
    jwks_file = get("jwks_file")
    values["jwks_file"] = Path(jwks_file) if jwks_file else None
    algorithms = get("algorithms")
    if algorithms is not None:
        values["algorithms"] = tuple(alg.strip() for alg in algorithms.split(",") if alg.strip())
    leeway = get("leeway_seconds")
    if leeway is not None:
        try:
            values["leeway_seconds"] = int(leeway)
        except ValueError:
            raise AuthConfigError(
                ENV_VARS["leeway_seconds"], f"must be a whole number of seconds from 0 to 300, got {leeway!r}"
            ) from None
    for name in ("deposit_scope", "read_scope", "wallets_claim"):
        value = get(name)
        if value is not None:
            values[name] = value
    try:
        return AuthSettings(**values)
    except AuthConfigError as exc:
        raise AuthConfigError(ENV_VARS.get(exc.setting, exc.setting), exc.detail) from None


# --- principal ----------------------------------------------------------------------------------


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


# --- keys ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SigningKey:
    """One JWKS entry, prepared for each configured algorithm it may verify."""

    kid: str | None
    by_algorithm: Mapping[str, PyJWK]


@dataclass(frozen=True, slots=True)
class _KeySet:
    keys: tuple[_SigningKey, ...]

    def find(self, kid: str | None, alg: str) -> PyJWK | None:
        if kid is None:
            # Issuers with a single key often leave kid out; with several, guessing is wrong.
            return self.keys[0].by_algorithm.get(alg) if len(self.keys) == 1 else None
        for key in self.keys:
            if key.kid == kid and alg in key.by_algorithm:
                return key.by_algorithm[alg]
        return None

    def knows(self, kid: str) -> bool:
        return any(key.kid == kid for key in self.keys)

    @property
    def kids(self) -> tuple[str | None, ...]:
        return tuple(key.kid for key in self.keys)


def _signing_key(jwk: Any, algorithms: tuple[str, ...]) -> _SigningKey | str:
    """The key prepared for the configured algorithms it fits, or why it is not used."""
    if not isinstance(jwk, dict):
        return "not a JSON object"
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return "kid is not a string"
    if "d" in jwk:
        # Private material in a published key set is a leak; refusing it makes the mistake loud.
        return "it holds private key material"
    use = jwk.get("use")
    if use is not None and use != "sig":
        return f"use is {use!r}, not 'sig'"
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return "key_ops does not include 'verify'"
    kty, crv, alg = jwk.get("kty"), jwk.get("crv"), jwk.get("alg")
    prepared: dict[str, PyJWK] = {}
    for candidate in algorithms:
        if _KEY_TYPE[candidate] != kty or (alg is not None and alg != candidate):
            continue
        if kty == "EC" and crv != _CURVE[candidate]:
            continue
        try:
            key = PyJWK(jwk, candidate)
        except jwt.PyJWTError as exc:
            return f"it is not a valid {kty} key ({exc})"
        if kty == "RSA" and key.key.key_size < MIN_RSA_BITS:
            return f"its RSA modulus has {key.key.key_size} bits, fewer than {MIN_RSA_BITS}"
        prepared[candidate] = key
    if not prepared:
        return f"kty {kty!r}, crv {crv!r}, alg {alg!r} fits none of {', '.join(algorithms)}"
    return _SigningKey(kid, prepared)


def _parse_jwks(data: bytes, algorithms: tuple[str, ...]) -> _KeySet:
    """The usable signing keys of a JWKS document; :class:`KeySetError` when there are none."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise KeySetError(f"the JWKS is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise KeySetError('the JWKS must be a JSON object with a "keys" list')
    keys: list[_SigningKey] = []
    skipped: list[str] = []
    for index, jwk in enumerate(doc["keys"]):
        found = _signing_key(jwk, algorithms)
        if isinstance(found, str):
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            skipped.append(f"key {index} (kid {kid!r}): {found}")
        else:
            keys.append(found)
    for reason in skipped:
        log.info("JWKS key not used: %s", reason)
    if not keys:
        detail = "; ".join(skipped) if skipped else "the keys list is empty"
        raise KeySetError(f"the JWKS holds no key usable for {', '.join(algorithms)} signatures: {detail}")
    return _KeySet(tuple(keys))


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL that could have been configured itself."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        problem = jwks_url_problem(newurl)
        if problem:
            raise KeySetError(f"the JWKS URL redirects to a refused location: {problem}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_url(url: str, timeout: float) -> bytes:
    """The body of ``url``, bounded in size and in total time (blocking: run it in a thread)."""
    handlers: list[urllib.request.BaseHandler] = [_CheckedRedirects()]
    if _is_loopback(urllib.parse.urlsplit(url).hostname or ""):
        handlers.append(urllib.request.ProxyHandler({}))  # a proxy cannot reach our loopback
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(
        url, headers={"Accept": "application/jwk-set+json, application/json", "User-Agent": "wallet-api"}
    )
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            if response.status != 200:
                raise KeySetError(f"the JWKS URL answered HTTP {response.status}")
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read1(65536):
                size += len(chunk)
                if size > MAX_JWKS_BYTES:
                    raise KeySetError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:  # a server dripping bytes must not hold us forever
                    raise KeySetError(f"the JWKS took longer than {timeout:g} s to read")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        raise KeySetError(f"the JWKS URL answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise KeySetError(f"the JWKS URL could not be reached: {exc.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, resets, malformed responses
        raise KeySetError(f"the JWKS could not be read: {exc!r}") from None


def _no_key(keys: _KeySet, kid: str | None, alg: str) -> str:
    """Why ``keys`` has no key for a token (the kid is the token's: it is not repeated)."""
    if kid is None:
        if len(keys.keys) > 1:
            return "the token has no kid header and the issuer publishes several keys"
        return f"the issuer's key does not sign with {alg}"
    if keys.knows(kid):
        return f"the key the token names does not sign with {alg}"
    return "the token's key id (kid) is not among the issuer's signing keys"


# --- authenticator ------------------------------------------------------------------------------


class Authenticator:
    """Checks bearer tokens against the issuer's keys and turns them into :class:`Principal`.

    Keys come from ``settings.jwks_file`` (read here, so a wrong file fails at start with
    :class:`KeySetError`) or ``settings.jwks_url`` (fetched on :meth:`start` or the first
    token). A token naming an unknown ``kid`` triggers a re-read, as key rotation needs,
    but at most one per ``jwks_min_refresh_seconds`` and single-flight: concurrent
    requests share one fetch. Fetches run in a thread; signature checks are inline
    (RSA/EC verification takes microseconds).

    ``clock`` (monotonic seconds) paces refreshes; tests pass their own.
    """

    def __init__(self, settings: AuthSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._keys: _KeySet | None = None
        self._loaded_at: float | None = None
        self._last_attempt: float | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        if settings.jwks_file is not None:
            self._source = f"JWKS file {settings.jwks_file}"
            self._install(self._read_keys())
            self._last_attempt = self._loaded_at
        else:
            self._source = f"JWKS URL {settings.jwks_url}"

    # Lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the keys now, so the first request does not wait; failures are logged, not raised.

        An issuer that is down at start must not keep the API from serving: requests get
        401 until the keys arrive.
        """
        if self._keys is None:
            try:
                await self._refresh(force=True)
            except KeySetError:
                pass  # logged by _refresh_done

    async def reload(self) -> int:
        """Re-read the keys now (no rate limit); returns how many are usable.

        Raises :class:`KeySetError` and keeps the keys it had when the source is unusable.
        """
        await self._refresh(force=True)
        assert self._keys is not None
        return len(self._keys.keys)

    async def close(self) -> None:
        """Stop a fetch in flight (its thread finishes on its own timeout)."""
        task = self._refresh_task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def key_ids(self) -> tuple[str | None, ...]:
        """The ``kid`` of each usable key held now (None for a key without one)."""
        return self._keys.kids if self._keys is not None else ()

    # Requests -----------------------------------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header value; :class:`Unauthorized` otherwise."""
        settings = self.settings
        realm = settings.realm
        if not authorization or not authorization.strip():
            raise Unauthorized(
                "authentication required: send Authorization: Bearer <access token>", error=None, realm=realm
            )
        if len(authorization) > settings.max_header_length:
            raise Unauthorized(
                f"the Authorization header is longer than {settings.max_header_length} characters", realm=realm
            )
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            # Not a bearer attempt at all: RFC 6750 answers with the bare challenge.
            raise Unauthorized(
                "the Authorization scheme must be Bearer: send Authorization: Bearer <access token>",
                error=None,
                realm=realm,
            )
        token = token.strip()
        if not _COMPACT_JWS.fullmatch(token):
            raise Unauthorized("the bearer token is not a JWT (three base64url parts separated by dots)", realm=realm)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token is malformed: its header cannot be read", realm=realm) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in settings.algorithms:
            shown = repr(alg) if isinstance(alg, str) and _ALG_NAME.fullmatch(alg) else "its algorithm"
            raise Unauthorized(
                f"the token is signed with {shown}, which is not accepted; accepted: {', '.join(settings.algorithms)}",
                realm=realm,
            )
        key = await self._key_for(header.get("kid"), alg)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options={"require": list(REQUIRED_CLAIMS), "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(self._describe(exc), realm=realm) from None
        try:
            return Principal.from_claims(claims, settings.wallets_claim)
        except InvalidClaims as exc:
            raise Unauthorized(f"the token's claims are malformed: {exc}", realm=realm) from None

    def authorize(self, principal: Principal, scope: str, wallet_id: str | None = None) -> None:
        """Raise :class:`Forbidden` unless ``principal`` has ``scope`` and may touch ``wallet_id``.

        ``wallet_id`` None checks the scope alone.
        """
        realm = self.settings.realm
        if scope not in principal.scopes:
            raise Forbidden(f"the token lacks the scope {scope}", realm=realm, scope=scope)
        if wallet_id is not None and not principal.may_touch(wallet_id):
            shown = wallet_id if isinstance(wallet_id, str) and _WALLET_ID.fullmatch(wallet_id) else "this wallet"
            raise Forbidden(f"the token does not grant access to wallet {shown[:WALLET_ID_MAX_LENGTH]}", realm=realm)

    def _describe(self, exc: jwt.PyJWTError) -> str:
        """A client-facing reason; PyJWT's own messages are not shown, they are not written for clients."""
        settings = self.settings
        if isinstance(exc, jwt.ExpiredSignatureError):
            return "the token has expired"
        if isinstance(exc, jwt.ImmatureSignatureError):
            return "the token is not valid yet (nbf or iat is in the future)"
        if isinstance(exc, jwt.InvalidAudienceError):
            return f"the token is not meant for this API: its aud must name {settings.audience}"
        if isinstance(exc, jwt.InvalidIssuerError):
            return f"the token was not issued by the trusted issuer: its iss must be {settings.issuer}"
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"the token lacks the required {exc.claim} claim (required: {', '.join(REQUIRED_CLAIMS)})"
        if isinstance(exc, jwt.InvalidSignatureError):
            return "the token's signature does not verify with the issuer's key"
        if isinstance(exc, jwt.InvalidAlgorithmError):
            return "the token's algorithm does not match its key"
        if isinstance(exc, jwt.InvalidKeyError):
            return "the issuer's key for this token is refused (too weak)"
        if isinstance(exc, jwt.DecodeError):
            return "the token is malformed"
        return "the token is invalid"

    # Keys ---------------------------------------------------------------------------------------

    async def _key_for(self, kid: str | None, alg: str) -> PyJWK:
        realm = self.settings.realm
        keys = self._keys
        if keys is not None:
            key = keys.find(kid, alg)
            if key is not None:
                self._refresh_if_old()
                return key
            if kid is None or keys.knows(kid):  # re-reading the same keys would not help
                raise Unauthorized(_no_key(keys, kid, alg), realm=realm)
        # No keys yet, or a kid we do not know: the issuer may have rotated its keys.
        try:
            await self._refresh(force=False)
        except KeySetError:  # logged by _refresh_done, with the cause the client must not see
            raise KeysUnavailable("the issuer's signing keys could not be fetched; retry later", realm=realm) from None
        keys = self._keys
        if keys is None:  # a recent fetch failed and the next one is not due yet
            raise KeysUnavailable("the issuer's signing keys could not be fetched; retry later", realm=realm)
        key = keys.find(kid, alg)
        if key is None:
            raise Unauthorized(_no_key(keys, kid, alg), realm=realm)
        return key

    async def _refresh(self, *, force: bool) -> None:
        """Join the fetch in flight, or start one unless the last began too recently."""
        task = self._refresh_task
        if task is None:
            now = self._clock()
            if (
                not force
                and self._last_attempt is not None
                and now - self._last_attempt < self.settings.jwks_min_refresh_seconds
            ):
                return
            self._last_attempt = now
            task = self._refresh_task = asyncio.get_running_loop().create_task(self._load())
            task.add_done_callback(self._refresh_done)
        # Shielded: one caller giving up (a client disconnecting) must not cancel everyone's fetch.
        await asyncio.shield(task)

    def _refresh_if_old(self) -> None:
        """Start a background refresh when the keys are past their age (requests go on meanwhile)."""
        if self._loaded_at is None or self._refresh_task is not None:
            return
        now = self._clock()
        if now - self._loaded_at < self.settings.jwks_max_age_seconds:
            return
        if self._last_attempt is not None and now - self._last_attempt < self.settings.jwks_min_refresh_seconds:
            return
        self._last_attempt = now
        self._refresh_task = asyncio.get_running_loop().create_task(self._load())
        self._refresh_task.add_done_callback(self._refresh_done)

    def _refresh_done(self, task: asyncio.Task[None]) -> None:
        self._refresh_task = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("refreshing signing keys from %s failed: %s", self._source, task.exception())

    async def _load(self) -> None:
        timeout = self.settings.jwks_timeout_seconds
        try:
            # The thread bounds its own reads; this bounds the wait even if DNS hangs.
            keys = await asyncio.wait_for(asyncio.to_thread(self._read_keys), timeout + 1)
        except TimeoutError:
            raise KeySetError(f"fetching the JWKS took longer than {timeout:g} s") from None
        self._install(keys)

    def _read_keys(self) -> _KeySet:
        settings = self.settings
        if settings.jwks_file is not None:
            try:
                data = settings.jwks_file.read_bytes()
            except OSError as exc:
                raise KeySetError(f"the JWKS file {settings.jwks_file} cannot be read: {exc.strerror}") from None
        else:
            assert settings.jwks_url is not None
            data = _read_url(settings.jwks_url, settings.jwks_timeout_seconds)
        try:
            return _parse_jwks(data, settings.algorithms)
        except KeySetError as exc:
            raise KeySetError(f"{self._source}: {exc}") from None

    def _install(self, keys: _KeySet) -> None:
        self._keys = keys
        self._loaded_at = self._clock()
        log.info(
            "loaded %d signing key(s) from %s (kid: %s)",
            len(keys.keys),
            self._source,
            ", ".join(str(kid) for kid in keys.kids),
        )


__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "AuthConfigError",
    "AuthError",
    "AuthSettings",
    "Authenticator",
    "ENV_VARS",
    "Forbidden",
    "InvalidClaims",
    "KeySetError",
    "KeysUnavailable",
    "NO_WALLETS",
    "Principal",
    "Unauthorized",
    "WalletRule",
    "from_env",
    "jwks_url_problem",
]
