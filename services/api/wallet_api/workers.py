"""``wallet-api --workers N``: N API processes sharing one port, under one supervisor.

One Python process serves HTTP on one core. With ``--workers N`` the process started
becomes a supervisor that runs N workers, each a whole ``wallet-api`` (its own emitter,
its own views, its own state directory ``<state-dir>/worker-<i>``), all listening on the
public port with ``SO_REUSEPORT``, so the kernel spreads new connections over them. The
supervisor serves the operations endpoints on the ops port for all of them:

- ``/metrics``: every worker's metrics, each sample labelled ``worker="<i>"``;
- ``/healthz`` and ``/readyz``: 200 only when every worker says 200.

A worker that exits takes the others down with it and the supervisor exits with its code,
so the container restarts as a whole (the same as one process failing). SIGTERM is passed
on to every worker, which drains as a single process does.

What multiplies with N: memory and catch-up work (each worker keeps full replicas of both
tables), Kafka connections, and per-worker limits (``--max-in-flight`` and the rate limit
apply in each worker: a client whose connections land on several workers gets up to N
times the per-client rate). In Kubernetes, scaling pods (the HPA) is the first tool; more
workers per pod suit a pod with several cores. Transactional ids stay distinct: each worker
has its own state directory (its persistent id) and, with ``--instance-id``, the suffix
``-w<i>``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, web

from wallet_api.server import AppRunner
from walletkit.service.net import free_port

log = logging.getLogger(__name__)

#: Seconds a worker may take to drain after SIGTERM before it is killed.
DRAIN_SECONDS = 30.0


def worker_argv(argv: list[str], index: int, ops_port: int, state_dir: str) -> list[str]:
    """The worker's command line: the supervisor's flags, then its own (the last one wins)."""
    return [
        *argv,
        "--workers",
        "1",
        "--reuse-port",
        "--ops-host",
        "127.0.0.1",
        "--ops-port",
        str(ops_port),
        "--state-dir",
        str(Path(state_dir) / f"worker-{index}"),
    ]


def merge_metrics(texts: list[str]) -> bytes:
    """The workers' Prometheus exposition texts as one, each sample labelled with its worker."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, object] = {}
    for index, text in enumerate(texts):
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(
                family.name, family.__class__(family.name, family.documentation, family.type, family.unit)
            )
            for sample in family.samples:
                merged.samples.append(sample._replace(labels={**sample.labels, "worker": str(index)}))

    class Merged:
        def collect(self):
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged())
    return generate_latest(registry)


class Supervisor:
    def __init__(
        self, argv: list[str], workers: int, state_dir: str, ops_host: str, ops_port: int, instance_id: str | None
    ) -> None:
        self.argv, self.workers, self.state_dir = argv, workers, state_dir
        self.ops_host, self.ops_port, self.instance_id = ops_host, ops_port, instance_id
        self.ports = [free_port() for _ in range(workers)]
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        for i, port in enumerate(self.ports):
            env = dict(os.environ)
            if self.instance_id:
                env["WALLET_INSTANCE_ID"] = f"{self.instance_id}-w{i}"
            cmd = [sys.executable, "-m", "wallet_api.main", *worker_argv(self.argv, i, port, self.state_dir)]
            self.procs.append(subprocess.Popen(cmd, env=env))
            log.info(
                "worker %d started (pid %d, operations on 127.0.0.1:%d)",
                i,
                self.procs[-1].pid,
                port,
                extra={"worker": i},
            )

    async def _each(self, path: str) -> list[tuple[int, bytes]]:
        async with ClientSession(timeout=ClientTimeout(total=5)) as session:

            async def one(port: int) -> tuple[int, bytes]:
                try:
                    async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                        return resp.status, await resp.read()
                except (TimeoutError, OSError) as exc:
                    return 503, str(exc).encode()

            return await asyncio.gather(*(one(p) for p in self.ports))

    def ops_app(self) -> web.Application:
        async def metrics(request: web.Request) -> web.Response:
            answers = await self._each("/metrics")
            body = merge_metrics([text.decode() for status, text in answers if status == 200])
            return web.Response(
                body=body,
                content_type="text/plain",
                charset="utf-8",
                headers={"X-Workers-Answered": str(sum(s == 200 for s, _ in answers))},
            )

        def probe(path: str):
            async def handler(request: web.Request) -> web.Response:
                answers = await self._each(path)
                ok = all(status == 200 for status, _ in answers)
                return web.json_response(
                    {"workers": [{"worker": i, "status": s} for i, (s, _) in enumerate(answers)]},
                    status=200 if ok else 503,
                )

            return handler

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", probe("/healthz"))
        app.router.add_get("/readyz", probe("/readyz"))
        return app

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        runner = AppRunner(self.ops_app(), access_log=None, shutdown_timeout=2)
        await runner.setup()
        await web.TCPSite(runner, self.ops_host, self.ops_port).start()
        log.info("supervising %d workers; operations for all on %s:%d", self.workers, self.ops_host, self.ops_port)
        code = 0
        try:
            while not stop.is_set():
                exited = [(i, p.returncode) for i, p in enumerate(self.procs) if p.poll() is not None]
                if exited:
                    i, code = exited[0]
                    log.error("worker %d exited with code %s: stopping the others", i, code, extra={"worker": i})
                    code = code or 1
                    break
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except TimeoutError:
                    pass
            else:
                log.info("received a signal: draining %d workers", self.workers)
        finally:
            await asyncio.to_thread(self.stop)
            await runner.cleanup()
        return code

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(DRAIN_SECONDS)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def supervise(
    argv: list[str], workers: int, state_dir: str, ops_host: str, ops_port: int, instance_id: str | None
) -> int:
    supervisor = Supervisor(argv, workers, state_dir, ops_host, ops_port, instance_id)
    supervisor.start()
    return asyncio.run(supervisor.run())
