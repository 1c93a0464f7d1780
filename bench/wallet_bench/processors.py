"""Processor throughput: walletkit processors vs Kafka Streams, Goka, Quix Streams and a raw loop, one input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from wallet_bench import profiling
from wallet_bench.contenders import (
    QUIX_PYTHON,
    Throughput,
    build_goka,
    build_kstreams,
    pyspy_binary,
    time_to_end,
    worker_cmd,
)
from wallet_bench.kafka_io import load_deposits
from wallet_bench.progress import Progress
from walletkit.devstack.kafka import ApacheKafka
from walletkit.stream import KafkaSettings, TopicManager
from walletkit.stream.kafka import CONSUMER_PREFETCH

TOPIC = "deposit"


def run(opts, work: Path, progress: Progress) -> dict:
    results: dict = {}
    with ApacheKafka(log_path=work / "logs" / "broker-processors.log") as broker:
        bs = broker.bootstrap
        TopicManager(KafkaSettings(bs)).ensure_stream(TOPIC, opts.partitions)
        progress.say(
            f"processors: loading {opts.deposits:,} deposits over {opts.wallets:,} wallets "
            f"into {opts.partitions} partitions (Goka partitioner)"
        )
        ends = load_deposits(bs, TOPIC, opts.partitions, opts.deposits, opts.wallets, opts.seed, progress.tick)
        results["ends"] = ends
        common = [
            "--bootstrap",
            bs,
            "--session-timeout-ms",
            str(opts.session_timeout_ms),
            "--batch-size",
            str(opts.batch_size),
            "--kafka-config",
            opts.kafka_config,
        ]
        contenders: list[tuple[str, str, list[str]]] = [
            ("raw", "bench-raw", worker_cmd("raw", *common, "--group", "bench-raw")),
            (
                "balance",
                "balance",
                worker_cmd("processor", *common, "--kind", "balance", "--state-dir", str(work / "state" / "processor")),
            ),
            (
                "above_threshold",
                "above_threshold",
                worker_cmd(
                    "processor", *common, "--kind", "above_threshold", "--state-dir", str(work / "state" / "processor")
                ),
            ),
        ]
        # The same processors without transactions (the applied-offsets mode): the cost of
        # exactly-once, measured in the same run on the same input and broker.
        for kind in ("balance", "above_threshold"):
            contenders.append(
                (
                    f"{kind}_applied_offsets",
                    f"{kind}-ao",
                    worker_cmd(
                        "processor",
                        *common,
                        "--kind",
                        kind,
                        "--group",
                        f"{kind}-ao",
                        "--guarantee",
                        "applied_offsets",
                        "--state-dir",
                        str(work / "state" / "processor-ao"),
                    ),
                )
            )
        if not opts.no_quix:
            for kind in ("balance", "above_threshold"):
                contenders.append(
                    (
                        f"quix_{kind}",
                        f"quix-{kind}",
                        [
                            str(QUIX_PYTHON),
                            "-m",
                            "wallet_bench.quix_app",
                            "--bootstrap",
                            bs,
                            "--kind",
                            kind,
                            "--group",
                            f"quix-{kind}",
                            "--state-dir",
                            str(work / "state" / f"quix-{kind}"),
                            "--commit-interval",
                            str(opts.quix_commit_interval),
                            "--commit-every",
                            str(opts.batch_size),
                            "--session-timeout-ms",
                            str(opts.session_timeout_ms),
                            "--consumer-config",
                            json.dumps(CONSUMER_PREFETCH),
                        ],
                    )
                )
        if not opts.no_goka:
            # The Go service's processors with Goka (its defaults, LevelDB, its own changelog).
            goka = build_goka(work, progress)
            for kind in ("balance", "above_threshold"):
                # Goka creates a missing table topic and reads its offsets at once; on a topic
                # that new the leaders may not be known yet and Goka gives up (NOT_LEADER). Made
                # here first, as a deployment would have it.
                TopicManager(KafkaSettings(bs)).ensure_table(f"goka-{kind}-table", opts.partitions)
                contenders.append(
                    (
                        f"goka_{kind}",
                        f"goka-{kind}",
                        [
                            str(goka),
                            "-brokers",
                            bs,
                            "-kind",
                            kind,
                            "-group",
                            f"goka-{kind}",
                            "-state-dir",
                            str(work / "state" / f"goka-{kind}"),
                        ],
                    )
                )
        if not opts.no_kstreams:
            # Kafka Streams (Processor API, a RocksDB store and its changelog, its defaults), under
            # both of its guarantees: at_least_once beside our applied_offsets, exactly_once_v2
            # beside our exactly_once.
            kstreams = build_kstreams(work, progress)
            for kind in ("balance", "above_threshold"):
                for guarantee, short in (("at_least_once", "alos"), ("exactly_once_v2", "eos")):
                    app = f"kstreams-{kind}-{short}"
                    contenders.append(
                        (
                            f"kstreams_{kind}_{short}",
                            app,
                            [
                                *kstreams,
                                "--bootstrap",
                                bs,
                                "--kind",
                                kind,
                                "--application-id",
                                app,
                                "--state-dir",
                                str(work / "state" / app),
                                "--guarantee",
                                guarantee,
                            ],
                        )
                    )
        for name, group, cmd in contenders:
            progress.say(f"processors: running {name} over the input")
            t: Throughput = time_to_end(
                name,
                cmd,
                bs,
                group,
                TOPIC,
                ends,
                progress,
                work / "logs" / f"{name}.log",
                timeout=opts.processor_timeout,
            )
            results[name] = t.__dict__ | {"rate": t.rate, "rate_per_cpu": t.rate_per_cpu, "steady": t.steady}
        if opts.profile:
            if pyspy_binary() is None:
                progress.say("profile: py-spy not found; skipping processor profiles")
            else:
                for kind in ("balance", "above_threshold"):
                    group = f"{kind}-profiled"
                    out = work / "profiles" / f"processor-{kind}.txt"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    state = work / "state" / "profiled"
                    shutil.rmtree(state, ignore_errors=True)
                    cmd = worker_cmd("processor", *common, "--kind", kind, "--group", group, "--state-dir", str(state))
                    progress.say(f"profile: {kind} processor under py-spy (group {group})")
                    time_to_end(
                        f"{kind} (profiled)",
                        cmd,
                        bs,
                        group,
                        TOPIC,
                        ends,
                        progress,
                        work / "logs" / f"{kind}-profiled.log",
                        timeout=opts.processor_timeout * 2,
                        profile_to=out,
                        profile_rate=opts.profile_rate,
                    )
                    results[f"profile_{kind}"] = profiling.summarize(out, opts.profile_top)
    return results
