"""tests/kube: the chart and the operator against a real API server (controlplane.py).

Put this directory on sys.path so the test modules import controlplane under any import mode.
"""

import sys
from pathlib import Path

import pytest
import yaml

_HERE = Path(__file__).resolve().parent
for path in (_HERE, _HERE.parent / "chart", _HERE.parent / "operator"):  # controlplane, chart_support, harness
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from chart_support import crds_dir  # noqa: E402
from support import wait_for  # noqa: E402

from walletkit.devstack.controlplane import CHART, ControlPlane  # noqa: E402


def crd_files() -> list[Path]:
    """Strimzi, prometheus-operator and Gateway API CRDs (tests/crds) and the chart's own."""
    return sorted(crds_dir().rglob("*.yaml")) + sorted((CHART / "crds").glob("*.yaml"))


@pytest.fixture(scope="module")
def plane(request, tmp_path_factory):
    """A control plane for the module's tests, with every CRD the chart can use established."""
    cp = ControlPlane(tmp_path_factory.mktemp("controlplane")).start()
    try:
        admin = cp.admin()
        names = []
        for path in crd_files():
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    admin.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", doc)
                    names.append(doc["metadata"]["name"])
        for name in names:
            wait_for(lambda: established(admin, name), 60, f"CRD {name} established")
        yield cp
    finally:
        if request.session.testsfailed:
            for binary in ("kube-apiserver", "kube-controller-manager", "etcd"):
                print(f"\n===== {binary} (last lines) =====\n{cp.log_tail(binary, 15)}")
        cp.stop()


def established(admin, name: str) -> bool:
    doc = admin.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    return any(
        c["type"] == "Established" and c["status"] == "True" for c in doc.get("status", {}).get("conditions", [])
    )
