"""The chart's side of the operator: the CRD, one ProcessorScaler per processor, the StatefulSets
without replicas, least-privilege RBAC, the Deployment and its policies. Rendered with Helm's own
engine (tests/chart/chart_support.py), no cluster."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))

from chart_support import (  # noqa: E402
    CHART,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    containers,
    env_of,
    helm,
    pod_spec,
    pyproject,
    render,
    require_module,
    structural_to_jsonschema,
    validate_custom_resource,
)

from wallet_operator import main as operator_main  # noqa: E402
from wallet_operator.resource import GROUP, KIND, PLURAL, VERSION  # noqa: E402

ON = {"operator": {"enabled": True}}
CRD_PATH = CHART / "crds" / f"{PLURAL}.{GROUP}.yaml"
PROCESSORS = {"balance": ("balance", "balance"), "aboveThreshold": ("above-threshold", "above_threshold")}


def crd() -> dict:
    yaml = require_module("yaml", "pip install -c constraints.txt -r requirements/chart.txt")
    return yaml.safe_load(CRD_PATH.read_text())


# ---------------------------------------------------------------- the CRD


def test_the_crd_is_a_valid_apiextensions_v1_object_with_status_and_printer_columns():
    kv = require_module("kubernetes_validate", "pip install -c constraints.txt -r requirements/chart.txt")
    doc = crd()
    for version in KUBE_VERSIONS:
        kv.validate(doc, version, strict=True)
    assert doc["metadata"]["name"] == f"{PLURAL}.{GROUP}" and doc["spec"]["scope"] == "Namespaced"
    assert doc["spec"]["names"]["kind"] == KIND
    (served,) = doc["spec"]["versions"]
    assert served["name"] == VERSION and served["served"] and served["storage"]
    assert served["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in served["additionalPrinterColumns"]}
    assert {"Target", "Group", "Lag", "Partitions", "Current", "Desired", "Ready"} <= set(columns)
    # Every column points at a field the schema has.
    schema = served["schema"]["openAPIV3Schema"]
    for name, path in columns.items():
        if path.startswith(".metadata."):
            continue  # ObjectMeta, not in the CRD's schema
        node = schema
        for part in re.sub(r"\[[^\]]*\]", "", path).lstrip(".").split("."):  # filters select items
            node = node["properties"][part] if "properties" in node else node["items"]["properties"][part]
        assert node.get("type"), f"column {name} -> {path} has no typed field"
    # The chart ships it where Helm installs CRDs before templates.
    with helm().Chart.load(str(CHART)) as chart:
        assert [c["name"] for c in chart.crds] == [f"crds/{CRD_PATH.name}"]


def test_the_crd_schema_is_structural():
    """Every node typed, no unknown-field preservation: what the API server requires of a v1 CRD
    (and what lets it prune and default)."""

    def walk(node, where):
        if not isinstance(node, dict):
            return
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{where} has no type"
        assert not node.get("x-kubernetes-preserve-unknown-fields"), f"{where} preserves unknown fields"
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, f"{where}.{name}")
        if "items" in node:
            walk(node["items"], f"{where}[]")

    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    walk(schema["properties"]["spec"], "spec")
    walk(schema["properties"]["status"], "status")


def test_the_crd_rejects_bad_resources():
    good = render(ON).one(KIND, f"{RELEASE}-balance")
    assert validate_custom_resource(good) == []
    for path, value, expected in [
        (("spec", "minReplicas"), 0, "spec.minReplicas"),
        (("spec", "targetLagPerReplica"), "1000", "spec.targetLagPerReplica"),
        (("spec", "scaleTargetRef", "kind"), "Deployment", "spec.scaleTargetRef.kind"),
        (("spec", "scaleDown", "stabilizationWindowSeconds"), -5, "spec.scaleDown.stabilizationWindowSeconds"),
        (("spec", "maxReplicaz"), 3, "maxReplicaz"),
    ]:
        bad = copy.deepcopy(good)
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        errors = validate_custom_resource(bad)
        assert any(expected in e for e in errors), (path, errors)
    no_target = copy.deepcopy(good)
    del no_target["spec"]["scaleTargetRef"]
    assert any("scaleTargetRef" in e for e in validate_custom_resource(no_target))
    rule = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    assert "self.minReplicas <= self.maxReplicas" in rule[0]["rule"], "min <= max is a CEL rule (a cluster checks it)"
    assert structural_to_jsonschema  # the same conversion the chart tests use for the shared CRDs


# ---------------------------------------------------------------- what the chart renders


def test_operator_off_renders_nothing_of_it_and_keeps_the_replicas():
    rendered = render({})
    assert not [
        m for m in rendered.manifests if m.doc["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    assert not rendered.of_kind(KIND)
    for component, _ in PROCESSORS.values():
        assert rendered.one("StatefulSet", f"{RELEASE}-{component}")["spec"]["replicas"] == 1


def test_one_processorscaler_per_processor_and_no_replicas_in_its_statefulset():
    rendered = render({**ON, "kafka": {"topics": {"partitions": 12}}})
    for key, (component, group) in PROCESSORS.items():
        name = f"{RELEASE}-{component}"
        sts = rendered.one("StatefulSet", name)
        assert "replicas" not in sts["spec"], "helm upgrade must not reset what the operator chose"
        spec = rendered.one(KIND, name)["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name}
        assert (spec["consumerGroup"], spec["topic"]) == (group, "deposit")
        assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 12), "maxReplicas 0 means the partition count"
        assert spec["targetLagPerReplica"] == 1000 and spec["paused"] is False
        assert spec["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_a_scaler_can_be_left_off_and_its_statefulset_keeps_its_replicas():
    rendered = render(
        {
            "operator": {"enabled": True, "scalers": {"aboveThreshold": {"enabled": False}}},
            "aboveThreshold": {"replicaCount": 3},
        }
    )
    assert [m.name for m in rendered.of_kind(KIND)] == [f"{RELEASE}-balance"]
    assert rendered.one("StatefulSet", f"{RELEASE}-above-threshold")["spec"]["replicas"] == 3
    assert "replicas" not in rendered.one("StatefulSet", f"{RELEASE}-balance")["spec"]
    rule = next(r for r in rendered.one("Role", f"{RELEASE}-operator")["rules"] if r["apiGroups"] == ["apps"])
    assert rule["resourceNames"] == [f"{RELEASE}-balance"], "no scale permission on what it does not scale"


def test_min_above_max_fails_rendering_with_a_message():
    h = helm()
    with pytest.raises(
        h.HelmRenderError, match=r"operator.scalers.balance.minReplicas \(5\) is above its maxReplicas \(4\)"
    ):
        render({"operator": {"enabled": True, "scalers": {"balance": {"minReplicas": 5, "maxReplicas": 4}}}})
    with pytest.raises(h.HelmValuesError, match="targetLagPerReplica"):
        render({"operator": {"enabled": True, "scalers": {"balance": {"targetLagPerReplica": 0}}}})
    with pytest.raises(h.HelmValuesError, match="enabeld"):
        render({"operator": {"enabeld": True}})


def test_rbac_is_namespaced_least_privilege_without_wildcards():
    rendered = render(ON)
    assert not rendered.of_kind("ClusterRole") and not rendered.of_kind("ClusterRoleBinding")
    rules = rendered.one("Role", f"{RELEASE}-operator")["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {
        (GROUP, PLURAL, "get"),
        (GROUP, PLURAL, "list"),
        (GROUP, PLURAL, "watch"),
        (GROUP, PLURAL, "patch"),
        (GROUP, f"{PLURAL}/status", "get"),
        (GROUP, f"{PLURAL}/status", "patch"),
        ("apps", "statefulsets/scale", "get"),
        ("apps", "statefulsets/scale", "patch"),
        ("", "events", "create"),
    }
    assert not [x for rule in rules for key in ("apiGroups", "resources", "verbs") for x in rule[key] if "*" in x]
    scale = next(r for r in rules if r["resources"] == ["statefulsets/scale"])
    assert sorted(scale["resourceNames"]) == [f"{RELEASE}-above-threshold", f"{RELEASE}-balance"]
    binding = rendered.one("RoleBinding", f"{RELEASE}-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": f"{RELEASE}-operator",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-operator", "namespace": NAMESPACE}]
    assert rendered.one("ServiceAccount", f"{RELEASE}-operator")["automountServiceAccountToken"] is False


def test_the_deployment_runs_the_api_image_with_the_operators_command():
    rendered = render(ON)
    deployment = rendered.one("Deployment", f"{RELEASE}-operator")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = containers(deployment)[0]
    api = containers(rendered.one("Deployment", f"{RELEASE}-api"))[0]
    assert container["image"] == api["image"], "no fourth image: the API image contains the operator"
    assert container["command"] == ["tini", "--", "wallet-operator"]
    pinned = render({**ON, "api": {"image": {"repository": "r/api", "digest": "sha256:" + "a" * 64}}})
    assert containers(pinned.one("Deployment", f"{RELEASE}-operator"))[0]["image"] == "r/api@sha256:" + "a" * 64
    own = render({"operator": {"enabled": True, "image": {"repository": "r/op", "tag": "7"}}})
    assert containers(own.one("Deployment", f"{RELEASE}-operator"))[0]["image"] == "r/op:7"

    spec = pod_spec(deployment)
    assert spec["serviceAccountName"] == f"{RELEASE}-operator" and spec["automountServiceAccountToken"] is False
    token = next(v for v in spec["volumes"] if v["name"] == "kube-api-access")["projected"]["sources"]
    assert token[0]["serviceAccountToken"]["expirationSeconds"] <= 3607
    mount = next(m for m in container["volumeMounts"] if m["name"] == "kube-api-access")
    assert mount == {
        "name": "kube-api-access",
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": True,
    }
    for other in ("api", "balance", "above-threshold"):
        kind = "Deployment" if other == "api" else "StatefulSet"
        assert not [v for v in pod_spec(rendered.one(kind, f"{RELEASE}-{other}"))["volumes"] if "projected" in v], (
            "only the operator gets an API token"
        )

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8083, "health": 8084}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_every_setting_the_chart_passes_is_one_the_operator_reads():
    """The chart and main.py cannot drift: each WALLET_* variable of the container is a flag's
    environment variable (or one of the shared service variables it deliberately ignores)."""
    container = containers(render(ON).one("Deployment", f"{RELEASE}-operator"))[0]
    env = env_of(container)
    read = set()
    for action in operator_main.parser()._actions:
        if action.help and "[env " in action.help:
            read.add(action.help.split("[env ", 1)[1].split(",")[0].rstrip("]"))
    shared_but_unused = {
        "WALLET_PARTITIONS",
        "WALLET_REPLICATION_FACTOR",
        "WALLET_MIN_INSYNC_REPLICAS",
        "WALLET_CREATE_TOPICS",
        "WALLET_STATE_DIR",
    }
    for name in env:
        if name.startswith("WALLET_"):
            assert name in read or name in shared_but_unused, f"{name} is set by the chart but not read"
    assert {
        "KAFKA_BOOTSTRAP_SERVERS",
        "WALLET_HTTP_PORT",
        "WALLET_HEALTH_PORT",
        "WALLET_OPERATOR_NAMESPACE",
        "WALLET_OPERATOR_SYNC_SECONDS",
        "WALLET_OPERATOR_KAFKA_TIMEOUT_SECONDS",
    } <= set(env) & (read | {"KAFKA_BOOTSTRAP_SERVERS"})
    assert env["WALLET_HTTP_PORT"]["value"] == "8083" and env["WALLET_HEALTH_PORT"]["value"] == "8084"
    assert env["WALLET_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_network_policy_lets_the_operator_reach_dns_kafka_and_the_api_server_only():
    rendered = render(ON)
    policy = rendered.one("NetworkPolicy", f"{RELEASE}-operator")["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress == {(53, "UDP"), (53, "TCP"), (9092, "TCP"), (9093, "TCP"), (443, "TCP"), (6443, "TCP")}
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == ["http"], "only Prometheus, on metrics"
    narrowed = render(
        {
            "operator": {
                "enabled": True,
                "networkPolicy": {"apiServer": {"ports": [6443], "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}]}},
            }
        }
    )
    rule = narrowed.one("NetworkPolicy", f"{RELEASE}-operator")["spec"]["egress"][-1]
    assert rule == {"ports": [{"port": 6443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}]}
    assert not render({**ON, "networkPolicy": {"enabled": False}}).of_kind("NetworkPolicy")


def test_with_sasl_the_operator_has_its_own_kafka_user_with_read_only_acls():
    rendered = render({**ON, "kafka": {"tls": {"enabled": True}, "sasl": {"enabled": True}}})
    user = rendered.one("KafkaUser", f"{RELEASE}-operator")["spec"]["authorization"]["acls"]
    ops = {
        (a["resource"]["type"], a["resource"]["name"], a["resource"]["patternType"]): set(a["operations"]) for a in user
    }
    assert ops == {
        ("topic", "deposit", "literal"): {"Read", "Describe"},
        ("group", "balance", "literal"): {"Describe"},
        ("group", "above_threshold", "literal"): {"Describe"},
        # the groups of rebuilt versions ("balance-v2"), and which version is live
        ("group", "balance-v", "prefix"): {"Describe"},
        ("group", "above_threshold-v", "prefix"): {"Describe"},
        ("topic", "table-versions", "literal"): {"Read", "Describe"},
        ("group", "wallet-operator-reader", "literal"): {"Read"},
        ("group", "wallet-operator-lag-probe", "literal"): {"Read"},
    }
    env = env_of(containers(rendered.one("Deployment", f"{RELEASE}-operator"))[0])
    assert env["KAFKA_SASL_USERNAME"]["value"] == f"{RELEASE}-operator"
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"{RELEASE}-operator", "key": "password"}


def test_monitoring_scrapes_the_operator():
    rendered = render({**ON, "metrics": {"podMonitor": {"enabled": True, "labels": {"release": "kps"}}}})
    monitor = rendered.one("PodMonitor", f"{RELEASE}-operator")
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert monitor["metadata"]["labels"]["release"] == "kps"


def test_the_console_script_is_packaged():
    """The chart runs `wallet-operator`; pyproject.toml must map the package and the script."""
    project = pyproject()
    assert project["project"]["scripts"].get("wallet-operator") == "wallet_operator.main:main", (
        'add wallet-operator = "wallet_operator.main:main" to [project.scripts]'
    )
    assert project["tool"]["setuptools"]["package-dir"].get("wallet_operator") == "services/operator/wallet_operator"
    assert "wallet_operator" in project["tool"]["setuptools"]["packages"]
    assert any(dep.replace(" ", "").startswith("kopf") for dep in project["project"]["dependencies"]), (
        "kopf is a runtime dependency (the API image runs the operator)"
    )
