"""Fixtures shared by the test suite.

Integration tests run real components: Apache Kafka (KRaft nodes, walletkit.devstack.kafka)
on free loopback ports, the services as processes started from their console scripts, real
RocksDB, real HTTP. Nothing is mocked.
"""

from __future__ import annotations

import faulthandler
import os
from pathlib import Path

import pytest
from support import dump_logs, serve_cluster

from walletkit.devstack.cluster import LocalCluster
from walletkit.devstack.kafka import ApacheKafka


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# A trail for CI (.ci/run sets WALLET_TEST_TRAIL to a directory): the test running now, every
# failure as it happens, and a native crash's stacks. A crash of the pytest process (a
# segfault in a C extension) ends the run before pytest's own summary; .ci/run prints these.
_TRAIL = Path(os.environ["WALLET_TEST_TRAIL"]) if os.environ.get("WALLET_TEST_TRAIL") else None


def pytest_configure(config):
    if _TRAIL is not None:
        _TRAIL.mkdir(parents=True, exist_ok=True)
        config._wallet_crash_file = open(_TRAIL / "crash.txt", "w")  # kept open for the handler
        faulthandler.enable(file=config._wallet_crash_file, all_threads=True)


def pytest_runtest_logstart(nodeid, location):
    if _TRAIL is not None:
        (_TRAIL / "current-test").write_text(nodeid + "\n")


def pytest_runtest_logreport(report):
    if _TRAIL is not None and report.failed:
        lines = str(report.longrepr).splitlines()
        errors = [line for line in lines if line.startswith("E ")][:6] or lines[-3:]
        with open(_TRAIL / "failures.txt", "a") as out:
            out.write(f"{report.nodeid} ({report.when}, {report.duration:.0f} s)\n")
            out.writelines(f"    {line[:300]}\n" for line in errors)


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
