"""walletctl against a running deployment: Apache Kafka and the two processors as processes.

The commands run as a user runs them (the console script, configured by the environment).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from walletkit.devstack.processes import console_script

from support import Deposit, DepositWriter, balances_in_table, balances_match, create_topics, wait_for

pytestmark = pytest.mark.integration
UNIT = 1_000_000


def walletctl(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([console_script("walletctl"), *args], capture_output=True, text=True, timeout=120,
                          env={**cluster.env(), "PATH": "/usr/bin:/bin"})


def topic_id(bootstrap: str, topic: str) -> str:
    from confluent_kafka import TopicCollection

    admin = AdminClient({"bootstrap.servers": bootstrap})
    return str(admin.describe_topics(TopicCollection([topic]))[topic].result().topic_id)


def test_lag_get_topics_check_and_a_reset_that_rebuilds_the_same_table(cluster):
    bootstrap = cluster.broker.bootstrap
    create_topics(bootstrap)
    cluster.start_all(("balance", "above_threshold"))
    writer = DepositWriter(bootstrap)
    writer.write([Deposit(f"w{i % 40:02d}", (i % 7 + 1) * UNIT, 1_000_000 * i) for i in range(400)])
    writer.flush()
    expected: dict[str, int] = {}
    for d in writer.acked:
        expected[d.wallet] = expected.get(d.wallet, 0) + d.micros
    wait_for(lambda: balances_match(bootstrap, expected), 60, "the balances")

    # lag: nothing left once processed; exactly the new deposits while balance is stopped.
    wait_for(lambda: json.loads(walletctl(cluster, "lag", "--json").stdout)[0]["total_lag"] == 0, 30, "no lag")
    cluster.services["balance-0"].stop()
    more = DepositWriter(bootstrap)
    more.write([Deposit("w01", UNIT, 0) for _ in range(5)])
    more.flush()
    lag = {s["group"]: s for s in json.loads(walletctl(cluster, "lag", "--json").stdout)}
    assert lag["balance"]["total_lag"] == 5, lag["balance"]
    table = walletctl(cluster, "lag")
    assert table.returncode == 0 and "balance" in table.stdout and "total" in table.stdout, table
    cluster.start("balance")
    expected["w01"] += 5 * UNIT
    wait_for(lambda: balances_match(bootstrap, expected), 60, "the balances after the restart")

    # get: the decoded value with the offsets it reflects.
    got = walletctl(cluster, "get", "balance", "w01")
    assert got.returncode == 0, got.stderr
    doc = json.loads(got.stdout)
    assert doc["table"] == "balance-table" and doc["wallet"] == "w01"
    assert int(doc["value"]["BalanceMicros"]) == expected["w01"]
    assert doc["applied_offset"] >= 0 and doc["changelog_offset"] >= 0
    missing = walletctl(cluster, "get", "balance", "nobody")
    assert missing.returncode == 1 and "no value for wallet 'nobody'" in missing.stderr

    # topics check: fine as the services made them; a changed setting is named.
    ok = walletctl(cluster, "topics", "check")
    assert ok.returncode == 0 and ok.stdout.strip().endswith("configured as the services need"), ok
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, "deposit", incremental_configs=[
        ConfigEntry("message.timestamp.type", "CreateTime", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(15)
    bad = walletctl(cluster, "topics", "check")
    assert bad.returncode == 1 and "PROBLEM deposit: message.timestamp.type=CreateTime" in bad.stdout, bad

    # reset: refused while the group runs; a dry run changes nothing; a reset rebuilds the same table.
    before_id = topic_id(bootstrap, "balance-table")
    refused = walletctl(cluster, "reset", "balance", "--dry-run")
    assert refused.returncode == 1 and "running member" in refused.stderr, refused
    cluster.services["balance-0"].stop()
    dry = walletctl(cluster, "reset", "balance", "--dry-run")
    assert dry.returncode == 0 and "would delete and recreate topic 'balance-table'" in dry.stdout, dry
    assert topic_id(bootstrap, "balance-table") == before_id
    done = walletctl(cluster, "reset", "balance")
    assert done.returncode == 0, done
    assert topic_id(bootstrap, "balance-table") != before_id
    assert balances_in_table(bootstrap) == {}
    cluster.start("balance")
    wait_for(lambda: balances_match(bootstrap, expected), 90, "the rebuilt table to equal the old one")
