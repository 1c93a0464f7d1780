"""A whole wallet deployment on one machine: broker plus service processes.

Used by ``wallet-stack`` and by the integration and fault tests, so both start
services exactly the same way (console scripts, environment, state layout).
"""

from __future__ import annotations

from pathlib import Path

from walletkit.devstack.broker import Broker, make_broker
from walletkit.devstack.net import free_port
from walletkit.devstack.processes import SERVICES, ServiceProcess


class LocalCluster:
    """Broker + services with state and logs under ``root`` (Apache Kafka unless a broker is given)."""

    def __init__(
        self,
        root: str | Path,
        *,
        broker: Broker | None = None,
        partitions: int = 8,
        session_timeout_ms: int = 6000,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.broker = broker or make_broker("apache", log_path=self.root / "logs" / "broker.log")
        self.partitions = partitions
        self.session_timeout_ms = session_timeout_ms
        self.extra_env = dict(extra_env or {})
        self.services: dict[str, ServiceProcess] = {}

    def start_broker(self) -> LocalCluster:
        self.broker.start()
        return self

    def env(self) -> dict[str, str]:
        env = {
            **self.broker.service_env,
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "WALLET_PARTITIONS": str(self.partitions),
            # A SIGKILLed member holds its partitions this long; 6 s is the shortest session
            # Apache Kafka accepts by default (group.min.session.timeout.ms).
            "WALLET_KAFKA_SESSION_TIMEOUT_MS": str(self.session_timeout_ms),
            **self.extra_env,
        }
        broker_config = ",".join(f"{k}={v}" for k, v in self.broker.client_config.items())
        if broker_config:
            env["KAFKA_CONFIG"] = ",".join(filter(None, (broker_config, env.get("KAFKA_CONFIG", ""))))
        return env

    def state_dir(self, service: str, instance: int = 0) -> Path:
        return self.root / "state" / f"{service}-{instance}"

    def service(
        self,
        service: str,
        instance: int = 0,
        *,
        port: int | None = None,
        ops_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> ServiceProcess:
        """Create (not start) instance ``instance`` of ``service`` (api, balance, above_threshold)."""
        name = f"{service}-{instance}"
        proc = ServiceProcess(
            SERVICES[service],
            # Dynamic membership unless a test sets WALLET_INSTANCE_ID (the chart sets it from
            # the pod name): a stopped instance's partitions move at once instead of after its
            # session timeout. tests/integration/test_group_membership.py proves the chart's way (static ids).
            {**self.env(), "WALLET_STATE_DIR": str(self.state_dir(service, instance)), **(env or {})},
            port or free_port(),
            self.root / "logs" / f"{name}.log",
            # The API keeps its operations endpoints off its public port.
            ops_port=(ops_port or free_port()) if service == "api" else None,
        )
        self.services[name] = proc
        return proc

    def start(self, service: str, instance: int = 0, *, wait: bool = True, **kwargs) -> ServiceProcess:
        """Start an instance (reusing its port and state dir if it ran before)."""
        name = f"{service}-{instance}"
        proc = self.services.get(name)
        if proc is not None and proc.running and not kwargs:
            # Already running: starting it again would orphan the running process (its handle
            # replaced) while the new one fails on the taken port.
            return proc
        if proc is not None and proc.running:
            proc.stop()  # replaced by an instance with other settings
        if proc is None or kwargs:
            proc = self.service(service, instance, **kwargs)
        proc.start()
        if wait:
            proc.wait_ready(90)
        return proc

    def start_all(self, services: tuple[str, ...] = ("balance", "above_threshold", "api")) -> LocalCluster:
        """Start one instance of each service and wait until all are ready."""
        procs = [self.start(s, wait=False) for s in services]
        for proc in procs:
            proc.wait_ready(90)
        return self

    def start_members(self, counts: dict[str, int]) -> LocalCluster:
        """Start ``counts[service]`` instances of each service (e.g. ``{"balance": 2, "api": 1}``)
        and wait until all are ready; the first one alone first, so that it creates the topics."""
        names = [(service, i) for service, n in counts.items() for i in range(n)]
        first, *rest = names
        self.start(*first)
        procs = [self.start(service, i, wait=False) for service, i in rest]
        for proc in procs:
            proc.wait_ready(90)
        return self

    def stop(self) -> None:
        for proc in reversed(list(self.services.values())):
            proc.stop()
        self.broker.stop()
