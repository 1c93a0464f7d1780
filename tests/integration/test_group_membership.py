"""What the chart promises of group membership, shown on Apache Kafka.

- Static membership (``WALLET_INSTANCE_ID``, the StatefulSet pod name in the chart): a
  processor restarted within its session timeout gets its partitions back without the group
  rebalancing; the other member keeps its partitions throughout (no revocation, no new
  assignment). Without an instance id the same restart moves partitions twice.
- The processor's lag metric (``stream_processor_consumer_lag``) equals the broker's own view of
  the group's lag: committed offsets and ListOffsets through the admin API, what
  ``kafka-consumer-groups --describe`` prints.
"""

from __future__ import annotations

import re
import time

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from support import Deposit, DepositWriter, create_topics, wait_for

from walletkit.devstack.net import http_get

pytestmark = pytest.mark.integration

PARTITIONS = 8
SESSION_MS = 20_000  # long enough for a restart to fit well inside it


def assignments(log_path) -> list[list[int]]:
    """Every 'assigned partitions [..]' line of a processor's log, in order."""
    found = re.findall(r"assigned partitions \[([0-9, ]*)\]", log_path.read_text(errors="replace"))
    return [[int(p) for p in item.split(",") if p.strip()] for item in found]


def revocations(log_path) -> int:
    text = log_path.read_text(errors="replace")
    return len(re.findall(r"revoked partitions|lost partitions", text))


def start_pair(cluster, static: bool):
    create_topics(cluster.broker.bootstrap, PARTITIONS)
    procs = []
    for i in (0, 1):
        env = {"WALLET_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_MS)}
        if static:
            env["WALLET_INSTANCE_ID"] = f"wallet-balance-{i}"
        procs.append(cluster.service("balance", i, env=env))
    procs[0].start().wait_ready(60)
    procs[1].start().wait_ready(60)
    # Both members hold half of the partitions.
    wait_for(
        lambda: (
            all(assignments(p.log_path) and len(assignments(p.log_path)[-1]) == PARTITIONS // 2 for p in procs)
            or [assignments(p.log_path) for p in procs]
        ),
        60,
        "both members to hold four partitions each",
    )
    time.sleep(1.0)  # the assignment settled (no rebalance still in progress)
    return procs


def restart(proc) -> None:
    assert proc.stop() == 0
    proc.start().wait_ready(60)


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_a_restart_within_the_session_timeout_does_not_rebalance_a_static_group(cluster, static):
    first, second = start_pair(cluster, static)
    before_first, before_second = assignments(first.log_path)[-1], assignments(second.log_path)[-1]
    second_events = (len(assignments(second.log_path)), revocations(second.log_path))

    restart(first)
    time.sleep(3.0)  # a rebalance, had one been triggered, completes well within this
    after_second = (len(assignments(second.log_path)), revocations(second.log_path))
    if static:
        assert after_second == second_events, "the other member saw a rebalance"
        assert assignments(second.log_path)[-1] == before_second
        assert assignments(first.log_path)[-1] == before_first, "the restarted member got other partitions"
    else:
        # What static membership prevents: the leave and the rejoin each move partitions.
        assert after_second != second_events, "a dynamic member's restart should rebalance the group"


def admin_lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The broker's view: LSO (ListOffsets latest, read_committed) minus the committed offset."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    committed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])[group].result(10)
    ends = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, isolation_level=IsolationLevel.READ_COMMITTED)
    end = {tp.partition: f.result(10).offset for tp, f in ends.items()}
    return {tp.partition: end[tp.partition] - max(tp.offset, 0) for tp in committed.topic_partitions}


def metric_lag(port: int, group: str) -> dict[int, int]:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    pattern = rf'^stream_processor_consumer_lag{{group="{group}",partition="(\d+)"}} ([0-9.e+]+)$'
    return {int(p): int(float(v)) for p, v in re.findall(pattern, body.decode(), flags=re.M)}


def test_the_lag_metric_equals_the_brokers_view_of_the_group(cluster):
    """A consumer quota makes the processor fetch slowly (a few small batches per fetch, then a
    throttle of about a second), so its lag stays above zero and holds still between fetches; at such a moment the metric and the admin API agree on every
    partition."""
    bootstrap = cluster.broker.bootstrap
    create_topics(bootstrap, PARTITIONS)
    # Small record batches, so that one fetch can return a few of them and no more.
    writer = DepositWriter(bootstrap, PARTITIONS, **{"linger.ms": 0, "batch.size": 512})
    start = int(time.time() * 1_000_000)
    writer.write(Deposit(f"lag-{i % 400}", 1_000_000, start + i) for i in range(8000))
    writer.flush()
    # About 4 KiB per fetch, then the broker throttles the client for about a second.
    cluster.broker.set_client_quota("wallet-balance", consumer_byte_rate=4096)
    proc = cluster.start(
        "balance",
        env={
            "KAFKA_CONFIG": "fetch.max.bytes=4096,message.max.bytes=4096,max.partition.fetch.bytes=1024,"
            "statistics.interval.ms=250"
        },
        wait=False,
    )
    proc.wait_ready(60)

    agreed: list[dict[int, int]] = []

    def agree():
        metric = metric_lag(proc.port, "balance")
        broker_view = admin_lag(bootstrap, "balance", "deposit")
        # Mid-way: something consumed and committed, not everything (at the very start both
        # say 8000, which shows nothing).
        if (
            len(metric) == PARTITIONS
            and metric == broker_view
            and metric == metric_lag(proc.port, "balance")
            and 0 < sum(metric.values()) < 8000
        ):
            agreed.append(metric)
            return True
        return f"metric {metric} vs admin {broker_view}"

    wait_for(agree, 60, "the lag metric to equal the broker's view while lag > 0", interval=0.2)
    assert 0 < sum(agreed[0].values()) < 8000, agreed[0]
