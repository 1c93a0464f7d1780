"""The benchmark's pictures (PNG, matplotlib): throughput over time, latency percentiles.

- ``processors.png``: records/s committed over time by each contender, over the same input;
- ``latency.png``: latency by percentile of each open-loop API run and of deposit -> visible;
- ``latency-over-time.png``: each second's p99 of the open-loop runs (a stall shows as a spike).

Each picture says which run it comes from (its start and machine) in a footnote.
"""

from __future__ import annotations

import math
from pathlib import Path

#: How contenders are named on the pictures, and their colours (ours: solid; peers: dashed).
_NAMES = {
    "raw": "raw loop (the limit)",
    "balance": "balance (ours, exactly_once)",
    "above_threshold": "above_threshold (ours, exactly_once)",
    "balance_applied_offsets": "balance (ours, applied_offsets)",
    "above_threshold_applied_offsets": "above_threshold (ours, applied_offsets)",
    "quix_balance": "Quix Streams balance",
    "quix_above_threshold": "Quix Streams above_threshold",
    "goka_balance": "Goka balance",
    "goka_above_threshold": "Goka above_threshold",
    "kstreams_balance_eos": "Kafka Streams balance (eos v2)",
    "kstreams_balance_alos": "Kafka Streams balance (alos)",
    "kstreams_above_threshold_eos": "Kafka Streams above_threshold (eos v2)",
    "kstreams_above_threshold_alos": "Kafka Streams above_threshold (alos)",
}
_PERCENTILES = (50, 75, 90, 95, 99, 99.5, 99.9, 99.99)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _footnote(fig, results: dict) -> None:
    m = results.get("machine", {})
    fig.text(
        0.01,
        0.005,
        f"make bench, {results.get('started', '')}; {m.get('cpu', '')}, {m.get('cores', '?')} cores "
        "shared by the broker, the contender and the load",
        fontsize=7,
        color="0.4",
        ha="left",
        va="bottom",
    )


def _save(plt, fig, results: dict, path: Path) -> Path:
    """The footnote, the layout, the file; the figure closed."""
    _footnote(fig, results)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rates_over_time(timeline: list[tuple[float, int]], window: float = 1.0) -> tuple[list[float], list[float]]:
    """Records/s over ``window``-second steps of a (seconds, records committed) timeline."""
    xs, ys = [], []
    if not timeline:
        return xs, ys
    t0, n0 = timeline[0]
    last = timeline[-1][0]
    for t, n in timeline[1:]:
        # A last window shorter than half a step is left out: a final commit landing in it
        # would read as a spike.
        if t - t0 >= window or (t == last and t - t0 >= window / 2):
            xs.append(t)
            ys.append((n - n0) / (t - t0))
            t0, n0 = t, n
    return xs, ys


def processors(results: dict, path: Path) -> Path | None:
    p = results.get("processors") or {}
    series = {k: v["timeline"] for k, v in p.items() if isinstance(v, dict) and v.get("timeline")}
    if not series:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 7), sharey=True)
    for ax, kind in zip(axes, ("balance", "above_threshold")):
        for name, timeline in series.items():
            if name != "raw" and kind not in name:
                continue
            xs, ys = rates_over_time(timeline)
            ours = name in (kind, f"{kind}_applied_offsets")
            ax.plot(
                xs,
                ys,
                label=_NAMES.get(name, name),
                linewidth=2.2 if ours else 1.3,
                linestyle="-" if ours or name == "raw" else "--",
                color="0.55" if name == "raw" else None,
            )
        ax.set_title(f"{kind} ({sum(p.get('ends') or []):,} pre-loaded deposits)")
        ax.set_xlabel("seconds since the contender started")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    axes[0].set_ylabel("records/s (1 s windows)")
    fig.suptitle("Processor throughput over time, same input on the same Apache Kafka broker")
    return _save(plt, fig, results, path)


def _nines(q: float) -> float:
    return -math.log10(1 - q / 100)


def latency(results: dict, path: Path) -> Path | None:
    a = results.get("api") or {}
    runs = dict(a.get("open") or {})
    if not runs and not a.get("visible"):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(13, 5.5))
    for key, r in sorted(runs.items()):
        name, mode, rate = key.split("_")
        pct = {float(q): v for q, v in r.get("percentiles_ms", {}).items()}
        qs = [q for q in _PERCENTILES if q in pct and pct[q] > 0]
        if not qs:
            continue
        label = (
            f"{'POST' if mode == 'post' else 'GET'} {float(rate):,.0f}/s, "
            + {"stack": "wallet-api, whole stack", "alone": "wallet-api, processors stopped", "bare": "bare aiohttp"}[
                name
            ]
        )
        ax.plot(
            [_nines(q) for q in qs],
            [pct[q] for q in qs],
            marker="o",
            markersize=3,
            linestyle="--" if name == "bare" else "-",
            label=label,
        )
    v = a.get("visible")
    if v and v.get("percentiles_ms"):
        pct = {float(q): ms for q, ms in v["percentiles_ms"].items()}
        qs = [q for q in _PERCENTILES if q in pct]
        ax.plot(
            [_nines(q) for q in qs],
            [pct[q] for q in qs],
            marker="s",
            linewidth=2.2,
            color="black",
            label=f"deposit → visible in /details, {v['achieved_rate']:,.0f}/s",
        )
    ax.set_yscale("log")
    ax.set_xticks([_nines(q) for q in _PERCENTILES])
    ax.set_xticklabels([f"p{q:g}" for q in _PERCENTILES])
    ax.set_ylabel("latency, ms (from when each request was due)")
    ax.set_title("API latency by percentile, open loop (constant arrival rate)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(plt, fig, results, path)


def latency_over_time(results: dict, path: Path) -> Path | None:
    runs = (results.get("api") or {}).get("open") or {}
    if not runs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(13, 4.5))
    for key, r in sorted(runs.items()):
        name, mode, rate = key.split("_")
        ys = [s["p99_ms"] for s in r.get("timeline", [])]
        ax.plot(
            range(1, len(ys) + 1),
            ys,
            linestyle="--" if name == "bare" else "-",
            label=f"{'POST' if mode == 'post' else 'GET'} {float(rate):,.0f}/s, {name}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("second of the run")
    ax.set_ylabel("p99 of the second, ms")
    ax.set_title("API p99 second by second, open loop")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(plt, fig, results, path)


def write(results: dict, directory: Path) -> list[Path]:
    """Every picture the results have data for, into ``directory``; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    made = [
        processors(results, directory / "processors.png"),
        latency(results, directory / "latency.png"),
        latency_over_time(results, directory / "latency-over-time.png"),
    ]
    return [p for p in made if p is not None]
