"""HTTP load: wrk (with Lua scripts) for throughput, an asyncio client for deposit -> visible."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

LUA = Path(__file__).with_name("lua")


def wrk_available() -> str | None:
    return None if shutil.which("wrk") else "wrk not installed (apt-get install -y wrk)"


def wrk(url: str, script: str, seconds: float, connections: int, threads: int, wallets: int) -> dict:
    """Run wrk for ``seconds``; requests/s of 2xx answers and latency percentiles (ms)."""
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(int(seconds), 1)}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA / script),
        url,
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 60, env={**os.environ, "BENCH_WALLETS": str(wallets)}
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    r = json.loads(line.split(" ", 1)[1])
    secs = r["duration_us"] / 1e6
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["status"]
    return {
        "rps": (r["requests"] - r["status"]) / secs,
        "requests": r["requests"],
        "errors": errors,
        "non_2xx": r["status"],
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "mean_ms": r["mean_us"] / 1000,
        "seconds": secs,
    }


def open_loop(binary: Path, base: str, mode: str, rate: float, seconds: float, wallets: int, seed: int = 7) -> dict:
    """Requests offered at a constant ``rate`` for ``seconds`` (bench/openloop): what clients
    saw, each latency taken from when its request was due (no coordinated omission)."""
    cmd = [
        str(binary),
        "-url",
        base,
        "-mode",
        mode,
        "-rate",
        f"{rate:g}",
        "-duration",
        f"{seconds:g}s",
        "-wallets",
        str(wallets),
        "-seed",
        str(seed),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("OPENLOOP_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"openloop failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return json.loads(line.split(" ", 1)[1])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


async def _visible(base: str, rate: float, seconds: float, wallets: int, sample_every: int, seed: int, tick) -> dict:
    import aiohttp

    rng = random.Random(seed)
    total = int(rate * seconds)
    latencies: list[float] = []
    post_latencies: list[float] = []
    failures: dict[str, int] = {}
    sem = asyncio.Semaphore(512)  # bounded in flight: a stalled API gets no unbounded pile-up
    timeout = aiohttp.ClientTimeout(total=15)

    def fail(what: str) -> None:
        failures[what] = failures.get(what, 0) + 1

    async def one(session: aiohttp.ClientSession, i: int, due: float) -> None:
        # Latencies count from when the deposit was due, not from when it got a slot: a
        # stalled API shows as long latencies, not as a gentler load (no coordinated omission).
        async with sem:
            wid = f"wallet{rng.randrange(wallets):08d}"
            started = due
            try:
                async with session.post(f"{base}/deposit", json={"WalletID": wid, "Amount": 1}) as resp:
                    if resp.status != 202:
                        fail(f"POST {resp.status}")
                        return
                    token = (await resp.json())["ConsistencyToken"]
                posted = time.perf_counter()
                post_latencies.append(posted - started)
                if i % sample_every:
                    return
                for _ in range(3):  # the API waits up to its consistency timeout (5 s) per try
                    async with session.get(f"{base}/details/{wid}", params={"token": token}) as resp:
                        await resp.read()
                        if resp.status == 200:
                            latencies.append(time.perf_counter() - started)
                            return
                        if resp.status != 503:
                            fail(f"GET {resp.status}")
                            return
                fail("not visible after 3 tries")
            except (TimeoutError, aiohttp.ClientError) as exc:
                fail(type(exc).__name__)

    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        t0 = time.perf_counter()
        for i in range(total):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, i, due)))
            if i % 200 == 0:
                tick(f"deposit->visible: {i:,}/{total:,} deposits sent")
        sent_seconds = time.perf_counter() - t0
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60)
    ms = [v * 1000 for v in latencies]
    post_ms = [v * 1000 for v in post_latencies]
    return {
        "deposits": total,
        "offered_rate": rate,
        "achieved_rate": total / max(sent_seconds, 1e-3),
        "sampled": len(ms),
        "p50_ms": _pct(ms, 50),
        "p99_ms": _pct(ms, 99),
        "max_ms": max(ms, default=float("nan")),
        "post_p50_ms": _pct(post_ms, 50),
        "post_p99_ms": _pct(post_ms, 99),
        "failures": failures,
        "percentiles_ms": {f"{q:g}": _pct(ms, q) for q in (50, 75, 90, 95, 99, 99.5, 99.9) if ms},
    }


def deposit_to_visible(
    base: str, rate: float, seconds: float, wallets: int, sample_every: int, seed: int, tick
) -> dict:
    """POST deposits at a steady ``rate`` for ``seconds``; every ``sample_every``-th one is read back
    with its ConsistencyToken (GET /details waits until both views reflect it). Latency: POST sent ->
    GET answered 200."""
    try:
        import uvloop

        return uvloop.run(_visible(base, rate, seconds, wallets, sample_every, seed, tick))
    except ImportError:
        return asyncio.run(_visible(base, rate, seconds, wallets, sample_every, seed, tick))
