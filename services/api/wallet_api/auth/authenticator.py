"""The authenticator: a request's bearer token checked against the key set, then its scope and wallet."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import jwt
from jwt import PyJWK

from wallet_api.auth.errors import (
    Forbidden,
    InvalidClaims,
    KeySetError,
    KeysUnavailable,
    Unauthorized,
)
from wallet_api.auth.keys import _KeySet, _no_key, _parse_jwks, _read_url
from wallet_api.auth.settings import (
    _ALG_NAME,
    _COMPACT_JWS,
    _WALLET_ID,
    REQUIRED_CLAIMS,
    WALLET_ID_MAX_LENGTH,
    AuthSettings,
)
from wallet_api.auth.wallets import Principal

log = logging.getLogger("wallet_api.auth")


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
