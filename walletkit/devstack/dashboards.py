"""The chart's Grafana dashboards drawn to PNG from their own JSON (development only).

No Grafana runs here, so this draws what Grafana would, with matplotlib: each panel's PromQL
(Grafana's variables substituted) runs as a range query against a real Prometheus, and the
panel is drawn by its type (``timeseries``, ``stat``, ``row``), unit, decimals, thresholds,
legend format and grid position. Every picture says on itself that it was drawn this way.

``render`` writes one picture per dashboard (its panels laid out as Grafana lays them out) and
one per panel; ``walletkit.devstack.scenario`` (``make dashboards``) runs the stack that feeds them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: The chart's dashboards, when this package runs from a checkout (editable install).
DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "charts" / "wallet" / "files" / "dashboards"
GRID_COLUMNS = 24
#: Inches per grid column and per grid row (Grafana: a row unit is 30 px, a column 1/24 of the width).
_COLUMN_IN, _ROW_IN = 0.78, 0.40

_VARIABLE = re.compile(r"\$(\{)?(__)?([A-Za-z_][A-Za-z0-9_]*)(?(1)\})")
_LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def load(directory: str | Path = DASHBOARDS_DIR) -> dict[str, dict[str, Any]]:
    """name (file stem) -> dashboard JSON."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(Path(directory).glob("*.json"))}


def panels(doc: Mapping[str, Any], *, rows: bool = False) -> list[dict[str, Any]]:
    """The dashboard's panels in order, collapsed rows' panels included; rows themselves if ``rows``."""
    out = []
    for panel in doc.get("panels", []):
        if panel.get("type") == "row":
            if rows:
                out.append(panel)
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with Grafana's variables (``$name``, ``${name}``, ``$__rate_interval``) replaced;
    KeyError for one ``values`` lacks."""

    def replace(m: re.Match[str]) -> str:
        name = (m.group(2) or "") + m.group(3)
        if name not in values:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def legend(fmt: str, metric: Mapping[str, str]) -> str:
    """Grafana's legend: ``{{label}}`` replaced by the series' label value; without a format, the series."""
    if fmt:
        return _LEGEND.sub(lambda m: metric.get(m.group(1), ""), fmt).strip()
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{metric.get('__name__', '')}{{{labels}}}"


# ---------------------------------------------------------------- units


def _scaled(value: float, steps: Sequence[tuple[float, str]], decimals: int | None) -> str:
    for factor, suffix in steps:
        if abs(value) >= factor:
            # Scaled (K, MiB, ...), a whole-number panel's 4,500 is 4.5 K, not 5 K.
            return f"{_number(value / factor, decimals if factor == 1 else None)}{suffix}"
    return f"{_number(value, decimals)}{steps[-1][1]}"


def _number(value: float, decimals: int | None) -> str:
    if decimals is not None:
        return f"{value:,.{decimals}f}"
    if value == 0:
        return "0"
    magnitude = abs(value)
    digits = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3
    return f"{value:,.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:,.0f}"


_SHORT = [(1e12, " T"), (1e9, " B"), (1e6, " M"), (1e3, " K"), (1, "")]
_IEC = [(2**40, " TiB"), (2**30, " GiB"), (2**20, " MiB"), (2**10, " KiB"), (1, " B")]


#: The Grafana units drawn as Grafana shows them (besides ``suffix:<text>``).
UNITS = frozenset({"short", "none", "percentunit", "percent", "bytes", "s", "reqps", "ops", "rps", "wps"})


def format_value(value: float, unit: str | None, decimals: int | None = None) -> str:
    """``value`` as Grafana shows it in ``unit`` (the units these dashboards use; others as numbers)."""
    if value is None or not math.isfinite(value):
        return "No data" if value is None else str(value)
    unit = unit or "short"
    if unit.startswith("suffix:"):
        return f"{_scaled(value, _SHORT, decimals)} {unit[len('suffix:') :]}"
    if unit == "percentunit":
        return f"{_number(value * 100, 2 if decimals is None else decimals)}%"
    if unit == "percent":
        return f"{_number(value, 2 if decimals is None else decimals)}%"
    if unit == "bytes":
        return _scaled(value, _IEC, decimals)
    if unit == "s":
        if value != 0 and abs(value) < 1:
            return f"{_number(value * 1000, decimals)} ms"
        return f"{_number(value, decimals)} s"
    if unit in ("reqps", "ops", "rps", "wps"):
        name = {"reqps": "req/s", "ops": "ops/s", "rps": "rd/s", "wps": "wr/s"}[unit]
        return f"{_scaled(value, _SHORT, decimals)} {name}"
    return _scaled(value, _SHORT, decimals).strip()


# ---------------------------------------------------------------- data


@dataclass
class Series:
    label: str
    times: list[float]
    values: list[float]
    unit: str | None = None
    right_axis: bool = False


@dataclass
class PanelData:
    panel: dict[str, Any]
    series: list[Series] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(s.values for s in self.series)


QueryRange = Callable[[str, float, float, float], list[dict[str, Any]]]


def rate_interval(scrape_seconds: float, step_seconds: float) -> str:
    """Grafana's ``$__rate_interval``: max(step + scrape interval, 4 x scrape interval)."""
    return f"{int(math.ceil(max(step_seconds + scrape_seconds, 4 * scrape_seconds)))}s"


def query(
    panel: dict[str, Any], query_range: QueryRange, variables: Mapping[str, str], start: float, end: float, step: float
) -> PanelData:
    """Run every target of ``panel`` over [start, end]; the series as the panel labels them."""
    data = PanelData(panel)
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    # Field overrides by series name or by query (the matchers these dashboards use).
    overrides: dict[tuple[str, str], dict[str, Any]] = {
        (o["matcher"]["id"], o["matcher"]["options"]): {p["id"]: p["value"] for p in o.get("properties", [])}
        for o in panel.get("fieldConfig", {}).get("overrides", [])
    }
    for target in panel.get("targets", []):
        expr = substitute(target["expr"], variables)
        try:
            result = query_range(expr, start, end, step)
        except RuntimeError as exc:  # Prometheus refused it: drawn as the panel's error
            data.errors.append(f"{target['refId']}: {exc}")
            continue
        for item in result:
            values = [(float(t), float(v)) for t, v in item["values"] if math.isfinite(float(v))]
            label = legend(target.get("legendFormat", ""), item["metric"])
            props = {**overrides.get(("byFrameRefID", target["refId"]), {}), **overrides.get(("byName", label), {})}
            data.series.append(
                Series(
                    label,
                    [t for t, _ in values],
                    [v for _, v in values],
                    unit=props.get("unit", defaults.get("unit")),
                    right_axis=props.get("custom.axisPlacement") == "right",
                )
            )
    return data


def with_gaps(times: Sequence[float], values: Sequence[float], step: float) -> tuple[list[float], list[float]]:
    """The points with a NaN wherever samples are missing for more than a step and a half, so a
    line breaks where a series was absent (a killed process) instead of bridging the gap, as
    Grafana draws it."""
    out_t: list[float] = []
    out_v: list[float] = []
    for t, v in zip(times, values):
        if out_t and t - out_t[-1] > 1.5 * step:
            out_t.append(out_t[-1] + step)
            out_v.append(math.nan)
        out_t.append(t)
        out_v.append(v)
    return out_t, out_v


# ---------------------------------------------------------------- drawing

#: Grafana's classic palette, in its order.
_PALETTE = [
    "#7EB26D",
    "#EAB839",
    "#6ED0E0",
    "#EF843C",
    "#E24D42",
    "#1F78C1",
    "#BA43A9",
    "#705DA0",
    "#508642",
    "#CCA300",
    "#447EBC",
    "#C15C17",
    "#890F02",
    "#0A437C",
    "#6D1F62",
    "#584477",
]
_THRESHOLD_COLOURS = {"green": "#56A64B", "orange": "#FF9830", "red": "#E02F44", "yellow": "#F2CC0C"}


@dataclass(frozen=True)
class Event:
    """A moment of the scenario, drawn as a dashed vertical line on every time series."""

    at: float
    label: str


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def _threshold_colour(panel: dict[str, Any], value: float) -> str:
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps") or []
    colour = "#56A64B"
    for step in steps:
        if step.get("value") is None or value >= step["value"]:
            colour = _THRESHOLD_COLOURS.get(step["color"], step["color"])
    return colour


def _draw_stat(fig, box, data: PanelData) -> None:
    panel = data.panel
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    shown = [s for s in data.series if s.values] or [None]
    x0, y0, w, h = box
    cell = w / len(shown)
    for i, s in enumerate(shown):
        ax = fig.add_axes((x0 + i * cell, y0, cell, h))
        ax.set_axis_off()
        if s is None:
            ax.text(0.5, 0.5, "No data", ha="center", va="center", fontsize=14, color="0.5", transform=ax.transAxes)
            continue
        last = s.values[-1]
        colour = _threshold_colour(panel, last)
        ax.fill_between(s.times, s.values, color=colour, alpha=0.15, linewidth=0)  # graphMode "area"
        ax.plot(s.times, s.values, color=colour, alpha=0.5, linewidth=1)
        low, high = min(s.values), max(s.values)
        ax.set_ylim(min(0, low), high * 2.2 if high > 0 else 1)
        ax.text(
            0.5,
            0.55,
            format_value(last, s.unit, defaults.get("decimals")),
            ha="center",
            va="center",
            fontsize=20 if len(shown) == 1 else 15,
            fontweight="bold",
            color=colour,
            transform=ax.transAxes,
        )
        if len(data.series) > 1 or len(shown) > 1:
            ax.text(
                0.5,
                0.18,
                s.label.replace(" ", "\n", 1) if len(shown) > 2 else s.label,
                ha="center",
                va="center",
                fontsize=7 if len(shown) > 2 else 8,
                color="0.3",
                transform=ax.transAxes,
            )


def _draw_timeseries(fig, box, data: PanelData, events: Sequence[Event], start: float, end: float, step: float) -> None:
    panel = data.panel
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    decimals = defaults.get("decimals")
    x0, y0, w, h = box
    fig_w, fig_h = fig.get_figwidth(), fig.get_figheight()
    show_legend = bool(data.series) and panel.get("options", {}).get("legend", {}).get("showLegend", True)
    # Legend entries side by side as the widest one allows (about 0.065 inch a character).
    entry_in = 0.45 + 0.065 * max((len(s.label) for s in data.series), default=0)
    columns = max(1, int((w * fig_w - 0.2) / entry_in))
    legend_lines = math.ceil(len(data.series) / columns) if show_legend else 0
    legend_h = (0.16 * legend_lines + 0.05) / fig_h  # inches -> figure fraction
    ticks_h, top_pad = 0.28 / fig_h, 0.08 / fig_h
    left_pad, right_pad = 0.75 / fig_w, (0.7 if any(s.right_axis for s in data.series) else 0.15) / fig_w
    ax = fig.add_axes(
        (x0 + left_pad, y0 + legend_h + ticks_h, w - left_pad - right_pad, h - legend_h - ticks_h - top_pad)
    )
    right = None
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    for i, s in enumerate(data.series):
        target = ax
        if s.right_axis:
            right = right or ax.twinx()
            target = right
        colour = _PALETTE[i % len(_PALETTE)]
        times, values = with_gaps(s.times, s.values, step)
        target.plot(times, values, color=colour, linewidth=1.2, label=s.label)
        target.fill_between(times, values, color=colour, alpha=0.08, linewidth=0)
    left_unit = next((s.unit for s in data.series if not s.right_axis), defaults.get("unit"))
    if decimals == 0:  # Grafana puts whole-number panels' ticks on whole numbers
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, left_unit, decimals)))
    if right is not None:
        right_unit = next(s.unit for s in data.series if s.right_axis)
        right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, right_unit, decimals)))
        if decimals == 0:
            right.yaxis.set_major_locator(MaxNLocator(integer=True))
        right.tick_params(labelsize=7)
        right.set_ylim(bottom=0)
    ax.set_xlim(start, end)
    if all(v >= 0 for s in data.series for v in s.values):
        ax.set_ylim(bottom=0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _clock(v)))
    ax.tick_params(labelsize=7)
    ax.grid(True, color="0.88", linewidth=0.6)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    for i, event in enumerate(events):  # labels on two heights, so neighbours do not overlap
        ax.axvline(event.at, color="0.45", linestyle="--", linewidth=0.8)
        ax.text(
            event.at,
            1.0 - 0.08 * (i % 2),
            f" {event.label}",
            transform=ax.get_xaxis_transform(),
            fontsize=6,
            color="0.35",
            ha="left",
            va="top",
        )
    if data.empty:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", fontsize=14, color="0.5", transform=ax.transAxes)
    elif show_legend:
        handles = [
            line for a in (ax, right) if a is not None for line in a.get_lines() if not line.get_label().startswith("_")
        ]
        fig.legend(
            handles=handles,
            labels=[line.get_label() for line in handles],
            loc="lower left",
            bbox_to_anchor=(x0 + 0.1 / fig_w, y0),
            ncol=columns,
            fontsize=7,
            frameon=False,
            handlelength=1.5,
            columnspacing=1.2,
            borderaxespad=0.1,
        )


def _draw_panel(fig, box, data: PanelData, events: Sequence[Event], start: float, end: float, step: float) -> None:
    """One panel in ``box`` (figure fractions x, y, w, h): its frame, title, content."""
    from matplotlib.patches import Rectangle

    x0, y0, w, h = box
    fig.add_artist(
        Rectangle(
            (x0 + 0.002, y0 + 0.002),
            w - 0.004,
            h - 0.004,
            transform=fig.transFigure,
            facecolor="white",
            edgecolor="0.8",
            linewidth=0.8,
            zorder=-10,
        )
    )
    title_h = min(0.28 / fig.get_figheight(), h * 0.2)
    fig.text(
        x0 + 0.008,
        y0 + h - title_h / 2,
        data.panel.get("title", ""),
        fontsize=9,
        fontweight="bold",
        va="center",
        ha="left",
        color="0.15",
    )
    inner = (x0 + 0.004, y0 + 0.006, w - 0.008, h - title_h - 0.008)
    if data.errors:
        fig.text(
            x0 + w / 2,
            y0 + h / 2,
            "\n".join(data.errors)[:300],
            fontsize=7,
            color="#E02F44",
            ha="center",
            va="center",
            wrap=True,
        )
    elif data.panel.get("type") == "stat":
        _draw_stat(fig, inner, data)
    else:
        _draw_timeseries(fig, inner, data, events, start, end, step)


def _caption(fig, dashboard: str, start: float, end: float, note: str) -> None:
    fig.text(
        0.005,
        0.002,
        f"Drawn with matplotlib from charts/wallet/files/dashboards/{dashboard}.json (its queries, units, "
        f"legends and layout; not Grafana). Data: a real Prometheus scraping the local stack on Apache Kafka, "
        f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M:%S}-{_clock(end)} UTC. {note}",
        fontsize=7,
        color="0.35",
        ha="left",
        va="bottom",
    )


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def render(
    name: str,
    doc: dict[str, Any],
    data: Mapping[int, PanelData],
    out_dir: str | Path,
    *,
    start: float,
    end: float,
    step: float,
    events: Sequence[Event] = (),
    note: str = "",
) -> list[Path]:
    """``<out_dir>/<name>.png`` (the whole dashboard) and ``<out_dir>/<name>/<panel>.png`` (each panel)."""
    plt = _pyplot()
    out = Path(out_dir)
    (out / name).mkdir(parents=True, exist_ok=True)
    laid_out = panels(doc, rows=True)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in laid_out)
    caption_in = 0.3
    width, height = GRID_COLUMNS * _COLUMN_IN, rows * _ROW_IN + 0.6 + caption_in
    fig = plt.figure(figsize=(width, height), facecolor="#F4F5F5")
    fig.text(0.005, 1 - 0.3 / height, doc.get("title", name), fontsize=14, fontweight="bold", va="center")
    top, bottom = 1 - 0.6 / height, caption_in / height
    unit_h = (top - bottom) / rows
    for panel in laid_out:
        g = panel["gridPos"]
        box = (g["x"] / GRID_COLUMNS, top - (g["y"] + g["h"]) * unit_h, g["w"] / GRID_COLUMNS, g["h"] * unit_h)
        if panel.get("type") == "row":
            fig.text(
                box[0] + 0.004,
                box[1] + box[3] / 2,
                panel.get("title", ""),
                fontsize=11,
                fontweight="bold",
                va="center",
                color="0.2",
            )
            continue
        _draw_panel(fig, box, data[panel["id"]], events, start, end, step)
    _caption(fig, name, start, end, note)
    paths = [out / f"{name}.png"]
    fig.savefig(paths[0], dpi=72, facecolor=fig.get_facecolor())
    plt.close(fig)
    for panel in panels(doc):
        g = panel["gridPos"]
        w_in, h_in = max(g["w"], 8) * _COLUMN_IN, g["h"] * _ROW_IN * 1.15 + caption_in + 0.8
        fig = plt.figure(figsize=(w_in, h_in), facecolor="#F4F5F5")
        _draw_panel(fig, (0, caption_in / h_in, 1, 1 - caption_in / h_in), data[panel["id"]], events, start, end, step)
        fig.text(
            0.005,
            0.002,
            f"{name}.json, drawn with matplotlib (not Grafana), Prometheus data {_clock(start)}-{_clock(end)} UTC",
            fontsize=6,
            color="0.35",
            ha="left",
            va="bottom",
        )
        path = out / name / f"{slug(panel['title'])}.png"
        fig.savefig(path, dpi=80, facecolor=fig.get_facecolor())
        plt.close(fig)
        paths.append(path)
    return paths
