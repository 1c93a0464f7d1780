"""The developer loop (skaffold.yaml, kind-config.yaml, scripts/kind-up.sh) agrees with the chart
and the Dockerfiles. None of it can run here (no Docker, no cluster); its wiring can be checked."""

from __future__ import annotations

import re
import shutil
import subprocess

import yaml
from chart_support import RELEASE, REPO, SERVICES, containers, render, require_module
from support import missing_tool


def load_yaml(name):
    yaml = require_module("yaml", "pip install -c constraints.txt -r requirements/chart.txt")
    return yaml.safe_load((REPO / name).read_text())


def sanitized(image: str) -> str:
    """Skaffold's template key for an artifact: non-alphanumerics become '_'."""
    return re.sub(r"[^A-Za-z0-9]", "_", image)


def test_skaffold_builds_each_service_image_from_the_repository_root():
    config = load_yaml("skaffold.yaml")
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert set(artifacts) == set(SERVICES.values()), "one artifact per service, named as its console script"
    for service, script in SERVICES.items():
        artifact = artifacts[script]
        assert artifact.get("context", ".") == "."
        dockerfile = artifact["docker"]["dockerfile"]
        assert dockerfile == "services/Dockerfile" and (REPO / dockerfile).is_file(), "one multi-target Dockerfile"
        assert artifact["docker"]["target"] == service.replace("_", "-"), "each image is its service's target"


def test_skaffold_wires_every_built_image_into_the_chart():
    config = load_yaml("skaffold.yaml")
    release = config["deploy"]["helm"]["releases"][0]
    assert (REPO / release["chartPath"]).resolve() == (REPO / "charts" / "wallet").resolve()
    templates = release["setValueTemplates"]
    keys = {"wallet-api": "api", "wallet-balance": "balance", "wallet-above-threshold": "aboveThreshold"}
    for image, key in keys.items():
        assert templates[f"{key}.image.repository"] == f"{{{{.IMAGE_REPO_{sanitized(image)}}}}}"
        assert templates[f"{key}.image.tag"] == f"{{{{.IMAGE_TAG_{sanitized(image)}}}}}"
    # What skaffold would set renders: substitute plausible results for the templates.
    values = {}
    for dotted, template in templates.items():
        fake = "localhost/x" if "REPO" in template else "abc123"
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = fake
    rendered = render(values, release=release["name"])
    assert containers(rendered.one("Deployment", f"{release['name']}-api"))[0]["image"] == "localhost/x:abc123"


def test_the_kind_profile_sets_only_values_the_chart_accepts():
    config = load_yaml("skaffold.yaml")
    profile = next(p for p in config["profiles"] if p["name"] == "kind")
    assert {"kubeContext": "kind-wallet"} in profile["activation"]
    patch = next(p for p in profile["patches"] if p["path"].endswith("/setValues"))
    files = next(p for p in profile["patches"] if p["path"].endswith("/valuesFiles"))["value"]
    assert files == ["charts/wallet/values-kind.yaml"]
    values: dict = load_yaml(files[0])
    assert values["kafka"]["durability"]["allowUnsafe"] is True, "one broker: the opt-in is explicit"
    for dotted, value in patch["value"].items():
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    rendered = render(values)  # the values schema rejects unknown keys and wrong types
    kinds = {m.kind for m in rendered.manifests}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds, "kube-prometheus-stack runs on kind"


def test_kind_cluster_publishes_the_gateway_on_localhost_8080():
    """kind maps the node port of Envoy Gateway's proxies to localhost:8080; the class the chart's
    Gateway names on kind is the one kind-up.sh installs, with that node port; the HTTPRoute
    attaches to that Gateway and matches every host (so localhost works)."""
    config = load_yaml("kind-config.yaml")
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    assert config["name"] == "wallet", "skaffold's kind profile activates on the kind-wallet context"
    mappings = [m for n in config["nodes"] for m in n.get("extraPortMappings", [])]
    assert all(m.get("listenAddress", "0.0.0.0") == "127.0.0.1" for m in mappings), "local only"
    host_8080 = [m["containerPort"] for m in mappings if m["hostPort"] == 8080]
    assert len(host_8080) == 1
    gateway_docs = list(yaml.safe_load_all((REPO / "scripts" / "kind-gateway.yaml").read_text()))
    proxy = next(d for d in gateway_docs if d["kind"] == "EnvoyProxy")
    service = proxy["spec"]["provider"]["kubernetes"]["envoyService"]
    assert service["type"] == "NodePort"
    assert service["patch"]["value"]["spec"]["ports"][0]["nodePort"] == host_8080[0]
    klass = next(d for d in gateway_docs if d["kind"] == "GatewayClass")
    assert klass["spec"]["parametersRef"]["name"] == proxy["metadata"]["name"]

    values = load_yaml("charts/wallet/values-kind.yaml")
    rendered = render(values)
    gateway = rendered.one("Gateway", RELEASE)
    assert gateway["spec"]["gatewayClassName"] == klass["metadata"]["name"]
    listener = gateway["spec"]["listeners"][0]
    assert listener["port"] == service["patch"]["value"]["spec"]["ports"][0]["port"]
    route = rendered.one("HTTPRoute", f"{RELEASE}-api")["spec"]
    assert route["parentRefs"] == [{"name": RELEASE}] and "hostnames" not in route
    assert route["rules"][0]["backendRefs"][0]["name"] == f"{RELEASE}-api"
    assert not [m for m in rendered.manifests if m.kind == "Ingress"], "the Ingress is the optional way"


def test_kind_up_script_is_strict_and_checks_its_tools():
    script = (REPO / "scripts" / "kind-up.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script
    assert (REPO / "scripts" / "kind-up.sh").stat().st_mode & 0o111, "executable"
    for tool in ("docker", "kind", "kubectl", "helm", "skaffold"):
        assert re.search(rf"^need {tool} ", script, re.M), f"no clear message when {tool} is missing"
    for step in (
        "kind create cluster",
        "envoyproxy/gateway-helm",
        "kind-gateway.yaml",
        "strimzi-kafka-operator",
        "kube-prometheus-stack",
        "skaffold dev --profile kind",
        "kind-config.yaml",
    ):
        assert step in script
    # The namespaces it installs into are those the chart's NetworkPolicies admit by default.
    values = load_yaml("charts/wallet/values.yaml")["networkPolicy"]
    assert values["prometheus"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "monitoring"
    assert "--namespace monitoring" in script
    assert (
        values["gateway"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "envoy-gateway-system"
        and "--namespace envoy-gateway-system" in script
    )
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "kind-up.sh")], check=True)


def test_kind_up_script_passes_shellcheck():
    if not shutil.which("shellcheck"):
        missing_tool("shellcheck not installed (Debian package shellcheck)")
    result = subprocess.run(["shellcheck", str(REPO / "scripts" / "kind-up.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_kind_up_reports_every_missing_tool_and_stops(tmp_path):
    """With an empty PATH (bar bash's own builtins) the script names the tools and exits non-zero
    before touching anything."""
    bash = shutil.which("bash")
    result = subprocess.run(
        [bash, str(REPO / "scripts" / "kind-up.sh"), "--no-dev"],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},
        timeout=30,
    )
    assert result.returncode != 0
    for tool in ("docker", "kind", "kubectl", "helm", "skaffold"):
        assert f"'{tool}' is required" in result.stderr, result.stderr
