"""Every value in values.yaml is documented (`## @param`) and typed in values.schema.json, and the
schema accepts the defaults: the three stay in step."""

from __future__ import annotations

import json
import re

import pytest
from chart_support import CHART, require_module

PARAM = re.compile(r"^\s*## @param (\S+) (\S.*)$")


def leaf_paths(node, prefix=""):
    """Dotted paths of every leaf value (an empty map or list counts as a leaf)."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaf_paths(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
    else:
        yield prefix


def documented_params():
    params = {}
    for line in (CHART / "values.yaml").read_text().splitlines():
        if m := PARAM.match(line):
            assert m.group(1) not in params, f"@param {m.group(1)} documented twice"
            params[m.group(1)] = m.group(2)
    return params


def values():
    yaml = require_module("yaml", "pip install -c constraints.txt -r requirements/chart.txt")
    return yaml.safe_load((CHART / "values.yaml").read_text())


def schema():
    return json.loads((CHART / "values.schema.json").read_text())


def covered(path: str, params: dict[str, str]) -> bool:
    parts = path.split(".")
    return any(".".join(parts[:n]) in params for n in range(len(parts), 0, -1))


def schema_node(path: str):
    """The schema node for a dotted path; None if the schema does not know it. Stops at free-form maps."""
    node = schema()
    for part in path.split("."):
        props = node.get("properties")
        if props is None:
            return (
                node if node.get("type") == "object" and node.get("additionalProperties", True) is not False else None
            )
        if part not in props:
            return None
        node = props[part]
    return node


def test_every_value_is_documented():
    params = documented_params()
    undocumented = [p for p in leaf_paths(values()) if not covered(p, params)]
    assert not undocumented, f"values without a `## @param` line: {undocumented}"
    for name, text in params.items():
        assert len(text) >= 8, f"@param {name} needs a real description"


def test_every_documented_param_exists():
    known = set()
    for path in leaf_paths(values()):
        parts = path.split(".")
        known |= {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
    stale = [p for p in documented_params() if p not in known]
    assert not stale, f"`## @param` lines for values that do not exist: {stale}"


def test_every_value_is_in_the_schema_with_a_description():
    missing = [p for p in leaf_paths(values()) if schema_node(p) is None]
    assert not missing, f"values the schema does not know (so it would reject them): {missing}"
    for path in documented_params():
        node = schema_node(path)
        assert node is not None and (node.get("description") or node.get("properties") is None), path


def test_the_schema_accepts_the_defaults_and_rejects_unknown_keys():
    jsonschema = require_module("jsonschema", "pip install -c constraints.txt -r requirements/chart.txt")
    validator = jsonschema.Draft7Validator(schema())
    assert not list(validator.iter_errors(values()))
    assert list(validator.iter_errors({**values(), "replicaCount": 3})), "top-level typos must be rejected"


@pytest.mark.parametrize("section", ["api", "balance", "aboveThreshold", "kafka", "networkPolicy", "metrics"])
def test_sections_reject_typos(section):
    jsonschema = require_module("jsonschema", "pip install -c constraints.txt -r requirements/chart.txt")
    doc = values()
    doc[section]["enabeld"] = True
    assert list(jsonschema.Draft7Validator(schema()).iter_errors(doc))
