"""checkov finds nothing in the rendered manifests of any scenario, nor in the Dockerfiles, that is
not accepted with a reason in charts/wallet/checkov-skips.yaml."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from chart_support import REPO, SCENARIOS, checkov_binary, checkov_skips, render_scenario

CHECKOV_ENV = {
    **os.environ,
    # Offline: no guideline mapping download, no platform calls (its helm framework would need the
    # helm binary, so the rendered manifests are scanned with the kubernetes framework).
    "BC_SKIP_MAPPING": "TRUE",
    "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",  # its banner would ask PyPI for a newer version
}


def run_checkov(args: list[str]) -> list[dict]:
    """Run checkov with JSON output; the list of its reports (one per framework)."""
    proc = subprocess.run(
        [checkov_binary(), *args, "--skip-download", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        env=CHECKOV_ENV,
        timeout=180,
        cwd=REPO,
    )
    assert proc.returncode in (0, 1), f"checkov failed to run ({proc.returncode}): {proc.stderr[-2000:]}"
    out = json.loads(proc.stdout)
    reports = out if isinstance(out, list) else [out]
    for report in reports:
        assert report.get("summary", {}).get("parsing_errors", 0) == 0, f"checkov could not parse: {report['summary']}"
    return reports


def failed_checks(reports: list[dict]) -> list[tuple[str, str, str]]:
    return [(f["check_id"], f["resource"], f["file_path"]) for r in reports for f in r["results"]["failed_checks"]]


@pytest.fixture(scope="module")
def manifest_findings(tmp_path_factory) -> dict[str, list[tuple[str, str, str]]]:
    """Failed checks per scenario, from one checkov run over all scenarios' manifests."""
    root: Path = tmp_path_factory.mktemp("rendered")
    for scenario in SCENARIOS:
        rendered = render_scenario(scenario)
        (root / scenario).mkdir()
        (root / scenario / "manifests.yaml").write_text(
            "\n---\n".join(
                text
                for template, text in sorted(rendered.raw.items())
                if not template.endswith("NOTES.txt") and text.strip()
            )
        )
    reports = run_checkov(["-d", str(root), "--framework", "kubernetes"])
    passed = sum(r["summary"]["passed"] for r in reports)
    assert passed > 100 * len(SCENARIOS) / 2, f"checkov passed only {passed} checks: did it scan the manifests?"
    findings: dict[str, list[tuple[str, str, str]]] = {s: [] for s in SCENARIOS}
    for check_id, resource, file_path in failed_checks(reports):
        scenario = Path(file_path).parts[-2]
        findings[scenario].append((check_id, resource, file_path))
    return findings


def test_rendered_manifests_have_no_unaccepted_findings(manifest_findings):
    skips = checkov_skips()
    unaccepted = [
        f"{scenario}: {check} {resource}"
        for scenario, found in manifest_findings.items()
        for check, resource, _ in found
        if not any(s.matches(check, resource) for s in skips)
    ]
    assert not unaccepted, "checkov findings without a reason in checkov-skips.yaml:\n" + "\n".join(unaccepted)


def test_every_accepted_finding_still_occurs(manifest_findings):
    """A skip that matches nothing is stale: remove it, so the list keeps meaning something."""
    found = [(check, resource) for fs in manifest_findings.values() for check, resource, _ in fs]
    stale = [s for s in checkov_skips() if not any(s.matches(c, r) for c, r in found)]
    assert not stale, f"checkov-skips.yaml entries that match no finding: {stale}"


def test_digest_pinned_images_pass_the_digest_check(manifest_findings):
    """The accepted CKV_K8S_43 is a default, not a limit: with digests set the check passes."""
    assert not [f for f in manifest_findings["pinned"] if f[0] == "CKV_K8S_43"]
    assert [f for f in manifest_findings["defaults"] if f[0] == "CKV_K8S_43"], "the scan must see the tagged default"


def test_dockerfiles_have_no_findings():
    reports = run_checkov(["--framework", "dockerfile", "-f", "services/Dockerfile"])
    assert sum(r["summary"]["resource_count"] for r in reports) >= 1, "checkov must scan the Dockerfile"
    findings = failed_checks(reports)
    skips = checkov_skips()
    unaccepted = [f for f in findings if not any(s.matches(f[0], f[1]) for s in skips)]
    assert not unaccepted, f"Dockerfile findings: {unaccepted}"
