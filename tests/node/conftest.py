"""tests/node: the chart on a real single-node cluster (walletkit/devstack/node.py).

One node for the session: started in a temporary directory, the images built (or found built) and
imported, Apache Kafka deployed in it; ended, every process by its PID, when the session ends. A
machine without what the node needs (root, containerd, runc, the CNI plugins, buildah) fails
these tests with what to install: they never skip.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from walletkit.devstack.node import Node, NodeError, deploy_kafka, load_images, log_tail

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")  # torn down with its module: a node left up slows every suite after it
def cluster(request):
    # A short path: containerd's sockets live under it (a unix socket path has 108 bytes).
    root = Path(tempfile.mkdtemp(prefix="wallet-node-"))
    node = Node(root)
    try:
        node.start()
    except NodeError as exc:
        pytest.fail(f"the single-node cluster cannot start here: {exc}")
    try:
        load_images(node, log=lambda m: print(m, flush=True))
        deploy_kafka(node)
        yield node
    finally:
        if request.session.testsfailed:
            for name in ("kubelet", "containerd", "kube-proxy", "coredns", "kube-apiserver", "provisioner"):
                print(f"\n===== {name} (last lines) =====\n{log_tail(root, name, 15)}")
            for pod_log in sorted((root / "pod-logs").rglob("*.log"))[-12:]:
                print(
                    f"\n===== {pod_log.relative_to(root)} =====\n"
                    + "\n".join(pod_log.read_text(errors="replace").splitlines()[-10:])
                )
        node.stop()
        if not request.session.testsfailed:
            shutil.rmtree(root, ignore_errors=True)  # its containerd holds every image: about 1 GB
