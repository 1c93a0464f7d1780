"""The Kubernetes side: where the API server is, with which credentials, and the StatefulSet scale
subresource. Knows HTTP and Kubernetes, nothing of Kafka.

kopf talks to the API server for the custom resources; the scale calls go through this small
aiohttp client, built from the same :class:`KubeEndpoint` that kopf's login handler returns, so
both use one set of credentials. Only ``GET``/``PATCH .../statefulsets/<name>/scale`` are needed:
the Scale object (``spec.replicas``, ``status.replicas``) is all the operator reads or writes of a
StatefulSet, and RBAC can grant exactly that subresource.
"""

from __future__ import annotations

import datetime
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from wallet_operator.errors import ScaleTargetForbidden, ScaleTargetNotFound, ScaleTargetUnavailable

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeEndpoint:
    """An API server and how to authenticate to it.

    In a pod: :meth:`in_cluster` (the ServiceAccount token and CA the chart mounts). Elsewhere: a URL,
    e.g. ``kubectl proxy``'s ``http://127.0.0.1:8001`` (the proxy adds the credentials), or an emulator.
    """

    server: str
    token_path: Path | None = None
    ca_path: Path | None = None
    namespace: str | None = None
    insecure: bool = False

    @classmethod
    def in_cluster(cls, directory: Path = SERVICE_ACCOUNT_DIR) -> KubeEndpoint:
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host  # IPv6 service address
        token = directory / "token"
        if not token.is_file():
            raise RuntimeError(
                f"no ServiceAccount token at {token}: outside a pod, pass --kube-api "
                "(e.g. http://127.0.0.1:8001 with `kubectl proxy`)"
            )
        ca = directory / "ca.crt"
        ns = directory / "namespace"
        return cls(
            server=f"https://{host}:{port}",
            token_path=token,
            ca_path=ca if ca.is_file() else None,
            namespace=ns.read_text().strip() if ns.is_file() else None,
        )

    def token(self) -> str | None:
        """Read on every use: projected ServiceAccount tokens are rotated in place by the kubelet."""
        return self.token_path.read_text().strip() if self.token_path else None

    def connection_info(self) -> Any:
        """The same endpoint for kopf (its login handler returns this)."""
        import kopf

        return kopf.ConnectionInfo(
            server=self.server,
            ca_path=str(self.ca_path) if self.ca_path else None,
            insecure=self.insecure or None,
            scheme="Bearer" if self.token_path else None,
            token=self.token(),
            default_namespace=self.namespace,
            # Re-login before the kubelet's hourly rotation could matter (kopf also re-logins on 401).
            expiration=(
                datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10) if self.token_path else None
            ),
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            return False
        return ssl.create_default_context(cafile=str(self.ca_path) if self.ca_path else None)


@dataclass(frozen=True)
class Scale:
    """A StatefulSet's scale: the replicas asked for and the pods that exist."""

    replicas: int
    status_replicas: int


class ScaleClient:
    """GET and PATCH of ``apps/v1`` StatefulSets' ``scale`` subresource."""

    def __init__(self, endpoint: KubeEndpoint, *, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ScaleTargetUnavailable("the operator is stopping")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.endpoint.ssl_context()),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    def _url(self, namespace: str, name: str) -> str:
        return (
            f"{self.endpoint.server.rstrip('/')}/apis/apps/v1/namespaces/{quote(namespace, safe='')}"
            f"/statefulsets/{quote(name, safe='')}/scale"
        )

    async def get(self, namespace: str, name: str) -> Scale:
        return await self._call("GET", namespace, name)

    async def set_replicas(self, namespace: str, name: str, replicas: int) -> Scale:
        return await self._call("PATCH", namespace, name, {"spec": {"replicas": replicas}})

    async def _call(self, method: str, namespace: str, name: str, body: dict[str, Any] | None = None) -> Scale:
        headers = {"Accept": "application/json"}
        token = self.endpoint.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = "application/merge-patch+json"
        what = f"StatefulSet {namespace}/{name} scale"
        try:
            async with self._client().request(method, self._url(namespace, name), json=body, headers=headers) as resp:
                status, text = resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ScaleTargetUnavailable(f"{method} {what}: {type(exc).__name__}: {exc}") from exc
        try:
            payload = json.loads(text) if text else {}
        except ValueError:
            payload = {"message": text[:200]}
        if status == 404:
            raise ScaleTargetNotFound(f"StatefulSet {namespace}/{name} not found")
        if status in (401, 403):
            raise ScaleTargetForbidden(f"{method} {what}: {status} {_message(payload)}")
        if status >= 300 or not isinstance(payload, dict):
            raise ScaleTargetUnavailable(f"{method} {what}: {status} {_message(payload)}")
        spec = payload.get("spec") or {}
        status = payload.get("status") or {}
        replicas = spec.get("replicas")
        # An object without spec.replicas is defaulted to 1 by the API server.
        return Scale(
            replicas=1 if replicas is None else int(replicas), status_replicas=int(status.get("replicas") or 0)
        )

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()


def _message(payload: Any) -> str:
    return str(payload.get("message", "")) if isinstance(payload, dict) else ""
