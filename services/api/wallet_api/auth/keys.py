"""The key set (JWKS): fetched from its URL or file, parsed, only acceptable signing keys kept."""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWK

from wallet_api.auth.errors import (
    KeySetError,
)
from wallet_api.auth.settings import (
    _CURVE,
    _KEY_TYPE,
    MAX_JWKS_BYTES,
    MIN_RSA_BITS,
    _is_loopback,
    jwks_url_problem,
)

log = logging.getLogger("wallet_api.auth")


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
