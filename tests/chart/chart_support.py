"""Shared helpers of the chart tests: rendering with the real Helm SDK, CRD schemas, Dockerfiles.

Nothing here talks to a cluster or a network: rendering runs Helm's Go engine in-process
(helm-python-sdk), validation runs on local schemas, and the local e2e uses loopback only.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from walletkit.devstack.images import DockerIgnore  # noqa: F401 (re-exported for the Dockerfile tests)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "wallet"
SERVICES = {  # service directory -> console script (DESIGN.md)
    "api": "wallet-api",
    "balance": "wallet-balance",
    "above_threshold": "wallet-above-threshold",
}
RELEASE = "wallet"
NAMESPACE = "wallet-test"

# Kubernetes versions the manifests must be valid for: the chart's minimum and the newest known.
KUBE_VERSIONS = ("1.27.0", "1.37.0")

# Values scenarios rendered, linted, validated and scanned. Each is a realistic way to install.
SCENARIOS: dict[str, dict[str, Any]] = {
    # Strimzi Kafka owned by the release, plain listener.
    "defaults": {},
    # An existing cluster: no Strimzi resources, the services create the topics.
    "external": {
        "kafka": {"strimzi": {"enabled": False}, "external": {"bootstrapServers": "kafka-0.kafka.example:9092"}},
    },
    # Strimzi with TLS + SCRAM-SHA-512: KafkaUsers with ACLs, CA mounted, password from Strimzi's Secret.
    "strimzi-tls-scram": {"kafka": {"tls": {"enabled": True}, "sasl": {"enabled": True}}},
    # An existing cluster with TLS + SASL credentials from an existing Secret.
    "external-tls-sasl": {
        "kafka": {
            "strimzi": {"enabled": False},
            "tls": {"enabled": True},
            "sasl": {"enabled": True, "mechanism": "SCRAM-SHA-256"},
            "external": {
                "bootstrapServers": "broker-1.example:9093,broker-2.example:9093",
                "createTopics": False,
                "tls": {"caSecret": {"name": "corp-kafka-ca", "key": "ca.pem"}},
                "sasl": {"existingSecret": "wallet-kafka-credentials"},
            },
        },
    },
    # The API autoscaled, processors at the partition bound, a real storage class.
    "hpa-scaled": {
        "api": {
            "autoscaling": {
                "enabled": True,
                "minReplicas": 3,
                "maxReplicas": 10,
                "targetMemoryUtilizationPercentage": 80,
            }
        },
        "balance": {"replicaCount": 8, "persistence": {"storageClass": "fast-ssd", "size": "20Gi"}},
        "aboveThreshold": {"replicaCount": 8},
    },
    # The API's views on a volume per pod (a StatefulSet), autoscaled.
    "api-persistent": {
        "api": {
            "stateVolume": {"persistent": {"enabled": True, "size": "4Gi", "storageClass": "fast-ssd"}},
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6},
        },
    },
    # Everything prometheus-operator related on.
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "dashboards": {"enabled": True},
        },
    },
    # Everything optional off: no ingress, PDBs, policies, monitoring or test Pod.
    "minimal": {
        "api": {"ingress": {"enabled": False}, "pdb": {"create": False}, "replicaCount": 1},
        "balance": {"pdb": {"create": False}},
        "aboveThreshold": {"pdb": {"create": False}},
        "networkPolicy": {"enabled": False},
        "tests": {"enabled": False},
        "serviceAccount": {"create": False},
    },
    # The lag-aware scaling operator on (ProcessorScalers, its RBAC, its PodMonitor; the processor
    # StatefulSets without replicas), with Strimzi TLS + SCRAM so its KafkaUser renders too.
    "operator": {
        "operator": {"enabled": True},
        "kafka": {"tls": {"enabled": True}, "sasl": {"enabled": True}},
        "metrics": {"podMonitor": {"enabled": True}},
    },
    # The way in through this release's own Gateway, with an HTTPS listener whose certificate
    # cert-manager issues; plain HTTP only redirects.
    "gateway": {
        "gateway": {
            "create": True,
            "className": "eg",
            "tls": {"enabled": True, "hostname": "wallet.example.com", "certManager": {"clusterIssuer": "letsencrypt"}},
        },
        "api": {"httpRoute": {"enabled": True, "hostnames": ["wallet.example.com"]}},
    },
    # The optional Ingress instead (an ingress controller of your own).
    "ingress": {
        "api": {"httpRoute": {"enabled": False}, "ingress": {"enabled": True, "className": "nginx"}},
    },
    # The Ingress terminating TLS with a certificate cert-manager issues for its host.
    "ingress-tls": {
        "api": {
            "httpRoute": {"enabled": False},
            "ingress": {
                "enabled": True,
                "className": "traefik",
                "host": "wallet.example.com",
                "certManager": {"clusterIssuer": "letsencrypt"},
            },
        },
    },
    # Bearer tokens checked against the issuer's JWKS URL, and a per-client rate limit.
    "auth-jwks-url": {
        "api": {
            "auth": {
                "enabled": True,
                "issuer": "https://id.example.com/realms/wallet",
                "audience": "wallet-api",
                "jwksUrl": "https://id.example.com/realms/wallet/protocol/openid-connect/certs",
                "algorithms": ["RS256", "PS256"],
                "leewaySeconds": 10,
            },
            "rateLimit": {"requestsPerSecond": 20, "burst": 40},
        },
        "networkPolicy": {"jwks": {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}},
    },
    # Bearer tokens checked against a JWKS document from a ConfigMap; the helm test has a token.
    "auth-jwks-file": {
        "api": {
            "auth": {
                "enabled": True,
                "issuer": "https://id.example.com",
                "audience": "wallet",
                "jwks": {"configMap": "wallet-issuer-keys", "key": "keys.json"},
                "scopes": {"deposit": "payments:write", "read": "payments:read"},
                "walletsClaim": "accounts",
            }
        },
        "tests": {"bearerToken": {"secret": "wallet-helm-test-token"}},
    },
    # Images pinned by digest (what production should do).
    "pinned": {
        "api": {"image": {"repository": "registry.example/wallet-api", "digest": "sha256:" + "a" * 64}},
        "balance": {"image": {"repository": "registry.example/wallet-balance", "digest": "sha256:" + "b" * 64}},
        "aboveThreshold": {
            "image": {"repository": "registry.example/wallet-above-threshold", "digest": "sha256:" + "c" * 64}
        },
    },
}


# ---------------------------------------------------------------- optional tools


def require_module(name: str, install_hint: str):
    """Import a test dependency, or fail saying how to install it (support.require_module)."""
    from support import require_module as require

    return require(name, install_hint)


def helm():
    return require_module("helm_python", "pip install -c constraints.txt -r requirements/chart.txt")


def checkov_binary() -> str:
    """checkov lives in its own venv (its pins conflict with the project's lock): find it."""
    candidates = [
        os.environ.get("CHECKOV_BIN"),
        shutil.which("checkov"),
        str(REPO / ".venv" / "checkov" / "bin" / "checkov"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    message = (
        "checkov not found (CHECKOV_BIN, PATH, .venv/checkov/bin/checkov); install it in its own venv: "
        "python3 -m venv .venv/checkov && .venv/checkov/bin/pip install checkov==3.3.30"
    )
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must install it)")
    pytest.skip(message)


def crds_dir() -> Path:
    """The upstream CRDs the chart is validated against: the project's copies (tests/crds, with
    their versions in the folder names), or WALLET_CRDS_DIR."""
    override = os.environ.get("WALLET_CRDS_DIR")
    path = Path(override) if override else REPO / "tests" / "crds"
    if not any(path.rglob("*.yaml")):
        pytest.fail(f"no CRDs under {path} (the repository keeps them in tests/crds; WALLET_CRDS_DIR overrides)")
    return path


# ---------------------------------------------------------------- rendering


@dataclass
class Manifest:
    """One rendered Kubernetes object and the template it came from."""

    template: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def name(self) -> str:
        return self.doc["metadata"]["name"]

    @property
    def is_hook(self) -> bool:
        return "helm.sh/hook" in (self.doc["metadata"].get("annotations") or {})


@dataclass
class Rendered:
    values: dict[str, Any]
    manifests: list[Manifest]
    notes: str
    raw: dict[str, str] = field(repr=False, default_factory=dict)

    def of_kind(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m.kind == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [m.doc for m in self.manifests if m.kind == kind and m.name == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}: {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        return sorted(f"{m.kind}/{m.name}" for m in self.manifests)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render(values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
    """Render the chart as `helm template` would (hooks included); raises the SDK's error on failure."""
    return _render_cached(json.dumps(values or {}, sort_keys=True), release, namespace)


@lru_cache(maxsize=64)
def _render_cached(values_json: str, release: str, namespace: str) -> Rendered:
    import yaml

    h = helm()
    values = json.loads(values_json)
    with h.Chart.load(str(CHART)) as chart:
        raw = chart.render(values, name=release, namespace=namespace, is_install=True)
    manifests: list[Manifest] = []
    notes = ""
    for template, text in sorted(raw.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                manifests.append(Manifest(template, doc))
    return Rendered(values, manifests, notes, raw)


def render_scenario(name: str) -> Rendered:
    return render(SCENARIOS[name])


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Containers of a workload or Pod (init containers included)."""
    spec = doc["spec"]["template"]["spec"] if doc["kind"] in ("Deployment", "StatefulSet") else doc["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"] if doc["kind"] in ("Deployment", "StatefulSet") else doc["spec"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> env entry; fails on duplicate names (the last would silently win in Kubernetes)."""
    env: dict[str, dict[str, Any]] = {}
    for item in container.get("env", []):
        assert item["name"] not in env, f"duplicate env {item['name']} in container {container['name']}"
        env[item["name"]] = item
    return env


# ---------------------------------------------------------------- CRD schemas


def structural_to_jsonschema(node: Any) -> Any:
    """Turn a CRD's structural OpenAPI v3 schema into JSON Schema with the API server's strictness.

    - unknown fields are errors where the schema lists properties and does not preserve unknown
      fields (the API server prunes them silently, `kubectl apply --validate=strict` rejects them;
      either way such a field is a typo that does nothing);
    - x-kubernetes-int-or-string and nullable become JSON Schema types;
    - x-kubernetes-* list/map hints and CEL rules are dropped (not checkable here; CEL is a known gap).
    """
    if isinstance(node, list):
        return [structural_to_jsonschema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "description", "format"):
            continue
        if key == "properties":
            out[key] = {name: structural_to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = structural_to_jsonschema(value) if isinstance(value, (dict, list)) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [structural_to_jsonschema(x) for x in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        int_or_string = [{"type": "integer"}, {"type": "string"}]
        out["allOf"] = out.get("allOf", []) + [{"anyOf": int_or_string}]
    if node.get("x-kubernetes-embedded-resource") and "properties" in out:
        for meta in ("apiVersion", "kind"):
            out["properties"].setdefault(meta, {"type": "string"})
        out["properties"].setdefault("metadata", {"type": "object"})
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@dataclass(frozen=True)
class CrdVersion:
    group: str
    kind: str
    version: str
    served: bool
    schema: dict[str, Any]


@lru_cache(maxsize=1)
def load_crds() -> dict[tuple[str, str], CrdVersion]:
    """(apiVersion, kind) -> the CRD version's JSON Schema, for every CRD under the CRDs directory."""
    import yaml

    found: dict[tuple[str, str], CrdVersion] = {}
    # The shared CRDs (Strimzi, prometheus-operator) and the chart's own (crds/: ProcessorScaler).
    for path in sorted(crds_dir().rglob("*.yaml")) + sorted((CHART / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = structural_to_jsonschema(version["schema"]["openAPIV3Schema"])
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                found[key] = CrdVersion(
                    spec["group"], spec["names"]["kind"], version["name"], bool(version.get("served")), schema
                )
    return found


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_custom_resource(doc: dict[str, Any]) -> list[str]:
    """Errors of one custom resource against its CRD (empty when valid)."""
    import jsonschema

    key = (doc.get("apiVersion"), doc.get("kind"))
    crds = load_crds()
    if key not in crds:
        known = sorted(f"{a} {k}" for a, k in crds)
        return [f"no CRD for {key[0]} {key[1]} (known: {', '.join(known)})"]
    crd = crds[key]
    errors = []
    if not crd.served:
        errors.append(f"{key[0]} is not a served version of {key[1]}")
    name = doc.get("metadata", {}).get("name", "")
    if not DNS_SUBDOMAIN.match(name) or len(name) > 253:
        errors.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    validator = jsonschema.Draft7Validator(crd.schema)
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path) or "<root>"
        errors.append(f"{where}: {error.message}")
    return errors


# ---------------------------------------------------------------- Dockerfiles


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def json_args(self) -> list[str] | None:
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(x, str) for x in value) else None


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continuation are removed by the builder
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, f"{path}: dangling line continuation"
    return instructions


def copy_sources(instruction: Instruction) -> tuple[list[str], str, dict[str, str]]:
    """(sources, destination, flags) of a COPY/ADD instruction."""
    parts = instruction.json_args() or instruction.args.split()
    flags: dict[str, str] = {}
    while parts and parts[0].startswith("--"):
        flag, _, value = parts.pop(0)[2:].partition("=")
        flags[flag] = value
    assert len(parts) >= 2, f"line {instruction.line}: COPY needs sources and a destination"
    return parts[:-1], parts[-1], flags


def repo_files() -> list[str]:
    """Files of the working tree that git would consider (tracked or new, not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if (REPO / line).is_file()]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# ---------------------------------------------------------------- checkov skips


@dataclass(frozen=True)
class CheckovSkip:
    check: str
    resource: str
    reason: str

    def matches(self, check_id: str, resource: str) -> bool:
        return check_id == self.check and fnmatch.fnmatchcase(resource, self.resource)


def checkov_skips() -> list[CheckovSkip]:
    import yaml

    doc = yaml.safe_load((CHART / "checkov-skips.yaml").read_text())
    skips = []
    for entry in doc["skips"]:
        reason = (entry.get("reason") or "").strip()
        assert len(reason) >= 40, f"checkov skip {entry} needs a real reason"
        skips.append(CheckovSkip(entry["check"], entry.get("resource", "*"), reason))
    return skips
