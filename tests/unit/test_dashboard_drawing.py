"""The dashboard drawing (walletkit.devstack.dashboards): Grafana's units, legends and gaps,
and a whole dashboard drawn to PNG with matplotlib from canned range-query answers (the real
Prometheus behind them is in tests/observability/test_prometheus_e2e.py)."""

from __future__ import annotations

import math

import pytest

from walletkit.devstack import dashboards as d


@pytest.mark.parametrize(
    "value, unit, decimals, shown",
    [
        (0.0123, "percentunit", None, "1.23%"),
        (0.25, "s", None, "250 ms"),
        (12.5, "s", None, "12.5 s"),
        (3 * 2**20, "bytes", None, "3 MiB"),
        (1536, "bytes", None, "1.5 KiB"),
        (2300, None, 2, "2.3 K"),
        (4500, "suffix:records", 0, "4.5 K records"),
        (7, None, 0, "7"),
        (41.7, "reqps", None, "41.7 req/s"),
        (250_000, "suffix:records/s", None, "250 K records/s"),
        (None, "s", None, "No data"),
    ],
)
def test_values_are_shown_in_grafanas_units(value, unit, decimals, shown):
    assert d.format_value(value, unit, decimals) == shown


def test_legends_fill_labels_and_name_unformatted_series():
    assert d.legend("{{group}} p{{partition}}", {"group": "balance", "partition": "3"}) == "balance p3"
    assert d.legend("", {"__name__": "up", "pod": "wallet-api-0"}) == 'up{pod="wallet-api-0"}'


def test_variables_are_substituted_and_unknown_ones_refused():
    values = {"namespace": "ns", "pod": ".*", "__rate_interval": "4s"}
    assert (
        d.substitute('rate(x{namespace=~"$namespace", pod=~"${pod}"}[$__rate_interval])', values)
        == 'rate(x{namespace=~"ns", pod=~".*"}[4s])'
    )
    with pytest.raises(KeyError, match=r"\$instance"):
        d.substitute('x{instance=~"$instance"}', values)


def test_rate_interval_is_grafanas():
    assert d.rate_interval(1, 2) == "4s"  # 4 x scrape interval
    assert d.rate_interval(15, 60) == "75s"  # step + scrape interval


def test_a_missing_stretch_breaks_the_line():
    times, values = d.with_gaps([0, 2, 4, 20, 22], [1, 1, 1, 5, 5], 2)
    assert times == [0, 2, 4, 6, 20, 22] and math.isnan(values[3]) and values[4:] == [5, 5]


def test_overrides_by_query_and_by_name_reach_the_series():
    panel = {
        "id": 1,
        "type": "timeseries",
        "title": "t",
        "targets": [
            {"refId": "A", "expr": "a", "legendFormat": "records"},
            {"refId": "B", "expr": "b", "legendFormat": "parts"},
        ],
        "fieldConfig": {
            "defaults": {"unit": "suffix:records"},
            "overrides": [
                {
                    "matcher": {"id": "byFrameRefID", "options": "B"},
                    "properties": [{"id": "custom.axisPlacement", "value": "right"}, {"id": "unit", "value": "short"}],
                }
            ],
        },
    }
    answers = {"a": [{"metric": {}, "values": [[0, "1"], [2, "NaN"]]}], "b": [{"metric": {}, "values": [[0, "2"]]}]}
    data = d.query(panel, lambda expr, *_: answers[expr], {}, 0, 2, 2)
    a, b = data.series
    assert (a.unit, a.right_axis, a.values) == ("suffix:records", False, [1.0])  # NaN dropped
    assert (b.unit, b.right_axis) == ("short", True)


def test_every_panel_of_the_shipped_dashboards_is_drawn(tmp_path):
    def answer(expr: str, start: float, end: float, step: float) -> list[dict]:
        return [
            {
                "metric": {
                    "group": "balance",
                    "pod": "wallet-balance-0",
                    "topic": "balance-table",
                    "route": "/deposit",
                },
                "values": [[start + i * step, str(i % 5)] for i in range(int((end - start) / step))],
            }
        ]

    variables = {"namespace": "ns", "pod": ".*", "__rate_interval": "4s", "__range": "60s", "__interval": "2s"}
    for name, doc in d.load().items():
        data = {p["id"]: d.query(p, answer, variables, 1000, 1060, 2) for p in d.panels(doc)}
        assert not any(x.empty or x.errors for x in data.values())
        paths = d.render(name, doc, data, tmp_path, start=1000, end=1060, step=2, events=[d.Event(1030, "kill")])
        assert paths[0] == tmp_path / f"{name}.png" and len(paths) == 1 + len(d.panels(doc))
        for path in paths:
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000, path
