"""Fixtures of the fault suite: a three-node Apache Kafka cluster for faults that need one."""

from __future__ import annotations

import pytest

from walletkit.devstack.cluster import LocalCluster
from walletkit.devstack.kafka import ApacheKafka

from support import dump_logs


@pytest.fixture
def three_node_cluster(request, tmp_path):
    """Three KRaft nodes (replication 3, min.insync.replicas 2) and a LocalCluster on them."""
    (tmp_path / "logs").mkdir(exist_ok=True)
    broker = ApacheKafka(3, log_path=tmp_path / "logs" / "broker.log").start()
    cluster = LocalCluster(tmp_path, broker=broker)
    yield cluster
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        dump_logs(tmp_path)
    cluster.stop()
