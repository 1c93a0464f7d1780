"""One deposit followed through three services by its request id (X-Request-ID).

Real broker, the three services from their console scripts, their JSON logs read back. The
API answers every request with its id (the client's, or a new one when the client sent none
or one that is not a safe token), logs one access line per request and the audit line with
it, and carries it in the deposit record's headers; both processors log the record with it
(at debug level for walletkit.stream.processor, as an operator turns on to trace).
"""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path

import pytest
from support import wait_for

pytestmark = pytest.mark.integration

TRACE_LEVEL = "info,walletkit.stream.processor=debug"


def post(port: int, body: dict, headers: dict[str, str]) -> tuple[int, dict[str, str], dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/deposit", body=json.dumps(body), headers={"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def lines_with(log: Path, request_id: str) -> list[dict]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if request_id in line and line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_a_deposit_is_followed_by_its_request_id_through_the_api_and_both_processors(cluster):
    env = {"WALLET_LOG_LEVEL": TRACE_LEVEL}
    balance = cluster.start("balance", env=env)
    threshold = cluster.start("above_threshold", env=env)
    api = cluster.start("api")

    rid = "trace-0f3c.deposit:7"
    status, headers, doc = post(api.port, {"WalletID": "traced", "Amount": 12000}, {"X-Request-ID": rid})
    assert status == 202, doc
    assert headers["x-request-id"] == rid, "the client's id is answered back"

    def traced(log: Path, message: str) -> list[dict]:
        return [line for line in lines_with(log, rid) if line.get("request_id") == rid and message in line["msg"]]

    # The API: the access line and the audit line, both with the id.
    wait_for(lambda: bool(traced(api.log_path, "POST /deposit 202")), 10, "the API's access line")
    access = traced(api.log_path, "POST /deposit 202")[0]
    assert access["logger"] == "wallet_api.access" and access["route"] == "/deposit" and access["status"] == 202
    assert access["duration_ms"] >= 0
    assert traced(api.log_path, "deposit accepted")[0]["wallet_id"] == "traced"
    # Both processors: the record, by the same id (and above_threshold flags the wallet with it).
    wait_for(lambda: bool(traced(balance.log_path, "record processed")), 30, "the balance processor's line")
    wait_for(lambda: bool(traced(threshold.log_path, "record processed")), 30, "the above_threshold line")
    assert traced(balance.log_path, "record processed")[0]["wallet_id"] == "traced"
    assert traced(threshold.log_path, "wallet flagged above threshold"), "the flag line carries the id too"

    # No id, or one that is not a safe token: a new one, answered and logged.
    for sent in ({}, {"X-Request-ID": 'has spaces and "quotes"'}, {"X-Request-ID": "x" * 129}):
        status, headers, _ = post(api.port, {"WalletID": "traced", "Amount": 1}, sent)
        assert status == 202
        made = headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", made), (sent, made)
        wait_for(
            lambda: any(line.get("request_id") == made for line in lines_with(api.log_path, made)),
            10,
            "the new id in the API's access line",
        )
        wait_for(
            lambda: any(line.get("request_id") == made for line in lines_with(balance.log_path, made)),
            30,
            "the new id in the balance processor's log",
        )
