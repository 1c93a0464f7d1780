"""What the API promises beyond the seed flow: idempotent retries, read-your-writes,
failing fast and recovering when Kafka is away. Real broker, real processes, real HTTP."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
from support import balances_in_table, details, post_deposit, read_topic, wait_for

from walletkit.devstack.net import http_get

pytestmark = pytest.mark.integration


def test_retries_with_the_same_idempotency_key_count_once_and_get_the_same_answer(running_api):
    cluster, port = running_api
    key = {"Idempotency-Key": "order-1001"}
    status, first, _ = post_deposit(port, {"WalletID": "idem", "Amount": 250.5}, key)
    assert status == 202
    # Concurrent retries while the original may still be in flight, then later ones.
    results: list[tuple[int, dict, dict]] = []
    threads = [
        threading.Thread(target=lambda: results.append(post_deposit(port, {"WalletID": "idem", "Amount": 250.5}, key)))
        for _ in range(5)
    ]
    [t.start() for t in threads]
    [t.join() for t in threads]
    wait_for(lambda: details(port, "idem")[0] == 200, 20, "the first deposit to show")
    status, later, headers = post_deposit(port, {"WalletID": "idem", "Amount": 250.5}, key)
    assert status == 202 and headers.get("Idempotent-Replayed") == "true"
    assert later == first, "a replay must answer exactly like the original"
    assert all(r[0] == 202 and r[1]["DepositID"] == first["DepositID"] for r in results), results
    # Another key is another deposit; the same key for another amount is refused.
    assert post_deposit(port, {"WalletID": "idem", "Amount": 1}, {"Idempotency-Key": "order-1002"})[0] == 202
    status, doc, _ = post_deposit(port, {"WalletID": "idem", "Amount": 99}, key)
    assert status == 409 and "different Amount" in doc["error"]
    wait_for(
        lambda: details(port, "idem")[1] == b'{"WalletID":"idem","Balance":251.5,"AboveThreshold":false}',
        20,
        "balance 250.5 + 1, each key counted once",
    )
    time.sleep(1)  # nothing else may arrive later
    assert balances_in_table(cluster.broker.bootstrap)["idem"] == 251_500_000


def test_the_same_key_retried_against_the_topic_is_applied_once_by_both_processors(running_api):
    """A retry that reaches Kafka twice (e.g. through two API replicas) still counts once."""
    from support import DepositWriter

    from walletkit.wallet.codecs import DepositRequest

    cluster, port = running_api
    writer = DepositWriter(cluster.broker.bootstrap)
    now = int(time.time() * 1_000_000)
    for _ in range(3):  # the same keyed deposit, three times on the topic
        msg = DepositRequest(
            WalletID="twice",
            Amount=6000.0,
            CreatedAt=now // 1_000_000,
            AmountMicros=6_000_000_000,
            CreatedAtMicros=now,
            DepositID="d1",
            IdempotencyKey="k1",
        )
        key = b"twice"
        from walletkit.stream.partitioner import partition_for

        writer.producer.produce("deposit", msg.SerializeToString(), key, partition=partition_for(key, 8))
    writer.flush()
    # Counted three times this would be 18,000 and flagged; once, it is 6,000 and not flagged.
    wait_for(
        lambda: details(port, "twice")[1] == b'{"WalletID":"twice","Balance":6000,"AboveThreshold":false}',
        20,
        "one application of the keyed deposit",
    )
    time.sleep(1)
    assert details(port, "twice")[1] == b'{"WalletID":"twice","Balance":6000,"AboveThreshold":false}'


def test_read_your_writes_with_the_consistency_token(running_api):
    cluster, port = running_api
    for i in range(20):
        status, receipt, _ = post_deposit(port, {"WalletID": "ryw", "Amount": 1})
        assert status == 202
        # No polling: with the token, the very next read includes this deposit.
        status, body = http_get(f"http://127.0.0.1:{port}/details/ryw?token={receipt['ConsistencyToken']}", timeout=10)
        assert (status, json.loads(body)["Balance"]) == (200, i + 1)
    # The header works too; a token of another wallet's partition or a malformed one is a 400.
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/details/ryw", headers={"Consistency-Token": receipt["ConsistencyToken"]}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["Balance"] == 20
    assert http_get(f"http://127.0.0.1:{port}/details/ryw?token=nonsense")[0] == 400
    other = (receipt["Partition"] + 1) % 8
    assert http_get(f"http://127.0.0.1:{port}/details/ryw?token={other}-0")[0] == 400
    # A token beyond its partition's end names no deposit: refused at once.
    status, body = http_get(f"http://127.0.0.1:{port}/details/ryw?token={receipt['Partition']}-999999", timeout=30)
    assert status == 400 and "names no deposit" in json.loads(body)["error"], body
    # A token that exists but never shows for this wallet (another wallet's deposit in the same
    # partition, read as a wallet that has none): a bounded wait, then 503 JSON.
    started = time.monotonic()
    status, body = http_get(
        f"http://127.0.0.1:{port}/details/{unseen_wallet_like('ryw')}?token={receipt['ConsistencyToken']}", timeout=30
    )
    assert status == 503 and "not visible yet" in json.loads(body)["error"], body
    assert time.monotonic() - started < 15


def unseen_wallet_like(wallet: str) -> str:
    """A wallet id that had no deposit, in the partition of ``wallet``."""
    from walletkit.stream.partitioner import partition_for

    want = partition_for(wallet.encode(), 8)
    return next(f"unseen-{i}" for i in range(10_000) if partition_for(f"unseen-{i}".encode(), 8) == want)


def test_too_many_requests_in_flight_get_429_and_nothing_else_breaks(running_api):
    cluster, _ = running_api
    tight = cluster.start("api", 1, env={"WALLET_MAX_IN_FLIGHT": "2", "WALLET_CONSISTENCY_TIMEOUT_SECONDS": "3"})
    # Two readers parked on a token that will not show for their wallet fill the limit.
    status, anchor, _ = post_deposit(tight.port, {"WalletID": "ryw", "Amount": 1})
    assert status == 202, anchor
    path = f"/details/{unseen_wallet_like('ryw')}?token={anchor['ConsistencyToken']}"
    parked = [threading.Thread(target=http_get, args=(tight.url(path),), kwargs={"timeout": 10}) for _ in range(2)]
    for t in parked:
        t.start()
    time.sleep(0.5)
    status, doc, _ = post_deposit(tight.port, {"WalletID": "w429", "Amount": 1})
    assert status == 429 and "too many requests" in doc["error"]
    for t in parked:
        t.join()
    assert post_deposit(tight.port, {"WalletID": "w429", "Amount": 1})[0] == 202
    tight.stop()


def test_broker_outage_fails_fast_keeps_reads_and_recovers_without_restart(cluster):
    cluster.start_all()
    port = cluster.services["api-0"].port
    assert post_deposit(port, {"WalletID": "outage", "Amount": 10})[0] == 202
    wait_for(lambda: details(port, "outage")[0] == 200, 20, "the first deposit to show")
    acked_before = len(read_topic(cluster.broker.bootstrap, "deposit"))

    cluster.broker.pause()
    try:
        started = time.monotonic()
        statuses = []
        for i in range(5):
            status, doc, _ = post_deposit(
                port, {"WalletID": "outage", "Amount": 1}, {"Idempotency-Key": f"o-{i}"}, timeout=30
            )
            statuses.append(status)
            assert status == 503 and "not stored" in doc["error"], doc
        elapsed = time.monotonic() - started
        assert elapsed < 15, f"5 deposits took {elapsed:.1f}s to fail: not fast"
        # Reads keep being served from the views, and the pod stays ready: in Kubernetes a
        # not-ready pod leaves the Service, and every read would go down with the broker.
        assert details(port, "outage") == (200, b'{"WalletID":"outage","Balance":10,"AboveThreshold":false}')
        assert http_get(cluster.services["api-0"].ops_url("/readyz"))[0] == 200
    finally:
        cluster.broker.resume()

    # Back without restarting anything: deposits are accepted and processed again.
    wait_for(
        lambda: post_deposit(port, {"WalletID": "outage-probe", "Amount": 1})[0] == 202,
        60,
        "deposits to be accepted again",
    )
    for i in range(5):
        status, doc, _ = post_deposit(port, {"WalletID": "outage", "Amount": 1}, {"Idempotency-Key": f"o-{i}"})
        assert status == 202, doc
    # The deposit in flight when the broker froze may have been stored (it was answered 503, never 202):
    # its retry with the same key is then not counted again.
    wait_for(lambda: json.loads(details(port, "outage")[1])["Balance"] == 15, 60, "balance 10 + 5 after recovery")
    assert len(read_topic(cluster.broker.bootstrap, "deposit")) >= acked_before + 5
