"""The lag reader against a real Apache Kafka broker: exact per-partition lag, missing group and
topic, an unreachable cluster within the timeout."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Producer
from harness import LagMaker

from wallet_operator.errors import KafkaUnavailable, TopicNotFound
from wallet_operator.kafka_lag import LagReader

pytestmark = pytest.mark.integration
RDKAFKA_LOG = logging.getLogger("librdkafka")


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory):
    from walletkit.devstack.kafka import ApacheKafka

    broker = ApacheKafka(log_path=tmp_path_factory.mktemp("broker") / "broker.log").start()
    yield broker.bootstrap
    broker.stop()


def test_lag_is_exact_per_partition_across_many_batches(bootstrap):
    lag = LagMaker(bootstrap, "lag-exact", "lag-exact-group", partitions=4)
    for _ in range(5):  # five separate batches per partition
        lag.produce(per_partition=20)
    lag.commit([100, 30, 0, 100])
    snapshot = LagReader({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG}, timeout=5).read(
        "lag-exact-group", "lag-exact"
    )
    assert snapshot.group_found
    assert [(p.partition, p.committed, p.end) for p in snapshot.partitions] == [
        (0, 100, 100),
        (1, 30, 100),
        (2, 0, 100),
        (3, 100, 100),
    ]
    assert snapshot.lag_by_partition == {0: 0, 1: 70, 2: 100, 3: 0} and snapshot.total_lag == 170


def test_records_of_an_open_transaction_are_not_lag_until_committed(bootstrap):
    """The processors read committed records only, so lag ends at the last stable offset."""
    lag = LagMaker(bootstrap, "lag-txn", "lag-txn-group", partitions=1)
    lag.produce(per_partition=10)
    lag.commit([4])
    txn = Producer({"bootstrap.servers": bootstrap, "transactional.id": "lag-txn-writer", "logger": RDKAFKA_LOG})
    txn.init_transactions(10)
    txn.begin_transaction()
    for i in range(5):
        txn.produce("lag-txn", value=b"pending", key=str(i).encode(), partition=0)
    assert txn.flush(10) == 0
    reader = LagReader({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG}, timeout=5)
    assert reader.read("lag-txn-group", "lag-txn").total_lag == 6, "an open transaction is not readable yet"
    txn.commit_transaction(10)
    # 5 records and the commit marker: the last stable offset becomes 16 once the coordinator
    # wrote the marker (asynchronously, just after commit_transaction() returns).
    deadline = time.monotonic() + 10
    while (lag_now := reader.read("lag-txn-group", "lag-txn").total_lag) != 12 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lag_now == 12


def test_a_group_that_never_committed_and_partitions_it_never_committed(bootstrap):
    lag = LagMaker(bootstrap, "lag-fresh", "lag-fresh-group", partitions=3)
    lag.produce(per_partition=7)
    reader = LagReader({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG}, timeout=5)
    fresh = reader.read("lag-fresh-group", "lag-fresh")
    assert not fresh.group_found and fresh.total_lag == 21, "no commit: everything from the log start"
    assert all(p.committed is None and p.start == 0 and p.end == 7 for p in fresh.partitions)
    lag.commit([7, 7, 7])
    assert reader.read("lag-fresh-group", "lag-fresh").total_lag == 0
    with pytest.raises(TopicNotFound, match="'no-such-topic'"):
        reader.read("lag-fresh-group", "no-such-topic")


def test_an_empty_topic_has_no_lag(bootstrap):
    LagMaker(bootstrap, "lag-empty", "lag-empty-group", partitions=2)
    snapshot = LagReader({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG}, timeout=5).read(
        "lag-empty-group", "lag-empty"
    )
    assert [(p.end, p.lag) for p in snapshot.partitions] == [(0, 0), (0, 0)]


def test_an_unreachable_cluster_is_reported_within_the_timeout():
    from walletkit.devstack.net import free_port

    reader = LagReader({"bootstrap.servers": f"127.0.0.1:{free_port()}", "logger": RDKAFKA_LOG}, timeout=1.5)
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="cluster metadata"):
        reader.read("balance", "deposit")
    assert time.monotonic() - started < 5


def test_close_waits_for_the_read_in_flight_and_later_reads_are_refused():
    """Dropping the client under a read (its request still held by librdkafka) can crash the process."""
    import threading

    from walletkit.devstack.net import free_port

    reader = LagReader({"bootstrap.servers": f"127.0.0.1:{free_port()}", "logger": RDKAFKA_LOG}, timeout=1.5)
    outcome: list[BaseException] = []
    finished = threading.Event()

    def read() -> None:
        try:
            reader.read("balance", "deposit")
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)
        finished.set()

    thread = threading.Thread(target=read)
    thread.start()
    time.sleep(0.3)  # the read is waiting on the unreachable cluster
    assert not finished.is_set()
    reader.close()
    assert finished.is_set(), "close() returned while a read was still using the client"
    assert reader._admin is None
    assert isinstance(outcome[0], KafkaUnavailable)
    with pytest.raises(KafkaUnavailable, match="closed"):
        reader.read("balance", "deposit")
    thread.join(5)
