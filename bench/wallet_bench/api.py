"""API figures: POST/GET under wrk (closed loop: the ceiling) and at constant arrival rates
(open loop: latency as clients see it), vs a bare aiohttp app; deposit -> visible at a steady rate.

The API is the real stack: ``wallet-api``, ``wallet-balance`` and ``wallet-above-threshold``
started from their console scripts by ``walletkit.devstack.LocalCluster`` on a fresh broker.
"""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

from wallet_bench import http_load, profiling
from wallet_bench.contenders import build_openloop, env, pyspy_binary, stop, worker_cmd
from wallet_bench.kafka_io import CommittedOffsets, wallet_id
from wallet_bench.machine import cpu_seconds, rss_mb
from wallet_bench.progress import Progress
from walletkit.devstack.cluster import LocalCluster
from walletkit.devstack.kafka import ApacheKafka
from walletkit.devstack.net import free_port, http_get, http_post_json, port_open, wait_until
from walletkit.stream import partition_for


def _wait_processed(
    cluster: LocalCluster, base: str, wallets: int, partitions: int, progress: Progress, timeout: float
) -> None:
    """One more deposit per partition; wait until both groups committed past it and the views show it."""
    marks: dict[int, tuple[str, int, str]] = {}
    for i in range(wallets):
        wid = wallet_id(i)
        p = partition_for(wid.encode(), partitions)
        if p not in marks:
            status, doc = http_post_json(f"{base}/deposit", {"WalletID": wid, "Amount": 1})
            if status != 202:
                raise RuntimeError(f"marker deposit: {status} {doc}")
            marks[p] = (wid, doc["Offset"], doc["ConsistencyToken"])
        if len(marks) == partitions:
            break
    deadline = time.monotonic() + timeout
    for group in ("balance", "above_threshold"):
        offsets = CommittedOffsets(cluster.broker.bootstrap, group, "deposit", partitions)
        try:
            while True:
                done = offsets.read()
                behind = sum(max(off + 1 - done[p], 0) for p, (_, off, _) in marks.items())
                if not behind:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{group} still {behind:,} records behind after {timeout:.0f}s")
                progress.tick(f"api: waiting for {group} to catch up ({behind:,} records behind)")
                time.sleep(0.2)
        finally:
            offsets.close()
    for wid, _, token in marks.values():
        wait_until(
            lambda: http_get(f"{base}/details/{wid}?token={token}", timeout=10)[0] == 200,
            max(deadline - time.monotonic(), 10),
            what=f"deposit {token} visible",
        )


def _pids(cluster: LocalCluster) -> dict[str, int]:
    pids = {name: svc.proc.pid for name, svc in cluster.services.items() if svc.proc and svc.proc.poll() is None}
    pids["broker"] = cluster.broker.pid
    return pids


def _with_cpu(cluster: LocalCluster, run) -> dict:
    """``run()``'s result (a dict) with ``cpu_pct``: each process's CPU (% of one core) while
    it ran, and the load generator's if it was a child process (wrk) that ended meanwhile."""
    pids = _pids(cluster)
    before, started = {n: cpu_seconds(pid) for n, pid in pids.items()}, time.monotonic()
    children = _children_cpu()
    result = run()
    elapsed = time.monotonic() - started
    cpu = {n: 100 * (cpu_seconds(pid) - before[n]) / elapsed for n, pid in pids.items()}
    load = _children_cpu() - children
    if load > 0:
        cpu["wrk"] = 100 * load / elapsed
    result["cpu_pct"] = cpu
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _bare_http(work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(work / "logs" / "bare-http.log", "ab")
    proc = subprocess.Popen(
        worker_cmd("bare-http", "--port", str(port)),
        env=env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_until(lambda: port_open("127.0.0.1", port), 30, what="bare aiohttp app")
    return proc, f"http://127.0.0.1:{port}"


def _stack(opts, work: Path, name: str, progress: Progress) -> LocalCluster:
    """A fresh broker and the three services, ready."""
    broker = ApacheKafka(log_path=work / "logs" / f"broker-{name}.log")
    cluster = LocalCluster(
        work / f"stack-{name}",
        broker=broker,
        partitions=opts.partitions,
        session_timeout_ms=opts.session_timeout_ms,
        extra_env={"KAFKA_CONFIG": opts.kafka_config} if opts.kafka_config else None,
    )
    progress.say(f"{name}: starting a fresh broker and wallet-balance, wallet-above-threshold, wallet-api")
    try:
        cluster.start_broker()
        cluster.start("balance")  # creates the topics before the others check them
        cluster.start_all(("above_threshold", "api"))
        _warm_up(opts, cluster, progress)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _warm_up(opts, cluster: LocalCluster, progress: Progress) -> None:
    """Deposits for ``--warmup-seconds``, not measured: a fresh broker's JVM interprets the
    produce, fetch and transaction paths before its JIT compiles them (a transaction
    costs it several times more CPU in its first seconds), so without this the first
    figures measure the broker's start, not the service."""
    if opts.warmup_seconds <= 0:
        return
    api = cluster.services["api-0"]
    base = f"http://127.0.0.1:{api.port}"
    progress.say(f"warm-up: POST /deposit for {opts.warmup_seconds:g}s (not measured)")
    http_load.wrk(
        f"{base}/deposit",
        "post.lua",
        seconds=opts.warmup_seconds,
        connections=opts.connections,
        threads=opts.wrk_threads,
        wallets=opts.api_wallets,
    )
    _wait_processed(cluster, base, opts.api_wallets, opts.partitions, progress, opts.catch_up_timeout)


def open_rates(opts) -> list[float]:
    return [float(r) for r in str(opts.open_rates).split(",") if r.strip()]


def _open_loop(
    opts,
    binary: Path,
    results: dict,
    name: str,
    base: str,
    mode: str,
    progress: Progress,
    cluster: LocalCluster | None = None,
) -> None:
    """``results["open"][f"{name}_{mode}_{rate}"]`` for each of ``--open-rates``."""
    for rate in open_rates(opts):
        progress.say(f"api: {name} {mode.upper()} open loop at {rate:,.0f}/s for {opts.open_seconds:g}s")

        def run(rate=rate):
            return http_load.open_loop(binary, base, mode, rate, opts.open_seconds, opts.api_wallets, opts.seed)

        r = _with_cpu(cluster, run) if cluster is not None else run()
        results.setdefault("open", {})[f"{name}_{mode}_{rate:g}"] = r
        progress.say(
            f"api: {name} {mode.upper()} at {rate:,.0f}/s: {r['achieved_rate']:,.0f}/s answered 2xx, "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, p99.9 {r['p999_ms']:.1f} ms"
            + (f", dropped {r['dropped']:,}" if r["dropped"] else "")
            + (f", errors {r['errors']:,}" if r["errors"] else "")
        )


def run(opts, work: Path, progress: Progress) -> dict:
    results = _visible(opts, work, progress)
    openloop = build_openloop(work, progress)
    cluster = _stack(opts, work, "api", progress)
    bare = None
    try:
        api = cluster.services["api-0"]
        base = f"http://127.0.0.1:{api.port}"
        time.sleep(1.0)
        results["api_rss_empty_mb"] = rss_mb(api.proc.pid)[0]
        wrk_args = dict(
            seconds=opts.api_seconds, connections=opts.connections, threads=opts.wrk_threads, wallets=opts.api_wallets
        )

        progress.say(f"api: POST /deposit under wrk for {opts.api_seconds:g}s ({opts.connections} connections)")
        results["post_api"] = _with_cpu(cluster, lambda: http_load.wrk(f"{base}/deposit", "post.lua", **wrk_args))
        progress.say(f"api: POST {results['post_api']['rps']:,.0f}/s; waiting for the processors to catch up")
        _wait_processed(cluster, base, opts.api_wallets, opts.partitions, progress, opts.catch_up_timeout)
        progress.say(f"api: GET /details under wrk for {opts.api_seconds:g}s")
        results["get_api"] = http_load.wrk(f"{base}/details/x", "get.lua", **wrk_args)
        progress.say(f"api: GET {results['get_api']['rps']:,.0f}/s")
        # Open loop: the same routes at constant arrival rates, latency from when each was due.
        _open_loop(opts, openloop, results, "stack", base, "post", progress, cluster)
        _wait_processed(cluster, base, opts.api_wallets, opts.partitions, progress, opts.catch_up_timeout)
        _open_loop(opts, openloop, results, "stack", base, "get", progress, cluster)

        progress.say("api: the bare aiohttp app, same wrk and open-loop runs")
        bare, bare_base = _bare_http(work)
        results["post_bare"] = http_load.wrk(f"{bare_base}/deposit", "post.lua", **wrk_args)
        results["get_bare"] = http_load.wrk(f"{bare_base}/details/x", "get.lua", **wrk_args)
        _open_loop(opts, openloop, results, "bare", bare_base, "post", progress)
        _open_loop(opts, openloop, results, "bare", bare_base, "get", progress)
        stop(bare)
        bare = None
        progress.say(f"api: bare POST {results['post_bare']['rps']:,.0f}/s, GET {results['get_bare']['rps']:,.0f}/s")

        results["api_rss_after_mb"] = rss_mb(api.proc.pid)[0]

        if opts.profile and pyspy_binary() is not None:
            for route, script, url in (
                ("post", "post.lua", f"{base}/deposit"),
                ("get", "get.lua", f"{base}/details/x"),
            ):
                out = work / "profiles" / f"api-{route}.txt"
                progress.say(f"profile: wallet-api under wrk {route.upper()} with py-spy attached")
                spies = [
                    profiling.attach(
                        api.proc.pid, out, opts.profile_rate, work / "logs" / f"api-{route}", duration=opts.api_seconds
                    )
                ]
                if route == "post":  # the processors work at the same time: profile them too
                    for svc in ("balance-0", "above_threshold-0"):
                        spies.append(
                            profiling.attach(
                                cluster.services[svc].proc.pid,
                                work / "profiles" / f"service-{svc}-under-post.txt",
                                opts.profile_rate,
                                work / "logs" / f"{svc}-post",
                                duration=opts.api_seconds,
                            )
                        )
                time.sleep(0.5)
                http_load.wrk(url, script, **wrk_args)
                for spy in spies:
                    stop(spy, 10, wait_first=30)
                results[f"profile_api_{route}"] = profiling.summarize(out, opts.profile_top)
            for svc in ("balance-0", "above_threshold-0"):
                results[f"profile_service_{svc}_under_post"] = profiling.summarize(
                    work / "profiles" / f"service-{svc}-under-post.txt", opts.profile_top
                )

        # The API's own ceiling: with the processors (and so the changelogs the views
        # follow) stopped, the broker serves only the deposits' produce requests.
        progress.say("api: POST /deposit once more with the processors stopped (wallet-api and the broker only)")
        for svc in ("balance-0", "above_threshold-0"):
            cluster.services[svc].stop()
        results["post_api_alone"] = _with_cpu(cluster, lambda: http_load.wrk(f"{base}/deposit", "post.lua", **wrk_args))
        progress.say(f"api: POST without processors {results['post_api_alone']['rps']:,.0f}/s")
        _open_loop(opts, openloop, results, "alone", base, "post", progress, cluster)

        # Several workers on the port (--workers), the processors still stopped: the API's scaling.
        if opts.api_workers > 1:
            progress.say(f"api: wallet-api --workers {opts.api_workers} (processors stopped): POST and GET under wrk")
            get_one = http_load.wrk(f"{base}/details/x", "get.lua", **wrk_args)
            cluster.start(
                "api", env={"WALLET_API_WORKERS": str(opts.api_workers)}, port=api.port, ops_port=api.ops_port
            )
            results["workers"] = opts.api_workers
            results["post_api_alone_workers"] = http_load.wrk(f"{base}/deposit", "post.lua", **wrk_args)
            results["get_api_one_worker"] = get_one
            results["get_api_workers"] = http_load.wrk(f"{base}/details/x", "get.lua", **wrk_args)
            progress.say(
                f"api: {opts.api_workers} workers: POST {results['post_api_alone_workers']['rps']:,.0f}/s, "
                f"GET {results['get_api_workers']['rps']:,.0f}/s"
            )

    finally:
        if bare is not None:
            stop(bare)
        progress.say("api: stopping the stack")
        cluster.stop()
    return results


def _visible(opts, work: Path, progress: Progress) -> dict:
    """Deposit -> visible on a stack of its own: the embedded broker slows down as it
    holds more records (its CPU per request grows), so after the wrk runs' tens of
    thousands of deposits it would measure the broker's history, not the service."""
    cluster = _stack(opts, work, "visible", progress)
    try:
        base = f"http://127.0.0.1:{cluster.services['api-0'].port}"
        time.sleep(1.0)
        progress.say(
            f"visible: {opts.visible_rate:g} deposits/s for {opts.visible_seconds:g}s, "
            f"every {opts.visible_sample}th read back with its ConsistencyToken"
        )
        before = _stage_sums(cluster)
        v = _with_cpu(
            cluster,
            lambda: http_load.deposit_to_visible(
                base,
                opts.visible_rate,
                opts.visible_seconds,
                opts.api_wallets,
                opts.visible_sample,
                opts.seed,
                progress.tick,
            ),
        )
        v["stages_ms"] = _stages(cluster, before)
        progress.say(
            f"visible: p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms at {v['achieved_rate']:,.0f}/s"
            + (f"; failures {v['failures']}" if v["failures"] else "")
        )
        return {"visible": v}
    finally:
        progress.say("visible: stopping the stack")
        cluster.stop()


#: Where a deposit's time goes, from the services' own histograms (mean of each, ms).
_STAGES = (
    ("processor wait", "balance-0", "stream_processor_record_delay_seconds"),
    ("processor flush", "balance-0", "stream_processor_flush_seconds"),
    ("view wait", "api-0", "stream_view_record_delay_seconds"),
    ("POST ack", "api-0", "stream_emitter_ack_seconds"),
)


def _stage_sums(cluster: LocalCluster) -> dict[str, tuple[float, float]]:
    """(sum, count) of each stage histogram now."""
    out: dict[str, tuple[float, float]] = {}
    for stage, service, metric in _STAGES:
        status, text = http_get(cluster.services[service].ops_url("/metrics"), timeout=10)
        if status != 200:
            continue
        total = count = 0.0
        for line in text.decode().splitlines():
            if line.startswith(f"{metric}_sum"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith(f"{metric}_count"):
                count += float(line.rsplit(" ", 1)[1])
        out[stage] = (total, count)
    return out


def _stages(cluster: LocalCluster, before: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Means of the stage histograms since ``before`` (the processors' record delay is the
    oldest record of each batch: the time it waited to be fetched and consumed)."""
    out: dict[str, float] = {}
    for stage, (total, count) in _stage_sums(cluster).items():
        total0, count0 = before.get(stage, (0.0, 0.0))
        if count > count0:
            out[stage] = 1000 * (total - total0) / (count - count0)
    return out
