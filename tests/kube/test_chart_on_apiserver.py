"""The chart against a real API server (etcd + kube-apiserver + kube-controller-manager, built from
the Go module proxy; controlplane.py): every object of every values scenario passes the server's
own validation (schemas with strict field checking, CRD CEL rules), and helm installs, upgrades,
rolls back and uninstalls the release, leaving only what is meant to stay.

No kubelet or scheduler runs (none can here), so the pods the StatefulSet controller creates stay
Pending; nothing here depends on a container starting (tests/images does that)."""

from __future__ import annotations

import json

import pytest
import yaml
from chart_support import SCENARIOS
from support import wait_for as wait

from walletkit.devstack.controlplane import CHART, ControlPlane, KubeError

NAMESPACE = "wallet"


class Resources:
    """Kind -> (collection path, namespaced) from the API server's discovery."""

    def __init__(self, admin) -> None:
        self.admin, self.cache = admin, {}

    def path(self, api_version: str, kind: str, namespace: str) -> str:
        key = (api_version, kind)
        if key not in self.cache:
            base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            for r in self.admin.get(base)["resources"]:
                if "/" not in r["name"]:
                    self.cache[(api_version, r["kind"])] = (base, r["name"], r["namespaced"])
        if key not in self.cache:
            raise AssertionError(f"the API server serves no {kind} in {api_version}")
        base, plural, namespaced = self.cache[key]
        return f"{base}/namespaces/{namespace}/{plural}" if namespaced else f"{base}/{plural}"


def rendered(plane: ControlPlane, values: dict, *extra: str, namespace: str = NAMESPACE) -> list[dict]:
    values_file = plane.root / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    out = plane.helm(
        "template",
        "wallet",
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(values_file),
        "--api-versions",
        "monitoring.coreos.com/v1",
        *extra,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def ensure_namespace(admin, name: str) -> None:
    if not admin.exists(f"/api/v1/namespaces/{name}"):
        admin.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def dry_run_create(admin, resources: Resources, doc: dict) -> None:
    path = resources.path(doc["apiVersion"], doc["kind"], doc["metadata"].get("namespace", NAMESPACE))
    admin.create(path, doc, query="dryRun=All&fieldValidation=Strict")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_passes_server_side_validation(plane, scenario):
    """What `kubectl apply --dry-run=server --validate=strict` does for each rendered object: the
    built-in schemas with unknown fields refused, the CRDs' OpenAPI schemas and CEL rules."""
    admin = plane.admin()
    namespace = f"scenario-{scenario}"
    ensure_namespace(admin, namespace)
    resources = Resources(admin)
    docs = rendered(plane, SCENARIOS[scenario], namespace=namespace)
    problems = []
    # ServiceAccounts for real first: admission looks up the account a pod names.
    for doc in sorted(docs, key=lambda d: d["kind"] != "ServiceAccount"):
        try:
            if doc["kind"] == "ServiceAccount":
                admin.create(resources.path("v1", "ServiceAccount", namespace), doc, query="fieldValidation=Strict")
            else:
                dry_run_create(admin, resources, doc)
        except KubeError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not problems, "\n".join(problems)
    assert len(docs) >= 10


def test_the_server_refuses_what_the_chart_must_never_render(plane):
    """The validation above is live: an unknown field, a broken CRD schema value and a CEL rule each
    come back refused (so a clean pass means the chart's objects are valid, not unchecked)."""
    admin = plane.admin()
    ensure_namespace(admin, NAMESPACE)
    resources = Resources(admin)
    docs = rendered(plane, {})
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    sts = json.loads(json.dumps(sts))
    sts["spec"]["replicaz"] = 2
    topic = json.loads(json.dumps(next(d for d in docs if d["kind"] == "KafkaTopic")))
    topic["spec"]["partitions"] = "eight"
    scaler_crd = yaml.safe_load((CHART / "crds" / "processorscalers.scaling.wallet.dev.yaml").read_text())
    refused = {}
    for name, doc in (("unknown field", sts), ("wrong type", topic)):
        with pytest.raises(KubeError) as err:
            dry_run_create(admin, resources, doc)
        refused[name] = err.value.status
    assert refused == {"unknown field": 400, "wrong type": 422}, refused
    assert "x-kubernetes-validations" in json.dumps(scaler_crd), "the ProcessorScaler CRD has its CEL rule"
    scaler = {
        "apiVersion": "scaling.wallet.dev/v1alpha1",
        "kind": "ProcessorScaler",
        "metadata": {"name": "bad", "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "x"},
            "consumerGroup": "balance",
            "topic": "deposit",
            "minReplicas": 5,
            "maxReplicas": 2,
            "targetLagPerReplica": 1000,
        },
    }
    with pytest.raises(KubeError) as err:
        dry_run_create(admin, resources, scaler)
    assert err.value.status == 422 and "minReplicas" in str(err.value), err.value


def objects_in(plane: ControlPlane, namespace: str) -> set[str]:
    """kind/name of every object in the namespace, of every listable namespaced resource."""
    admin = plane.admin()
    found = set()
    groups = [("/api", "v1")] + [("/apis", g["preferredVersion"]["groupVersion"]) for g in admin.get("/apis")["groups"]]
    for prefix, gv in groups:
        for r in admin.get(f"{prefix}/{gv}")["resources"]:
            if "/" in r["name"] or not r["namespaced"] or "list" not in r["verbs"] or r["kind"] == "Event":
                continue
            for item in admin.get(f"{prefix}/{gv}/namespaces/{namespace}/{r['name']}").get("items", []):
                found.add(f"{r['kind']}/{item['metadata']['name']}")
    return found


def statefulset(plane: ControlPlane, name: str) -> dict:
    return plane.admin().get(f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/{name}")


def test_install_upgrade_rollback_uninstall(plane):
    ns = "lifecycle"
    admin = plane.admin()
    installed = plane.helm(
        "install", "wallet", str(CHART), "-n", ns, "--create-namespace", "--set", "balance.replicaCount=2"
    )
    assert "STATUS: deployed" in installed.stdout, installed.stdout
    live = objects_in(plane, ns)
    for expected in (
        "Deployment/wallet-api",
        "StatefulSet/wallet-balance",
        "StatefulSet/wallet-above-threshold",
        "Service/wallet-api",
        "Kafka/wallet",
        "KafkaNodePool/dual-role",
        "KafkaTopic/wallet-deposit",
        "NetworkPolicy/wallet-api",
        # The server serves monitoring.coreos.com/v1 (its CRDs are installed), so the
        # monitoring objects are on by default (auto).
        "ServiceMonitor/wallet-api",
        "PodMonitor/wallet-processors",
        "PrometheusRule/wallet",
        "ConfigMap/wallet-dashboard-wallet-overview",
    ):
        assert any(o.lower() == expected.lower() for o in live), f"{expected} not installed: {sorted(live)}"
    # The StatefulSet controller acts on what helm created: pods and their claims exist (Pending).
    wait(
        lambda: {f"Pod/wallet-balance-{i}" for i in range(2)} <= objects_in(plane, ns) or "no pods",
        60,
        "the StatefulSet controller to create balance's pods",
    )
    assert {
        "PersistentVolumeClaim/state-wallet-balance-0",
        "PersistentVolumeClaim/state-wallet-balance-1",
    } <= objects_in(plane, ns)

    # An upgrade that changes what may change: replicas, image, resources, an env setting.
    plane.helm(
        "upgrade",
        "wallet",
        str(CHART),
        "-n",
        ns,
        "--set",
        "balance.replicaCount=3",
        "--set",
        "api.replicaCount=1",
        "--set",
        "balance.image.tag=0.1.1",
        "--set",
        "balance.resources.limits.memory=1Gi",
    )
    sts = admin.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/wallet-balance")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.1.1")

    # What cannot change on a StatefulSet is refused before anything is applied, with what to do.
    refused = plane.helm(
        "upgrade",
        "wallet",
        str(CHART),
        "-n",
        ns,
        "--set",
        "balance.replicaCount=3",
        "--set",
        "balance.persistence.size=5Gi",
        check=False,
    )
    assert refused.returncode != 0
    assert "balance.persistence.size cannot change" in refused.stderr and "--cascade=orphan" in refused.stderr, (
        refused.stderr
    )
    # The same size written another way is no change (the server stores quantities canonically).
    plane.helm("upgrade", "wallet", str(CHART), "-n", ns, "--reuse-values", "--set", "balance.persistence.size=1024Mi")
    assert admin.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/wallet-balance")["spec"]["replicas"] == 3

    history = json.loads(plane.helm("history", "wallet", "-n", ns, "-o", "json").stdout)
    assert [h["status"] for h in history][-1] == "deployed" and len(history) == 3

    plane.helm("rollback", "wallet", "1", "-n", ns)
    sts = admin.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/wallet-balance")
    assert sts["spec"]["replicas"] == 2 and not sts["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
        ":0.1.1"
    )

    plane.helm("uninstall", "wallet", "-n", ns, "--wait", "--timeout", "120s")

    def only_kept():
        left = {
            o
            for o in objects_in(plane, ns)
            if not o.startswith(("ServiceAccount/default", "ConfigMap/kube-root-ca.crt"))
        }
        meant = {o for o in left if o.startswith(("PersistentVolumeClaim/", "Kafka/", "KafkaNodePool/", "KafkaTopic/"))}
        return left == meant or sorted(left - meant)

    wait(only_kept, 90, "only the kept objects left after uninstall")
    left = objects_in(plane, ns)
    assert "Kafka/wallet" in left and "KafkaTopic/wallet-deposit" in left, "topics and the cluster are kept"
    assert any(o.startswith("PersistentVolumeClaim/state-wallet-balance") for o in left), "state volumes are kept"
    assert not any(o.startswith("Secret/sh.helm.release") for o in left)
