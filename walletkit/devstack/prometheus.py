"""A real Prometheus on loopback that scrapes the local stack (development and tests only).

``wallet-stack --with-prometheus`` and the observability tests use it, so a user sees the
service's metrics and alerts without Kubernetes, and the dashboards' queries are checked
against real scrapes. Each target carries the labels Kubernetes service discovery would give
it (``namespace``, ``pod`` named as the chart names pods), so the chart's alert rules and the
Grafana dashboards' queries work unchanged.

Prometheus itself comes from the system: Debian's ``prometheus`` package (or any
``prometheus`` on PATH, or ``PROMETHEUS_BIN``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from walletkit.devstack.net import free_port, http_get, port_open, wait_until
from walletkit.devstack.processes import terminate

#: Labels the local stack's series carry instead of Kubernetes' (see ``cluster_targets``).
LOCAL_NAMESPACE = "wallet-local"
LOCAL_RELEASE = "wallet"
#: The chart, when this package runs from a checkout (editable install).
CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "wallet"


class PrometheusNotFound(RuntimeError):
    """No ``prometheus`` binary to run."""


class QueryError(RuntimeError):
    """Prometheus refused a query (the message is Prometheus' own, e.g. a parse error)."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One ``/metrics`` endpoint and the labels its series get."""

    job: str
    address: str  # host:port
    labels: Mapping[str, str] = field(default_factory=dict)


def cluster_targets(
    services: Mapping[str, Any],
    *,
    namespace: str = LOCAL_NAMESPACE,
    release: str = LOCAL_RELEASE,
    host: str = "127.0.0.1",
) -> list[ScrapeTarget]:
    """Targets for a LocalCluster's ``services`` (``{"api-0": ServiceProcess, ...}``).

    Each gets ``namespace`` and a ``pod`` named like the chart's pods (``wallet-api-0``,
    ``wallet-balance-0``, ``wallet-above-threshold-0``), the labels the chart's alert rules
    select on; ``instance`` is the address, as with any scrape.
    """
    targets = []
    for name, proc in sorted(services.items()):
        service, _, ordinal = name.rpartition("-")
        component = service.replace("_", "-")
        targets.append(
            ScrapeTarget(
                job=f"{release}-{component}",
                address=f"{host}:{proc.ops_port}",
                labels={"namespace": namespace, "pod": f"{release}-{component}-{ordinal}", "container": component},
            )
        )
    return targets


def find_binary() -> str:
    for candidate in (os.environ.get("PROMETHEUS_BIN"), shutil.which("prometheus")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise PrometheusNotFound(
        "no prometheus binary (PROMETHEUS_BIN or PATH); install it, e.g. `apt-get install prometheus` "
        "on Debian/Ubuntu, or a release from https://prometheus.io/download/"
    )


def chart_rule_groups(
    namespace: str = LOCAL_NAMESPACE, release: str = LOCAL_RELEASE, *, partitions: int | None = None
) -> list[dict[str, Any]] | None:
    """The alert rule groups of the chart's PrometheusRule, rendered with the Helm SDK for
    ``namespace``/``release`` (and ``partitions`` per topic); None when the chart or the SDK
    (requirements/chart.txt) is not available."""
    try:
        import helm_python
        import yaml
    except ImportError:
        return None
    if not CHART_DIR.is_dir():
        return None
    values: dict[str, Any] = {"metrics": {"prometheusRule": {"enabled": True}}}
    if partitions:
        values["kafka"] = {"topics": {"partitions": partitions}}
    with helm_python.Chart.load(str(CHART_DIR)) as chart:
        rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    for name, text in rendered.items():
        if name.endswith("prometheusrule.yaml"):
            for doc in yaml.safe_load_all(text):
                if doc and doc.get("kind") == "PrometheusRule":
                    return doc["spec"]["groups"]
    return None


class LocalPrometheus:
    """A Prometheus process scraping ``targets``; data under ``root`` (deleted with it by the caller)."""

    def __init__(
        self,
        root: str | Path,
        targets: Iterable[ScrapeTarget],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        scrape_interval: str = "1s",
        evaluation_interval: str | None = None,
        rule_groups: list[dict[str, Any]] | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.targets = list(targets)
        self.host = host
        self.port = port or free_port(host)
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval or scrape_interval
        self.rule_groups = rule_groups
        self.log_path = Path(log_path) if log_path else self.root / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def config(self) -> dict[str, Any]:
        """prometheus.yml (JSON is YAML): one job per service, each instance's labels static."""
        conf: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "scrape_configs": [],
        }
        jobs: dict[str, list[dict[str, Any]]] = {}
        for t in self.targets:  # one job per service, one static config (labels) per instance
            jobs.setdefault(t.job, []).append({"targets": [t.address], "labels": dict(t.labels)})
        conf["scrape_configs"] = [
            {"job_name": job, "metrics_path": "/metrics", "static_configs": static} for job, static in jobs.items()
        ]
        if self.rule_groups:
            conf["rule_files"] = [str(self.root / "rules.yml")]
        return conf

    def start(self, timeout: float = 30.0) -> LocalPrometheus:
        binary = find_binary()
        if port_open(self.host, self.port):
            raise RuntimeError(f"port {self.port} is already in use; pick another Prometheus port")
        self.root.mkdir(parents=True, exist_ok=True)
        if self.rule_groups:
            (self.root / "rules.yml").write_text(json.dumps({"groups": self.rule_groups}, indent=1))
        config = self.root / "prometheus.yml"
        config.write_text(json.dumps(self.config(), indent=1))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        wait_until(
            lambda: self._alive() and http_get(f"{self.url}/-/ready", timeout=1)[0] == 200,
            timeout,
            interval=0.2,
            what=f"Prometheus on {self.url} (log: {self.log_path})",
        )
        return self

    def _alive(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with code {self._proc.returncode}; see {self.log_path}")
        return True

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        terminate(self._proc)

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP API ----------------------------------------------------------------

    def api(self, path: str, **params: str | list[str]) -> Any:
        """GET /api/v1/<path>; the ``data`` of the answer, QueryError with Prometheus' message if refused."""
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = http_get(f"{self.url}/api/v1/{path}?{query}", timeout=10)
        try:
            doc = json.loads(body)
        except ValueError:
            raise QueryError(f"HTTP {status} from /api/v1/{path}: {body[:200]!r}") from None
        if doc.get("status") != "success":
            raise QueryError(f"{doc.get('errorType', status)}: {doc.get('error', body[:200])}")
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (``[{"metric": {...}, "value": [ts, "1.5"]}, ...]``)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def active_targets(self) -> list[dict[str, Any]]:
        return self.api("targets", state="active")["activeTargets"]

    def targets_up(self) -> bool:
        targets = self.active_targets()
        return len(targets) == len(self.targets) and all(t["health"] == "up" for t in targets)

    def wait_targets_up(self, timeout: float = 30.0) -> None:
        wait_until(self.targets_up, timeout, interval=0.25, what=f"every target of {self.url} up")

    def rules(self) -> list[dict[str, Any]]:
        return self.api("rules")["groups"]
