"""Service processes started from their console scripts, as a deployment would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from walletkit.devstack.net import http_get, wait_until

#: Console script and default HTTP port of each service.
SERVICES = {"api": "wallet-api", "balance": "wallet-balance", "above_threshold": "wallet-above-threshold"}


def terminate(proc: subprocess.Popen | None, timeout: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def console_script(name: str) -> str:
    """Path of an installed console script (next to this interpreter first)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"console script {name!r} not installed; run: pip install -e .")
    return found


class ServiceProcess:
    """One service process with its environment, log file and HTTP port.

    ``ops_port`` is where its operations endpoints (/metrics, /healthz, /readyz) are: the
    API's own listener (WALLET_OPS_PORT); a processor serves them on its only port.
    """

    def __init__(
        self,
        script: str,
        env: dict[str, str],
        port: int,
        log_path: str | Path,
        args: list[str] = (),
        *,
        ops_port: int | None = None,
    ) -> None:
        self.script = script
        self.env = env
        self.port = port
        self.ops_port = ops_port or port
        self.log_path = Path(log_path)
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = {**os.environ, **self.env, "WALLET_HTTP_PORT": str(self.port), "PYTHONUNBUFFERED": "1"}
        if self.ops_port != self.port:
            env["WALLET_OPS_PORT"] = str(self.ops_port)
        self.proc = subprocess.Popen(
            [console_script(self.script), *self.args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ops_url(self, path: str) -> str:
        """URL of an operations endpoint (/metrics, /healthz, /readyz)."""
        return f"http://127.0.0.1:{self.ops_port}{path}"

    def ready(self) -> bool:
        self.check_running()
        return http_get(self.ops_url("/readyz"), timeout=1)[0] == 200

    def wait_ready(self, timeout: float = 60.0) -> ServiceProcess:
        wait_until(self.ready, timeout, interval=0.2, what=f"{self.script} ready (log: {self.log_path})")
        return self

    def check_running(self) -> None:
        if self.proc is None:
            raise RuntimeError(f"{self.script} not started")
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.script} exited with code {self.proc.returncode}; see {self.log_path}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful drain), SIGKILL after ``timeout``; the exit code."""
        return terminate(self.proc, timeout) or 0

    def dump_stacks(self) -> bool:
        """Ask a running service to print its threads' stacks to its log (SIGUSR1)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGUSR1)
        return True

    def kill(self) -> None:
        """SIGKILL: no draining, no flushing (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
