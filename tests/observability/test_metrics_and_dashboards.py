"""Fast checks without a broker: the lag computation from librdkafka statistics, the dashboards'
structure, and that docs/observability.md lists exactly the metrics and panels in the code."""

from __future__ import annotations

import json
import re

import pytest
from observability_support import (
    DOC,
    dashboards,
    generated,
    label_values_query,
    panel_queries,
    panels,
    section_of,
    substitute,
    variable_queries,
)
from prometheus_client import CollectorRegistry, Gauge

from walletkit.stream import metrics


def stats(partitions: dict[str, dict]) -> str:
    return json.dumps({"topics": {"deposit": {"partitions": partitions}}})


ABSENT = -1001  # librdkafka's "no offset"


def part(state="active", hi=ABSENT, ls=ABSENT, lo=ABSENT, committed=ABSENT, app=ABSENT):
    return {
        "fetch_state": state,
        "hi_offset": hi,
        "ls_offset": ls,
        "lo_offset": lo,
        "committed_offset": committed,
        "app_offset": app,
    }


def test_lag_is_end_minus_committed_from_fetched_watermarks():
    doc = stats(
        {
            "0": part(hi=120, ls=120, lo=0, committed=100, app=110),  # committed wins over position
            "1": part(hi=50, ls=40, lo=0, committed=30),  # read_committed: last stable offset
            "2": part(hi=70, lo=20),  # nothing committed: behind by the whole log
            "3": part(hi=5, ls=5, committed=9),  # never negative
            "4": part(),  # not fetched yet: unknown, left out
            "5": part(state="none", hi=10, committed=0),  # not assigned to this member
            "-1": part(hi=10),  # librdkafka's internal UA partition
        }
    )
    assert metrics.consumer_lag_from_statistics(doc, "deposit") == {0: 20, 1: 10, 2: 50, 3: 0}
    assert metrics.consumer_lag_from_statistics(doc, "other") == {}


def test_partition_gauges_forget_partitions_that_moved_away():
    gauge = Gauge("test_lag", "lag", ["group", "partition"], registry=CollectorRegistry())
    reported = metrics.set_partition_gauges(gauge, "g", {0: 5, 1: 7}, set())
    reported = metrics.set_partition_gauges(gauge, "g", {1: 3}, reported)
    samples = {s.labels["partition"]: s.value for s in next(iter(gauge.collect())).samples}
    assert samples == {"1": 3} and reported == {1}
    metrics.set_partition_gauges(gauge, "g", {}, reported)
    assert not next(iter(gauge.collect())).samples


def test_statistics_interval_comes_from_the_client_settings():
    cb = lambda _s: None  # noqa: E731
    assert metrics.statistics_config({}, cb) == {"statistics.interval.ms": 5000, "stats_cb": cb}
    assert metrics.statistics_config({"statistics.interval.ms": "1000"}, cb)["statistics.interval.ms"] == 1000


def test_toolkit_labels_are_bounded():
    """Labels only from a fixed vocabulary: never a key (a wallet id) or another unbounded value."""
    from prometheus_client.metrics import MetricWrapperBase

    allowed = {"group", "topic", "partition", "outcome", "guarantee"}  # guarantee: one of two names
    for name in dir(metrics):
        metric = getattr(metrics, name)
        if isinstance(metric, MetricWrapperBase):
            assert set(metric._labelnames) <= allowed, (name, metric._labelnames)  # noqa: SLF001


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboards_are_importable_and_filter_by_namespace_and_pod(name):
    doc = dashboards()[name]
    assert doc["uid"] == name and doc["title"] and doc["panels"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for var in ("namespace", "pod"):
        assert variables[var]["includeAll"] and variables[var]["allValue"] == ".*", var
        label_values_query(variable_queries(doc)[var])
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(doc):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel.get("description"), f"{panel['title']}: says what it shows"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert 'namespace=~"$namespace"' in expr and 'pod=~"$pod"' in expr, (panel["title"], expr)
            substitute(expr, "ns")  # only known variables


def test_dashboard_uids_are_unique_and_the_overview_has_what_the_issue_asks():
    docs = dashboards()
    assert len({d["uid"] for d in docs.values()}) == len(docs)
    overview = " ".join(q.expr for q in panel_queries() if q.dashboard == "wallet-overview")
    for needle in (
        "wallet_deposits_total",
        "histogram_quantile",
        'status!~"5.."',
        "record_delay_seconds",
        "wallet_flagged_total",
    ):
        assert needle in overview, needle
    processors = " ".join(q.expr for q in panel_queries() if q.dashboard == "wallet-processors")
    for needle in (
        "stream_processor_consumer_lag",
        "stream_processor_records_total",
        "stream_restore_remaining_records",
        "stream_processor_state_bytes",
    ):
        assert needle in processors, needle


@pytest.mark.parametrize("section", ["metrics", "panels"])
def test_generated_doc_sections_are_current(section):
    assert section_of(DOC.read_text(), section) == generated(section).strip(), (
        "run: .venv/bin/python tests/observability/observability_support.py --write"
    )


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_panels_use_drawable_units_and_name_pods_not_addresses(name):
    """Found by drawing the dashboards (make dashboards): legends showed IP:port instead of the
    pod, a ratio showed as a bare number, records were labelled requests."""
    from walletkit.devstack.dashboards import UNITS

    for panel in panels(dashboards()[name]):
        field = panel.get("fieldConfig", {})
        units = [field.get("defaults", {}).get("unit")] + [
            p["value"] for o in field.get("overrides", []) for p in o.get("properties", []) if p["id"] == "unit"
        ]
        for unit in filter(None, units):
            assert unit in UNITS or unit.startswith("suffix:"), (panel["title"], unit)
        for target in panel["targets"]:
            assert "{{instance}}" not in target.get("legendFormat", ""), panel["title"]
            if "requests" not in panel["title"].lower() and "req" in str(units):
                pytest.fail(f"{panel['title']}: counts something other than requests, in req/s")
        if re.search(r"\bratio\b", panel["title"].lower()):
            assert "percentunit" in units, panel["title"]
