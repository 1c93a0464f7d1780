"""Brokers that die under load, on a three-node Apache Kafka cluster (replication 3,
min.insync.replicas 2, unclean leader election off).

Deposits go through the API at a constant arrival rate (open loop, bounded in count and
time) while the leader of deposit partitions is SIGKILLed, later the leader of a changelog
partition, and both are restarted. Every answer must be 202 or 503 (429 under overload);
every deposit answered 202 must be in the ledger exactly once (the API emits in
transactions) and in both tables exactly once; the processors and the API's views recover without being restarted.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter

import aiohttp
import pytest
from support import (
    Deposit,
    balances_match,
    create_topics,
    details,
    expected_balances,
    expected_flags,
    flags_in_table,
    read_topic,
    wait_for,
)

from walletkit.wallet.codecs import DepositRequest, deposit_time_micros

pytestmark = pytest.mark.integration

#: Deposits/s offered. 1,000/s saturates this 2-core machine with three brokers, four
#: services and the client on it (202 latencies of seconds, client timeouts): the rate is
#: what the machine sustains, the issue's 1,000/s is a setting (BROKER_FAULT_RATE).
RATE = int(os.environ.get("BROKER_FAULT_RATE", "300"))
SECONDS = 24  # of load; the faults happen inside it
WALLETS = 200
UNIT = 1_000_000


async def offer_load(port: int, answers: Counter, accepted: dict[str, int], latencies: list[float]) -> None:
    """RATE deposits/s for SECONDS, each sent on time whether earlier ones answered or not."""
    connector = aiohttp.TCPConnector(limit=2048)
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            wallet = f"b{i % WALLETS:03d}"
            units = 1 + (i * 7919) % 900
            started = time.monotonic()
            try:
                async with session.post(
                    f"http://127.0.0.1:{port}/deposit", data=json.dumps({"WalletID": wallet, "Amount": units})
                ) as resp:
                    body = await resp.json(content_type=None)
                    answers[resp.status] += 1
                    if resp.status == 202:
                        accepted[body["DepositID"]] = units * UNIT
                        latencies.append(time.monotonic() - started)
            except (TimeoutError, aiohttp.ClientError) as exc:
                answers[type(exc).__name__] += 1

        start = time.monotonic()
        tasks = []
        for i in range(RATE * SECONDS):
            delay = start + i / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)


def test_killed_leaders_lose_no_acknowledged_deposit_and_nothing_restarts(three_node_cluster):
    cluster = three_node_cluster
    kafka = cluster.broker
    bootstrap = kafka.bootstrap
    create_topics(bootstrap)
    cluster.start_all()
    api = cluster.services["api-0"]
    answers: Counter = Counter()
    accepted: dict[str, int] = {}
    latencies: list[float] = []
    pids = {name: proc.proc.pid for name, proc in cluster.services.items()}

    async def scenario() -> None:
        load = asyncio.create_task(offer_load(api.port, answers, accepted, latencies))
        await asyncio.sleep(4)
        for topic, partition in (("deposit", 0), ("balance-table", 1)):
            leader = kafka.leader_of(topic, partition)
            kafka.kill_node(leader)
            print(f"killed node {leader}, leader of {topic}[{partition}]")
            await asyncio.sleep(6)
            await asyncio.to_thread(kafka.start_node, leader)
            await asyncio.sleep(2)
        await load

    asyncio.run(scenario())
    print(
        f"answers {dict(answers)}; 202 latency p50 {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )
    assert set(answers) <= {202, 503, 429}, f"only 202, 503 or 429 may answer a deposit: {dict(answers)}"
    assert answers[202] >= RATE * SECONDS // 4, f"too few deposits accepted to mean anything: {dict(answers)}"

    # The ledger: every 202 exactly once (a 503 may still have landed: the client retries it
    # with its key, so it counts in the tables, which must equal the ledger).
    # Read committed, as processors read it: a transaction left open by a producer that was
    # replaced mid-failover hides every later record of its partitions until the coordinator
    # aborts it (the emitter's transaction.timeout.ms is 10 s, checked every 10 s), so the
    # ledger is read again until it holds every 202 or 45 s passed. A lost deposit stays lost.
    read_started = time.monotonic()
    while True:
        where: dict[str, list[tuple[int, int, int]]] = {}  # DepositID -> its (partition, offset, time) records
        ledger_deposits = []
        for p, o, key, value, appended_ms in read_topic(bootstrap, "deposit", timestamps=True):
            d = DepositRequest.FromString(value)
            where.setdefault(d.DepositID, []).append((p, o, d.CreatedAtMicros))
            # Timed as the processors time it (the broker's LogAppendTime).
            ledger_deposits.append(Deposit(d.WalletID, d.AmountMicros, deposit_time_micros(d, appended_ms)))
        lost = [k for k in accepted if k not in where]
        if not lost or time.monotonic() - read_started > 45:
            break
        time.sleep(2)
    print(f"ledger read committed after {time.monotonic() - read_started:.1f} s")
    twice = {k: places for k, places in where.items() if len(places) > 1}
    print(
        f"ledger: {len(where)} deposits, {len(accepted)} answered 202, "
        f"{len(where) - len(accepted)} answered 503 yet stored, {len(twice)} written twice"
    )
    assert not lost, f"{len(lost)} acknowledged deposits are not in the ledger, e.g. {lost[:3]}"
    # The API emits in transactions (exactly-once): a batch re-sent during a leader change
    # is in an aborted transaction, which read_committed readers (this one too) never see.
    assert not twice, (
        f"{len(twice)} deposits are in the ledger twice, e.g. {list(twice.items())[:2]} "
        "(partition, offset, CreatedAtMicros)"
    )

    # Both tables equal the ledger exactly (each of its records applied once), and nothing
    # was restarted.
    wait_for(
        lambda: balances_match(bootstrap, expected_balances(ledger_deposits)), 120, "balance-table to equal the ledger"
    )
    want = expected_flags(ledger_deposits)
    wait_for(lambda: flags_in_table(bootstrap) == want, 60, "above_threshold-table to equal the model")
    for name, proc in cluster.services.items():
        assert proc.running and proc.proc.pid == pids[name], f"{name} was restarted or died"
    # The API's views followed the changelogs through the elections.
    sample = sorted({d.wallet for d in ledger_deposits})[:20]
    expected = expected_balances(ledger_deposits)
    for wallet in sample:
        wait_for(lambda w=wallet: _api_balance(api.port, w) == expected[w], 30, f"the API's view of {wallet}")


def _api_balance(port: int, wallet: str) -> int | None:
    status, body = details(port, wallet)
    return round(json.loads(body)["Balance"] * UNIT) if status == 200 else None
