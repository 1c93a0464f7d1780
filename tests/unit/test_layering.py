"""The layers hold: who may import whom, checked on every import statement of production code.

- the toolkit (walletkit.stream) imports nothing of the wallet domain, the runtime, the dev
  tooling or the services;
- the runtime (walletkit.service) imports nothing of the domain, the dev tooling or the services;
- the domain (walletkit.wallet) imports nothing of the runtime, the dev tooling or the services;
- nothing in production imports the dev tooling (walletkit.devstack);
- code outside the toolkit imports what ``walletkit.stream`` exports, never its modules.

And the registry of tables (walletkit.wallet.topology.TABLES) is the one list: the chart's
processor list agrees with it.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

import walletkit.stream
from walletkit.wallet.topology import TABLES

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("wallet_api", "wallet_balance", "wallet_above_threshold", "wallet_operator", "wallet_ctl")

LAYERS = {
    "walletkit/stream": ("walletkit.wallet", "walletkit.service", "walletkit.devstack", *SERVICES),
    "walletkit/service": ("walletkit.wallet", "walletkit.devstack", *SERVICES),
    "walletkit/wallet": ("walletkit.service", "walletkit.devstack", *SERVICES),
    "services": ("walletkit.devstack",),
}


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in ``path``, nested ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return out


def production_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "_pb2" not in p.name)


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in production_files(folder):
        for line, module, _ in imports(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_a_layer_imports_nothing_above_it(folder):
    assert production_files(folder), f"no production code under {folder}: the check checks nothing"
    assert violations(folder, LAYERS[folder]) == []


@pytest.mark.parametrize("folder", ["walletkit/service", "walletkit/wallet", "services"])
def test_code_outside_the_toolkit_imports_only_what_it_exports(folder):
    exported = set(walletkit.stream.__all__)
    found = []
    for path in production_files(folder):
        for line, module, names in imports(path):
            if module.startswith("walletkit.stream."):
                found.append(f"{path.relative_to(ROOT)}:{line} imports the toolkit's module {module}")
            elif module == "walletkit.stream":
                found += [
                    f"{path.relative_to(ROOT)}:{line} imports {n}, which walletkit.stream does not export"
                    for n in names
                    if n not in exported
                ]
    assert found == []


def test_the_export_list_names_only_what_exists():
    missing = [name for name in walletkit.stream.__all__ if not hasattr(walletkit.stream, name)]
    assert missing == []


def test_the_check_finds_a_violation(tmp_path, monkeypatch):
    """The rules catch what they are about (else an empty result proves nothing)."""
    fake = tmp_path / "walletkit" / "stream"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from walletkit.wallet import money\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert violations("walletkit/stream", LAYERS["walletkit/stream"]) == [
        "walletkit/stream/bad.py:2 imports walletkit.wallet"
    ]


def test_the_charts_processors_are_the_registrys_tables():
    helpers = (ROOT / "charts/wallet/templates/_helpers.tpl").read_text()
    listed = re.search(r'define "wallet\.processors" -}}\n(.*?)\n{{- end', helpers, re.S)
    assert listed, "the chart's wallet.processors list moved: update this test"
    chart = {(p["script"], p["group"], p["table"]) for p in json.loads(listed.group(1))}
    assert chart == {(t.service, t.base, t.topic) for t in TABLES}
