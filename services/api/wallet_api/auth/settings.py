"""The authentication settings (WALLET_AUTH_*), checked when the API starts: what it trusts and accepts."""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wallet_api.auth.errors import _QUOTABLE, AuthConfigError

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
# Three base64url segments; the signature may be empty (alg "none"), which is refused later
# with a message that says why.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_ALG_NAME = re.compile(r"[A-Za-z0-9+-]{1,16}")


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
