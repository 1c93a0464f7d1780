"""Chart-driven local end-to-end: the containers' commands and environments come from the rendered
chart (external-Kafka scenario), run as local processes against an Apache Kafka node, and must carry
the seed flow. So the chart cannot drift from the code: a renamed variable, a wrong port, a command
that is no console script, or a setting the services reject fails here.

Only the deployment-specific parts are substituted, each checked first against what the chart says:
the broker address (an Apache Kafka node on a free loopback port), the HTTP ports (free loopback ports,
bound to 127.0.0.1), the state directory (a temporary one per pod), and the downward-API pod name.
Readiness is waited for where the chart's probe looks (the API: its operations port), and the API's
public port is shown to serve the API and not the operations endpoints.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from chart_support import RELEASE, containers, env_of, pod_spec, render

pytestmark = pytest.mark.integration

BOOTSTRAP_PLACEHOLDER = "kafka.chart-e2e.invalid:9092"
# The external-Kafka scenario, with the shortest session timeout Apache Kafka accepts by
# default, so the test's processors settle fast.
E2E_VALUES = {
    "kafka": {
        # One local broker: the chart refuses that unless told it is disposable.
        "durability": {"allowUnsafe": True},
        "topics": {"replicas": 1, "minInsyncReplicas": 1},
        "strimzi": {"enabled": False},
        "external": {"bootstrapServers": BOOTSTRAP_PLACEHOLDER},
        "sessionTimeoutMs": 6000,
    },
}
INIT_WRAPPERS = (["tini", "--"],)
# The variable that sets each named container port.
PORT_ENV = {"http": "WALLET_HTTP_PORT", "ops": "WALLET_OPS_PORT"}
SEED = {"WalletID": "walletID001", "Amount": 8000}
EXPECTED_DETAILS = b'{"WalletID":"walletID001","Balance":8000,"AboveThreshold":false}'


def devstack():
    try:
        from walletkit.devstack.kafka import ApacheKafka
        from walletkit.devstack.net import free_port, http_get, http_post_json, wait_until
        from walletkit.devstack.processes import ServiceProcess
    except ImportError as exc:
        pytest.skip(f"the local stack needs the dev extras (pip install -c constraints.txt -e '.[dev]'): {exc}")
    return ApacheKafka, free_port, http_get, http_post_json, wait_until, ServiceProcess


def local_command(container: dict) -> tuple[str, list[str]]:
    """(console script, arguments) of a container: its command minus the init wrapper, plus args."""
    command = list(container["command"]) + list(container.get("args", []))
    for wrapper in INIT_WRAPPERS:
        if command[: len(wrapper)] == wrapper:
            command = command[len(wrapper) :]
    assert command and not command[0].startswith("-"), f"no program in {container['command']}"
    return command[0], command[1:]


def local_env(container: dict, pod_name: str) -> dict[str, str]:
    """The container's environment as literal values (downward API and secrets resolved)."""
    env = {}
    for name, item in env_of(container).items():
        if "value" in item:
            env[name] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", f"{name}: unsupported {source}"
            env[name] = pod_name
        elif "secretKeyRef" in source:
            env[name] = f"test-{source['secretKeyRef']['key']}"
        else:
            raise AssertionError(f"{name}: unsupported valueFrom {source}")
    return env


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def test_chart_rendered_services_carry_the_seed_flow(tmp_path):
    ApacheKafka, free_port, http_get, http_post_json, wait_until, ServiceProcess = devstack()
    rendered = render(E2E_VALUES)
    workloads = [
        # Balance first: like `make run`, let one service create the topics before the others check them.
        rendered.one("StatefulSet", f"{RELEASE}-balance"),
        rendered.one("StatefulSet", f"{RELEASE}-above-threshold"),
        rendered.one("Deployment", f"{RELEASE}-api"),
    ]
    broker = ApacheKafka(log_path=tmp_path / "broker.log").start()
    services: list[tuple[str, object, int]] = []
    try:
        for workload in workloads:
            container = containers(workload)[0]
            name = workload["metadata"]["name"]
            pod_name = f"{name}-0"
            env = local_env(container, pod_name)
            # What the chart says, before it is adapted to this machine.
            assert env["KAFKA_BOOTSTRAP_SERVERS"] == BOOTSTRAP_PLACEHOLDER
            state_mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "state")
            assert env["WALLET_STATE_DIR"] == state_mount
            local_ports = {}
            for port in container["ports"]:
                assert env[PORT_ENV[port["name"]]] == str(port["containerPort"]), port
                local_ports[port["name"]] = free_port()
            if workload["kind"] == "StatefulSet":
                assert env["WALLET_INSTANCE_ID"] == pod_name
            probed = container["readinessProbe"]["httpGet"]
            assert probed["path"] == "/readyz" and probed["port"] in local_ports
            # Adapted: loopback only, free ports, temporary state.
            env.update(
                {
                    "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                    "WALLET_HTTP_HOST": "127.0.0.1",
                    "WALLET_STATE_DIR": str(tmp_path / "state" / pod_name),
                    **{PORT_ENV[name]: str(port) for name, port in local_ports.items()},  # ServiceProcess sets them too
                }
            )
            script, args = local_command(container)
            grace = pod_spec(workload)["terminationGracePeriodSeconds"]
            # ServiceProcess waits for /readyz on its operations port: the one the chart's probe uses.
            proc = ServiceProcess(
                script,
                env,
                local_ports["http"],
                tmp_path / f"{pod_name}.log",
                args=args,
                ops_port=local_ports[probed["port"]],
            ).start()
            services.append((pod_name, proc, grace))
            if script == "wallet-balance":
                proc.wait_ready(60)
        for pod_name, proc, _ in services:
            try:
                proc.wait_ready(60)
            except (RuntimeError, TimeoutError) as exc:
                pytest.fail(f"{pod_name} never became ready: {exc}\n{tail(proc.log_path)}")

        api = next(proc for pod_name, proc, _ in services if pod_name.startswith(f"{RELEASE}-api"))
        # What the HTTPRoute routes to (port http) serves no operations endpoint; port ops does.
        for path in ("/metrics", "/healthz", "/readyz"):
            assert http_get(api.url(path))[0] == 404, f"{path} is served on the public port"
            assert http_get(api.ops_url(path))[0] == 200, f"{path} is not served on the operations port"
        status, reply = http_post_json(api.url("/deposit"), SEED)
        assert status == 202, f"POST /deposit: {status} {reply}"
        assert isinstance(reply, dict), "the reply is JSON"

        last = (0, b"")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            last = http_get(api.url("/details/walletID001"))
            if last == (200, EXPECTED_DETAILS):
                break
            time.sleep(0.2)
        assert last == (200, EXPECTED_DETAILS), f"GET /details/walletID001 ended with {last}\n{tail(api.log_path)}"

        # The chart's helm test hook, run against the same API: its script must pass too.
        hook = rendered.one("Pod", f"{RELEASE}-test-deposit")
        hook_container = containers(hook)[0]
        assert hook_container["command"][0] == "python"
        hook_env = local_env(hook_container, hook["metadata"]["name"])
        assert hook_env["WALLET_API_URL"].startswith(f"http://{RELEASE}-api.")
        hook_env.update({"WALLET_API_URL": api.url(""), "WALLET_TEST_TIMEOUT_SECONDS": "20"})
        result = subprocess.run(
            [sys.executable, *hook_container["command"][1:]], env=hook_env, capture_output=True, text=True, timeout=40
        )
        assert result.returncode == 0, f"helm test script failed: {result.stdout}{result.stderr}"
        assert "read back" in result.stdout

        # SIGTERM, as the kubelet sends it: each service drains and exits 0 within its grace period.
        for pod_name, proc, grace in reversed(services):
            code = proc.stop(timeout=grace)
            assert code == 0, f"{pod_name} exited {code} on SIGTERM\n{tail(proc.log_path)}"
    finally:
        for _, proc, _ in services:
            proc.kill()
        broker.stop()
