"""Goka programs against our services: runs the Go module in this directory (real
``github.com/lovoo/goka``, pinned in go.mod) on Apache Kafka with the three services up.

The Go tests (interop_test.go) do the checking; this starts what they check against and
hands them the addresses (WALLET_INTEROP_BROKERS, WALLET_INTEROP_API).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support import committed_offsets, create_topics, dump_logs, wait_for, walletctl

from walletkit.devstack.cluster import LocalCluster

pytestmark = pytest.mark.integration

MODULE = Path(__file__).parent


#: The Go reference's own pins (goka v1.1.7, Sarama 1.38): go.reference.mod, and the files built
#: only without them left out (partitions_test.go reads IBM/sarama's message type).
REFERENCE_PINS = ("-modfile=go.reference.mod", "-tags", "reference_pins")


def go_test(cluster, *args: str, **env: str) -> str:
    """``go test -count=1 -v <args>`` in the module against ``cluster``; its output if it passed."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("the interop tests need Go 1.26 or newer on PATH (the Go toolchain)")
    api = cluster.services["api-0"]
    result = subprocess.run(
        [go, "test", "-count=1", "-v", *args],
        cwd=MODULE,
        capture_output=True,
        text=True,
        timeout=900,
        env={
            **os.environ,
            "WALLET_INTEROP_BROKERS": cluster.broker.bootstrap,
            "WALLET_INTEROP_API": f"http://127.0.0.1:{api.port}",
            **env,
        },
    )
    print(result.stdout[-20000:])
    print(result.stderr[-5000:])
    assert result.returncode == 0, f"go test {' '.join(args)} failed (its output is above)"
    return result.stdout


def test_goka_emitter_and_partitioner_agree_with_our_services(cluster):
    """Scenario 1 on the default stack (exactly_once), and the one thing Goka cannot do there."""
    create_topics(cluster.broker.bootstrap)
    cluster.start_all()
    out = go_test(cluster, "./...", WALLET_INTEROP_GUARANTEE="exactly_once")
    for scenario in (
        "TestGokaEmitterDepositsFollowTheRules",
        "TestGokaPartitionsKeysLikeOurEmitter",
        "TestGokaViewCannotRecoverATransactionallyWrittenTable",
    ):
        assert f"--- PASS: {scenario}" in out, f"{scenario} did not run and pass"


def test_goka_views_read_our_tables_under_applied_offsets(tmp_path, broker, request):
    """Scenario 2: with the tables written without transactions, Goka views read what our API answers."""
    cluster = LocalCluster(tmp_path, broker=broker, extra_env={"WALLET_PROCESSING_GUARANTEE": "applied_offsets"})
    try:
        create_topics(broker.bootstrap)
        cluster.start_all()
        out = go_test(
            cluster, "-run", "TestGokaViewsReadOurTablesLikeOurAPI", ".", WALLET_INTEROP_GUARANTEE="applied_offsets"
        )
        assert "--- PASS: TestGokaViewsReadOurTablesLikeOurAPI" in out
    except BaseException:
        dump_logs(tmp_path)
        raise
    finally:
        cluster.stop()


def test_our_processors_take_over_from_the_goka_reference_processors(cluster):
    """Scenario 3: the Go service's processors (Goka) build the tables and stop; ours take
    over the same groups, tables and offsets and continue exactly."""
    create_topics(cluster.broker.bootstrap)
    cluster.start_all(("api",))  # reads and emits only: the groups are the Goka processors' for now
    shared = {"WALLET_INTEROP_RUN": f"mig{int(time.time()) % 100000}", "WALLET_INTEROP_T0": str(int(time.time()))}
    out = go_test(cluster, "-run", "TestMigrationFromGoka", ".", WALLET_INTEROP_PHASE="goka", **shared)
    assert "--- PASS: TestMigrationFromGoka" in out
    cluster.start_all(("balance", "above_threshold"))
    out = go_test(cluster, "-run", "TestMigrationFromGoka", ".", WALLET_INTEROP_PHASE="ours", **shared)
    assert "--- PASS: TestMigrationFromGoka" in out


def test_a_takeover_from_the_reference_as_pinned_is_refused_until_reset_then_exact(cluster):
    """Scenario 3 with the Go reference's own pins on Kafka 4: its Sarama commits offsets with
    OffsetCommit v1, which Kafka 4 refuses, so its groups hold no offsets. Our processors
    would start from the first deposit and count every one again on top of its tables (seen:
    9,000 read 17,000). They refuse instead, naming the way on; after `walletctl reset` they
    rebuild both tables from the ledger, and the totals are exact across the hand-over."""
    create_topics(cluster.broker.bootstrap)
    cluster.start_all(("api",))
    shared = {"WALLET_INTEROP_RUN": f"pin{int(time.time()) % 100000}", "WALLET_INTEROP_T0": str(int(time.time()))}
    out = go_test(cluster, *REFERENCE_PINS, "-run", "TestMigrationFromGoka", ".", WALLET_INTEROP_PHASE="goka", **shared)
    assert "--- PASS: TestMigrationFromGoka" in out
    for group in ("balance", "above_threshold"):
        assert committed_offsets(cluster.broker.bootstrap, group, "deposit", 8) == {}, (
            f"group {group} holds committed offsets: the reference's commits were not refused, nothing is tested"
        )
    for service in ("balance", "above_threshold"):
        proc = cluster.start(service, wait=False)
        wait_for(lambda: not proc.running, 120, f"{service} refusing the Go-written table")
        log = proc.log_path.read_text()
        assert proc.proc.returncode == 1, f"{service} exited with {proc.proc.returncode}:\n{log[-3000:]}"
        assert "refused to start" in log and "carries no applied offset" in log, log[-3000:]
        assert f"walletctl reset {service}" in log, log[-3000:]
    for group in ("balance", "above_threshold"):
        reset = walletctl(cluster, "reset", group)
        assert reset.returncode == 0, reset.stdout + reset.stderr
    cluster.start_all(("balance", "above_threshold"))
    out = go_test(cluster, *REFERENCE_PINS, "-run", "TestMigrationFromGoka", ".", WALLET_INTEROP_PHASE="ours", **shared)
    assert "--- PASS: TestMigrationFromGoka" in out
