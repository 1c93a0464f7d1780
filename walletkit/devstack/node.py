"""A single-node Kubernetes cluster on this machine, from the project's own files: ``make cluster``.

What runs (each a process of this machine, ended by its own PID, its state under one directory):
- the control plane of controlplane.py (etcd, kube-apiserver, kube-controller-manager), plus
  kube-scheduler;
- the node: containerd (Debian's package) running containers with runc, the kubelet, kube-proxy
  (iptables mode), the CNI plugins (Debian's: bridge, host-local, loopback, portmap) and CoreDNS.

Versions: every Kubernetes component is v1.37.2, built from one go.mod (kube/kubernetes), so nothing
is skewed against anything. This machine's cgroups are v1 (beside a v2 mount holding only hugetlb):
kubelet 1.35+ refuses v1 unless ``failCgroupV1: false``, so the kubelet is told so, with the
``cgroupfs`` driver (no systemd here); containerd's CRI gets ``restrict_oom_score_adj`` because
the machine cannot lower an ``oom_score_adj`` (no CAP_SYS_RESOURCE).

The network stays on this machine: pods live on the bridge ``wallet0`` (10.244.0.0/24, gateway
10.244.0.1, which is also the node's address, where the API server, the kubelet and CoreDNS
listen), Services on 10.96.0.0/16; neither range is used here otherwise. Nothing is masqueraded
out and a FORWARD guard rejects anything from or to the pod range that is not on the bridge.
CoreDNS answers the cluster's zone and refuses the rest: it forwards nothing. NodePorts are open
on 127.0.0.1 only (kube-proxy's localhost NodePorts), and the API Service of the chart's node
values is the NodePort 8080, so ``curl localhost:8080`` reaches the API through kube-proxy.

No image is ever pulled: the sandbox image (``pause``, kube/pause) and every image of the project are
built with buildah and imported into containerd; the kubelet's pulls could only fail.

    python -m walletkit.devstack.node up     # make cluster: start, print the kubeconfig
    python -m walletkit.devstack.node down   # make cluster-down: stop every process by its PID
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from walletkit.devstack.controlplane import ControlPlane, KubeError, ensure_binaries
from walletkit.devstack.controlplane import bin_dir as controlplane_bin_dir

REPO = Path(__file__).resolve().parents[2]
BRIDGE = "wallet0"
GATEWAY = "10.244.0.1"  # the bridge's address: the node's address, and where pods find the host
POD_SUBNET = "10.244.0.0/24"
POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
NODE_PORTS = "8000-32767"  # wide enough for the seed's 8080
NODE_NAME = "wallet-node"
NODE_TOKEN = "wallet-node-kubelet"
CNI_BIN = Path("/usr/lib/cni")
PAUSE_IMAGE = "localhost/wallet-pause:1"
K8S_NAMESPACE = "k8s.io"  # containerd's namespace for the CRI's images and containers
DEFAULT_ROOT = REPO / ".state" / "cluster"
GUARD = "WALLET-NODE-GUARD"


class NodeError(RuntimeError):
    """The node cannot start here; the message says what to do."""


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool) or next(
        (str(p / tool) for p in (Path("/usr/sbin"), Path("/sbin")) if (p / tool).exists()), None
    )
    if path is None:
        raise NodeError(f"the node needs {tool}: apt-get install -y {package}")
    return path


def preflight() -> None:
    """What the node needs from this machine, each missing piece named with its package."""
    if os.geteuid() != 0:
        raise NodeError("the node runs containers, a bridge and iptables rules: run it as root")
    for tool, package in (
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
        ("containerd-shim-runc-v2", "containerd"),
        ("iptables", "iptables"),
        ("ip", "iproute2"),
        ("buildah", "buildah"),
    ):
        _need(tool, package)
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        if not (CNI_BIN / plugin).exists():
            raise NodeError(
                f"the node needs the CNI plugin {plugin} in {CNI_BIN}: apt-get install -y containernetworking-plugins"
            )


def _run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), text=True, capture_output=True, **kw)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


# -- processes, by PID -----------------------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def spawn(root: Path, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``argv`` in a session of its own with its log under root/logs; its PID (with its
    start time, so a reused PID is never mistaken for it) goes to root/pids/<name>."""
    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "pids").mkdir(parents=True, exist_ok=True)
    log = open(root / "logs" / f"{name}.log", "ab")
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )
    (root / "pids" / name).write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
    return proc


def end_pid(pid: int, started: str | None, timeout: float = 20.0) -> None:
    """SIGTERM the process ``pid`` if it is still the one that started at ``started``, then
    SIGKILL after ``timeout``."""
    if _start_time(pid) != started:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _start_time(pid) != started or _zombie(pid):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def end_recorded(root: Path, names: list[str] | None = None, timeout: float = 20.0) -> None:
    """End the processes recorded under root/pids (all, or ``names``), last started first."""
    pids = root / "pids"
    if not pids.is_dir():
        return
    recorded = sorted(pids.iterdir(), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for path in recorded:
        if names is not None and path.name not in names:
            continue
        pid, _, started = path.read_text().strip().partition(" ")
        end_pid(int(pid), started or None, timeout)
        path.unlink()


class Node:
    """The single-node cluster under ``root``: ``start()``, then ``stop()`` (or ``down(root)``
    from another process)."""

    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.root = Path(root).resolve()
        self.bin = ensure_binaries()
        self.control_plane: ControlPlane | None = None

    @classmethod
    def attach(cls, root: Path = DEFAULT_ROOT) -> Node:
        """The node another process started under ``root`` (its kubectl and helm, its containerd)."""
        node = cls(root)
        if not node.kubeconfig.exists():
            raise NodeError(f"no node runs under {node.root}: start one with `make cluster`")
        cp = ControlPlane.__new__(ControlPlane)
        cp.root, cp.bin, cp.kubeconfig = node.root / "control-plane", node.bin, node.kubeconfig
        cp.cert_dir, cp.logs = cp.root / "pki", node.root / "logs"
        cp.server = json.loads(node.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        node.control_plane = cp
        return node

    # -- paths --------------------------------------------------------------------------------------
    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, log=print) -> Node:
        preflight()
        if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
            raise NodeError(
                f"a node already runs on this machine (bridge {BRIDGE} exists): end it with "
                f"`make cluster-down` (or python -m walletkit.devstack.node down --root DIR)"
            )
        self._clear_previous()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._start(log)
        except BaseException:
            self.stop()
            raise
        return self

    def _clear_previous(self) -> None:
        """A node starts afresh: what an ended node left under its root (etcd, volumes, images) goes,
        never while one of its recorded processes still runs."""
        pids = self.root / "pids"
        for path in pids.iterdir() if pids.is_dir() else []:
            pid, _, started = path.read_text().strip().partition(" ")
            if _start_time(int(pid)) == (started or None):
                raise NodeError(
                    f"{path.name} (PID {pid}) of an earlier node still runs under {self.root}: "
                    "end it with `make cluster-down`"
                )
        if self.root.exists():
            _unmount_below(self.root)
            shutil.rmtree(self.root)

    def _start(self, log) -> None:
        started = time.monotonic()
        self._network()
        log("starting etcd, kube-apiserver, kube-controller-manager")
        pki = self._kubelet_client_pki()
        cp = ControlPlane(
            self.root / "control-plane",
            address=GATEWAY,
            service_cidr=SERVICE_CIDR,
            node_port_range=NODE_PORTS,
            tokens={NODE_TOKEN: (f"system:node:{NODE_NAME}", "system:nodes")},
            spawn=lambda name, argv: spawn(self.root, name, argv),
            apiserver_args=[
                "--kubelet-client-certificate",
                str(pki / "apiserver-kubelet-client.crt"),
                "--kubelet-client-key",
                str(pki / "apiserver-kubelet-client.key"),
            ],
        )
        cp.logs = self.root / "logs"
        self.control_plane = cp.start()
        shutil.copy(cp.kubeconfig, self.kubeconfig)
        log("starting containerd")
        self._containerd()
        import_archive(self, self._pause_archive())
        self._cni()
        log("starting kubelet, kube-scheduler, kube-proxy, CoreDNS")
        self._kubelet(cp)
        spawn(
            self.root,
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                "--kubeconfig",
                str(cp.kubeconfig),
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                "10259",
            ],
        )
        self._kube_proxy(cp)
        self._coredns(cp)
        self._wait(lambda: self._node_ready(cp), 120, "the node Ready", "kubelet")
        self._storage_class(cp)
        log(f"node {NODE_NAME} Ready in {time.monotonic() - started:.0f} s")

    def stop(self) -> None:
        """Delete every pod (so the kubelet tears their networks down), then end every process."""
        down(self.root, self)

    # -- pieces -------------------------------------------------------------------------------------
    def _network(self) -> None:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        forward = Path("/proc/sys/net/ipv4/ip_forward")
        (self.root / "ip_forward.before").write_text(forward.read_text())
        # Service traffic between pods is routed through the host (DNAT, then back out the bridge).
        forward.write_text("1\n")
        _run("iptables", "-N", GUARD, check=False)
        _run("iptables", "-F", GUARD)
        _run("iptables", "-A", GUARD, "-s", POD_CIDR, "!", "-o", BRIDGE, "-j", "REJECT")
        _run("iptables", "-A", GUARD, "-d", POD_CIDR, "!", "-i", BRIDGE, "-j", "REJECT")
        _run("iptables", "-I", "FORWARD", "1", "-j", GUARD)

    def _kubelet_client_pki(self) -> Path:
        """A CA the kubelet trusts for client certificates, and the API server's certificate from
        it: ``kubectl logs`` and ``exec`` go through the API server to the kubelet, which refuses
        an anonymous caller."""
        pki = self.root / "kubelet-pki"
        pki.mkdir(parents=True, exist_ok=True)
        ca_key, ca, key, csr, crt = (
            pki / n
            for n in (
                "ca.key",
                "ca.crt",
                "apiserver-kubelet-client.key",
                "apiserver-kubelet-client.csr",
                "apiserver-kubelet-client.crt",
            )
        )
        _run(
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(ca_key),
            "-out",
            str(ca),
            "-days",
            "30",
            "-subj",
            "/CN=wallet-node-kubelet-client-ca",
        )
        _run(
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
        )
        _run(
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(crt),
            "-days",
            "30",
        )
        return pki

    def _containerd(self) -> None:
        base = self.root / "containerd"
        (base / "root").mkdir(parents=True, exist_ok=True)
        config = base / "config.toml"
        config.write_text(f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{base / "containerd.sock.ttrpc"}"
[debug]
  address = "{base / "debug.sock"}"
  level = "info"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine cannot lower oom_score_adj (no CAP_SYS_RESOURCE): runc fails a container asking for it.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.root / "cni" / "net.d"}"
""")
        spawn(self.root, "containerd", [_need("containerd", "containerd"), "--config", str(config)])
        self._wait(lambda: self.ctr("version", check=False).returncode == 0, 60, "containerd serving", "containerd")

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return _run(
            "ctr", "--address", str(self.containerd_socket), "-n", K8S_NAMESPACE, *args, check=check, timeout=timeout
        )

    def _pause_archive(self) -> Path:
        """The sandbox image: kube/pause's static binary alone, made with buildah once."""
        from walletkit.devstack.images import Buildah

        buildah = Buildah()
        archive = self.root / "images" / "pause.tar"
        archive.parent.mkdir(parents=True, exist_ok=True)
        if not buildah.exists(PAUSE_IMAGE):
            ctr = buildah("from", "--pull=never", "scratch")
            try:
                buildah("copy", ctr, str(self.bin / "pause"), "/pause")
                buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr)
                buildah("commit", "--rm", ctr, PAUSE_IMAGE)
            except BaseException:
                buildah("rm", ctr, check=False)
                raise
        archive.unlink(missing_ok=True)
        buildah("push", PAUSE_IMAGE, f"oci-archive:{archive}:{PAUSE_IMAGE}")
        return archive

    def _cni(self) -> None:
        conf = self.root / "cni" / "net.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "10-wallet.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "wallet",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            # Pods route only the Service range through the host: anything else is unreachable.
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                                "routes": [{"dst": SERVICE_CIDR, "gw": GATEWAY}],
                                "dataDir": str(self.root / "cni" / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )

    def _kubelet(self, cp: ControlPlane) -> None:
        base = self.root / "kubelet"
        base.mkdir(parents=True, exist_ok=True)
        kubeconfig = cp.write_kubeconfig(base / "kubelet.kubeconfig", NODE_TOKEN, f"system:node:{NODE_NAME}")
        (base / "resolv.conf").write_text("")  # pods with dnsPolicy Default get no outside resolver
        config = base / "config.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    # This machine's cgroups are v1 (see the module docstring); no systemd runs here.
                    "failCgroupV1": False,
                    "cgroupDriver": "cgroupfs",
                    "address": GATEWAY,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": 10248,
                    "port": 10250,
                    "readOnlyPort": 0,
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": True},
                        "x509": {"clientCAFile": str(self.root / "kubelet-pki" / "ca.crt")},
                    },
                    "authorization": {"mode": "Webhook"},
                    "clusterDomain": "cluster.local",
                    "clusterDNS": [GATEWAY],
                    "resolvConf": str(base / "resolv.conf"),
                    "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
                    "failSwapOn": False,
                    "protectKernelDefaults": False,
                    # Disk and image garbage collection would evict pods or delete imported images that
                    # cannot be pulled back: off, on a node whose disk this machine shares.
                    "evictionHard": {
                        "memory.available": "100Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "serializeImagePulls": False,
                    "maxPods": 60,
                    "cgroupsPerQOS": True,
                    "enforceNodeAllocatable": [],
                    "podPidsLimit": 4096,
                    "podLogsDir": str(self.root / "pod-logs"),
                    "rotateCertificates": False,
                    "serverTLSBootstrap": False,
                },
                indent=2,
            )
        )
        spawn(
            self.root,
            "kubelet",
            [
                str(self.bin / "kubelet"),
                "--config",
                str(config),
                "--kubeconfig",
                str(kubeconfig),
                "--root-dir",
                str(base / "root"),
                "--cert-dir",
                str(base / "pki"),
                "--hostname-override",
                NODE_NAME,
                "--node-ip",
                GATEWAY,
                "--v",
                "1",
            ],
        )

    def _kube_proxy(self, cp: ControlPlane) -> None:
        config = self.root / "kube-proxy.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {"kubeconfig": str(cp.kubeconfig)},
                    "mode": "iptables",
                    "clusterCIDR": POD_CIDR,
                    "hostnameOverride": NODE_NAME,
                    "bindAddress": GATEWAY,
                    "healthzBindAddress": "127.0.0.1:10256",
                    "metricsBindAddress": "127.0.0.1:10249",
                    # NodePorts answer on loopback only (route_localnet), never on this machine's other addresses.
                    "nodePortAddresses": ["127.0.0.0/8"],
                    "iptables": {"localhostNodePorts": True},
                    "conntrack": {"maxPerCore": 0},  # leave the machine's conntrack table alone
                },
                indent=2,
            )
        )
        spawn(self.root, "kube-proxy", [str(self.bin / "kube-proxy"), "--config", str(config)])

    def _coredns(self, cp: ControlPlane) -> None:
        corefile = self.root / "Corefile"
        corefile.write_text(f"""cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {GATEWAY}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {cp.kubeconfig} test
        pods insecure
    }}
    cache 5
}}
""")
        spawn(self.root, "coredns", [str(self.bin / "coredns"), "-conf", str(corefile)])

    def _storage_class(self, cp: ControlPlane) -> None:
        try:
            cp.admin().create(
                "/apis/storage.k8s.io/v1/storageclasses",
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {
                        "name": STORAGE_CLASS,
                        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                    },
                    "provisioner": PROVISIONER,
                    "reclaimPolicy": "Delete",
                    "volumeBindingMode": "Immediate",
                },
            )
        except KubeError as exc:
            if exc.status != 409:
                raise
        (self.root / "volumes").mkdir(exist_ok=True)
        spawn(
            self.root,
            "provisioner",
            [sys.executable, "-m", "walletkit.devstack.node", "provision", "--root", str(self.root)],
        )

    def _node_ready(self, cp: ControlPlane) -> bool:
        try:
            node = cp.admin().get(f"/api/v1/nodes/{NODE_NAME}")
        except KubeError:
            return False
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))

    def _wait(self, ready, timeout: float, what: str, log_name: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.5)
        raise NodeError(
            f"timed out waiting for {what}; the end of {self.root / 'logs' / (log_name + '.log')}:\n"
            + log_tail(self.root, log_name)
        )


STORAGE_CLASS = "local"
PROVISIONER = "wallet.local/node-directory"


def provision(root: Path, interval: float = 1.0) -> None:
    """The node's volume provisioner (a process of the node, until SIGTERM): each claim of the
    class ``local`` gets a ``local`` PersistentVolume, a directory under root/volumes, bound to it;
    a volume whose claim is gone is deleted with its directory. ``local`` rather than ``hostPath``
    because the kubelet applies a pod's fsGroup to it: the chart's pods run as uid 10001."""
    node = Node.attach(root)
    kube = node.control_plane.admin()
    volumes = node.root / "volumes"
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while not stop:
        try:
            _provision_once(kube, volumes)
        except (KubeError, OSError) as exc:
            print(f"provisioner: {exc}", file=sys.stderr, flush=True)
        time.sleep(interval)


def _provision_once(kube, volumes: Path) -> None:
    claims = kube.get("/api/v1/persistentvolumeclaims")["items"]
    for claim in claims:
        spec, meta = claim["spec"], claim["metadata"]
        if claim.get("status", {}).get("phase") != "Pending" or spec.get("volumeName"):
            continue
        if spec.get("storageClassName") != STORAGE_CLASS:
            continue
        name = f"pvc-{meta['uid']}"
        path = volumes / name
        path.mkdir(parents=True, exist_ok=True)
        try:
            kube.create(
                "/api/v1/persistentvolumes",
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                    "spec": {
                        "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                        "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
                        "persistentVolumeReclaimPolicy": "Delete",
                        "storageClassName": STORAGE_CLASS,
                        "volumeMode": spec.get("volumeMode", "Filesystem"),
                        "claimRef": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
                        "local": {"path": str(path)},
                        "nodeAffinity": {
                            "required": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}
                                        ]
                                    }
                                ]
                            }
                        },
                    },
                },
            )
            print(f"provisioner: {name} for {meta['namespace']}/{meta['name']}", flush=True)
        except KubeError as exc:
            if exc.status != 409:
                raise
    for volume in kube.get("/api/v1/persistentvolumes")["items"]:
        meta = volume["metadata"]
        if meta.get("annotations", {}).get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
            continue
        if (
            volume.get("status", {}).get("phase") in ("Released", "Failed")
            and volume["spec"].get("persistentVolumeReclaimPolicy") == "Delete"
        ):
            shutil.rmtree(volumes / meta["name"], ignore_errors=True)
            kube.delete(f"/api/v1/persistentvolumes/{meta['name']}")
            print(f"provisioner: deleted {meta['name']} (its claim is gone)", flush=True)


def log_tail(root: Path, name: str, lines: int = 30) -> str:
    path = root / "logs" / f"{name}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def import_archive(node: Node, archive: Path) -> None:
    """An image archive (OCI or docker) into the node's containerd, where the kubelet finds it."""
    node.ctr("images", "import", "--all-platforms", str(archive))


KAFKA_MANIFEST = Path(__file__).with_name("kube") / "kafka" / "kafka.yaml"
KAFKA_IMAGE = "wallet-kafka:dev"  # what kafka.yaml names; never pulled (imagePullPolicy Never)


def load_images(node: Node, log=print) -> dict[str, str]:
    """Build the three service images and Kafka's (or find them built) and import them into the
    node under the names the chart renders by default (``<image>:<appVersion>``) and their content
    tags; what was imported, image -> buildah name."""
    from walletkit.devstack import images
    from walletkit.devstack.images import qualified

    buildah = images.Buildah()
    quiet = lambda message: log(message)  # noqa: E731 -- buildah's own output stays captured
    built = images.build_all(buildah, log=quiet)
    kafka = images.build_kafka(buildah, log=quiet)
    app_version = images.chart_app_version()
    work = node.root / "images"
    for image, name in {**built, "wallet-kafka": kafka}.items():
        refs = (
            [KAFKA_IMAGE]
            if image == "wallet-kafka"
            else [f"{image}:{app_version}", f"{image}:{name.rpartition(':')[2]}"]
        )
        archive = images.archive(buildah, name, refs[0], work)
        import_archive(node, archive)
        archive.unlink()
        for ref in refs[1:]:  # the same image under its content tag (what `--set *.image.tag=` pins)
            node.ctr("images", "tag", "--force", qualified(refs[0]), qualified(ref))
        log(f"imported {', '.join(refs)} into the node")
    return {**built, "wallet-kafka": kafka}


def deploy_kafka(node: Node, timeout: float = 300, log=print) -> str:
    """Apache Kafka in the node (kafka.yaml), Ready; the bootstrap address pods use."""
    cp = node.control_plane
    cp.kubectl("apply", "-f", str(KAFKA_MANIFEST))
    log("waiting for Kafka (kafka/kafka-0) to be Ready")
    cp.kubectl(
        "-n", "kafka", "rollout", "status", "statefulset/kafka", f"--timeout={int(timeout)}s", timeout=timeout + 30
    )
    return "kafka-0.kafka.kafka.svc.cluster.local:9092"


def down(root: Path, node: Node | None = None, log=print) -> None:
    """End the node under ``root``: pods deleted while the kubelet still runs (it tears down their
    networks), every recorded process ended by its PID, what is left of containers, mounts, the
    bridge and the rules removed."""
    root = Path(root).resolve()
    kubeconfig = root / "admin.kubeconfig"
    bin_dir = node.bin if node is not None else controlplane_bin_dir()
    # No controller may replace a pod while they go, and none may be scheduled.
    end_recorded(root, ["kube-controller-manager", "kube-scheduler"])
    if kubeconfig.exists() and (root / "pids" / "kubelet").exists() and (bin_dir / "kubectl").exists():
        subprocess.run(
            [
                str(bin_dir / "kubectl"),
                "--kubeconfig",
                str(kubeconfig),
                "delete",
                "pods",
                "--all",
                "--all-namespaces",
                "--grace-period=5",
                "--timeout=60s",
                "--wait=true",
            ],
            capture_output=True,
            timeout=90,
        )
    end_recorded(root, ["coredns", "kube-proxy", "kube-scheduler", "kubelet"])
    _end_shims(root)
    end_recorded(root, ["containerd"])
    end_recorded(root)
    _unmount_below(root)
    _remove_cgroups()
    for netns in Path("/var/run/netns").glob("cni-*") if Path("/var/run/netns").is_dir() else []:
        _run("ip", "netns", "delete", netns.name, check=False)  # the pods' namespaces, made by containerd's CRI
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        _run("ip", "link", "delete", BRIDGE, check=False)
    _run("iptables", "-D", "FORWARD", "-j", GUARD, check=False)
    _run("iptables", "-F", GUARD, check=False)
    _run("iptables", "-X", GUARD, check=False)
    if (root / "control-plane").exists() and (bin_dir / "kube-proxy").exists():
        _run(str(bin_dir / "kube-proxy"), "--cleanup", check=False, timeout=60)  # its iptables chains
    _remove_chains(("KUBE-", "CNI-"))
    before = root / "ip_forward.before"
    if before.exists():
        Path("/proc/sys/net/ipv4/ip_forward").write_text(before.read_text())
        before.unlink()
    log(f"node under {root} ended")


def _remove_chains(prefixes: tuple[str, ...]) -> None:
    """The iptables chains the kubelet, kube-proxy and the CNI plugins made (names with these
    prefixes; nothing else on this machine uses them), and every rule that jumps to one."""
    for table in ("filter", "nat", "mangle"):
        rules = [shlex.split(r) for r in _run("iptables", "-t", table, "-S", check=False).stdout.splitlines()]
        chains = [r[1] for r in rules if r[0] == "-N" and r[1].startswith(prefixes)]
        for words in rules:
            if words[0] == "-A" and "-j" in words and words[words.index("-j") + 1] in chains:
                _run("iptables", "-t", table, "-D", *words[1:], check=False)
        for chain in chains:
            _run("iptables", "-t", table, "-F", chain, check=False)
        for chain in chains:
            _run("iptables", "-t", table, "-X", chain, check=False)


def _end_shims(root: Path) -> None:
    """What containerd leaves running when it stops: the pods' processes (every PID in the
    kubelet's ``kubepods`` cgroups) and the shims serving this node's containerd (the processes
    whose command names its socket), each ended by its PID."""
    pods = Path("/sys/fs/cgroup/pids/kubepods")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        left = [
            pid for procs in (pods.rglob("cgroup.procs") if pods.is_dir() else []) for pid in procs.read_text().split()
        ]
        if not left:
            break
        for pid in left:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    socket = f"-address {root / 'containerd' / 'containerd.sock'}"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if command.startswith(("/usr/bin/containerd-shim", "containerd-shim")) and socket in command:
            pid = int(entry.name)
            end_pid(pid, _start_time(pid), timeout=5)


def _remove_cgroups() -> None:
    """The kubelet's ``kubepods`` cgroups (cgroupfs driver), empty once every container is gone."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / "kubepods"
        if top.is_dir():
            for d in [
                *sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True),
                top,
            ]:
                try:
                    d.rmdir()  # a cgroup goes with rmdir once it has no tasks and no children
                except OSError as exc:
                    print(f"cgroup {d} stays: {exc}", file=sys.stderr)


def _unmount_below(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(root) + "/")), key=len, reverse=True):
        _run("umount", "-l", mount, check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m walletkit.devstack.node", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["up", "down", "provision"])
    p.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help=f"the node's state directory (default {DEFAULT_ROOT})"
    )
    args = p.parse_args(argv)
    try:
        if args.command == "down":
            down(args.root)
            return 0
        if args.command == "provision":  # a process of the node (Node._storage_class)
            provision(args.root)
            return 0
        node = Node(args.root).start()
        try:
            load_images(node)
            deploy_kafka(node)
        except BaseException:
            node.stop()
            raise
    except (NodeError, RuntimeError, AssertionError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"""
The node is up (its state: {node.root}). To use it:
  export KUBECONFIG={node.kubeconfig}
  export PATH={node.bin}:$PATH   # kubectl and helm of this release
  helm install wallet charts/wallet -f charts/wallet/values-node.yaml --wait
  curl -X POST localhost:8080/deposit -d '{{"WalletID": "walletID001", "Amount": 8000}}'
  curl localhost:8080/details/walletID001
End it with: make cluster-down""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
