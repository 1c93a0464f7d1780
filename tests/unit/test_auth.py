"""Bearer-token authentication and authorization (wallet_api.auth).

Real keys (cryptography), real tokens (PyJWT), a real JWKS file and, for the URL
source, a real HTTP server on 127.0.0.1. Nothing is mocked but the refresh clock.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import http.server
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from wallet_api.auth import (
    AuthConfigError,
    Authenticator,
    AuthSettings,
    Forbidden,
    KeySetError,
    KeysUnavailable,
    Principal,
    Unauthorized,
    WalletRule,
    from_env,
)
from walletkit.devstack.net import free_port

ISSUER = "https://issuer.example/realms/wallet"
AUDIENCE = "wallet-api"
ALL_SCOPES = "wallet:deposit wallet:read"


# --- keys and tokens ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def rsa_other() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"use": "sig", "alg": "RS256"}, **extra)
    if kid is not None:
        jwk["kid"] = kid
    return {k: v for k, v in jwk.items() if v is not None}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "use": "sig", "alg": "ES256"}, **extra)
    return jwk


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "exp": now + 300,
        "scope": ALL_SCOPES,
        "wallets": ["acme-*", "walletID001"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Any, alg: str = "RS256", kid: str | None = "rsa-1", **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"


def write_jwks(path: Path, *keys: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(keys)}))
    return path


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def jwks_path(tmp_path: Path, rsa_key, ec_key) -> Path:
    return write_jwks(tmp_path / "jwks.json", rsa_jwk(rsa_key, "rsa-1"), ec_jwk(ec_key, "ec-1"))


def file_settings(path: Path, **overrides: Any) -> AuthSettings:
    return AuthSettings(**{"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": path, **overrides})


@pytest.fixture
def auth(jwks_path: Path) -> Authenticator:
    return Authenticator(file_settings(jwks_path))


async def refused(auth: Authenticator, header: str | None, token: str | None = None) -> Unauthorized:
    """The Unauthorized ``header`` gets, checked not to repeat the token."""
    with pytest.raises(Unauthorized) as caught:
        await auth.authenticate(header)
    exc = caught.value
    assert exc.status == 401
    secret = token if token is not None else (header or "").partition(" ")[2]
    if len(secret) >= 8:
        assert secret not in str(exc) and secret not in exc.www_authenticate
        assert secret.split(".")[0] not in exc.www_authenticate
    return exc


# --- valid tokens ---------------------------------------------------------------------------------


async def test_valid_rs256_token_gives_its_principal(auth, rsa_key):
    principal = await auth.authenticate(bearer(sign(rsa_key)))
    assert principal.subject == "user-1"
    assert principal.scopes == frozenset({"wallet:deposit", "wallet:read"})
    assert principal.may_touch("walletID001") and principal.may_touch("acme-7")
    assert not principal.may_touch("walletID002")


async def test_valid_es256_token(auth, ec_key):
    principal = await auth.authenticate(bearer(sign(ec_key, "ES256", kid="ec-1", sub="user-ec")))
    assert principal.subject == "user-ec"


async def test_scheme_is_case_insensitive_and_scp_list_counts(auth, rsa_key):
    token = sign(rsa_key, scope=None, scp=["wallet:read"])
    principal = await auth.authenticate(f"bearer  {token}")
    assert principal.scopes == frozenset({"wallet:read"})


async def test_audience_list_that_includes_ours(auth, rsa_key):
    principal = await auth.authenticate(bearer(sign(rsa_key, aud=["other-api", AUDIENCE])))
    assert principal.subject == "user-1"


async def test_single_key_without_kid_is_used_for_a_token_without_kid(tmp_path, rsa_key):
    auth = Authenticator(file_settings(write_jwks(tmp_path / "one.json", rsa_jwk(rsa_key, None))))
    assert (await auth.authenticate(bearer(sign(rsa_key, kid=None)))).subject == "user-1"


async def test_token_without_kid_is_refused_when_the_issuer_has_several_keys(auth, rsa_key):
    exc = await refused(auth, bearer(sign(rsa_key, kid=None)))
    assert "no kid" in str(exc)


# --- time claims and leeway -----------------------------------------------------------------------


async def test_expired_beyond_leeway_is_refused(auth, rsa_key):
    now = int(time.time())
    exc = await refused(auth, bearer(sign(rsa_key, iat=now - 600, exp=now - 60)))
    assert "expired" in str(exc)
    assert exc.www_authenticate == (
        'Bearer realm="wallet", error="invalid_token", error_description="the token has expired"'
    )


async def test_expired_within_leeway_is_accepted(auth, rsa_key):
    now = int(time.time())
    principal = await auth.authenticate(bearer(sign(rsa_key, iat=now - 600, exp=now - 10)))
    assert principal.subject == "user-1"


async def test_leeway_is_configurable(jwks_path, rsa_key):
    auth = Authenticator(file_settings(jwks_path, leeway_seconds=0))
    now = int(time.time())
    await refused(auth, bearer(sign(rsa_key, iat=now - 600, exp=now - 10)))


async def test_nbf_in_the_future_is_refused_and_within_leeway_accepted(auth, rsa_key):
    now = int(time.time())
    exc = await refused(auth, bearer(sign(rsa_key, nbf=now + 120)))
    assert "not valid yet" in str(exc)
    assert (await auth.authenticate(bearer(sign(rsa_key, nbf=now + 10)))).subject == "user-1"


async def test_iat_in_the_future_is_refused(auth, rsa_key):
    exc = await refused(auth, bearer(sign(rsa_key, iat=int(time.time()) + 600)))
    assert "not valid yet" in str(exc)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["{soon}", "{soon}.0", True, [0]])
async def test_time_claims_must_be_json_numbers(auth, rsa_key, claim, value):
    """RFC 7519 NumericDate: ``"exp": "1799999999"`` is a string, refused although PyJWT reads it."""
    soon = int(time.time()) + (300 if claim == "exp" else -60)
    if isinstance(value, str):
        value = value.format(soon=soon)
    exc = await refused(auth, bearer(sign(rsa_key, **{claim: value})))
    assert "invalid_token" in exc.www_authenticate
    # The same time as a number is accepted.
    assert (await auth.authenticate(bearer(sign(rsa_key, **{claim: soon})))).subject == "user-1"


@pytest.mark.parametrize("claim", ["exp", "iss", "aud", "sub"])
async def test_required_claims(auth, rsa_key, claim):
    exc = await refused(auth, bearer(sign(rsa_key, **{claim: None})))
    assert f"required {claim} claim" in str(exc)


async def test_empty_subject_is_refused(auth, rsa_key):
    exc = await refused(auth, bearer(sign(rsa_key, sub="")))
    assert "sub" in str(exc)


# --- issuer, audience, signature, keys ------------------------------------------------------------


async def test_wrong_audience(auth, rsa_key):
    exc = await refused(auth, bearer(sign(rsa_key, aud="another-api")))
    assert "aud must name wallet-api" in str(exc)


async def test_wrong_issuer(auth, rsa_key):
    exc = await refused(auth, bearer(sign(rsa_key, iss="https://evil.example/")))
    assert f"iss must be {ISSUER}" in str(exc)


async def test_signed_by_another_key_with_the_same_kid(auth, rsa_other):
    exc = await refused(auth, bearer(sign(rsa_other, kid="rsa-1")))
    assert "signature does not verify" in str(exc)


async def test_tampered_payload_is_refused(auth, rsa_key):
    header, _, signature = sign(rsa_key).split(".")
    forged = f"{header}.{b64(json.dumps(claims(sub='admin')).encode())}.{signature}"
    exc = await refused(auth, bearer(forged))
    assert "signature does not verify" in str(exc)


async def test_unknown_kid(auth, rsa_other):
    exc = await refused(auth, bearer(sign(rsa_other, kid="nobody-knows-me")))
    assert "kid" in str(exc) and "not among" in str(exc)
    assert "nobody-knows-me" not in exc.www_authenticate


async def test_alg_none_token_is_refused(auth):
    token = unsigned({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims())
    exc = await refused(auth, bearer(token))
    assert "'none'" in str(exc) and "not accepted" in str(exc)


@pytest.mark.parametrize("configured", [("RS256", "ES256"), ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")])
async def test_hs256_signed_with_the_public_key_pem_is_refused(jwks_path, rsa_key, configured):
    # The classic confusion attack: a verifier that let the token pick HMAC would take the
    # public key (which anyone can fetch) as the shared secret.
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': 'rsa-1'}).encode())}."
        f"{b64(json.dumps(claims()).encode())}"
    )
    token = f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"
    auth = Authenticator(file_settings(jwks_path, algorithms=configured))
    exc = await refused(auth, bearer(token))
    assert "'HS256'" in str(exc) and "not accepted" in str(exc)
    # And PyJWT itself, below our own check, refuses the key for HMAC.
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(token, pem, algorithms=list(configured), audience=AUDIENCE)


async def test_alg_not_configured_is_refused(jwks_path, ec_key):
    auth = Authenticator(file_settings(jwks_path, algorithms=("RS256",)))
    exc = await refused(auth, bearer(sign(ec_key, "ES256", kid="ec-1")))
    assert "'ES256'" in str(exc) and "accepted: RS256" in str(exc)


async def test_token_alg_must_match_the_keys_alg(auth, rsa_key):
    # rsa-1 is published with alg RS256; an RS512 token naming it must not be checked with it.
    auth = Authenticator(dataclasses.replace(auth.settings, algorithms=("RS256", "RS512")))
    exc = await refused(auth, bearer(sign(rsa_key, "RS512")))
    assert "does not sign with RS512" in str(exc)


async def test_keys_not_for_signing_are_not_used(tmp_path, rsa_key, ec_key):
    path = write_jwks(tmp_path / "jwks.json", rsa_jwk(rsa_key, "enc-1", use="enc"), ec_jwk(ec_key, "ec-1"))
    auth = Authenticator(file_settings(path))
    assert auth.key_ids == ("ec-1",)
    await refused(auth, bearer(sign(rsa_key, kid="enc-1")))


async def test_key_type_must_fit_the_token_alg(tmp_path, rsa_key, ec_key):
    # An EC key published under a kid that an RS256 token names: not a usable pair.
    ec_as_rsa_kid = ec_jwk(ec_key, "shared")
    del ec_as_rsa_kid["alg"]
    auth = Authenticator(file_settings(write_jwks(tmp_path / "jwks.json", ec_as_rsa_kid, rsa_jwk(rsa_key, "rsa-1"))))
    exc = await refused(auth, bearer(sign(rsa_key, kid="shared")))
    assert "does not sign with RS256" in str(exc)


async def test_a_jwks_with_no_usable_key_fails_at_start(tmp_path, rsa_key):
    private = RSAAlgorithm.to_jwk(rsa_key, as_dict=True)
    weak = rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024), "weak")
    path = write_jwks(
        tmp_path / "jwks.json", {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}, weak, dict(private, kid="leaked")
    )
    with pytest.raises(KeySetError) as caught:
        Authenticator(file_settings(path))
    message = str(caught.value)
    assert str(path) in message and "no key usable" in message
    assert "1024 bits" in message and "private key material" in message


@pytest.mark.parametrize("content", [None, "not json", '{"keys": "nope"}', '{"keys": []}'])
def test_a_missing_or_broken_jwks_file_fails_at_start(tmp_path, content):
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KeySetError) as caught:
        Authenticator(file_settings(path))
    assert str(path) in str(caught.value)


async def test_reload_picks_up_a_rotated_file(jwks_path, rsa_key, rsa_other):
    auth = Authenticator(file_settings(jwks_path))
    await refused(auth, bearer(sign(rsa_other, kid="rsa-2")))
    write_jwks(jwks_path, rsa_jwk(rsa_other, "rsa-2"))
    assert await auth.reload() == 1
    assert (await auth.authenticate(bearer(sign(rsa_other, kid="rsa-2")))).subject == "user-1"
    await refused(auth, bearer(sign(rsa_key, kid="rsa-1")))  # withdrawn with the rotation


async def test_a_failed_reload_keeps_the_keys(jwks_path, rsa_key):
    auth = Authenticator(file_settings(jwks_path))
    jwks_path.write_text("{")
    with pytest.raises(KeySetError):
        await auth.reload()
    assert (await auth.authenticate(bearer(sign(rsa_key)))).subject == "user-1"


# --- the Authorization header ---------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   ", "Basic dXNlcjpwYXNz", "Digest username=x"])
async def test_no_bearer_credentials_get_the_bare_challenge(auth, header):
    exc = await refused(auth, header)
    assert exc.www_authenticate == 'Bearer realm="wallet"'
    assert "Bearer" in str(exc)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer garbage",
        "Bearer a.b",
        "Bearer a.b.c.d",
        "Bearer not@base64.x.y",
        "Bearer e30.e30.!!",
    ],
)
async def test_malformed_bearer_tokens(auth, header):
    exc = await refused(auth, header)
    assert exc.error == "invalid_token"
    assert exc.www_authenticate.startswith('Bearer realm="wallet", error="invalid_token", error_description="')


async def test_header_that_is_not_json(auth):
    exc = await refused(auth, bearer(f"{b64(b'not json')}.{b64(b'{}')}.{b64(b'sig')}"))
    assert "malformed" in str(exc)


async def test_oversize_header_is_refused_before_parsing(auth, rsa_key):
    token = sign(rsa_key, padding="x" * 9000)
    exc = await refused(auth, bearer(token))
    assert "longer than 8192" in str(exc)


# --- authorization --------------------------------------------------------------------------------


async def test_authorize_allows_scope_and_wallet(auth, rsa_key):
    principal = await auth.authenticate(bearer(sign(rsa_key)))
    auth.authorize(principal, auth.settings.deposit_scope, "walletID001")
    auth.authorize(principal, auth.settings.read_scope, "acme-1")


async def test_missing_scope_is_forbidden(auth, rsa_key):
    principal = await auth.authenticate(bearer(sign(rsa_key, scope="wallet:read")))
    with pytest.raises(Forbidden) as caught:
        auth.authorize(principal, "wallet:deposit", "walletID001")
    exc = caught.value
    assert exc.status == 403 and "wallet:deposit" in str(exc)
    assert exc.www_authenticate == (
        'Bearer realm="wallet", error="insufficient_scope", '
        'error_description="the token lacks the scope wallet:deposit", '
        'scope="wallet:deposit"'
    )


async def test_other_wallet_is_forbidden(auth, rsa_key):
    principal = await auth.authenticate(bearer(sign(rsa_key)))
    with pytest.raises(Forbidden) as caught:
        auth.authorize(principal, "wallet:read", "walletID002")
    assert "walletID002" in str(caught.value)
    assert 'error="insufficient_scope"' in caught.value.www_authenticate


async def test_no_wallets_claim_may_touch_no_wallet(auth, rsa_key):
    principal = await auth.authenticate(bearer(sign(rsa_key, wallets=None)))
    assert not principal.may_touch("walletID001")
    with pytest.raises(Forbidden):
        auth.authorize(principal, "wallet:read", "walletID001")
    auth.authorize(principal, "wallet:read")  # the scope alone is there


async def test_wallets_claim_name_is_configurable(jwks_path, rsa_key):
    auth = Authenticator(file_settings(jwks_path, wallets_claim="https://wallet.example/wallets"))
    principal = await auth.authenticate(
        bearer(sign(rsa_key, wallets=None, **{"https://wallet.example/wallets": ["w1"]}))
    )
    assert principal.may_touch("w1") and not principal.may_touch("walletID001")


@pytest.mark.parametrize("wallets", ["acme-*", [1], ["ac(me"], ["x" * 65], [""]])
async def test_malformed_wallets_claim_is_refused(auth, rsa_key, wallets):
    exc = await refused(auth, bearer(sign(rsa_key, wallets=wallets)))
    assert "wallets claim" in str(exc)


@pytest.mark.parametrize(
    ("pattern", "allowed", "denied"),
    [
        ("acme-*", ["acme-1", "acme-", "acme-a.b:c"], ["acme", "acm", "xacme-1", "ACME-1"]),
        ("*-eu", ["shop-eu", "-eu"], ["shop-us", "shop-eu1"]),
        ("a*b*c", ["abc", "a-b-c", "abbc", "aXbYbZc"], ["ab", "acb", "abcd"]),
        ("ab*ba", ["abba", "ab-ba"], ["aba"]),
        # '.' is literal, never "any character": the pattern is not a regular expression.
        ("acme.*", ["acme.1"], ["acmeX1", "acme-1"]),
        ("*", ["anything", "w:1"], ["", "has space", "acme-*"]),
        ("walletID001", ["walletID001"], ["walletID0011", "walletid001"]),
        ("a**b", ["ab", "a-b"], ["a"]),
    ],
)
def test_wallet_patterns(pattern, allowed, denied):
    principal = Principal("p", frozenset(), WalletRule((pattern,)))
    assert [w for w in allowed if principal.may_touch(w)] == allowed
    assert [w for w in denied if principal.may_touch(w)] == []


def test_pattern_matching_does_not_backtrack():
    rule = WalletRule(("*a" * 31 + "b",))
    started = time.perf_counter()
    assert not rule.allows("a" * 64)
    assert time.perf_counter() - started < 0.05


# --- settings and environment ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithms", "says"),
    [
        (("HS256",), "shared-secret"),
        (("RS256", "HS512"), "shared-secret"),
        (("none",), "unsigned"),
        (("ES512",), "not supported"),
        ((), "at least one"),
    ],
)
def test_settings_refuse_algorithms(tmp_path, algorithms, says):
    with pytest.raises(AuthConfigError) as caught:
        file_settings(tmp_path, algorithms=algorithms)
    assert caught.value.setting == "algorithms" and says in str(caught.value)
    assert "accepted: RS256, RS384, RS512, ES256, ES384, PS256" in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"leeway_seconds": 301}, "leeway_seconds"),
        ({"leeway_seconds": -1}, "leeway_seconds"),
        ({"issuer": ""}, "issuer"),
        ({"audience": " "}, "audience"),
        ({"deposit_scope": "wallet deposit"}, "deposit_scope"),
        ({"wallets_claim": ""}, "wallets_claim"),
        ({"jwks_url": "https://issuer.example/jwks"}, "jwks"),
    ],
)
def test_settings_refuse_bad_values(tmp_path, changes, setting):
    with pytest.raises(AuthConfigError) as caught:
        file_settings(tmp_path, **changes)
    assert caught.value.setting == setting


@pytest.mark.parametrize(
    "url", ["http://issuer.example/jwks", "file:///etc/passwd", "ftp://x/jwks", "https://", "not a url"]
)
def test_settings_refuse_unsafe_jwks_urls(url):
    with pytest.raises(AuthConfigError) as caught:
        AuthSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=url)
    assert caught.value.setting == "jwks_url"


def test_settings_defaults_and_loopback_http():
    settings = AuthSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url="http://127.0.0.1:9/jwks")
    assert settings.algorithms == ("RS256", "ES256") and settings.leeway_seconds == 30
    assert (settings.deposit_scope, settings.read_scope, settings.wallets_claim) == (
        "wallet:deposit",
        "wallet:read",
        "wallets",
    )
    AuthSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url="https://issuer.example/jwks")


JWT_ENV = {
    "WALLET_AUTH": "jwt",
    "WALLET_AUTH_ISSUER": ISSUER,
    "WALLET_AUTH_AUDIENCE": AUDIENCE,
    "WALLET_AUTH_JWKS_URL": "https://issuer.example/protocol/openid-connect/certs",
}


def test_from_env_off():
    assert from_env({}) is None
    assert from_env({"WALLET_AUTH": "none", "WALLET_AUTH_ISSUER": ISSUER}) is None
    assert from_env({"WALLET_AUTH": " NONE "}) is None


def test_from_env_jwt():
    settings = from_env(
        {
            **JWT_ENV,
            "WALLET_AUTH_ALGORITHMS": "ES256, PS256",
            "WALLET_AUTH_LEEWAY_SECONDS": "5",
            "WALLET_AUTH_DEPOSIT_SCOPE": "deposit",
            "WALLET_AUTH_READ_SCOPE": "read",
            "WALLET_AUTH_WALLETS_CLAIM": "wids",
        }
    )
    assert settings is not None
    assert (settings.issuer, settings.audience, settings.jwks_url, settings.jwks_file) == (
        ISSUER,
        AUDIENCE,
        JWT_ENV["WALLET_AUTH_JWKS_URL"],
        None,
    )
    assert settings.algorithms == ("ES256", "PS256") and settings.leeway_seconds == 5
    assert (settings.deposit_scope, settings.read_scope, settings.wallets_claim) == ("deposit", "read", "wids")
    file_env = {**JWT_ENV, "WALLET_AUTH_JWKS_URL": "", "WALLET_AUTH_JWKS_FILE": "/etc/wallet/jwks.json"}
    assert from_env(file_env).jwks_file == Path("/etc/wallet/jwks.json")


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({"WALLET_AUTH": "oidc"}, "WALLET_AUTH", "must be none or jwt"),
        ({"WALLET_AUTH_ISSUER": ISSUER}, "WALLET_AUTH", "WALLET_AUTH_ISSUER is set"),
        ({**JWT_ENV, "WALLET_AUTH_ISSUER": ""}, "WALLET_AUTH_ISSUER", "required"),
        ({**JWT_ENV, "WALLET_AUTH_AUDIENCE": None}, "WALLET_AUTH_AUDIENCE", "required"),
        ({**JWT_ENV, "WALLET_AUTH_JWKS_URL": None}, "WALLET_AUTH_JWKS_URL or WALLET_AUTH_JWKS_FILE", "exactly one"),
        ({**JWT_ENV, "WALLET_AUTH_JWKS_FILE": "/x"}, "WALLET_AUTH_JWKS_URL or WALLET_AUTH_JWKS_FILE", "exactly one"),
        ({**JWT_ENV, "WALLET_AUTH_JWKS_URL": "http://issuer.example/certs"}, "WALLET_AUTH_JWKS_URL", "https"),
        ({**JWT_ENV, "WALLET_AUTH_ALGORITHMS": "RS256,HS256"}, "WALLET_AUTH_ALGORITHMS", "HS256"),
        ({**JWT_ENV, "WALLET_AUTH_ALGORITHMS": " , "}, "WALLET_AUTH_ALGORITHMS", "at least one"),
        ({**JWT_ENV, "WALLET_AUTH_LEEWAY_SECONDS": "thirty"}, "WALLET_AUTH_LEEWAY_SECONDS", "0 to 300"),
        ({**JWT_ENV, "WALLET_AUTH_LEEWAY_SECONDS": "3600"}, "WALLET_AUTH_LEEWAY_SECONDS", "0 to 300"),
        ({**JWT_ENV, "WALLET_AUTH_READ_SCOPE": "a b"}, "WALLET_AUTH_READ_SCOPE", "one scope name"),
    ],
)
def test_from_env_errors_name_the_variable(env, variable, says):
    env = {k: v for k, v in env.items() if v is not None}
    with pytest.raises(AuthConfigError) as caught:
        from_env(env)
    assert caught.value.setting == variable
    assert str(caught.value).startswith(f"{variable}: ") and says in str(caught.value)


# --- keys from a URL ------------------------------------------------------------------------------


class JwksServer:
    """An HTTP server on 127.0.0.1 serving a JWKS that tests change, counting fetches."""

    def __init__(self, *keys: dict[str, Any]) -> None:
        self.body = b""
        self.status = 200
        self.delay = 0.0
        self.fetches = 0
        self.lock = threading.Lock()
        self.set_keys(*keys)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer.lock:
                    outer.fetches += 1
                    body, status, delay = outer.body, outer.status, outer.delay
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/certs"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="jwks-server", daemon=True)
        self.thread.start()

    def set_keys(self, *keys: dict[str, Any]) -> None:
        with self.lock:
            self.body = json.dumps({"keys": list(keys)}).encode()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server(rsa_key):
    s = JwksServer(rsa_jwk(rsa_key, "rsa-1"))
    yield s
    s.stop()


def url_auth(url: str, clock: Clock, **overrides: Any) -> Authenticator:
    settings = AuthSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=url, **overrides)
    return Authenticator(settings, clock=clock)


async def test_url_keys_are_fetched_once_and_cached(server, rsa_key):
    auth = url_auth(server.url, Clock())
    await auth.start()
    for _ in range(5):
        assert (await auth.authenticate(bearer(sign(rsa_key)))).subject == "user-1"
    assert server.fetches == 1


async def test_url_keys_are_fetched_on_the_first_token_without_start(server, rsa_key):
    auth = url_auth(server.url, Clock())
    assert server.fetches == 0
    assert (await auth.authenticate(bearer(sign(rsa_key)))).subject == "user-1"
    assert server.fetches == 1


async def test_key_rotation_is_picked_up_on_an_unknown_kid(server, rsa_key, rsa_other):
    clock = Clock()
    auth = url_auth(server.url, clock)
    await auth.start()
    server.set_keys(rsa_jwk(rsa_key, "rsa-1"), rsa_jwk(rsa_other, "rsa-2"))
    clock.now += 31  # past the refresh interval since the first fetch
    assert (await auth.authenticate(bearer(sign(rsa_other, kid="rsa-2")))).subject == "user-1"
    assert server.fetches == 2
    assert set(auth.key_ids) == {"rsa-1", "rsa-2"}


async def test_unknown_kids_refresh_at_most_once_per_interval(server, rsa_key, rsa_other):
    clock = Clock()
    auth = url_auth(server.url, clock)
    await auth.start()
    clock.now += 31
    random_kid_tokens = [bearer(sign(rsa_other, kid=uuid.uuid4().hex)) for _ in range(50)]
    for header in random_kid_tokens[:25]:
        await refused(auth, header)
    results = await asyncio.gather(*(auth.authenticate(h) for h in random_kid_tokens[25:]), return_exceptions=True)
    assert all(isinstance(r, Unauthorized) and not isinstance(r, KeysUnavailable) for r in results)
    assert server.fetches == 2  # the start, and one refresh for the whole flood
    # A key rotated in meanwhile waits for the interval to pass, then is picked up.
    server.set_keys(rsa_jwk(rsa_key, "rsa-1"), rsa_jwk(rsa_other, "rsa-2"))
    await refused(auth, bearer(sign(rsa_other, kid="rsa-2")))
    clock.now += 31
    assert (await auth.authenticate(bearer(sign(rsa_other, kid="rsa-2")))).subject == "user-1"
    assert server.fetches == 3
    # Known keys never cause a fetch.
    await auth.authenticate(bearer(sign(rsa_key)))
    assert server.fetches == 3


async def test_concurrent_requests_share_one_fetch(server, rsa_key, rsa_other):
    clock = Clock()
    auth = url_auth(server.url, clock)
    await auth.start()
    server.set_keys(rsa_jwk(rsa_key, "rsa-1"), rsa_jwk(rsa_other, "rsa-2"))
    server.delay = 0.3
    clock.now += 31
    headers = [bearer(sign(rsa_other, kid="rsa-2")) for _ in range(20)]
    principals = await asyncio.gather(*(auth.authenticate(h) for h in headers))
    assert [p.subject for p in principals] == ["user-1"] * 20
    assert server.fetches == 2


async def test_cancelled_request_does_not_cancel_the_shared_fetch(server, rsa_key, rsa_other):
    clock = Clock()
    auth = url_auth(server.url, clock)
    server.set_keys(rsa_jwk(rsa_other, "rsa-2"))
    server.delay = 0.3
    first = asyncio.ensure_future(auth.authenticate(bearer(sign(rsa_other, kid="rsa-2"))))
    second = asyncio.ensure_future(auth.authenticate(bearer(sign(rsa_other, kid="rsa-2"))))
    await asyncio.sleep(0.05)
    first.cancel()
    assert (await second).subject == "user-1"
    assert first.cancelled() and server.fetches == 1


async def test_old_keys_are_refreshed_in_the_background(server, rsa_key, rsa_other):
    clock = Clock()
    auth = url_auth(server.url, clock, jwks_max_age_seconds=600)
    await auth.start()
    server.set_keys(rsa_jwk(rsa_other, "rsa-2"))  # the issuer withdrew rsa-1
    clock.now += 601
    # Served from the cache while the refresh runs, so an old key costs no latency ...
    assert (await auth.authenticate(bearer(sign(rsa_key)))).subject == "user-1"
    for _ in range(100):
        if auth.key_ids == ("rsa-2",):
            break
        await asyncio.sleep(0.02)
    assert auth.key_ids == ("rsa-2",) and server.fetches == 2
    # ... and once it lands the withdrawn key is no longer trusted.
    await refused(auth, bearer(sign(rsa_key)))


async def test_unreachable_jwks_url_is_a_401_not_a_crash(rsa_key, caplog):
    auth = url_auth(f"http://127.0.0.1:{free_port()}/certs", Clock(), jwks_timeout_seconds=2)
    await auth.start()  # logs, does not raise: the API still serves what needs no token
    exc = await refused(auth, bearer(sign(rsa_key)))
    assert isinstance(exc, KeysUnavailable)
    assert "keys could not be fetched" in str(exc)
    assert "127.0.0.1" not in str(exc)  # the issuer's internal address is for the logs
    assert any("could not be reached" in r.getMessage() for r in caplog.records)


async def test_failed_fetches_are_rate_limited_too(server, rsa_key):
    clock = Clock()
    server.status = 500
    auth = url_auth(server.url, clock)
    for _ in range(10):
        exc = await refused(auth, bearer(sign(rsa_key)))
        assert isinstance(exc, KeysUnavailable)
    assert server.fetches == 1
    server.status = 200
    clock.now += 31
    assert (await auth.authenticate(bearer(sign(rsa_key)))).subject == "user-1"
    assert server.fetches == 2


@pytest.mark.parametrize("body", [b"<html>login</html>", b'{"keys": []}', b"[]"])
async def test_unusable_jwks_responses_are_a_401(server, rsa_key, body):
    server.body = body
    auth = url_auth(server.url, Clock())
    assert isinstance(await refused(auth, bearer(sign(rsa_key))), KeysUnavailable)


async def test_slow_jwks_url_times_out(server, rsa_key):
    server.delay = 3
    auth = url_auth(server.url, Clock(), jwks_timeout_seconds=0.5)
    started = time.monotonic()
    exc = await refused(auth, bearer(sign(rsa_key)))
    assert isinstance(exc, KeysUnavailable)
    assert time.monotonic() - started < 2


async def test_loopback_jwks_is_fetched_without_the_proxy(server, rsa_key, monkeypatch):
    # A proxy that does not exist: using it would fail the fetch.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    auth = url_auth(server.url, Clock())
    assert (await auth.authenticate(bearer(sign(rsa_key)))).subject == "user-1"
    assert server.fetches == 1


async def test_close_stops_a_fetch_in_flight(server, rsa_key):
    server.delay = 0.5
    auth = url_auth(server.url, Clock())
    pending = asyncio.ensure_future(auth.authenticate(bearer(sign(rsa_key))))
    await asyncio.sleep(0.1)
    await auth.close()
    with pytest.raises((Unauthorized, asyncio.CancelledError)):
        await pending
