"""walletctl against a running deployment: Apache Kafka and the two processors as processes.

The commands run as a user runs them (the console script, configured by the environment).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from support import (
    Deposit,
    DepositWriter,
    balances_in_table,
    balances_match,
    create_topics,
    expected_balances,
    wait_for,
    walletctl,
)

from walletkit.devstack.processes import console_script

pytestmark = pytest.mark.integration
UNIT = 1_000_000


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
    expected = expected_balances(writer.acked)
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
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        "deposit",
        incremental_configs=[
            ConfigEntry("message.timestamp.type", "CreateTime", incremental_operation=AlterConfigOpType.SET)
        ],
    )
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


def test_rebuild_builds_the_next_version_beside_the_live_one_switches_readers_and_retires_the_old(cluster, tmp_path):
    """walletctl rebuild balance, with deposits going on through the API: the new version is
    built from the ledger beside the live table and is identical to it; the processors and
    the API's views move to it, nothing deposited before, during or after the switch is lost,
    and the old table and group are retired."""
    import threading

    from support import details_json, latest_by_key, post_deposit, read_topic

    bootstrap = cluster.broker.bootstrap
    create_topics(bootstrap)
    cluster.start_all()
    api = cluster.services["api-0"]
    writer = DepositWriter(bootstrap)
    writer.write([Deposit(f"w{i % 50:02d}", (i % 9 + 1) * UNIT, 1_000_000 * i) for i in range(600)])
    writer.flush()
    expected = expected_balances(writer.acked)
    wait_for(lambda: balances_match(bootstrap, expected), 60, "the balances")
    before = latest_by_key(read_topic(bootstrap, "balance-table"))

    # Deposits keep coming through the API, into ten of the wallets, during the rebuild and the switch.
    acked: list[tuple[str, int]] = []
    done = threading.Event()

    def client() -> None:
        for i in range(150):
            wallet = f"w{i % 10:02d}"
            for _attempt in range(100):
                status, _body, _headers = post_deposit(
                    api.port, {"WalletID": wallet, "Amount": 1}, {"Idempotency-Key": f"during-{i}"}
                )
                if status == 202:
                    acked.append((wallet, UNIT))
                    break
                assert status in (429, 503), status
                done.wait(0.1)
            done.wait(0.05)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    run = subprocess.run(
        [
            console_script("walletctl"),
            "rebuild",
            "balance",
            "--expect-identical",
            "--state-dir",
            str(tmp_path / "walletctl"),
            "--timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**cluster.env(), "PATH": "/usr/bin:/bin"},
    )
    thread.join(120)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    out = run.stdout
    print(f"\nwalletctl rebuild balance:\n{out}")
    assert "building balance-v2" in out or "built:" in out, out
    assert " 0 different" in out and "switched: balance is now version 2" in out, out
    assert "retired 'balance-table' and group 'balance'" in out, out
    assert len(acked) == 150

    for wallet, micros in acked:
        expected[wallet] += micros
    wait_for(lambda: balances_match(bootstrap, expected, "balance-v2-table"), 60, "every deposit in the new version")
    # Identical to the live table: every wallet no deposit touched since holds the same bytes.
    after = latest_by_key(read_topic(bootstrap, "balance-v2-table"))
    untouched = [f"w{i:02d}" for i in range(10, 50)]
    assert all(after[w] == before[w] for w in untouched), [w for w in untouched if after[w] != before[w]]

    # The processors run the new group, the API reads the new table, the old ones are gone.
    balance = cluster.services["balance-0"]
    wait_for(lambda: json.loads(http_body(balance.port))["group"] == "balance-v2", 30, "balance on version 2")
    wait_for(
        lambda: json.loads(http_body(api.ops_port))["balance_table"] == "balance-v2-table",
        30,
        "the API's view on version 2",
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert "balance-table" not in admin.list_topics(timeout=10).topics
    assert "balance" not in {g.group_id for g in admin.list_consumer_groups().result().valid}
    for wallet, micros in expected.items():
        assert round(details_json(api.port, wallet)["Balance"] * UNIT) == micros, wallet
    # New deposits land in the new version, and a restart comes back on it.
    status, _body, _headers = post_deposit(api.port, {"WalletID": "w49", "Amount": 5})
    assert status == 202
    expected["w49"] += 5 * UNIT
    balance.stop()
    cluster.start("balance")
    wait_for(lambda: balances_match(bootstrap, expected, "balance-v2-table"), 60, "the deposit after the switch")
    wait_for(lambda: round(details_json(api.port, "w49")["Balance"] * UNIT) == expected["w49"], 30, "the API")
    assert walletctl(cluster, "topics", "check").returncode == 0
    got = json.loads(walletctl(cluster, "get", "balance", "w49").stdout)
    assert got["table"] == "balance-v2-table"
    # The other table is still at version 1; a dry run says what its rebuild would do, and does nothing.
    dry = walletctl(cluster, "rebuild", "above_threshold", "--dry-run")
    assert dry.returncode == 0 and "would create 'above_threshold-v2-table'" in dry.stdout, dry
    assert "above_threshold-v2-table" not in admin.list_topics(timeout=10).topics


def http_body(port: int) -> bytes:
    from walletkit.devstack.net import http_get

    return http_get(f"http://127.0.0.1:{port}/healthz")[1]
