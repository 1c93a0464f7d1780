"""Tables of N wallets: restore from the changelog (records/s) and the API's RSS with both views full."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from wallet_bench import profiling
from wallet_bench.contenders import env, pyspy_binary, stop, worker_cmd
from wallet_bench.kafka_io import load_balance_table, load_threshold_table
from wallet_bench.machine import rss_mb
from wallet_bench.progress import Progress
from walletkit.devstack.cluster import LocalCluster
from walletkit.devstack.kafka import ApacheKafka
from walletkit.devstack.net import wait_until
from walletkit.stream import KafkaSettings, TopicManager
from walletkit.wallet.topology import ABOVE_THRESHOLD_TABLE, BALANCE_TABLE, ensure_topics


def _restore(opts, bs: str, topic: str, kind: str, work: Path, progress: Progress, profile: bool) -> dict:
    state = work / "state" / f"restore-{kind}"
    shutil.rmtree(state, ignore_errors=True)
    cmd = worker_cmd(
        "restore",
        "--bootstrap",
        bs,
        "--kind",
        kind,
        "--topic",
        topic,
        "--state-dir",
        str(state),
        "--kafka-config",
        opts.kafka_config,
    )
    log = work / "logs" / f"restore-{kind}{'-profiled' if profile else ''}.log"
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=err, text=True)
    spy = (
        profiling.attach(proc.pid, work / "profiles" / f"restore-{kind}.txt", opts.profile_rate, log)
        if profile
        else None
    )
    try:
        out, _ = proc.communicate(timeout=opts.restore_timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    finally:
        if spy is not None:
            stop(spy, 10, wait_first=30)
    if proc.returncode != 0:
        raise RuntimeError(f"restore of {topic} failed ({proc.returncode}); see {log}")
    r = json.loads(out.strip().splitlines()[-1])
    r["rate"] = r["records"] / max(r["seconds"], 1e-6)
    shutil.rmtree(state, ignore_errors=True)
    return r


def run(opts, work: Path, progress: Progress) -> dict:
    results: dict = {"wallets": opts.table_wallets}
    n = opts.table_wallets
    broker = ApacheKafka(log_path=work / "logs" / "broker-tables.log")
    cluster = LocalCluster(
        work / "tables",
        broker=broker,
        partitions=opts.partitions,
        session_timeout_ms=opts.session_timeout_ms,
        extra_env={"KAFKA_CONFIG": opts.kafka_config} if opts.kafka_config else None,
    )
    try:
        cluster.start_broker()
        bs = broker.bootstrap
        ensure_topics(TopicManager(KafkaSettings(bs)), opts.partitions, create=True)
        progress.say(f"tables: writing {n:,} wallets into {BALANCE_TABLE} and {ABOVE_THRESHOLD_TABLE}")
        load_balance_table(bs, BALANCE_TABLE, opts.partitions, n, progress.tick)
        load_threshold_table(bs, ABOVE_THRESHOLD_TABLE, opts.partitions, n, progress.tick)
        for topic, kind in ((BALANCE_TABLE, "balance"), (ABOVE_THRESHOLD_TABLE, "above_threshold")):
            progress.say(f"restore: rebuilding {topic} ({n:,} records) into a fresh RocksDB")
            r = results[f"restore_{kind}"] = _restore(opts, bs, topic, kind, work, progress, profile=False)
            progress.say(f"restore: {topic}: {r['records']:,} records in {r['seconds']:.1f}s = {r['rate']:,.0f}/s")
            if r["keys"] != n:
                raise RuntimeError(f"restore of {topic} has {r['keys']:,} keys, expected {n:,}")
        if opts.profile and pyspy_binary() is not None:
            for topic, kind in ((BALANCE_TABLE, "balance"), (ABOVE_THRESHOLD_TABLE, "above_threshold")):
                progress.say(f"profile: restore of {topic} under py-spy")
                _restore(opts, bs, topic, kind, work, progress, profile=True)
                results[f"profile_restore_{kind}"] = profiling.summarize(
                    work / "profiles" / f"restore-{kind}.txt", opts.profile_top
                )

        progress.say(f"views: starting wallet-api with empty state; its views follow {n:,} wallets each")
        api = cluster.service("api")
        started = time.monotonic()
        api.start()
        wait_until(lambda: api.ready(), opts.restore_timeout, interval=0.2, what="wallet-api views caught up")
        results["view_catch_up_seconds"] = time.monotonic() - started
        time.sleep(2.0)  # let RocksDB settle its memtables and compactions
        rss, peak = rss_mb(api.proc.pid)
        results["view_rss_mb"], results["view_peak_rss_mb"] = rss, peak
        progress.say(f"views: ready after {results['view_catch_up_seconds']:.1f}s; RSS {rss:.0f} MiB (peak {peak:.0f})")
    finally:
        cluster.stop()
    return results
