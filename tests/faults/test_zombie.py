"""A zombie processor cannot win, on a three-node Apache Kafka cluster.

balance-0 stops itself (SIGSTOP) with a batch computed and nothing written, exactly where
a paused member is most dangerous. Its session expires; balance-1 takes every partition
and keeps processing new deposits of the same wallets. Then balance-0 gets SIGCONT and
finishes its stale batch. Under exactly-once the broker refuses the batch's transaction
(its group generation is gone): the writes are aborted, never visible, seen in its log
and in ``stream_processor_fenced_total``. Then compaction runs on the changelog and a
processor restores from an empty disk: every balance and flag must be exact.

Two fences stand in the zombie's way, and each is shown on its own:

- *both* (the default: exactly-once with the checkpoint's own membership check);
- *the broker's alone* (the local check turned off by a testing knob): the transaction's
  offset commit carries the group generation the batch was consumed under, and the broker
  refuses it; the log names the broker's refusal, never the local check;
- *the local one alone* (applied-offsets: no transaction, so no broker fence): the zombie
  lingers a few seconds after it wakes, its client's heartbeat learns that the member was
  removed, and the checkpoint refuses the batch before anything is written.

With neither (``ZOMBIE_GUARANTEE=applied_offsets ZOMBIE_KNOBS=,no_local_fence=1``) the
stale values are the last records of their keys, compaction keeps them, and the restored
balances are wrong: that is the hole the fences close, and how this test was checked to be
able to fail.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import time

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from support import (
    Deposit,
    DepositWriter,
    balances_match,
    create_topics,
    expected_balances,
    expected_flags,
    flags_in_table,
    read_topic,
    wait_for,
)

from walletkit.devstack.net import http_get

pytestmark = pytest.mark.integration

UNIT = 1_000_000
#: variant -> (processing guarantee, fence knobs of walletkit.stream.faults)
VARIANTS = {
    "both-fences": ("exactly_once", ""),
    "broker-fence-alone": ("exactly_once", ",no_local_fence=1"),
    "local-fence-alone": (
        "applied_offsets",
        ",linger_after_pause=12",
    ),  # heartbeats every 3 s: margin for a busy machine
}
#: A manual run without any fence (see the module doc).
MANUAL = (
    (os.environ["ZOMBIE_GUARANTEE"], os.environ.get("ZOMBIE_KNOBS", "")) if "ZOMBIE_GUARANTEE" in os.environ else None
)
LOCAL_REFUSAL = "the group membership changed during the batch"
BROKER_REFUSAL = re.compile(r"fenced, the batch's writes are refused and aborted \((send offsets|commit transaction): ")
WALLETS = [f"z{i}" for i in range(40)]


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def compact_fast(bootstrap: str, topic: str) -> None:
    """Roll segments after 1 s and clean as soon as anything is dirty."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("segment.ms", "1000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("min.cleanable.dirty.ratio", "0.01", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("delete.retention.ms", "1000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    admin.incremental_alter_configs([res])[res].result(15)


def metric(port: int, name: str) -> float:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    found = re.search(rf'^{name}{{group="balance"}} ([0-9.e+]+)$', body.decode(), flags=re.M)
    return float(found.group(1)) if found else 0.0


def deposits(rng: random.Random, n: int, start: int) -> list[Deposit]:
    return [Deposit(rng.choice(WALLETS), rng.randint(1, 3000) * UNIT, start + i * 1000) for i in range(n)]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_paused_member_past_its_session_cannot_write_stale_values(three_node_cluster, tmp_path, variant):
    guarantee, knobs = MANUAL or VARIANTS[variant]
    cluster = three_node_cluster
    bootstrap = cluster.broker.bootstrap
    cluster.extra_env["WALLET_PROCESSING_GUARANTEE"] = guarantee
    create_topics(bootstrap)
    compact_fast(bootstrap, "balance-table")
    rng = random.Random(4471)
    now = int(time.time() * UNIT)
    trigger = tmp_path / "pause-now"
    zombie = cluster.start(
        "balance",
        0,
        env={"WALLET_FAULT_INJECTION": f"pause_before_changelog=1{knobs}", "WALLET_FAULT_TRIGGER": str(trigger)},
    )
    cluster.start("above_threshold")
    writer = DepositWriter(bootstrap)

    # 1. balance-0 alone builds the table.
    writer.write(deposits(rng, 1500, now))
    writer.flush()
    wait_for(lambda: balances_match(bootstrap, expected_balances(writer.acked)), 60, "the first deposits")

    # 2. It stops itself in its next batch, with new values computed and nothing written.
    trigger.touch()
    writer.write(deposits(rng, 200, now + 2_000_000_000))
    writer.flush()
    wait_for(lambda: stopped(zombie.proc.pid), 30, "balance-0 to stop itself mid-batch")

    # 3. Its session expires; balance-1 takes every partition and moves the same wallets on.
    successor = cluster.start("balance", 1, wait=False)
    successor.wait_ready(90)
    writer.write(deposits(rng, 600, now + 4_000_000_000))
    writer.flush()
    wait_for(
        lambda: balances_match(bootstrap, expected_balances(writer.acked)),
        90,
        "balance-1 to apply every deposit while balance-0 is frozen",
    )

    # 4. The zombie wakes up and finishes its stale batch.
    os.kill(zombie.proc.pid, signal.SIGCONT)
    wait_for(lambda: "resumed after the injected pause" in zombie.log_path.read_text(), 30, "balance-0 to resume")
    if MANUAL is None:
        wait_for(lambda: "fenced, the batch" in zombie.log_path.read_text() or None, 30, "the zombie's batch refused")
    else:
        time.sleep(3.0 + float(knobs.partition("linger_after_pause=")[2].split(",")[0] or 0))
    log = zombie.log_path.read_text()
    if MANUAL is None:
        if variant == "broker-fence-alone":
            assert BROKER_REFUSAL.search(log), "the broker should have refused the zombie's offsets"
            assert LOCAL_REFUSAL not in log, "the local check was off: the refusal must be the broker's"
        elif variant == "local-fence-alone":
            assert LOCAL_REFUSAL in log, "the checkpoint should have refused the batch itself"
        else:
            assert LOCAL_REFUSAL in log or BROKER_REFUSAL.search(log), "the zombie's batch should have been refused"
        zombie.wait_ready(90)  # it rejoined the group as a new member
        assert metric(zombie.port, "stream_processor_fenced_total") >= 1

    # 5. New deposits to other wallets roll every changelog segment; compaction then runs.
    sentinels = [Deposit(f"roll-{i}", UNIT, now + 6_000_000_000 + i) for i in range(64)]
    time.sleep(1.5)
    writer.write(sentinels)
    writer.flush()
    expected = expected_balances(writer.acked)
    wait_for(lambda: balances_match(bootstrap, expected), 90, "every deposit, zombie or not")

    def compacted():
        records = read_topic(bootstrap, "balance-table")
        seen = [r[2] for r in records if r[2] is not None and not r[2].startswith(b"roll-")]
        return len(seen) == len(set(seen)) or f"{len(seen) - len(set(seen))} superseded records left"

    wait_for(compacted, 90, "the log cleaner to compact balance-table", interval=1.0)

    # 6. A processor restored from an empty disk, and an API view built from scratch, are exact.
    for name in ("balance-0", "balance-1"):
        assert cluster.services[name].stop() == 0
    shutil.rmtree(cluster.state_dir("balance", 0))
    cluster.services["balance-0"].env.pop("WALLET_FAULT_INJECTION")
    cluster.start("balance", 0)
    extra = [Deposit(w, UNIT, now + 8_000_000_000 + i) for i, w in enumerate(WALLETS)]
    writer.write(extra)
    writer.flush()
    expected = expected_balances(writer.acked)
    wait_for(
        lambda: balances_match(bootstrap, expected),
        90,
        "balances after a restore from the compacted changelog to equal the acknowledged deposits",
    )
    api = cluster.start("api")
    for wallet in WALLETS:
        status, body = http_get(f"http://127.0.0.1:{api.port}/details/{wallet}")
        assert status == 200
        assert round(json.loads(body)["Balance"] * UNIT) == expected[wallet], (wallet, body)
    wait_for(lambda: flags_in_table(bootstrap) == expected_flags(writer.acked), 60, "flags to match the model")
