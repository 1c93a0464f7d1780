"""The chart's alert rules: valid for Prometheus (`promtool check rules`), behaving as intended
(`promtool test rules` with tests/observability/rules_test.yaml), and each documented with a
summary, a description and a runbook section in docs/observability.md."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from observability_support import DOC, RULES_TEST, alerts, github_anchors, rule_groups, section_of
from support import missing_tool, require_module

yaml = require_module("yaml", "PyYAML comes with requirements/chart.txt")

NAMESPACE = "wallet-test"  # what rules_test.yaml's series carry


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        missing_tool("promtool not installed (Debian package prometheus)")
    return found


@pytest.fixture(scope="module")
def groups():
    return rule_groups(NAMESPACE)


@pytest.fixture
def rules_dir(tmp_path, groups):
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    return tmp_path


def test_promtool_checks_the_rules(rules_dir, groups):
    result = subprocess.run(
        [promtool(), "check", "rules", "rules.yml"], cwd=rules_dir, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts(groups))} rules found" in result.stdout, result.stdout


def test_promtool_unit_tests_pass(rules_dir):
    result = subprocess.run(
        [promtool(), "test", "rules", RULES_TEST.name], cwd=rules_dir, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_test_where_it_fires():
    tested = yaml.safe_load(RULES_TEST.read_text())
    firing = {
        case["alertname"]
        for test in tested["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alerts(rule_groups(NAMESPACE))) <= firing, "alerts without a promtool test in which they fire"


def test_every_alert_is_described_and_has_a_runbook_section(groups):
    anchors = github_anchors(DOC.read_text())
    for name, rule in alerts(groups).items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        notes = rule["annotations"]
        assert len(notes.get("summary", "")) > 15 and len(notes.get("description", "")) > 40, name
        where = notes.get("runbook", "")
        assert where.startswith("docs/observability.md#runbook-"), (name, where)
        assert "runbook_url" not in notes, "no link without a published address (runbookBaseUrl)"
        anchor = where.split("#", 1)[1].split()[0]
        # Burn-rate alerts of one SLO share one runbook.
        assert anchor in anchors, f"{name}: no heading for #{anchor} in docs/observability.md"
        assert anchor == f"runbook-{name.lower()}" or anchor == "runbook-walletapilatencybudgetburn", (name, anchor)


def test_the_alert_table_in_the_docs_is_current():
    from observability_support import generated

    assert section_of(DOC.read_text(), "alerts") == generated("alerts").strip(), (
        "run: .venv/bin/python tests/observability/observability_support.py --write"
    )


def test_the_slo_threshold_is_a_bucket_of_the_latency_histogram():
    """The SLO counts requests in the `le` bucket it names: it must be a real bucket boundary."""
    import json

    from observability_support import REPO
    from prometheus_client.utils import floatToGoString

    from wallet_api.app import LATENCY

    buckets = {floatToGoString(b) for b in LATENCY._upper_bounds}  # noqa: SLF001
    schema = json.loads((REPO / "charts" / "wallet" / "values.schema.json").read_text())
    allowed = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]["latencySLO"]["properties"][
        "thresholdSeconds"
    ]["enum"]
    assert set(allowed) <= buckets, f"thresholds the schema allows that are no bucket: {set(allowed) - buckets}"
    values = yaml.safe_load((REPO / "charts" / "wallet" / "values.yaml").read_text())
    assert values["metrics"]["prometheusRule"]["latencySLO"]["thresholdSeconds"] in allowed
    expr = alerts(rule_groups(NAMESPACE))["WalletApiLatencyBudgetBurnFast"]["expr"]
    assert re.search(r'le="0\.25"', expr), expr
