"""``python -m wallet_bench``: run the benchmark phases and print the figures table."""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
from pathlib import Path

from wallet_bench import machine, profiling, report
from wallet_bench.contenders import go_binary, goka_available, kstreams_available, pyspy_binary, quix_available
from wallet_bench.http_load import wrk_available
from wallet_bench.progress import Progress
from walletkit.stream import DEFAULT_BATCH_SIZE

PHASES = ("processors", "api", "tables", "failover")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wallet_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny inputs and short loads (the smoke test): ~1 minute")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument(
        "--deposits",
        type=int,
        default=1_000_000,
        help="deposits pre-loaded for the processors (the fast contenders need a few seconds of steady work)",
    )
    p.add_argument("--wallets", type=int, default=10_000, help="wallets those deposits go to")
    p.add_argument("--partitions", type=int, default=8, help="partitions of every topic")
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="consume batch of the processors, the raw loop and Quix's commit_every (the services' default)",
    )
    p.add_argument("--session-timeout-ms", type=int, default=6000, help="consumer-group session timeout")
    p.add_argument(
        "--kafka-config",
        default="",
        help="extra librdkafka properties (key=value,...) for the walletkit side: processors, raw loop, "
        "restore and the services (their KAFKA_CONFIG), e.g. to try fetch.wait.max.ms=10",
    )
    p.add_argument("--quix-commit-interval", type=float, default=1.0, help="Quix checkpoint interval, seconds")
    p.add_argument("--no-quix", action="store_true", help="skip the Quix Streams baseline")
    p.add_argument("--no-goka", action="store_true", help="skip the Goka peer (bench/goka, needs Go)")
    p.add_argument(
        "--no-kstreams", action="store_true", help="skip the Kafka Streams peer (bench/kstreams, needs Java and Maven)"
    )
    p.add_argument("--processor-timeout", type=float, default=900, help="bound of one contender's run, seconds")
    p.add_argument("--api-seconds", type=float, default=10, help="duration of each wrk run")
    p.add_argument(
        "--warmup-seconds",
        type=float,
        default=8,
        help="unmeasured POST load on each fresh stack first (the broker's JIT warms up)",
    )
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    p.add_argument(
        "--open-rates",
        default="1000,2000",
        help="constant arrival rates (requests/s, comma-separated) of the open-loop API runs",
    )
    p.add_argument("--open-seconds", type=float, default=10, help="duration of each open-loop run")
    p.add_argument(
        "--api-workers",
        type=int,
        default=2,
        help="workers of the multi-worker API run (wallet-api --workers); 1 skips it",
    )
    p.add_argument("--api-wallets", type=int, default=1000, help="wallets the HTTP load spreads over")
    p.add_argument("--catch-up-timeout", type=float, default=300, help="bound on waiting for processors after POSTs")
    p.add_argument("--visible-rate", type=float, default=1000, help="deposits/s for deposit->visible")
    p.add_argument("--visible-seconds", type=float, default=10, help="duration of the deposit->visible load")
    p.add_argument("--visible-sample", type=int, default=10, help="read back every Nth deposit with its token")
    p.add_argument(
        "--table-wallets", type=int, default=1_000_000, help="wallets in each table for restore and view memory"
    )
    p.add_argument(
        "--failover-wallets",
        type=int,
        default=1_000_000,
        help="wallets in the table when a balance instance is killed or restarted",
    )
    p.add_argument("--failover-rate", type=float, default=1000, help="background deposits/s during failover")
    p.add_argument("--failover-seconds", type=float, default=15, help="probing around each failover, seconds")
    p.add_argument("--restore-timeout", type=float, default=900, help="bound of one restore / view catch-up")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile with py-spy (separate passes; the timed figures are taken without it)",
    )
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--profile-top", type=int, default=12, help="hot spots listed per profile")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--work-dir", default="", help="state, logs and profiles (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", default="", help="also write all results as JSON to this file")
    p.add_argument(
        "--plots",
        default="bench-plots",
        help="directory for the PNG plots (throughput over time, latency percentiles); '' for none",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


QUICK = dict(
    open_rates="200",
    open_seconds=2,
    deposits=3000,
    wallets=300,
    failover_wallets=3000,
    failover_rate=100,
    failover_seconds=6,
    api_seconds=2,
    visible_seconds=2,
    table_wallets=3000,
    api_wallets=200,
    quix_commit_interval=0.5,
    processor_timeout=60,
    restore_timeout=60,
    catch_up_timeout=30,
    warmup_seconds=1,
)


def main(argv: list[str] | None = None) -> None:
    p = parser()
    opts = p.parse_args(argv)
    if opts.quick:
        defaults = p.parse_args([])
        for k, v in QUICK.items():
            if getattr(opts, k) == getattr(defaults, k):  # explicit flags still win
                setattr(opts, k, v)
    phases = [s.strip() for s in opts.phases.split(",") if s.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phases: {', '.join(sorted(unknown))}")
    missing = []
    if "processors" in phases and not opts.no_quix and (why := quix_available()):
        missing.append(why)
    if "processors" in phases and not opts.no_goka and (why := goka_available()):
        missing.append(why)
    if "processors" in phases and not opts.no_kstreams and (why := kstreams_available()):
        missing.append(why)
    if "api" in phases and (why := wrk_available()):
        missing.append(why)
    if "api" in phases and go_binary() is None:
        missing.append("go not found: the open-loop load generator (bench/openloop) is built with Go 1.26+")
    if opts.profile and pyspy_binary() is None:
        missing.append("py-spy not found (requirements/bench.txt)")
    if missing:
        sys.exit("wallet_bench: cannot run:\n  " + "\n  ".join(missing))

    progress = Progress(enabled=not opts.quiet)
    work = Path(opts.work_dir) if opts.work_dir else Path(tempfile.mkdtemp(prefix="wallet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    results: dict = {
        "machine": machine.describe(),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sizes": (
            f"{opts.deposits:,} deposits over {opts.wallets:,} wallets, {opts.partitions} partitions, "
            f"batch {opts.batch_size}{'; kafka ' + opts.kafka_config if opts.kafka_config else ''}; wrk {opts.api_seconds:g}s × {opts.connections} conns; "
            f"visible {opts.visible_rate:g}/s × {opts.visible_seconds:g}s; tables {opts.table_wallets:,} wallets"
        ),
    }
    progress.say(f"work directory {work}; phases {', '.join(phases)}")
    try:
        if "processors" in phases:
            from wallet_bench import processors

            results["processors"] = processors.run(opts, work, progress)
        if "api" in phases:
            from wallet_bench import api

            results["api"] = api.run(opts, work, progress)
        if "tables" in phases:
            from wallet_bench import tables

            results["tables"] = tables.run(opts, work, progress)
        if "failover" in phases:
            from wallet_bench import failover

            results["failover"] = failover.run(opts, work, progress)
    finally:
        if opts.json:
            Path(opts.json).write_text(json.dumps(results, indent=2, default=str))
        if not (opts.keep or opts.work_dir):
            shutil.rmtree(work, ignore_errors=True)
    print(report.render(results), flush=True)
    if opts.plots:
        from wallet_bench import plots

        made = plots.write(results, Path(opts.plots))
        if made:
            print("\nplots: " + ", ".join(str(p) for p in made))
    profiles = [
        (k, v)
        for section in ("processors", "api", "tables")
        for k, v in results.get(section, {}).items()
        if k.startswith("profile_")
    ]
    for key, summary in profiles:
        print()
        print(profiling.format_summary(key.removeprefix("profile_"), summary))
