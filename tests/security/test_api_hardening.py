"""The API cannot be held hostage, and what it says is true: slow bodies, floods, tokens
that cannot exist, retries through another replica, operations off the public port."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from security_support import deposit, read, request

from walletkit.devstack.net import http_get


@pytest.fixture(scope="module")
def stack(module_cluster):
    module_cluster.start_all(("balance", "above_threshold"))
    return module_cluster


def test_the_public_port_serves_the_api_only(stack):
    api = stack.start("api")
    for path in ("/metrics", "/healthz", "/readyz"):
        assert request(api.port, "GET", path)[0] == 404, path
        assert http_get(api.ops_url(path))[0] == 200, path
    assert request(api.port, "GET", "/openapi.json")[0] == 200
    # ... and the operations listener serves nothing of the API.
    assert request(api.ops_port, "POST", "/deposit", b'{"WalletID":"w","Amount":1}')[0] == 404


def test_slow_bodies_hold_no_slot_and_time_out(stack):
    """Two slots, a 2 s body timeout: six clients trickling bodies do not stop a normal deposit
    (with the body read inside the slot, it would get 429), and each trickler gets 408."""
    api = stack.start("api", 1, env={"WALLET_MAX_IN_FLIGHT": "2", "WALLET_BODY_TIMEOUT_SECONDS": "2"})
    answers: list[bytes] = []
    socks = []
    for _ in range(6):
        s = socket.create_connection(("127.0.0.1", api.port), timeout=15)
        s.sendall(
            b"POST /deposit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
            b'{"WalletID":'
        )
        socks.append(s)
    try:
        time.sleep(0.3)  # every trickler is now waiting for the rest of its body
        status, doc, _ = deposit(api.port, "patient", 5)
        assert status == 202, (status, doc)

        def drain(s: socket.socket) -> None:
            answers.append(s.recv(4096))

        threads = [threading.Thread(target=drain, args=(s,)) for s in socks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    finally:
        for s in socks:
            s.close()
        api.stop()
    assert len(answers) == 6 and all(a.startswith(b"HTTP/1.1 408") for a in answers), answers


def test_a_client_over_its_rate_gets_429_and_others_are_served(stack):
    api = stack.start("api", 2, env={"WALLET_RATE_LIMIT_RPS": "5", "WALLET_RATE_LIMIT_BURST": "5"})
    try:
        statuses = [read(api.port, "nobody")[0] for _ in range(20)]
        assert statuses[:5] == [404] * 5 and 429 in statuses, statuses
        status, doc, headers = read(api.port, "nobody")
        assert status == 429 and int(headers["retry-after"]) >= 1, (status, headers)
        # Another client (another loopback address) has its own budget.
        assert read(api.port, "nobody", source="127.0.0.2")[0] == 404
        time.sleep(1.2)  # the bucket refills: the first client is served again
        assert read(api.port, "nobody")[0] == 404
    finally:
        api.stop()


def test_a_token_beyond_its_partition_is_refused_at_once(stack):
    api = stack.start("api")
    status, receipt, _ = deposit(api.port, "tokens", 1)
    assert status == 202
    partition, offset = receipt["Partition"], receipt["Offset"]
    status, doc, _ = read(api.port, "tokens", consistency=f"{partition}-{offset + 1_000_000}")
    # 400 (it cannot exist), not 503 after waiting out the consistency timeout.
    assert status == 400 and "names no deposit" in doc["error"], (status, doc)
    assert read(api.port, "tokens", consistency=receipt["ConsistencyToken"])[0] == 200


def one_key_through_two_replicas(stack, wallet: str, key: str, amounts: tuple[int, int]):
    """``amounts[0]`` with ``key`` through one API replica, then ``amounts[1]`` through another,
    while no deposit is processed (so neither view knows the key yet): both must answer 202.
    Returns the two replicas and the two receipts; the processors run again after."""
    first, second = stack.start("api"), stack.start("api", 3)
    for name in ("balance-0", "above_threshold-0"):
        stack.services[name].stop()
    try:
        receipts = []
        for replica, amount in zip((first, second), amounts):
            status, receipt, _ = deposit(replica.port, wallet, amount, key=key)
            assert status == 202, receipt
            receipts.append(receipt)
    finally:
        stack.start("balance")
        stack.start("above_threshold")
    return first, second, receipts[0], receipts[1]


def test_a_retry_through_another_replica_gets_a_token_that_resolves(stack):
    """The original is still unprocessed when the retry reaches a second replica, which emits
    it again; the processors apply the key once, and the retry's token resolves too."""
    first, second, original, retry = one_key_through_two_replicas(stack, "retried", "pay-1", (40, 40))
    assert retry["DepositID"] == original["DepositID"] and retry["Offset"] != original["Offset"]
    for replica, receipt in ((second, retry), (first, original), (first, retry)):
        status, doc, _ = read(replica.port, "retried", consistency=receipt["ConsistencyToken"])
        assert status == 200 and doc["Balance"] == 40, (replica.port, status, doc)
    second.stop()


def test_the_loser_of_a_cross_replica_key_conflict_learns_it_from_its_token(stack):
    """Two replicas accept the same Idempotency-Key for one wallet with different amounts
    before either can see the other's (the processors are stopped, so neither view knows
    the key): both answer 202. The first in the partition is applied; the other's token must
    answer 409 naming the reason, on every replica, and its retry must not charge it."""
    first, second, winner, loser = one_key_through_two_replicas(stack, "conflicted", "pay-c", (10, 99))
    assert loser["Offset"] > winner["Offset"]
    for replica in (first, second):
        status, doc, _ = read(replica.port, "conflicted", consistency=winner["ConsistencyToken"])
        assert (status, doc["Balance"]) == (200, 10), (replica.port, status, doc)
        status, doc, _ = read(replica.port, "conflicted", consistency=loser["ConsistencyToken"])
        assert status == 409, (replica.port, status, doc)
        assert (
            "was not applied" in doc["error"] and "Idempotency-Key was already used for another Amount" in doc["error"]
        )
        assert f"offset {winner['Offset']} was applied instead" in doc["error"], doc
    # The loser retries as told (same key, same amount): refused, not charged; the winner's
    # retry is answered with its receipt.
    for replica in (first, second):
        status, doc, _ = deposit(replica.port, "conflicted", 99, key="pay-c")
        assert status == 409 and "Idempotency-Key was already used" in doc["error"], (status, doc)
        status, doc, _ = deposit(replica.port, "conflicted", 10, key="pay-c")
        assert status == 202 and doc["Offset"] == winner["Offset"], (status, doc)
    assert read(first.port, "conflicted")[1]["Balance"] == 10
    second.stop()


def test_readiness_is_about_reads(stack):
    """Ready means reads can be served. With the broker frozen, deposits are refused but the
    running API stays ready and answers reads from its views (a not-ready pod would leave the
    Service and take every read down with the broker); an API started meanwhile, whose views
    cannot read their tables, is not ready until they caught up."""
    api = stack.start("api")
    status, receipt, _ = deposit(api.port, "ready-w", 7)
    assert status == 202, receipt
    status, doc, _ = read(api.port, "ready-w", consistency=receipt["ConsistencyToken"])
    assert status == 200 and doc["Balance"] == 7, doc
    late = None
    stack.broker.pause()
    try:
        status, body = http_get(api.ops_url("/readyz"))
        doc = json.loads(body)
        assert status == 200 and doc["balance_view"] == "running" and doc["above_threshold_view"] == "running", doc
        status, doc, _ = read(api.port, "ready-w")
        assert status == 200 and doc["Balance"] == 7, doc
        status, doc, _ = deposit(api.port, "ready-refused", 1)  # its own wallet: it may be stored later
        assert status == 503, (status, doc)
        late = stack.start("api", 1, wait=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # 10 s of a frozen broker: never ready meanwhile
            try:
                assert http_get(late.ops_url("/readyz"))[0] != 200, "ready without being able to read"
            except OSError:
                pass  # not listening yet
            time.sleep(0.5)
    finally:
        stack.broker.resume()
    late.wait_ready(90)  # and ready once its views caught up
    status, doc, _ = read(late.port, "ready-w")
    assert status == 200 and doc["Balance"] == 7, doc
    late.stop()
