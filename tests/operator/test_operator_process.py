"""The operator as the chart runs it: the container's command and environment are taken from the
rendered chart and run as a local process (the real ``main()``: flags from the environment, JSON
logs, the metrics server, kopf's liveness endpoint, SIGTERM), against the kmock emulator and the
Apache Kafka node. Substituted, each checked against the chart first: the broker address, the two
ports (free loopback ones), the API server URL (the emulator instead of the in-cluster
ServiceAccount), the downward-API values, a short sync period and no scale-up window."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import (
    NAMESPACE,
    SCALERS_URL,
    STATEFULSETS_URL,
    Emulator,
    LagMaker,
    condition_of,
    create,
    declare_resources,
    replicas_of,
    statefulset_manifest,
    status_of,
    wait_for,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))
from chart_support import RELEASE, REPO, containers, env_of, render  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.kmock(cls=Emulator)]

BOOTSTRAP_PLACEHOLDER = "kafka.operator-e2e.invalid:9092"
VALUES = {
    "operator": {"enabled": True, "syncSeconds": 15},
    "kafka": {"strimzi": {"enabled": False}, "external": {"bootstrapServers": BOOTSTRAP_PLACEHOLDER}},
}


def local_command(container: dict) -> list[str]:
    command = list(container["command"]) + list(container.get("args", []))
    assert command[:2] == ["tini", "--"], command
    program = command[2]
    installed = shutil.which(program, path=str(Path(sys.executable).parent))
    if installed:
        return [installed, *command[3:]]
    # Not installed yet (pyproject.toml maps it): run the same entry point as a module.
    assert program == "wallet-operator"
    return [sys.executable, "-m", "wallet_operator.main", *command[3:]]


def local_env(container: dict, replace: dict[str, str]) -> dict[str, str]:
    env = {}
    for name, item in env_of(container).items():
        if "value" in item:
            env[name] = str(item["value"])
        else:
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[name] = {"metadata.namespace": NAMESPACE, "metadata.name": f"{RELEASE}-operator-0"}[path]
    for name, value in replace.items():
        assert name in env or name in ("WALLET_KUBE_API", "WALLET_HTTP_HOST"), f"the chart does not set {name}"
        env[name] = value
    return env


async def http_get(url: str) -> tuple[int, str]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


async def test_the_chart_s_operator_container_scales_serves_metrics_and_health_and_stops_cleanly(kmock, tmp_path):
    from walletkit.devstack.kafka import ApacheKafka
    from walletkit.devstack.net import free_port

    rendered = render(VALUES)
    container = containers(rendered.one("Deployment", f"{RELEASE}-operator"))[0]
    scaler = rendered.one("ProcessorScaler", f"{RELEASE}-balance")
    grace = rendered.one("Deployment", f"{RELEASE}-operator")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert env_of(container)["KAFKA_BOOTSTRAP_SERVERS"]["value"] == BOOTSTRAP_PLACEHOLDER
    assert env_of(container)["WALLET_OPERATOR_SYNC_SECONDS"]["value"] == "15"
    # The chart's scale-up window (60 s, above the session timeout) would outlast the test.
    assert scaler["spec"]["scaleUp"]["stabilizationWindowSeconds"] == 60
    scaler["spec"]["scaleUp"]["stabilizationWindowSeconds"] = 0

    broker = ApacheKafka(log_path=tmp_path / "broker.log").start()
    metrics_port, health_port = free_port(), free_port()
    log = tmp_path / "operator.log"
    proc = None
    try:
        declare_resources(kmock)
        lag = LagMaker(broker.bootstrap, "deposit", "balance", partitions=8)
        lag.produce(per_partition=500)  # 4000 at the chart's 1000 per replica: 4
        lag.commit([0] * 8)
        await create(kmock, STATEFULSETS_URL, statefulset_manifest(f"{RELEASE}-balance", 1))
        await create(kmock, SCALERS_URL, scaler)

        env = local_env(
            container,
            {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "WALLET_HTTP_PORT": str(metrics_port),
                "WALLET_HEALTH_PORT": str(health_port),
                "WALLET_HTTP_HOST": "127.0.0.1",
                "WALLET_KUBE_API": str(kmock.url).rstrip("/"),
                "WALLET_OPERATOR_SYNC_SECONDS": "0.5",
            },
        )
        env["PATH"] = os.environ.get("PATH", "")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "services" / "operator"), str(REPO)])
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                local_command(container), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
            )

        def alive() -> bool:
            assert proc.poll() is None, f"the operator exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            return True

        try:
            await wait_for(
                lambda: alive() and replicas_of(kmock, f"{RELEASE}-balance") == 4,
                30,
                "the operator process to scale the StatefulSet to 4",
            )
        except BaseException:
            print(f"operator log:\n{log.read_text()[-5000:]}\nstatus: {status_of(kmock, f'{RELEASE}-balance')}")
            raise
        await wait_for(lambda: condition_of(kmock, f"{RELEASE}-balance", "Ready").get("status") == "True", 10, "Ready")

        code, text = await http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert code == 200
        assert (
            f'wallet_operator_consumer_lag{{group="balance",namespace="{NAMESPACE}",scaler="{RELEASE}-balance",'
            f'topic="deposit"}} 4000.0'
        ) in text, text[:2000]
        assert (
            f'wallet_operator_scalings_total{{direction="up",namespace="{NAMESPACE}",scaler="{RELEASE}-balance"}} 1.0'
            in text
        )
        code, text = await http_get(f"http://127.0.0.1:{health_port}/healthz")
        assert code == 200 and '"scalers": 1' in text.replace('":1', '": 1')

        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(proc.wait, grace)
        assert returncode == 0, log.read_text()[-3000:]
        lines = log.read_text().splitlines()
        assert any('"msg":"scaled wallet-balance up from 1 to 4' in line for line in lines), "JSON logs"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        broker.stop()
