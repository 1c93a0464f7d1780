"""The fault-injection suite: nothing lost, nothing counted twice.

A seeded stream of deposits goes through two API replicas over HTTP (each with an
Idempotency-Key, retried on the other replica until acknowledged, as a careful
client does) while a seeded schedule breaks things: processors SIGKILLed and
restarted on the same disk or on an empty one, second processor instances joining
and leaving (gracefully or killed), an API replica killed and restarted. At the
end every wallet's balance and flag must equal the model computed from the
acknowledged deposits, in the tables (what a Goka view would read) and through the
API. Real broker, real processes, real RocksDB, real HTTP.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
from support import balances_in_table, balances_match, create_topics, details, flags_in_table, wait_for

from wallet_above_threshold.threshold import Rule, flagged_by_definition

pytestmark = pytest.mark.integration

SEED = 20261125
MIN_DEPOSITS = 3000  # sent at least; the clients go on until the fault schedule is over
MAX_DEPOSITS = 30_000  # ... but never more (a bounded load)
WALLETS = 300


class Client(threading.Thread):
    """Sends its share of deposits; retries each (same key) until a 202, bounded."""

    def __init__(
        self,
        ports: list[int],
        work: list[tuple[str, str, int]],
        acked: dict,
        stats: Counter,
        enough: threading.Event,
        min_count: int,
    ) -> None:
        super().__init__(daemon=True)
        self.ports, self.work, self.acked, self.stats = ports, work, acked, stats
        self.enough, self.min_count = enough, min_count

    def run(self) -> None:
        for i, (key, wallet, units) in enumerate(self.work):
            if self.enough.is_set() and i >= self.min_count:
                break  # the fault schedule is over
            body = json.dumps({"WalletID": wallet, "Amount": units}).encode()
            deadline = time.monotonic() + 90
            attempt = 0
            while time.monotonic() < deadline:
                port = self.ports[(i + attempt) % len(self.ports)]
                attempt += 1
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/deposit", data=body, method="POST", headers={"Idempotency-Key": key}
                )
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        receipt = json.loads(resp.read())
                        self.acked[key] = (wallet, units * 1_000_000, receipt["CreatedAtMicros"])
                        self.stats["acked"] += 1
                        self.stats["retries"] += attempt - 1
                        break
                except urllib.error.HTTPError as exc:
                    self.stats[f"http_{exc.code}"] += 1
                    assert exc.code in (503, 429), f"unexpected {exc.code}: {exc.read()!r}"
                except OSError:
                    self.stats["connection_errors"] += 1  # the replica was killed
                time.sleep(0.05)
            else:
                self.stats["gave_up"] += 1
            time.sleep(0.004)  # a bounded rate: about 150 deposits/s per client


def test_deposits_survive_kills_restarts_lost_disks_rebalances_and_api_crashes(cluster):
    rng = random.Random(SEED)
    create_topics(cluster.broker.bootstrap)
    for name in ("balance", "above_threshold"):
        cluster.start(name, wait=False)
    cluster.start("api", 0, wait=False)
    cluster.start("api", 1, wait=False)
    for proc in cluster.services.values():
        proc.wait_ready(90)
    ports = [cluster.services["api-0"].port, cluster.services["api-1"].port]

    work = []
    for i in range(MAX_DEPOSITS):
        w = rng.randrange(WALLETS)
        wallet = f"w{w:03d}"
        units = rng.randint(200, 2500) if w % 4 == 0 else rng.randint(1, 60)
        work.append((f"dep-{i}", wallet, units))
    acked: dict[str, tuple[str, int, int]] = {}
    stats: Counter = Counter()
    schedule_done = threading.Event()
    clients = [Client(ports, work[k::2], acked, stats, schedule_done, MIN_DEPOSITS // 2) for k in range(2)]
    for c in clients:
        c.start()

    actions = Counter()
    schedule = [
        "kill_balance",
        "kill_threshold_empty_disk",
        "join_second",
        "kill_api",
        "kill_balance_empty_disk",
        "leave_second",
        "kill_threshold",
        "join_second",
        "kill_second",
        "kill_api",
        "kill_balance",
        "kill_threshold",
    ]
    for action in schedule:
        # Each fault hits a service that is up: one restarted a moment ago is first waited for.
        for proc in list(cluster.services.values()):
            if proc.running:
                proc.wait_ready(90)
        time.sleep(rng.uniform(0.5, 1.5))
        assert any(c.is_alive() for c in clients), "the clients ran out of deposits before the faults did"
        actions[action] += 1
        if action.startswith("kill_balance") or action.startswith("kill_threshold"):
            service = "balance" if action.startswith("kill_balance") else "above_threshold"
            cluster.services[f"{service}-0"].kill()
            if action.endswith("empty_disk"):
                shutil.rmtree(cluster.state_dir(service), ignore_errors=True)
            cluster.start(service, wait=False)
        elif action == "kill_api":
            victim = cluster.services[f"api-{rng.randrange(2)}"]
            victim.kill()
            victim.start()
        elif action == "join_second":
            for service in ("balance", "above_threshold"):
                if not cluster.services.get(f"{service}-1") or not cluster.services[f"{service}-1"].running:
                    cluster.start(service, 1, wait=False)
        elif action in ("leave_second", "kill_second"):
            for service in ("balance", "above_threshold"):
                proc = cluster.services.get(f"{service}-1")
                if proc and proc.running:
                    proc.stop() if action == "leave_second" else proc.kill()
    schedule_done.set()
    for c in clients:
        c.join(300)
    for proc in cluster.services.values():
        if proc.running:
            proc.wait_ready(90)

    assert stats["gave_up"] == 0 and len(acked) == stats["acked"] >= MIN_DEPOSITS, (stats, len(acked))
    expected = Counter()
    per_wallet: dict[str, list[tuple[int, int]]] = {}
    for wallet, micros, at in acked.values():
        expected[wallet] += micros
        per_wallet.setdefault(wallet, []).append((at, micros))
    want_flags = {w: flagged_by_definition(ds, Rule()) for w, ds in per_wallet.items()}
    wait_for(
        lambda: balances_match(cluster.broker.bootstrap, dict(expected)),
        120,
        "every balance to equal the acknowledged deposits",
    )
    wait_for(lambda: flags_in_table(cluster.broker.bootstrap) == want_flags, 60, "every flag to equal the model")
    # And through the API (the views), for every wallet.
    api = cluster.services["api-0"]
    api.wait_ready(60)
    wrong = []
    for wallet, micros in expected.items():
        status, body = details(api.port, wallet)
        doc = json.loads(body)
        if status != 200 or round(doc["Balance"] * 1_000_000) != micros or doc["AboveThreshold"] != want_flags[wallet]:
            wrong.append((wallet, status, doc, micros, want_flags[wallet]))
    assert not wrong, wrong[:5]
    balances = balances_in_table(cluster.broker.bootstrap)
    mismatches = sum(1 for w, m in expected.items() if balances.get(w) != m)
    print(
        f"\nfault suite: {len(acked)} deposits acknowledged over {len(expected)} wallets, "
        f"{sum(want_flags.values())} flagged; actions {dict(actions)}; client {dict(stats)}; mismatches {mismatches}"
    )
    assert sum(actions.values()) == len(schedule), actions
    assert any(want_flags.values()) and not all(want_flags.values())
