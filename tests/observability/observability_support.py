"""Helpers of the observability tests: the dashboards' queries, the chart's alert rules, the metric
catalogue (what docs/observability.md must list).

Run as a script to regenerate the generated sections of docs/observability.md:
    .venv/bin/python tests/observability/observability_support.py --write
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from walletkit.devstack import dashboards as grafana

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "charts" / "wallet" / "files" / "dashboards"
DOC = REPO / "docs" / "observability.md"
RULES_TEST = Path(__file__).resolve().parent / "rules_test.yaml"

# What a dashboard's Grafana variables become when its queries run against the local stack.
# $namespace is the exact static label of the local scrape config (proving the label is there);
# the others match everything, as Grafana's "All" (allValue ".*") does.
RATE_INTERVAL = "1m"
RANGE = "5m"


# ---------------------------------------------------------------- dashboards


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str

    @property
    def id(self) -> str:
        return f"{self.dashboard}: {self.panel} [{self.ref}]"


def dashboards() -> dict[str, dict[str, Any]]:
    return grafana.load(DASHBOARDS)


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (rows' nested panels included, rows themselves not)."""
    return grafana.panels(doc)


def panel_queries() -> list[PanelQuery]:
    return [
        PanelQuery(name, p["title"], t["refId"], t["expr"])
        for name, doc in dashboards().items()
        for p in panels(doc)
        for t in p.get("targets", [])
    ]


def variable_queries(doc: dict[str, Any]) -> dict[str, str]:
    """name -> query of each query-type template variable."""
    out = {}
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            out[var["name"]] = query["query"] if isinstance(query, dict) else query
    return out


def substitute(expr: str, namespace: str) -> str:
    """A panel's PromQL with Grafana's variables replaced for a direct query; KeyError for an unknown one."""
    return grafana.substitute(
        expr,
        {"namespace": namespace, "pod": ".*", "__rate_interval": RATE_INTERVAL, "__range": RANGE, "__interval": "15s"},
    )


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>[A-Za-z_][A-Za-z0-9_]*)\)$")


def label_values_query(query: str) -> tuple[str | None, str]:
    """``label_values(selector, label)`` → (selector, label)."""
    m = _LABEL_VALUES.match(query.strip())
    assert m, f"not a label_values() query: {query!r}"
    return m.group("selector"), m.group("label")


# ---------------------------------------------------------------- alert rules


def rule_groups(namespace: str, release: str = "wallet", partitions: int | None = None) -> list[dict[str, Any]]:
    """The chart's PrometheusRule groups rendered for namespace/release (fails without the Helm SDK)."""
    from support import missing_tool

    from walletkit.devstack.prometheus import chart_rule_groups

    groups = chart_rule_groups(namespace, release, partitions=partitions)
    if groups is None:
        missing_tool("the Helm SDK (requirements/chart.txt) is needed to render the chart's rules")
    return groups


def require_prometheus() -> None:
    """Fail without a ``prometheus`` binary, saying how to install it."""
    from support import missing_tool

    from walletkit.devstack.prometheus import PrometheusNotFound, find_binary

    try:
        find_binary()
    except PrometheusNotFound as exc:
        missing_tool(str(exc))


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown document."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            anchors.add(text)
    return anchors


# ---------------------------------------------------------------- metric catalogue


@dataclass(frozen=True)
class MetricDoc:
    name: str  # as exposed (counters with _total)
    type: str
    labels: tuple[str, ...]
    help: str
    exposed_by: str


#: Where a metric is served, by the package that defines it (the toolkit's by its component).
_SERVICES = {
    "wallet_api": "api",
    "wallet_balance": "balance",
    "wallet_above_threshold": "above_threshold",
    "wallet_operator": "operator",
}


def _exposed_by(name: str, module: str | None) -> str:
    package = (module or "").split(".")[0]
    if package in _SERVICES:
        return _SERVICES[package]
    if name.startswith(("stream_processor_", "stream_restore_")):
        return "processors"
    if name.startswith(("stream_view_", "stream_emitter_")):
        return "api"
    return "all"


def _defining_modules() -> dict[int, str]:
    """id(collector) -> the module that holds it as a global."""
    from prometheus_client.metrics import MetricWrapperBase

    found = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in (*_SERVICES, "walletkit"):
            for value in vars(module).values():
                if isinstance(value, MetricWrapperBase):
                    found.setdefault(id(value), name)
    return found


def metric_catalogue() -> list[MetricDoc]:
    """Every metric the three services define, from the code (the default registry after importing them)."""
    import prometheus_client
    from prometheus_client.metrics import MetricWrapperBase

    # What each service's process imports, so every metric any of them defines is registered
    # (the operator too: its metrics are registered whenever another test imported it first).
    import wallet_above_threshold.main  # noqa: F401
    import wallet_api.main  # noqa: F401
    import wallet_balance.main  # noqa: F401
    import wallet_operator.main  # noqa: F401
    import walletkit.service.processor_main  # noqa: F401
    import walletkit.stream.metrics  # noqa: F401

    registry = prometheus_client.REGISTRY
    modules = _defining_modules()
    found: dict[str, MetricDoc] = {}
    for collector in list(registry._collector_to_names):  # noqa: SLF001 (no public way to list collectors)
        if isinstance(collector, MetricWrapperBase):
            name = collector._name + ("_total" if collector._type == "counter" else "")  # noqa: SLF001
            found[name] = MetricDoc(
                name,
                collector._type,
                tuple(collector._labelnames),  # noqa: SLF001
                collector._documentation,
                _exposed_by(name, modules.get(id(collector))),
            )  # noqa: SLF001
        else:  # process, platform and GC collectors: describe them by what they expose
            for family in collector.collect():
                labels = tuple(sorted({k for s in family.samples for k in s.labels}))
                name = family.name + ("_total" if family.type == "counter" else "")
                found[name] = MetricDoc(name, family.type, labels, family.documentation, _exposed_by(name, None))
    return sorted(found.values(), key=lambda m: (_ORDER.get(m.exposed_by, 9), m.name))


_ORDER = {"api": 0, "processors": 1, "balance": 2, "above_threshold": 3, "all": 4}


def documented_name(sample: str, known: set[str]) -> str | None:
    """The catalogue name a sample of the exposition belongs to (histogram parts, counters)."""
    if sample in known:
        return sample
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and sample[: -len(suffix)] in known:
            return sample[: -len(suffix)]
    return None


# ---------------------------------------------------------------- generated doc sections


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def metrics_table() -> str:
    rows = ["| metric | type | labels | exposed by | meaning |", "|---|---|---|---|---|"]
    for m in metric_catalogue():
        labels = ", ".join(f"`{label}`" for label in m.labels) or "—"
        rows.append(f"| `{m.name}` | {m.type} | {labels} | {m.exposed_by} | {_cell(m.help)} |")
    return "\n".join(rows)


def panels_table() -> str:
    out = []
    for name, doc in dashboards().items():
        out.append(f"**{doc['title']}** (`files/dashboards/{name}.json`, uid `{doc['uid']}`)\n")
        out.append("| panel | query |")
        out.append("|---|---|")
        for panel in panels(doc):
            exprs = "<br>".join(f"`{_cell(t['expr'])}`" for t in panel.get("targets", []))
            out.append(f"| {_cell(panel['title'])} | {exprs} |")
        out.append("")
    return "\n".join(out).rstrip()


def alerts_table(groups: list[dict[str, Any]]) -> str:
    rows = ["| alert | severity | for | fires when |", "|---|---|---|---|"]
    for name, rule in alerts(groups).items():
        anchor = rule["annotations"]["runbook"].partition("#")[2].split()[0]
        rows.append(
            f"| [{name}](#{anchor}) | {rule['labels']['severity']} | {rule.get('for', '0s')} "
            f"| {_cell(rule['annotations']['summary'])} |"
        )
    return "\n".join(rows)


def _alerts_section() -> str:
    from walletkit.devstack.prometheus import chart_rule_groups

    groups = chart_rule_groups("<namespace>")
    assert groups is not None, "the Helm SDK (requirements/chart.txt) renders the chart's rules"
    return alerts_table(groups)


SECTIONS = {"metrics": metrics_table, "panels": panels_table, "alerts": _alerts_section}


def generated(section: str) -> str:
    return SECTIONS[section]()


def replace_section(text: str, section: str, body: str) -> str:
    begin, end = f"<!-- generated:{section} -->", f"<!-- end:{section} -->"
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[:start] + "\n" + body + "\n" + text[stop:]


def section_of(text: str, section: str) -> str:
    begin, end = f"<!-- generated:{section} -->", f"<!-- end:{section} -->"
    return text[text.index(begin) + len(begin) : text.index(end)].strip()


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    text = DOC.read_text()
    for section in SECTIONS:
        text = replace_section(text, section, generated(section))
    DOC.write_text(text)
    print(f"updated {DOC}")
