"""Fixtures of the fault suite: a three-node Apache Kafka cluster for faults that need one."""

from __future__ import annotations

import pytest
from support import serve_cluster

from walletkit.devstack.cluster import LocalCluster
from walletkit.devstack.kafka import ApacheKafka


@pytest.fixture
def three_node_cluster(request, tmp_path):
    """Three KRaft nodes (replication 3, min.insync.replicas 2) and a LocalCluster on them."""
    (tmp_path / "logs").mkdir(exist_ok=True)
    broker = ApacheKafka(3, log_path=tmp_path / "logs" / "broker.log").start()
    yield from serve_cluster(request, tmp_path, LocalCluster(tmp_path, broker=broker))
