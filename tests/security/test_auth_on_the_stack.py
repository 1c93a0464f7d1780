"""Who may deposit and read: bearer tokens on the running stack (WALLET_AUTH=jwt).

Every refused request gets its 401/403 and leaves the deposit topic as it was.
"""

from __future__ import annotations

import json

import pytest
from security_support import count_records, deposit, read
from support import read_topic, wait_for

from walletkit.wallet.wallet_pb2 import DepositRequest


@pytest.fixture(scope="module")
def stack(module_cluster, issuer):
    module_cluster.extra_env.update(issuer.env())
    module_cluster.start_all()
    return module_cluster, module_cluster.services["api-0"]


def test_without_a_token_nothing_is_served(stack):
    cluster, api = stack
    before = count_records(cluster.broker.bootstrap)
    for status, doc, headers in (deposit(api.port, "alice-1", 10), read(api.port, "alice-1")):
        assert status == 401, doc
        assert headers["www-authenticate"].startswith('Bearer realm="wallet"')
    assert count_records(cluster.broker.bootstrap) == before


@pytest.mark.parametrize(
    "case",
    ["expired", "wrong audience", "wrong issuer", "wrong key", "alg none", "hmac with the public key", "garbage"],
)
def test_a_bad_token_is_401_and_emits_nothing(stack, issuer, case):
    import jwt
    from cryptography.hazmat.primitives import serialization

    cluster, api = stack
    tokens = {
        "expired": lambda: issuer.token(ttl=-120),
        "wrong audience": lambda: issuer.token(aud="another-api"),
        "wrong issuer": lambda: issuer.token(iss="https://evil.test/"),
        "wrong key": lambda: issuer.token(key=issuer.stranger),
        "alg none": lambda: jwt.encode({"iss": "x", "sub": "alice", "wallets": ["*"]}, None, algorithm="none"),
        "hmac with the public key": lambda: _hmac_with_public_key(issuer, serialization),
        "garbage": lambda: "not.a.token",
    }
    token = tokens[case]()
    before = count_records(cluster.broker.bootstrap, "alice-bad")
    status, doc, headers = deposit(api.port, "alice-bad", 10, token=token)
    assert status == 401, (case, doc)
    assert 'error="invalid_token"' in headers["www-authenticate"], headers
    assert token not in json.dumps(doc), "the token is never echoed"
    assert read(api.port, "alice-bad", token=token)[0] == 401
    assert count_records(cluster.broker.bootstrap, "alice-bad") == before


def _hmac_with_public_key(issuer, serialization) -> str:
    """HS256 signed with the issuer's public key as the secret (the classic key-confusion attack)."""
    import base64
    import hashlib
    import hmac

    import jwt

    pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    head = enc(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    good = jwt.decode(issuer.token(), options={"verify_signature": False})
    body = enc(json.dumps(good).encode())
    sig = enc(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def test_scope_and_wallet_rules_are_403_and_emit_nothing(stack, issuer):
    cluster, api = stack
    before = count_records(cluster.broker.bootstrap)
    reader = issuer.token(scope="wallet:read")
    status, doc, headers = deposit(api.port, "alice-1", 10, token=reader)
    assert status == 403 and 'error="insufficient_scope"' in headers["www-authenticate"], doc
    # Another principal's wallet, for deposits and for reads.
    assert deposit(api.port, "bob-1", 10, token=issuer.token())[0] == 403
    assert read(api.port, "bob-1", token=issuer.token())[0] == 403
    # No wallets claim: no wallet at all (deny by default).
    assert deposit(api.port, "alice-1", 10, token=issuer.token(wallets=None))[0] == 403
    assert count_records(cluster.broker.bootstrap) == before


def test_an_accepted_deposit_names_its_principal_in_the_record_and_the_audit_log(stack, issuer):
    cluster, api = stack
    token = issuer.token("alice")
    status, receipt, _ = deposit(api.port, "alice-7", 8000, token=token)
    assert status == 202, receipt
    status, doc, _ = read(api.port, "alice-7", token=token, consistency=receipt["ConsistencyToken"])
    assert status == 200 and doc == {"WalletID": "alice-7", "Balance": 8000, "AboveThreshold": False}
    records = [
        DepositRequest.FromString(v)
        for _p, _o, k, v in read_topic(cluster.broker.bootstrap, "deposit")
        if k == b"alice-7"
    ]
    assert [r.Principal for r in records] == ["alice"]
    audit = [
        json.loads(line)
        for line in api.log_path.read_text().splitlines()
        if line.startswith("{") and '"wallet_api.audit"' in line
    ]
    line = next(a for a in audit if a.get("deposit_id") == receipt["DepositID"])
    assert line["principal"] == "alice" and line["wallet_id"] == "alice-7" and line["amount"] == "8000"


def test_idempotency_keys_belong_to_their_principal(stack, issuer):
    cluster, api = stack
    alice, mallory = issuer.token("alice", wallets=["shared-*"]), issuer.token("mallory", wallets=["shared-*"])
    first = deposit(api.port, "shared-1", 5, token=alice, key="order-1")
    assert first[0] == 202, first
    # The same key from someone else is their own deposit: neither replayed nor a conflict.
    other = deposit(api.port, "shared-1", 7, token=mallory, key="order-1")
    assert other[0] == 202 and "idempotent-replayed" not in other[2], other
    assert other[1]["DepositID"] != first[1]["DepositID"]
    # Alice's retry is hers: replayed, charged once.
    retry = deposit(api.port, "shared-1", 5, token=alice, key="order-1")
    assert retry[0] == 202 and retry[1]["DepositID"] == first[1]["DepositID"], retry
    wait_for(lambda: read(api.port, "shared-1", token=alice)[1].get("Balance") == 12, 30, "5 + 7 applied once each")
