"""What the security suite's tests share: a local issuer with real keys, raw HTTP requests."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://issuer.test/realms/wallet"
AUDIENCE = "wallet-api"


class Issuer:
    """A local OIDC issuer's key set: signs tokens; its JWKS is a file the API reads."""

    def __init__(self, path: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # not in the JWKS
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
        self.jwks_file = path
        path.write_text(json.dumps({"keys": [jwk]}))

    def env(self) -> dict[str, str]:
        return {
            "WALLET_AUTH": "jwt",
            "WALLET_AUTH_ISSUER": ISSUER,
            "WALLET_AUTH_AUDIENCE": AUDIENCE,
            "WALLET_AUTH_JWKS_FILE": str(self.jwks_file),
        }

    def token(
        self,
        sub: str = "alice",
        *,
        scope: str = "wallet:deposit wallet:read",
        wallets: Any = ("alice-*",),
        key: Any = None,
        ttl: int = 300,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "scope": scope,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        if wallets is not None:
            body["wallets"] = list(wallets)
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": "k1"})


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    source: str | None = None,
    timeout: float = 30,
) -> tuple[int, dict, dict]:
    """One HTTP request to 127.0.0.1:port (from the loopback address ``source``): (status, JSON, headers)."""
    import http.client

    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = {"raw": raw.decode(errors="replace")}
        return resp.status, doc, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def deposit(
    port: int, wallet: str, amount: Any, *, token: str | None = None, key: str | None = None, source: str | None = None
) -> tuple[int, dict, dict]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None:
        headers["Idempotency-Key"] = key
    return request(
        port, "POST", "/deposit", json.dumps({"WalletID": wallet, "Amount": amount}).encode(), headers, source=source
    )


def read(
    port: int, wallet: str, *, token: str | None = None, consistency: str | None = None, source: str | None = None
) -> tuple[int, dict, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    path = f"/details/{wallet}" + (f"?token={consistency}" if consistency else "")
    return request(port, "GET", path, headers=headers, source=source)


def count_records(bootstrap: str, wallet: str | None = None) -> int:
    from support import read_topic

    records = read_topic(bootstrap, "deposit")
    return sum(1 for _p, _o, key, _v in records if wallet is None or (key and key.decode() == wallet))
