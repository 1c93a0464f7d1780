"""The Apache Kafka launcher of the devstack: what every other broker-backed test stands on."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from walletkit.devstack.kafka import ApacheKafka, KafkaUnavailable, kafka_version

pytestmark = pytest.mark.integration


def describe(bootstrap: str, kind, name: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(kind, name)
    return {k: v.value for k, v in admin.describe_configs([res])[res].result(10).items()}


def test_a_three_node_cluster_has_production_durability_and_survives_a_killed_node(tmp_path):
    cluster = ApacheKafka(3, log_path=tmp_path / "broker.log").start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        assert sorted(admin.list_topics(timeout=10).brokers) == [1, 2, 3]
        broker_conf = describe(cluster.bootstrap, ConfigResource.Type.BROKER, "1")
        assert broker_conf["min.insync.replicas"] == "2"
        assert broker_conf["unclean.leader.election.enable"] == "false"
        assert broker_conf["auto.create.topics.enable"] == "false"
        admin.create_topics([NewTopic("durable", 3)])["durable"].result(15)
        for p in range(3):
            cluster.leader_of("durable", p)  # waits until the metadata knows every partition
        md = admin.list_topics("durable", timeout=10).topics["durable"]
        assert len(md.partitions) == 3
        assert all(len(p.replicas) == 3 for p in md.partitions.values()), "default replication factor 3"

        # Kill the leader of partition 0: acks=all writes go on with the two others in sync.
        leader = cluster.leader_of("durable", 0)
        cluster.kill_node(leader)
        producer = Producer(
            {
                "bootstrap.servers": cluster.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "message.timeout.ms": 30000,
            }
        )
        acked = []
        for i in range(20):
            producer.produce(
                "durable", b"v", str(i).encode(), partition=0, on_delivery=lambda err, msg: acked.append(err)
            )
        assert producer.flush(40) == 0
        assert acked == [None] * 20
        assert cluster.leader_of("durable", 0) != leader

        cluster.start_node(leader)

        def in_sync() -> int:
            found = admin.list_topics("durable", timeout=10).topics["durable"].partitions.get(0)
            return len(found.isrs) if found is not None else 0

        deadline = time.monotonic() + 60
        while in_sync() < 3:
            assert time.monotonic() < deadline, "the restarted node never rejoined the ISR"
            time.sleep(0.5)
        for n in (1, 2, 3):
            assert (tmp_path / f"broker-{n}.log").stat().st_size > 0, "each node keeps its own log"
    finally:
        cluster.stop()
    assert all(not node.running for node in cluster.nodes)


def test_a_node_that_cannot_start_says_why_with_its_log(tmp_path):
    bad = ApacheKafka(log_path=tmp_path / "broker.log", overrides={"num.network.threads": "not-a-number"})
    with pytest.raises(KafkaUnavailable) as exc:
        bad.start(timeout=60)
    bad.stop()
    assert "num.network.threads" in str(exc.value) and "not-a-number" in str(exc.value), exc.value


def test_the_pinned_version_is_the_one_running(tmp_path):
    with ApacheKafka(log_path=tmp_path / "broker.log") as kafka:
        assert f"Kafka version: {kafka_version()}" in (tmp_path / "broker.log").read_text()
        assert kafka.pid and kafka.nodes[0].running
