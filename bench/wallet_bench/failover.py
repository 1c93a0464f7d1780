"""Failover: how long new deposits stay invisible in ``/details`` when a balance instance goes.

Two balance instances (static membership, as the chart runs them), one above_threshold
instance and the API run as processes on Apache Kafka, with a table of ``--failover-wallets``
wallets built by the processors from one deposit each. Under a steady background load of
``--failover-rate`` deposits/s written to the topic, a probe deposits 1 unit through the API
into a wallet of the victim's partitions, then reads ``/details`` every 20 ms until the
balance shows it; the next probe follows at once. The *visibility gap* is the longest
ack-to-visible time of any probe. Three scenes:

- ``kill -9`` of the instance owning most partitions, without and with a standby
  (``WALLET_STANDBY_REPLICAS`` 0 and 1): the survivor takes over once the victim's session
  (``--session-timeout-ms``) expires, restoring from the changelog or only the tail;
- a rolling restart (SIGTERM, start again on the same disk, wait ready, next instance),
  with a standby;
- on the same stack, ``kill -9`` of an instance started again at once on the same disk
  and id, as the kubelet restarts a crashed container: no session to wait for.

Each scene also reports the records the takeover restored (the survivor's own metric).
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Producer

from wallet_bench.kafka_io import load_deposits, wallet_id
from wallet_bench.progress import Progress
from walletkit.devstack.cluster import LocalCluster
from walletkit.devstack.kafka import ApacheKafka
from walletkit.devstack.net import http_get
from walletkit.stream import KafkaSettings, TopicManager, partition_for
from walletkit.wallet.topology import ensure_topics
from walletkit.wallet.wallet_pb2 import DepositRequest

SCALE = 1_000_000


def _status(proc) -> dict:
    return json.loads(http_get(proc.url("/healthz"))[1])


def _metric(proc, name: str) -> float | None:
    """A balance-table sample of ``name`` on the instance's /metrics (None when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    _status_code, body = http_get(proc.url("/metrics"))
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("topic") == "balance-table":
                return sample.value
    return None


def _restored(proc) -> float:
    return _metric(proc, "stream_restore_records_total") or 0.0


class Background:
    """Deposits at ``rate``/s straight to the topic for at most ``seconds`` (bounded in count and time)."""

    def __init__(self, bootstrap: str, partitions: int, wallets: int, rate: float, seconds: float) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
        self._partitions, self._wallets, self._rate, self._seconds = partitions, wallets, rate, seconds
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Background:
        self._thread.start()
        return self

    def _run(self) -> None:
        rng = random.Random(3)
        started = time.monotonic()
        limit = int(self._rate * self._seconds)
        while not self._stop.is_set() and self.sent < limit and time.monotonic() - started < self._seconds:
            wait = started + self.sent / self._rate - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, 0.05))
                continue
            wid = wallet_id(rng.randrange(self._wallets)).encode()
            msg = DepositRequest(
                WalletID=wid.decode(),
                Amount=1.0,
                AmountMicros=SCALE,
                CreatedAt=int(time.time()),
                CreatedAtMicros=int(time.time() * SCALE),
            )
            try:
                self._producer.produce(
                    "deposit", msg.SerializeToString(), wid, partition=partition_for(wid, self._partitions)
                )
                self.sent += 1
            except BufferError:
                pass
            self._producer.poll(0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._producer.flush(10)


class Probe:
    """Deposits into ``wallets`` one at a time through the API and times ack -> visible."""

    def __init__(self, api_port: int, wallets: list[str], *, timeout: float = 120.0) -> None:
        self._port, self._wallets, self._timeout = api_port, wallets, timeout
        self._stop = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (acked at, seconds until visible)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Probe:
        self._thread.start()
        return self

    def _balance(self, wallet: str) -> float | None:
        try:
            status, body = http_get(f"http://127.0.0.1:{self._port}/details/{wallet}")
        except OSError:
            return None
        return json.loads(body)["Balance"] if status == 200 else 0.0

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            wallet = self._wallets[i % len(self._wallets)]
            i += 1
            before = self._balance(wallet)
            if before is None:
                time.sleep(0.1)
                continue
            req = urllib.request.Request(
                f"http://127.0.0.1:{self._port}/deposit",
                method="POST",
                data=json.dumps({"WalletID": wallet, "Amount": 1}).encode(),
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    resp.read()
            except OSError:
                time.sleep(0.1)
                continue
            acked = time.monotonic()
            while time.monotonic() - acked < self._timeout:
                if (self._balance(wallet) or 0.0) >= before + 1:
                    self.samples.append((acked, time.monotonic() - acked))
                    break
                time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self._timeout + 5)

    def gap(self, since: float) -> float:
        return max((s for at, s in self.samples if at >= since - 30), default=float("nan"))

    def typical(self, until: float) -> float:
        before = sorted(s for at, s in self.samples if at < until)
        return before[len(before) // 2] if before else float("nan")


def _probe_wallets(partitions: list[int], total: int) -> list[str]:
    found: list[str] = []
    for p in partitions:
        i = 0
        while partition_for(f"probe-{p}-{i}".encode(), total) != p:
            i += 1
        found.append(f"probe-{p}-{i}")
    return found


def _stack(opts, work: Path, name: str, standby: int, progress: Progress) -> LocalCluster:
    broker = ApacheKafka(log_path=work / "logs" / f"broker-{name}.log")
    cluster = LocalCluster(
        work / name,
        broker=broker,
        partitions=opts.partitions,
        session_timeout_ms=opts.session_timeout_ms,
        extra_env={"KAFKA_CONFIG": opts.kafka_config} if opts.kafka_config else None,
    )
    cluster.start_broker()
    bs = broker.bootstrap
    ensure_topics(TopicManager(KafkaSettings(bs)), opts.partitions, create=True)
    n = opts.failover_wallets
    progress.say(f"failover/{name}: one deposit into each of {n:,} wallets")
    load_deposits(bs, "deposit", opts.partitions, n, n, opts.seed, progress.tick)
    env = {"WALLET_STANDBY_REPLICAS": str(standby)}
    for i in (0, 1):
        cluster.start("balance", i, wait=False, env={**env, "WALLET_INSTANCE_ID": f"wallet-balance-{i}"})
    cluster.start("above_threshold", wait=False)
    cluster.start("api", wait=False)
    for proc in cluster.services.values():
        proc.wait_ready(opts.restore_timeout)
    progress.say(f"failover/{name}: the stack is up; waiting for the table to hold every wallet")
    _settle(cluster, opts, standby)
    return cluster


def _settle(cluster: LocalCluster, opts, standby: int, *, drained: bool = True) -> None:
    """Until both groups processed every deposit, both instances are ready and (with a
    standby) their warm copies caught up."""
    from wallet_operator.kafka_lag import LagReader
    from walletkit.devstack.net import wait_until

    reader = LagReader({"bootstrap.servers": cluster.broker.bootstrap}, timeout=10)
    try:
        if drained:
            wait_until(
                lambda: all(reader.read(group, "deposit").total_lag == 0 for group in ("balance", "above_threshold")),
                opts.restore_timeout,
                interval=0.5,
                what="both groups to process every deposit",
            )
    finally:
        reader.close()

    def settled() -> bool:
        for i in (0, 1):
            proc = cluster.services[f"balance-{i}"]
            if _status(proc).get("status") != "ok":
                return False
            if standby and _metric(proc, "stream_standby_lag_records") != 0:
                return False
        return True

    wait_until(settled, opts.restore_timeout, interval=0.5, what="balance instances ready and warm")


def _measured(probe: Probe, load: Background, since: float, **figures: float) -> dict:
    """Stop the probe and the load; the scene's figures from ``since`` (the kill, the roll) on."""
    probe.stop()
    load.stop()
    return {
        "gap_seconds": probe.gap(since),
        "typical_seconds": probe.typical(since),
        **figures,
        "probes": len(probe.samples),
        "background_deposits": load.sent,
    }


def _report(progress: Progress, name: str, result: dict, what: str) -> dict:
    progress.say(
        f"failover/{name}: gap {result['gap_seconds']:.2f}s (typical {result['typical_seconds']:.3f}s), "
        f"{what}, restored {result['restored_records']:,.0f} records"
    )
    return result


def _kill_scene(opts, work: Path, standby: int, progress: Progress) -> dict:
    name = f"kill-standby{standby}"
    cluster = _stack(opts, work, name, standby, progress)
    try:
        procs = [cluster.services["balance-0"], cluster.services["balance-1"]]
        owned = [_status(p)["partitions"] for p in procs]
        victim_i = max((0, 1), key=lambda i: len(owned[i]))
        victim, survivor = procs[victim_i], procs[1 - victim_i]
        probe = Probe(cluster.services["api-0"].port, _probe_wallets(owned[victim_i], opts.partitions)).start()
        load = Background(
            cluster.broker.bootstrap,
            opts.partitions,
            opts.failover_wallets,
            opts.failover_rate,
            opts.failover_seconds + 60,
        ).start()
        time.sleep(min(5.0, opts.failover_seconds / 3))
        before = _restored(survivor)
        progress.say(f"failover/{name}: kill -9 of balance-{victim_i} (partitions {owned[victim_i]})")
        killed = time.monotonic()
        victim.kill()
        from walletkit.devstack.net import wait_until

        wait_until(
            lambda: len(_status(survivor)["partitions"]) == opts.partitions and _status(survivor)["status"] == "ok",
            opts.restore_timeout,
            interval=0.1,
            what="the survivor to own and restore every partition",
        )
        took_over = time.monotonic() - killed
        time.sleep(min(5.0, opts.failover_seconds / 3))
        result = _measured(
            probe, load, killed, takeover_seconds=took_over, restored_records=_restored(survivor) - before
        )
        return _report(progress, name, result, f"takeover {took_over:.2f}s")
    finally:
        cluster.stop()


def _rolling_scene(opts, work: Path, progress: Progress) -> dict:
    name = "rolling"
    cluster = _stack(opts, work, name, 1, progress)
    try:
        procs = [cluster.services["balance-0"], cluster.services["balance-1"]]
        probe = Probe(
            cluster.services["api-0"].port, _probe_wallets(list(range(opts.partitions)), opts.partitions)
        ).start()
        load = Background(
            cluster.broker.bootstrap,
            opts.partitions,
            opts.failover_wallets,
            opts.failover_rate,
            opts.failover_seconds + 120,
        ).start()
        time.sleep(min(5.0, opts.failover_seconds / 3))
        started = time.monotonic()
        restored = 0.0
        for i, proc in enumerate(procs):
            progress.say(f"failover/{name}: restarting balance-{i} (SIGTERM, then the same disk and id)")
            proc.stop()
            proc.start()
            proc.wait_ready(opts.restore_timeout)
            restored += _restored(proc)  # a new process: its counter starts at 0
        rolled = time.monotonic() - started
        _settle(cluster, opts, 0, drained=False)  # ready; under the ongoing load lag is never exactly 0
        time.sleep(min(5.0, opts.failover_seconds / 3))
        result = _measured(probe, load, started, roll_seconds=rolled, restored_records=restored)
        _report(progress, name, result, f"a {rolled:.1f}s roll")
        return result, _crash_restart(cluster, opts, progress)
    finally:
        cluster.stop()


def _crash_restart(cluster: LocalCluster, opts, progress: Progress) -> dict:
    """``kill -9`` of an instance started again at once on the same disk and id, as the kubelet
    restarts a crashed container in its pod: the static member takes its partitions back
    without waiting for its session, and restores only what its store had not flushed."""
    name = "crash-restart"
    proc = cluster.services["balance-0"]
    probe = Probe(cluster.services["api-0"].port, _probe_wallets(_status(proc)["partitions"], opts.partitions)).start()
    load = Background(
        cluster.broker.bootstrap, opts.partitions, opts.failover_wallets, opts.failover_rate, opts.failover_seconds + 60
    ).start()
    time.sleep(min(5.0, opts.failover_seconds / 3))
    progress.say(f"failover/{name}: kill -9 of balance-0, started again at once (same disk and id)")
    killed = time.monotonic()
    proc.kill()
    proc.start()
    proc.wait_ready(opts.restore_timeout)
    back = time.monotonic() - killed
    time.sleep(min(5.0, opts.failover_seconds / 3))
    result = _measured(probe, load, killed, back_seconds=back, restored_records=_restored(proc))
    return _report(progress, name, result, f"ready again after {back:.2f}s")


def run(opts, work: Path, progress: Progress) -> dict:
    return {
        "wallets": opts.failover_wallets,
        "rate": opts.failover_rate,
        "session_timeout_ms": opts.session_timeout_ms,
        "kill_without_standby": _kill_scene(opts, work, 0, progress),
        "kill_with_standby": _kill_scene(opts, work, 1, progress),
        **dict(zip(("rolling_with_standby", "crash_restart_with_standby"), _rolling_scene(opts, work, progress))),
    }
