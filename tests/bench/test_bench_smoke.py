"""Smoke test of the benchmark harness (bench/wallet_bench): ``--quick`` end to end.

Starts its own brokers and services on loopback, like the integration tests. Needs
the Quix Streams venv (.venv/bench from requirements/bench.txt) and Debian's wrk:
without them it is skipped on a developer machine and fails in CI (CI set).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from wallet_bench import profiling, report  # noqa: E402
from wallet_bench.contenders import goka_available, kstreams_available, quix_available  # noqa: E402
from wallet_bench.http_load import wrk_available  # noqa: E402

#: Figures the table must carry, each with a number.
EXPECTED_ROWS = [
    "raw consume→decode→produce loop",
    "balance processor",
    "balance vs Quix Streams",
    "balance vs Goka",
    "balance vs Kafka Streams, exactly_once vs exactly_once_v2",
    "balance vs Kafka Streams, applied_offsets vs at_least_once",
    "balance vs raw loop",
    "above_threshold processor",
    "above_threshold vs Quix Streams",
    "above_threshold vs Goka",
    "above_threshold vs Kafka Streams, exactly_once vs exactly_once_v2",
    "above_threshold vs raw loop",
    "POST /deposit throughput vs bare aiohttp",
    "POST /deposit latency p50 / p99",
    "GET /details throughput vs bare aiohttp",
    "GET /details latency p50 / p99",
    "POST /deposit, processors stopped",
    "POST /deposit, 2 workers vs 1",
    "GET /details, 2 workers vs 1",
    "POST /deposit open loop 200/s, whole stack",
    "POST /deposit open loop 200/s, processors stopped",
    "GET /details open loop 200/s, whole stack",
    "deposit→visible p50 / p99",
    "restore balance-table",
    "restore above_threshold-table",
    "API RSS, 3,000 wallets per view",
    "API RSS at 1M wallets, extrapolated",
    "visibility gap, kill -9 of the busiest",
    "same, with a standby",
    "records the takeover restored",
    "visibility gap, rolling restart",
    "visibility gap, kill -9 and restart at once",
]


def _missing_tools() -> list[str]:
    return [why for why in (quix_available(), wrk_available(), goka_available(), kstreams_available()) if why]


@pytest.mark.integration
def test_quick_run_prints_every_figure(tmp_path):
    missing = _missing_tools()
    if missing:
        if os.environ.get("CI"):
            pytest.fail("benchmark tools missing in CI: " + "; ".join(missing))
        pytest.skip("; ".join(missing))
    out_json = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "bench"), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "wallet_bench",
            "--quick",
            "--json",
            str(out_json),
            "--work-dir",
            str(tmp_path / "work"),
            "--plots",
            str(tmp_path / "plots"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    elapsed = time.monotonic() - started
    assert run.returncode == 0, (
        f"exit {run.returncode}\n--- stderr ---\n{run.stderr[-6000:]}\n--- stdout ---\n{run.stdout}"
    )
    # How long --quick takes is a figure, not a test (about 100 s on the 2-core machine); the
    # subprocess timeout above only stops a hung run.
    print(f"bench --quick took {elapsed:.0f} s")
    assert "[bench" in run.stderr  # progress was shown
    table = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table[1:])}
    for name in EXPECTED_ROWS:
        matches = [cells for figure, cells in rows.items() if figure.startswith(name)]
        assert matches, f"row {name!r} missing from the table:\n{run.stdout}"
        assert re.search(r"\d", matches[0][1]), f"row {name!r} has no number: {matches[0]}"
    for cells in rows.values():
        if cells[3]:
            assert re.fullmatch(r"\d+\.\d\d×", cells[3]), cells
        if cells[4] and cells[4] != "(info)":
            assert cells[5] in ("met", "NOT MET", "n/a", "n/a (< 1M)", "met (est.)", "NOT MET (est.)"), cells
    assert "Machine:" in run.stdout and "cores" in run.stdout and "Python" in run.stdout
    results = json.loads(out_json.read_text())
    assert results["processors"]["balance"]["records"] == 3000
    assert results["tables"]["restore_balance"]["keys"] == 3000
    failover = results["failover"]
    assert failover["kill_with_standby"]["probes"] > 0 and failover["rolling_with_standby"]["probes"] > 0
    # Open loop: every request offered on schedule was answered (a quick run's rate is low).
    for key, r in results["api"]["open"].items():
        assert r["sent"] == round(200 * 2) and r["ok"] + sum(r["non_2xx"].values()) + r["errors"] == r["sent"], (key, r)
    # The pictures, each a PNG with something drawn on it.
    for name in ("processors.png", "latency.png", "latency-over-time.png"):
        png = (tmp_path / "plots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, (name, len(png))


def test_profile_summary_reads_collapsed_stacks(tmp_path):
    raw = tmp_path / "p.txt"
    raw.write_text(
        f"process 1;thread (0x1);run (walletkit/stream/processor.py:140);_process ({REPO}/walletkit/stream/processor.py:259) 30\n"
        f"thread (0x1);run (walletkit/stream/processor.py:140);_flush (walletkit/stream/processor.py:300);"
        f"write (/x/lib/python3.11/site-packages/rocksdict/__init__.py:10) 70\n"
    )
    s = profiling.summarize(raw, top=5)
    assert s["samples"] == 100
    assert s["self"][0] == ("write (rocksdict/__init__.py:10)", 70.0)
    assert ("_process (walletkit/stream/processor.py:259)", 30.0) in s["self"]
    inclusive = dict(s["inclusive_project"])
    assert inclusive["run (walletkit/stream/processor.py)"] == 100.0
    assert "self time" in profiling.format_summary("x", s)


def test_report_judges_targets():
    proc = {"rate": 10_000.0, "rate_per_cpu": 12_000.0, "steady": True}
    results = {
        "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 1, "python": "3.11", "loadavg_1m_at_start": 0},
        "started": "now",
        "sizes": "s",
        "processors": {
            "raw": {**proc, "rate": 11_000.0},
            "balance": proc,
            "above_threshold": {**proc, "rate": 5000.0},
            "balance_applied_offsets": {**proc, "rate": 12_000.0},
            "quix_balance": {**proc, "rate": 2000.0},
            "quix_above_threshold": {**proc, "rate": 2000.0},
            "goka_balance": {**proc, "rate": 6000.0},
            "goka_above_threshold": {**proc, "rate": 3000.0},
            "kstreams_balance_eos": {**proc, "rate": 15_000.0},
            "kstreams_balance_alos": {**proc, "rate": 16_000.0},
        },
    }
    rows = {r[0]: r for r in report.rows(results)}
    assert rows["balance vs Quix Streams"][3:] == ("5.00×", "≥ 5×", "met")
    assert rows["above_threshold vs Quix Streams"][3:] == ("2.50×", "≥ 4×", "NOT MET")
    assert rows["balance vs Goka"][3:] == ("1.67×", "≥ 2×", "NOT MET")
    assert rows["above_threshold vs Goka"][3:] == ("1.67×", "≥ 1.5×", "met")
    # Same guarantee against same guarantee: exactly_once with exactly_once_v2, applied_offsets with at_least_once.
    assert rows["balance vs Kafka Streams, exactly_once vs exactly_once_v2"][1:] == (
        "10,000 rec/s",
        "15,000 rec/s",
        "0.67×",
        "≥ 0.7×",
        "NOT MET",
    )
    assert rows["balance vs Kafka Streams, applied_offsets vs at_least_once"][3:] == ("0.75×", "≥ 0.7×", "met")
    assert rows["balance vs raw loop"][3:] == ("0.91×", "≥ 0.9×", "met")
    assert "balance vs Quix Streams" in report.render(results)
