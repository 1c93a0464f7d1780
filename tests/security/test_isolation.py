"""No wallet can hurt the others: bounded table values, quarantine instead of a crash loop,
balances that cannot overflow. Deposits are written straight to the topic (as the API writes
them) where thousands are needed, so the test spends its time on the processors."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from security_support import deposit, read
from support import read_topic, wait_for

from walletkit.devstack.net import http_get
from walletkit.stream.partitioner import partition_for
from walletkit.wallet import money
from walletkit.wallet.wallet_pb2 import DepositRequest

PARTITIONS = 8


def write(bootstrap: str, wallet: str, amounts_micros, *, keys=None) -> None:
    """Deposits as our API writes them (exact amount, id, micro time, optional key)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 20})
    partition = partition_for(wallet.encode(), PARTITIONS)
    for i, micros in enumerate(amounts_micros):
        d = DepositRequest(
            WalletID=wallet,
            Amount=micros / money.SCALE,
            CreatedAt=0,
            AmountMicros=micros,
            DepositID=uuid.uuid4().hex,
            CreatedAtMicros=1,
        )
        if keys is not None:
            d.IdempotencyKey = keys[i]
        while True:
            try:
                producer.produce("deposit", d.SerializeToString(), wallet.encode(), partition=partition)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def same_partition_wallet(wallet: str, prefix: str) -> str:
    want = partition_for(wallet.encode(), PARTITIONS)
    return next(f"{prefix}-{i}" for i in range(10_000) if partition_for(f"{prefix}-{i}".encode(), PARTITIONS) == want)


def largest_value(bootstrap: str, topic: str) -> int:
    return max(len(v) for _p, _o, _k, v in read_topic(bootstrap, topic) if v is not None)


def metric(proc, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http_get(proc.ops_url("/metrics"))
    assert status == 200
    return sum(
        s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def stack(module_cluster):
    module_cluster.start_all()
    return module_cluster


def test_ten_thousand_keyed_deposits_into_one_wallet_stay_far_below_the_record_limit(stack):
    bootstrap, api = stack.broker.bootstrap, stack.services["api-0"]
    keys = [f"order-{i}" for i in range(10_000)]
    write(bootstrap, "busy", [money.SCALE] * len(keys), keys=keys)
    neighbour = same_partition_wallet("busy", "calm")
    status, receipt, _ = deposit(api.port, neighbour, 3)
    assert status == 202, receipt

    # The neighbour on the same partition is served once the 10,000 ahead of it are applied (a token
    # read answers 503 "retry" while they are not, as a busy machine may need longer than its 5 s wait);
    # the busy wallet counted every key once.
    def neighbour_served():
        status, doc, _ = read(api.port, neighbour, consistency=receipt["ConsistencyToken"])
        assert status in (200, 503), (status, doc)
        return (status == 200 and doc["Balance"] == 3) or doc

    wait_for(neighbour_served, 120, "the neighbour's deposit behind 10,000 others")
    wait_for(lambda: read(api.port, "busy")[1].get("Balance") == 10_000, 60, "10,000 keyed deposits applied")
    for topic in ("balance-table", "above_threshold-table"):
        assert largest_value(bootstrap, topic) < 64 * 1024, topic
    # A retry of the first key through the API is recognised from the view: replayed, charged once.
    status, replay, headers = deposit(api.port, "busy", 1, key="order-0")
    assert status == 202 and headers.get("idempotent-replayed") == "true", (status, replay)
    for proc in stack.services.values():
        assert proc.ready()


def test_a_balance_beyond_int64_micro_units_is_exact(stack):
    bootstrap, api = stack.broker.bootstrap, stack.services["api-0"]
    # 9,300 deposits of the largest amount: 9.3e12, past int64 micro-units (9,223,372,036,854.775807).
    write(bootstrap, "whale", [1_000_000_000 * money.SCALE] * 9_300)
    status, receipt, _ = deposit(api.port, "whale", 0.01)
    assert status == 202, receipt
    status, body = http_get(api.url(f"/details/whale?token={receipt['ConsistencyToken']}"))
    assert status == 200, body
    assert body == b'{"WalletID":"whale","Balance":9300000000000.01,"AboveThreshold":true}'


def test_an_unwritable_value_is_quarantined_and_the_partition_flows(cluster):
    """The above_threshold-table accepts records of at most 16 KiB; its processor keeps values under
    8 KiB. A wallet flooding one window outgrows that: its deposits are quarantined (counted, noted,
    reported to the client), its neighbours are served, and a restart does not crash-loop.
    (With WALLET_MAX_VALUE_BYTES above the topic's limit, the same flood fails every flush.)"""
    bootstrap = cluster.broker.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics(
        [
            NewTopic("deposit", PARTITIONS, 1, config={"message.timestamp.type": "LogAppendTime"}),
            NewTopic("balance-table", PARTITIONS, 1, config={"cleanup.policy": "compact"}),
            NewTopic(
                "above_threshold-table",
                PARTITIONS,
                1,
                config={"cleanup.policy": "compact", "max.message.bytes": "16384"},
            ),
        ]
    ).values():
        f.result()
    cluster.extra_env["WALLET_MAX_VALUE_BYTES"] = "8192"
    cluster.start_all()
    api, flags = cluster.services["api-0"], cluster.services["above_threshold-0"]
    write(bootstrap, "flood", [money.SCALE // 100] * 400)  # 400 cents inside one window
    status, receipt, _ = deposit(api.port, "flood", 0.01)
    assert status == 202, receipt
    # The client learns that its 202 was not applied everywhere, and why.
    status, doc, _ = read(api.port, "flood", consistency=receipt["ConsistencyToken"])
    assert (
        status == 409
        and "was not applied to above_threshold-table" in doc["error"]
        and "value_too_large" in doc["error"]
    ), (status, doc)
    assert metric(flags, "stream_processor_records_total", group="above_threshold", outcome="quarantined") > 0
    # The rest of the partition keeps flowing.
    neighbour = same_partition_wallet("flood", "quiet")
    status, receipt, _ = deposit(api.port, neighbour, 6)
    status, doc, _ = read(api.port, neighbour, consistency=receipt["ConsistencyToken"])
    assert status == 200 and doc == {"WalletID": neighbour, "Balance": 6, "AboveThreshold": False}, doc
    # No crash loop: killed and restarted, it restores, skips the same records again and is ready.
    flags.kill()
    cluster.start("above_threshold")
    neighbour_2 = same_partition_wallet("flood", "later")
    status, receipt, _ = deposit(api.port, neighbour_2, 7)
    status, doc, _ = read(api.port, neighbour_2, consistency=receipt["ConsistencyToken"])
    assert status == 200 and doc["Balance"] == 7, doc
    assert largest_value(bootstrap, "above_threshold-table") <= 8192
    log = flags.log_path.read_text()
    assert "quarantining record deposit[" in log and "MSG_SIZE_TOO_LARGE" not in log
    assert json.loads(http_get(api.url(f"/details/{neighbour}"))[1])["Balance"] == 6
