"""The local stack's Prometheus helper without running anything: the labels its targets get
(the ones the chart's rules and the dashboards select on) and its configuration."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from walletkit.devstack import stack
from walletkit.devstack.prometheus import LOCAL_NAMESPACE, LocalPrometheus, cluster_targets


def services():
    # The API's operations endpoints are on a port of their own; a processor has one port.
    return {
        name: SimpleNamespace(port=port, ops_port=ops)
        for name, port, ops in (
            ("api-0", 18080, 18090),
            ("balance-0", 18081, 18081),
            ("above_threshold-1", 18082, 18082),
        )
    }


def test_targets_are_labelled_as_kubernetes_would_label_the_chart_pods():
    targets = {t.job: t for t in cluster_targets(services())}
    assert set(targets) == {"wallet-api", "wallet-balance", "wallet-above-threshold"}
    assert targets["wallet-api"].address == "127.0.0.1:18090"
    assert targets["wallet-above-threshold"].labels == {
        "namespace": LOCAL_NAMESPACE,
        "pod": "wallet-above-threshold-1",
        "container": "above-threshold",
    }
    # the chart's alert rules select pods with these patterns (templates/metrics/prometheusrule.yaml)
    assert re.fullmatch("wallet-api-.+", targets["wallet-api"].labels["pod"])
    for job in ("wallet-balance", "wallet-above-threshold"):
        assert re.fullmatch("wallet-(balance|above-threshold)-[0-9]+", targets[job].labels["pod"])


def test_config_scrapes_every_target_with_its_labels_and_loads_rules(tmp_path):
    groups = [{"name": "g", "rules": [{"alert": "A", "expr": "vector(1)"}]}]
    prom = LocalPrometheus(tmp_path, cluster_targets(services()), port=19999, scrape_interval="1s", rule_groups=groups)
    conf = prom.config()
    assert conf["global"]["scrape_interval"] == "1s" and conf["global"]["evaluation_interval"] == "1s"
    jobs = {job["job_name"]: job["static_configs"][0] for job in conf["scrape_configs"]}
    assert jobs["wallet-balance"] == {
        "targets": ["127.0.0.1:18081"],
        "labels": {"namespace": LOCAL_NAMESPACE, "pod": "wallet-balance-0", "container": "balance"},
    }
    assert conf["rule_files"] == [str(tmp_path / "rules.yml")]
    assert prom.url == "http://127.0.0.1:19999"
    assert "rule_files" not in LocalPrometheus(tmp_path, []).config()


def test_the_stack_refuses_with_prometheus_when_there_is_none(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("PROMETHEUS_BIN", raising=False)
    with pytest.raises(SystemExit) as exc:
        stack.main(["--with-prometheus", "--state-dir", str(tmp_path / "state")])
    assert exc.value.code == 1
    assert "no prometheus binary" in capsys.readouterr().out
    assert not (tmp_path / "state").exists(), "nothing was started"
