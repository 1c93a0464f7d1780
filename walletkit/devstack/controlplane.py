"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The binaries (and helm) are built from the Go module proxy by the modules in controlplane/ (each
pins its release in go.mod and go.sum), once per machine, into the wallet cache
(``~/.cache/wallet/controlplane/<hash of the modules>/bin``); a cold build takes several minutes,
later runs reuse it.

What runs, and what does not: the API server with etcd, RBAC and ServiceAccount tokens, the
controller manager (the StatefulSet, garbage-collector and ServiceAccount controllers, among the
rest). No kubelet, scheduler or container runtime can run here, so pods are created but never
scheduled: these tests prove what the API server decides (schemas, CEL rules, RBAC, immutable
fields, helm's release lifecycle), not that containers start — the image suite does that.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from walletkit.devstack.kafka import cache_root
from walletkit.devstack.net import free_port
from walletkit.devstack.processes import terminate

MODULES = Path(__file__).with_name("kube")
CHART = Path(__file__).resolve().parents[2] / "charts" / "wallet"
# Which binary each module builds, and the package it builds it from.
BINARIES = {
    "etcd": ("etcd", "."),
    "kube-apiserver": ("kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver"),
    "kube-controller-manager": ("kubernetes", "k8s.io/kubernetes/cmd/kube-controller-manager"),
    "helm": ("helm", "helm.sh/helm/v4/cmd/helm"),
    # The node (walletkit/devstack/node.py): the same release as the control plane, so no skew.
    "kube-scheduler": ("kubernetes", "k8s.io/kubernetes/cmd/kube-scheduler"),
    "kubelet": ("kubernetes", "k8s.io/kubernetes/cmd/kubelet"),
    "kube-proxy": ("kubernetes", "k8s.io/kubernetes/cmd/kube-proxy"),
    "kubectl": ("kubernetes", "k8s.io/kubernetes/cmd/kubectl"),
    "coredns": ("coredns", "github.com/coredns/coredns"),
    "pause": ("pause", "."),  # static (CGO off): the only file of the sandbox image
}
STATIC = {"pause"}
ADMIN_TOKEN = "wallet-test-admin"


def kubernetes_version() -> str:
    """The k8s.io/kubernetes release kubernetes/go.mod pins (v1.37.2)."""
    for line in (MODULES / "kubernetes" / "go.mod").read_text().splitlines():
        if line.strip().startswith("require k8s.io/kubernetes "):
            return line.split()[-1]
    raise RuntimeError("walletkit/devstack/kube/kubernetes/go.mod pins no k8s.io/kubernetes")


def ldflags(module: str) -> list[str]:
    """What the release build stamps in: without it the server reports v0.0.0 and helm refuses
    a chart's kubeVersion constraint."""
    if module != "kubernetes":
        return []
    v = kubernetes_version()
    major, minor = v.lstrip("v").split(".")[:2]
    stamp = " ".join(
        f"-X {pkg}.{key}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in (("gitVersion", v), ("gitMajor", major), ("gitMinor", minor), ("gitTreeState", "clean"))
    )
    return ["-ldflags", stamp]


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise RuntimeError("the control-plane tests build kube-apiserver, etcd and helm with Go 1.26+: install Go")
    return go


def bin_dir() -> Path:
    digest = hashlib.sha256(json.dumps(ldflags("kubernetes")).encode())
    for module in sorted({m for m, _ in BINARIES.values()}):
        for name in ("go.mod", "go.sum", "main.go", "tools.go"):
            path = MODULES / module / name
            if path.exists():
                digest.update(f"{module}/{name}\0".encode() + path.read_bytes())
    return cache_root() / "controlplane" / digest.hexdigest()[:16] / "bin"


def ensure_binaries(log=print) -> Path:
    """Build whatever of etcd, kube-apiserver, kube-controller-manager and helm is not cached yet."""
    out = bin_dir()
    missing = [b for b in BINARIES if not (out / b).is_file()]
    if not missing:
        return out
    out.mkdir(parents=True, exist_ok=True)
    go = _go()
    for binary in missing:
        module, package = BINARIES[binary]
        log(f"building {binary} from the Go module proxy ({module}/go.mod; once per machine, minutes)")
        started = time.monotonic()
        tmp = out / f".{binary}.partial"
        env = {**os.environ, **({"CGO_ENABLED": "0"} if binary in STATIC else {})}
        proc = subprocess.run(
            [go, "build", "-trimpath", *ldflags(module), "-o", str(tmp), package],
            cwd=MODULES / module,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"go build {package} failed:\n{proc.stdout[-4000:]}")
        tmp.rename(out / binary)
        log(f"built {binary} in {time.monotonic() - started:.0f} s")
    return out


class KubeError(RuntimeError):
    def __init__(self, status: int, body: dict | str, what: str) -> None:
        self.status, self.body = status, body
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{what}: HTTP {status}: {message}")


class Kube:
    """A minimal JSON client of one API server identity (a bearer token)."""

    def __init__(self, server: str, token: str, ca_file: Path) -> None:
        self.server, self.token = server, token
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def request(
        self, method: str, path: str, body: object = None, *, content_type: str = "application/json", query: str = ""
    ) -> dict:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        for _ in range(50):  # 429: a just-created CRD's storage is still initialising; the server says when to retry
            try:
                return self._once(method, path, data, content_type, query)
            except KubeError as exc:
                if exc.status != 429:
                    raise
                time.sleep(0.2)
        return self._once(method, path, data, content_type, query)

    def _once(self, method: str, path: str, data: bytes | None, content_type: str, query: str) -> dict:
        req = urllib.request.Request(
            f"{self.server}{path}{'?' + query if query else ''}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": content_type,
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=30) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = raw.decode(errors="replace")
            raise KubeError(exc.code, doc, f"{method} {path}") from None

    def get(self, path: str, **kw) -> dict:
        return self.request("GET", path, **kw)

    def create(self, path: str, body: dict, **kw) -> dict:
        return self.request("POST", path, body, **kw)

    def delete(self, path: str) -> dict:
        return self.request("DELETE", path)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
            return True
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on free loopback ports under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        controller_manager: bool = True,
        address: str = "127.0.0.1",
        service_cidr: str = "10.0.0.0/24",
        node_port_range: str | None = None,
        tokens: dict[str, tuple[str, str]] | None = None,
        spawn=None,
        apiserver_args: list[str] | None = None,
    ) -> None:
        """``address``, ``service_cidr`` and ``node_port_range`` are the node's (node.py): there the
        API server listens on the pod network's gateway so that pods reach it through the
        ``kubernetes`` Service. ``tokens`` adds identities: token -> (user, group)."""
        self.root = Path(root)
        self.bin = ensure_binaries()
        self.with_controller_manager = controller_manager
        self.address, self.service_cidr, self.node_port_range = address, service_cidr, node_port_range
        self.tokens = dict(tokens or {})
        self.apiserver_args = list(apiserver_args or [])
        self.spawn = spawn  # (name, argv) -> Popen: the node records each PID; by default, logs here
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()
        self.server = f"https://{address}:{self.port}"
        self.cert_dir = self.root / "pki"
        self.logs = self.root / "logs"

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> ControlPlane:
        """Start everything, or stop what was started and raise (no process outlives a failure)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> ControlPlane:
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cert_dir.mkdir(exist_ok=True)
        sa_key = self.cert_dir / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(self.cert_dir / "sa.pub")],
            check=True,
            capture_output=True,
        )
        # Static bearer token of the test's administrator (group system:masters); every other
        # identity is a ServiceAccount with a token the API server issues (TokenRequest).
        (self.cert_dir / "tokens.csv").write_text(
            f'{ADMIN_TOKEN},wallet-test-admin,1,"system:masters"\n'
            + "".join(
                f'{token},{user},{n},"{group}"\n' for n, (token, (user, group)) in enumerate(self.tokens.items(), 2)
            )
        )
        etcd_client, etcd_peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                "--name",
                "test",
                "--data-dir",
                str(self.root / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_client}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_client}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster",
                f"test=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        self._wait(lambda: _http_ok(f"http://127.0.0.1:{etcd_client}/health"), 30, "etcd healthy", "etcd")
        self._spawn(
            "kube-apiserver",
            [
                "--etcd-servers",
                f"http://127.0.0.1:{etcd_client}",
                "--bind-address",
                self.address,
                "--advertise-address",
                self.address,
                "--secure-port",
                str(self.port),
                "--cert-dir",
                str(self.cert_dir),  # a self-signed serving certificate for localhost/127.0.0.1
                "--token-auth-file",
                str(self.cert_dir / "tokens.csv"),
                "--authorization-mode",
                "Node,RBAC",
                "--service-account-key-file",
                str(self.cert_dir / "sa.pub"),
                "--service-account-signing-key-file",
                str(sa_key),
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-cluster-ip-range",
                self.service_cidr,
                # Without a node, the `kubernetes` Service's endpoints would point at 127.0.0.1, which
                # the reconciler refuses, and no pod runs to use them; on the node they are the gateway.
                "--endpoint-reconciler-type",
                "none" if self.address.startswith("127.") else "lease",
                *(["--service-node-port-range", self.node_port_range] if self.node_port_range else []),
                "--kubelet-preferred-address-types",
                "InternalIP",  # a node's name resolves nowhere here
                *self.apiserver_args,
                "--allow-privileged=false",
                "--enable-admission-plugins",
                "NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,"
                "ResourceQuota,PodSecurity,ValidatingAdmissionPolicy",
            ],
        )
        self._wait(self._api_ready, 120, "kube-apiserver ready", "kube-apiserver")
        self.kubeconfig = self.write_kubeconfig(self.root / "admin.kubeconfig", ADMIN_TOKEN, "admin")
        if self.with_controller_manager:
            self._spawn(
                "kube-controller-manager",
                [
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--leader-elect=false",
                    "--bind-address",
                    "127.0.0.1",
                    "--secure-port",
                    str(free_port()),
                    "--service-account-private-key-file",
                    str(sa_key),
                    "--root-ca-file",
                    str(self.ca_file),
                    "--use-service-account-credentials=false",
                    "--controllers",
                    "*",
                    "--concurrent-statefulset-syncs",
                    "2",
                ],
            )
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            terminate(proc, timeout=10)
        self.procs.clear()

    def _spawn(self, binary: str, args: list[str]) -> None:
        if self.spawn is not None:
            self.procs.append(self.spawn(binary, [str(self.bin / binary), *args]))
            return
        log = open(self.logs / f"{binary}.log", "ab")
        self.procs.append(
            subprocess.Popen(
                [str(self.bin / binary), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def _wait(self, ready, timeout: float, what: str, binary: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{proc.args[0]} exited ({proc.returncode}) before {what}:\n"
                        + self.log_tail(Path(proc.args[0]).name)
                    )
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.log_tail(binary)}")

    def log_tail(self, binary: str, lines: int = 30) -> str:
        path = self.logs / f"{binary}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _api_ready(self) -> bool:
        if not (self.cert_dir / "apiserver.crt").exists():
            return False
        admin = self.admin()
        req = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        try:
            with urllib.request.urlopen(req, context=admin.context, timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    # -- identities -------------------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        return self.cert_dir / "apiserver.crt"  # self-signed: the serving certificate is its own CA

    def admin(self) -> Kube:
        return Kube(self.server, ADMIN_TOKEN, self.ca_file)

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        review = self.admin().create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}},
        )
        return review["status"]["token"]

    def write_kubeconfig(self, path: Path, token: str, user: str) -> Path:
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "test",
                    "clusters": [
                        {"name": "test", "cluster": {"server": self.server, "certificate-authority-data": ca}}
                    ],
                    "users": [{"name": user, "user": {"token": token}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
                }
            )
        )
        path.chmod(0o600)
        return path

    # -- tools ------------------------------------------------------------------------------------
    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return self._tool("helm", args, check, timeout)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return self._tool("kubectl", args, check, timeout)

    def _tool(self, binary: str, args: tuple[str, ...], check: bool, timeout: float) -> subprocess.CompletedProcess:
        home = self.root / "helm"
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        proc = subprocess.run([str(self.bin / binary), *args], text=True, capture_output=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{binary} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
        return proc


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


if __name__ == "__main__":  # `make controlplane`: build (or find cached) the binaries, print where
    print(ensure_binaries())
