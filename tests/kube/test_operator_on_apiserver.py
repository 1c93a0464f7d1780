"""wallet-operator against a real API server, authenticated as the chart's ServiceAccount with only
the chart's Role: RBAC is the server's, so a verb the Role lacks is refused as it would be in a
cluster. The operator runs as a process here (no kubelet), with a token the API server issued
for that ServiceAccount (TokenRequest), and reads the lag from Apache Kafka on loopback."""

from __future__ import annotations

import subprocess

import pytest
from harness import LagMaker
from support import wait_for as wait

from walletkit.devstack.controlplane import CHART
from walletkit.devstack.kafka import ApacheKafka
from walletkit.devstack.net import free_port
from walletkit.devstack.processes import console_script, terminate

pytestmark = pytest.mark.integration
NS = "ops"
SCALER = f"/apis/scaling.wallet.dev/v1alpha1/namespaces/{NS}/processorscalers/wallet-balance"
STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets/wallet-balance"
ROLE = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles/wallet-operator"


def condition(admin, type_: str) -> dict:
    status = admin.get(SCALER).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def test_operator_scales_through_the_scale_subresource_under_the_charts_role(plane, tmp_path):
    broker = ApacheKafka(log_path=tmp_path / "broker.log").start()
    operator = None
    try:
        plane.helm(
            "install",
            "wallet",
            str(CHART),
            "-n",
            NS,
            "--create-namespace",
            "--set",
            "operator.enabled=true",
            "--set",
            "operator.syncSeconds=1",
            "--set",
            "operator.scalers.balance.scaleUpStabilizationSeconds=0",
            "--set",
            "operator.scalers.aboveThreshold.enabled=false",
        )
        admin = plane.admin()
        assert "replicas" not in admin.get(STS)["spec"] or admin.get(STS)["spec"]["replicas"] == 1

        lag = LagMaker(broker.bootstrap, "deposit", "balance", partitions=8)
        lag.produce(per_partition=500)  # 4000 records, target 1000 per replica: 4 replicas
        lag.commit([0] * 8)

        token = tmp_path / "token"
        token.write_text(plane.service_account_token(NS, "wallet-operator"))
        log = open(tmp_path / "operator.log", "ab")
        operator = subprocess.Popen(
            [
                console_script("wallet-operator"),
                "--bootstrap-servers",
                broker.bootstrap,
                "--namespace",
                NS,
                "--kube-api",
                plane.server,
                "--kube-token-file",
                str(token),
                "--kube-ca-file",
                str(plane.ca_file),
                "--sync-seconds",
                "1",
                "--http-host",
                "127.0.0.1",
                "--http-port",
                str(free_port()),
                "--health-port",
                str(free_port()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def scaled():
            assert operator.poll() is None, (tmp_path / "operator.log").read_text()[-3000:]
            return admin.get(STS)["spec"].get("replicas") == 4 or admin.get(SCALER).get("status")

        wait(scaled, 90, "the operator to scale wallet-balance to 4 through statefulsets/scale")
        wait(
            lambda: condition(admin, "Ready").get("status") == "True" or condition(admin, "Ready"),
            30,
            "the ProcessorScaler's status written by the operator",
        )

        # The Role is enforced by the server: without `patch` on statefulsets/scale the operator
        # can read the scale but not set it, and says so in the scaler's status.
        role = admin.get(ROLE)
        for rule in role["rules"]:
            if rule["resources"] == ["statefulsets/scale"]:
                rule["verbs"] = ["get"]
        admin.request("PUT", ROLE, role)
        admin.request("PATCH", f"{STS}/scale", {"spec": {"replicas": 1}}, content_type="application/merge-patch+json")

        def refused():
            degraded = condition(admin, "Degraded")
            return (
                degraded.get("status") == "True" and "ScaleTargetForbidden" in degraded.get("reason", "")
            ) or degraded

        wait(refused, 60, "the scaler Degraded by the refused scale")
        assert admin.get(STS)["spec"]["replicas"] == 1, "a verb the Role lacks must not take effect"
    finally:
        terminate(operator, timeout=15)
        broker.stop()
