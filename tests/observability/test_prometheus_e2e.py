"""The observability path end to end, against a real Prometheus.

The local stack (Apache Kafka, the three services as processes) is scraped every second by a
real Prometheus whose scrape config gives each target the labels Kubernetes would (namespace,
pod), and which loads the chart's alert rules. Deposits and reads go through the API, then:

- every dashboard panel's query runs through Prometheus' HTTP API with the dashboard variables
  substituted, and must parse and return a finite value;
- the dashboards' variable queries find the local namespace and the three pods;
- every alert expression must parse and, on this healthy stack, not hold; Prometheus evaluates
  every rule itself without an error;
- every metric a service exposes is listed in docs/observability.md, no label carries a wallet
  id, and the per-partition series cover every partition;
- the services' logs are JSON lines that name the wallet where one is concerned.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from observability_support import (
    DOC,
    alerts,
    dashboards,
    documented_name,
    label_values_query,
    panel_queries,
    require_prometheus,
    rule_groups,
    section_of,
    substitute,
    variable_queries,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
ROUNDS = 3
WALLETS = [f"obs-wallet-{i}" for i in range(10)]
FLAGGED = "obs-flagged"
# Conditions that depend on timing on a loaded machine rather than on the stack's health.
TIMING_DEPENDENT_ALERTS = {"WalletApiLatencyBudgetBurnFast", "WalletApiLatencyBudgetBurnSlow"}


def _dump_logs(root: Path, lines: int = 30) -> None:
    for log in sorted(root.rglob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"\n===== {log.name} (last {len(tail)} lines) =====\n" + "\n".join(tail))


class Traffic:
    """What the test did through the API, to compare with what the metrics say."""

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0
        self.not_found = 0
        self.reads = 0


def drive(api_port: int, prometheus, namespace: str) -> Traffic:
    from walletkit.devstack.net import http_get, http_post_json, wait_until

    base = f"http://127.0.0.1:{api_port}"
    traffic = Traffic()
    for round_ in range(ROUNDS):
        for wallet in WALLETS:
            status, _ = http_post_json(f"{base}/deposit", {"WalletID": wallet, "Amount": 10.5})
            assert status == 202, status
            traffic.accepted += 1
        if round_ < 2:  # 6,000 twice within the window: flagged once
            assert http_post_json(f"{base}/deposit", {"WalletID": FLAGGED, "Amount": 6000})[0] == 202
            traffic.accepted += 1
        assert http_post_json(f"{base}/deposit", {"WalletID": "obs-bad", "Amount": -1})[0] == 400
        traffic.rejected += 1
        assert http_get(f"{base}/details/obs-nobody")[0] == 404
        traffic.not_found += 1
        for wallet in WALLETS[:3]:
            http_get(f"{base}/details/{wallet}")
            traffic.reads += 1
        time.sleep(1.0)  # spread the traffic over scrapes, so rates see it

    def flagged_visible() -> bool:
        status, body = http_get(f"{base}/details/{FLAGGED}")
        return status == 200 and json.loads(body)["AboveThreshold"] is True

    wait_until(flagged_visible, 30, interval=0.2, what="the flagged wallet to show in /details")
    for wallet in WALLETS:
        status, body = http_get(f"{base}/details/{wallet}")
        assert status == 200 and json.loads(body)["Balance"] == 31.5, (wallet, status, body)
        traffic.reads += 1

    def scraped() -> bool:
        flagged = prometheus.query(f'sum(wallet_flagged_total{{namespace="{namespace}"}})')
        deposits = prometheus.query(f'sum(wallet_deposits_total{{namespace="{namespace}"}})')
        return (
            bool(flagged)
            and float(flagged[0]["value"][1]) >= 1
            and bool(deposits)
            and float(deposits[0]["value"][1]) == traffic.accepted
        )

    wait_until(scraped, 20, interval=0.25, what="Prometheus to scrape the deposits and the flag")
    time.sleep(2.5)  # a few more scrapes: the last batches' histograms and the lag statistics
    return traffic


@pytest.fixture(scope="module")
def observed(request, tmp_path_factory):
    """(cluster, prometheus, traffic, namespace): the stack, scraped, after the traffic."""
    require_prometheus()
    from walletkit.devstack.cluster import LocalCluster
    from walletkit.devstack.kafka import ApacheKafka
    from walletkit.devstack.prometheus import LOCAL_NAMESPACE, LocalPrometheus, cluster_targets

    groups = rule_groups(LOCAL_NAMESPACE, partitions=PARTITIONS)
    root = tmp_path_factory.mktemp("observed")
    cluster = LocalCluster(
        root,
        broker=ApacheKafka(log_path=root / "logs" / "broker.log"),
        partitions=PARTITIONS,
        extra_env={"KAFKA_CONFIG": "statistics.interval.ms=1000"},
    )
    prometheus = None
    try:
        cluster.start_broker().start_all()
        prometheus = LocalPrometheus(
            root / "prometheus",
            cluster_targets(cluster.services),
            scrape_interval="1s",
            rule_groups=groups,
            log_path=root / "logs" / "prometheus.log",
        ).start()
        prometheus.wait_targets_up(30)
        traffic = drive(cluster.services["api-0"].port, prometheus, LOCAL_NAMESPACE)
        yield cluster, prometheus, traffic, LOCAL_NAMESPACE
    finally:
        if request.session.testsfailed:
            _dump_logs(root)
        if prometheus is not None:
            prometheus.stop()
        cluster.stop()


def _finite(result: list[dict]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


@pytest.mark.parametrize("query", panel_queries(), ids=lambda q: q.id)
def test_every_dashboard_panel_returns_data(observed, query):
    _, prometheus, _, namespace = observed
    expr = substitute(query.expr, namespace)
    result = prometheus.query(expr)  # QueryError (with Prometheus' parse error) fails the test
    assert result, f"{query.id}: no series for {expr}"
    assert _finite(result), f"{query.id}: only NaN/Inf for {expr}: {result}"


def test_dashboard_variables_find_the_stack(observed):
    from walletkit.devstack.prometheus import cluster_targets

    cluster, prometheus, _, namespace = observed
    pods = {target.labels["pod"] for target in cluster_targets(cluster.services)}
    for name, doc in dashboards().items():
        queries = variable_queries(doc)
        assert {"namespace", "pod"} <= queries.keys(), f"{name}: variables for namespace and pod"
        for var, query in queries.items():
            selector, label = label_values_query(query)
            params = {"match[]": substitute(selector, namespace)} if selector else {}
            values = set(prometheus.api(f"label/{label}/values", **params))
            expected = {namespace} if var == "namespace" else pods if var == "pod" else set()
            assert expected <= values, f"{name}: ${var} offers {sorted(values)}, expected {sorted(expected)}"


def test_every_alert_expression_parses_and_is_quiet_on_a_healthy_stack(observed):
    _, prometheus, _, namespace = observed
    holding = {}
    for name, rule in alerts(rule_groups(namespace, partitions=PARTITIONS)).items():
        result = prometheus.query(rule["expr"])
        if result and name not in TIMING_DEPENDENT_ALERTS:
            holding[name] = result
    assert not holding, f"alert conditions hold on a healthy stack: {holding}"


def test_prometheus_evaluates_every_rule_without_error(observed):
    from walletkit.devstack.net import wait_until

    _, prometheus, _, namespace = observed
    expected = set(alerts(rule_groups(namespace, partitions=PARTITIONS)))

    def evaluated() -> bool:
        rules = [r for g in prometheus.rules() for r in g["rules"]]
        return {r["name"] for r in rules} == expected and all(
            not r.get("lastEvaluation", "").startswith("0001") for r in rules
        )

    wait_until(evaluated, 15, interval=0.25, what="Prometheus to evaluate every rule")
    rules = {r["name"]: r for g in prometheus.rules() for r in g["rules"]}
    unhealthy = {name: r.get("lastError") for name, r in rules.items() if r["health"] != "ok"}
    assert not unhealthy, unhealthy
    active = {
        name: r["state"]
        for name, r in rules.items()
        if r["state"] != "inactive" and name not in TIMING_DEPENDENT_ALERTS
    }
    assert not active, f"alerts pending or firing on a healthy stack: {active}"


def test_every_exposed_metric_is_documented(observed):
    from prometheus_client.parser import text_string_to_metric_families

    from walletkit.devstack.net import http_get

    cluster, _, _, _ = observed
    documented = {
        line.split("`")[1] for line in section_of(DOC.read_text(), "metrics").splitlines() if line.startswith("| `")
    }
    undocumented: dict[str, set[str]] = {}
    for name, proc in cluster.services.items():
        status, body = http_get(proc.ops_url("/metrics"))
        assert status == 200
        samples = {s.name for family in text_string_to_metric_families(body.decode()) for s in family.samples}
        assert any(s.startswith("process_") for s in samples), f"{name}: process metrics are on by default"
        missing = {s for s in samples if documented_name(s, documented) is None}
        if missing:
            undocumented[name] = missing
    assert not undocumented, f"exposed but not in docs/observability.md: {undocumented}"


def test_series_have_bounded_labels_and_cover_every_partition(observed):
    _, prometheus, traffic, namespace = observed
    sel = f'namespace="{namespace}"'
    series = prometheus.api("series", **{"match[]": f"{{{sel}}}"})
    leaking = [s for s in series if any("obs-" in str(v) for v in s.values())]
    assert not leaking, f"a wallet id is a label value: {leaking[:3]}"

    def scalar(expr: str) -> float:
        result = prometheus.query(expr)
        assert result, expr
        return float(result[0]["value"][1])

    def by(expr: str, label: str) -> dict[str, float]:
        return {r["metric"][label]: float(r["value"][1]) for r in prometheus.query(expr)}

    assert by(f"count by (group) (stream_processor_consumer_lag{{{sel}}})", "group") == {
        "balance": PARTITIONS,
        "above_threshold": PARTITIONS,
    }, "lag of every partition of both groups"
    assert by(f"sum by (group) (stream_processor_partitions{{{sel}}})", "group") == {
        "balance": PARTITIONS,
        "above_threshold": PARTITIONS,
    }
    assert by(f"count by (topic) (stream_view_lag{{{sel}}})", "topic") == {
        "balance-table": PARTITIONS,
        "above_threshold-table": PARTITIONS,
    }
    assert set(by(f"stream_view_caught_up{{{sel}}}", "topic").values()) == {1.0}
    assert set(by(f"stream_processor_ready{{{sel}}}", "group").values()) == {1.0}
    assert all(v > 0 for v in by(f"stream_processor_state_bytes{{{sel}}}", "group").values())
    assert scalar(f"sum(wallet_deposits_total{{{sel}}})") == traffic.accepted
    assert scalar(f"sum(wallet_deposited_amount_total{{{sel}}})") == pytest.approx(
        10.5 * len(WALLETS) * ROUNDS + 12_000
    )
    assert scalar(f"sum(wallet_flagged_total{{{sel}}})") == 1
    assert scalar(f'sum(http_requests_total{{{sel}, route="/deposit", status="400"}})') == traffic.rejected
    assert (
        scalar(f'sum(http_requests_total{{{sel}, route="/details/{{wallet_id}}", status="404"}})') >= traffic.not_found
    )
    assert scalar(f'sum(stream_processor_records_total{{{sel}, outcome="processed"}})') == 2 * traffic.accepted
    assert scalar(f"sum(stream_emitter_ack_seconds_count{{{sel}}})") == traffic.accepted
    assert scalar(f"sum(stream_emitter_connected{{{sel}}})") == 1


def test_logs_are_json_lines_naming_the_wallet(observed):
    cluster, _, _, _ = observed
    flagged_lines = []
    for name, proc in cluster.services.items():
        lines = [line for line in proc.log_path.read_text().splitlines() if line.strip()]
        assert lines, f"{name} logged nothing"
        for line in lines:
            doc = json.loads(line)  # every line is one JSON object
            assert {"ts", "level", "service", "logger", "msg"} <= doc.keys(), line
            assert doc["level"] in {"debug", "info", "warning", "error", "critical"}, line
            assert doc["service"] == proc.script, line
            if doc.get("wallet_id") == FLAGGED:
                flagged_lines.append(doc)
    assert any("flagged" in d["msg"] for d in flagged_lines), "the flag is logged with the wallet id"
