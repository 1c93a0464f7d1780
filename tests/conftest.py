"""Fixtures shared by the test suite.

Integration tests run real components: Apache Kafka (KRaft nodes, walletkit.devstack.kafka)
on free loopback ports, the services as processes started from their console scripts, real
RocksDB, real HTTP. Nothing is mocked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from walletkit.devstack.kafka import ApacheKafka
from walletkit.devstack.cluster import LocalCluster

from support import dump_logs, serve_cluster


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def module_cluster(request, tmp_path_factory):
    """One broker and cluster shared by a module's tests (for tests that only add data)."""
    root = tmp_path_factory.mktemp("cluster")
    (root / "logs").mkdir(exist_ok=True)
    c = LocalCluster(root, broker=ApacheKafka(log_path=root / "logs" / "broker.log")).start_broker()
    yield c
    if request.session.testsfailed:
        dump_logs(root)
    c.stop()


@pytest.fixture
def broker(tmp_path: Path):
    """A fresh, empty broker for one test."""
    (tmp_path / "logs").mkdir(exist_ok=True)
    b = ApacheKafka(log_path=tmp_path / "logs" / "broker.log").start()
    yield b
    b.stop()


@pytest.fixture
def cluster(request, tmp_path: Path, broker: ApacheKafka):
    """A LocalCluster on the test's broker; services are started by the test."""
    yield from serve_cluster(request, tmp_path, LocalCluster(tmp_path, broker=broker))


@pytest.fixture(scope="module")
def running_api(module_cluster):
    """The module's cluster with all three services running: (cluster, API port)."""
    module_cluster.start_all()
    return module_cluster, module_cluster.services["api-0"].port
