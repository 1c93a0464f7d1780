"""The chart on a real single-node cluster (walletkit/devstack/node.py, what `make cluster` runs):
pods scheduled by kube-scheduler, started by the kubelet through containerd and runc, reached
through kube-proxy and found through CoreDNS; Apache Kafka runs in the cluster from the image the
project builds. Used as its users would: `helm install` with values-node.yaml, the seed's curl
commands on localhost:8080, `helm upgrade` to a new image build while deposits flow, pods deleted
and killed, `helm rollback`, `helm uninstall`.

The tests of this module run in order on one release (each leaves it as the next expects).
Figures (the longest failure windows of the upgrade, the records a restarted processor restored)
are printed with `figure:`; they are reports, never bounds.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

import pytest
from support import wait_for

from walletkit.devstack import images
from walletkit.devstack.controlplane import CHART
from walletkit.devstack.node import import_archive

pytestmark = pytest.mark.node

API = "http://127.0.0.1:8080"  # the seed's address: the API Service's NodePort, on loopback
RELEASE = "wallet"
SERVICES = {"api": "wallet-api", "balance": "wallet-balance", "aboveThreshold": "wallet-above-threshold"}


def call(
    method: str, path: str, doc: dict | None = None, headers: dict | None = None, timeout: float = 5
) -> tuple[int, bytes]:
    """One request as curl sends it (`curl -d` posts a form content type with a JSON body)."""
    data = None if doc is None else json.dumps(doc).encode()
    req = urllib.request.Request(
        API + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def pods(node, selector: str = "") -> list[dict]:
    args = ["get", "pods", "-o", "json"] + (["-l", selector] if selector else [])
    return json.loads(node.control_plane.kubectl(*args).stdout)["items"]


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def pod_named(node, name: str) -> dict | None:
    """The pod, or None while it does not exist (a StatefulSet's pod between its deletion and its successor)."""
    out = node.control_plane.kubectl("get", "pod", name, "-o", "json", "--ignore-not-found")
    return json.loads(out.stdout) if out.stdout.strip() else None


def balances(wallets) -> dict[str, int]:
    out = {}
    for wallet in wallets:
        status, raw = call("GET", f"/details/{wallet}")
        out[wallet] = json.loads(raw)["Balance"] if status == 200 else None
    return out


def metric(pod: dict, port: int, name: str) -> float:
    """The sum of a Prometheus counter over its labels, read from a pod's own address (this
    machine is on the pod network's bridge)."""
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and line[len(name)] in "{ "
    ]
    assert samples, f"{pod['metadata']['name']} exports no {name}"
    return sum(samples)


def helm_values(*extra: str) -> list[str]:
    return ["-f", str(CHART / "values-node.yaml"), *extra]


# -- the release ------------------------------------------------------------------------------------
def test_install_every_pod_ready_by_its_probes_and_the_seed_curls_answer_on_8080(cluster):
    helm = cluster.control_plane.helm
    helm("install", RELEASE, str(CHART), *helm_values(), "--wait", "--timeout", "5m", timeout=400)
    release = pods(cluster, f"app.kubernetes.io/instance={RELEASE}")
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in release} >= {
        "api",
        "balance",
        "above-threshold",
    }, [p["metadata"]["name"] for p in release]
    for pod in release:
        assert ready(pod), f"{pod['metadata']['name']} is not Ready: {pod['status'].get('conditions')}"
        for c in pod["spec"]["containers"]:  # Ready by the chart's own probes, not by default
            assert c.get("readinessProbe") and c.get("livenessProbe"), (pod["metadata"]["name"], c["name"])
        assert all(s["ready"] and s["restartCount"] == 0 for s in pod["status"]["containerStatuses"]), pod["status"]

    # The README's seed commands, verbatim in what they send, through kube-proxy on 8080.
    status, raw = call("POST", "/deposit", {"WalletID": "walletID001", "Amount": 8000})
    assert status == 202, raw
    ack = json.loads(raw)
    assert ack["WalletID"] == "walletID001" and ack["Amount"] == 8000, ack

    def shown(expected: bytes):
        return lambda: call("GET", "/details/walletID001")[1] == expected or call("GET", "/details/walletID001")

    wait_for(shown(b'{"WalletID":"walletID001","Balance":8000,"AboveThreshold":false}'), 60, "the seed deposit")
    status, raw = call("POST", "/deposit", {"WalletID": "walletID001", "Amount": 4000})
    assert status == 202, raw
    wait_for(shown(b'{"WalletID":"walletID001","Balance":12000,"AboveThreshold":true}'), 60, "the threshold")
    assert call("GET", "/openapi.json")[0] == 200
    # Operations stay inside: /metrics is on the ops port, which the public Service port never routes to.
    assert call("GET", "/metrics")[0] == 404

    proc = helm("test", RELEASE, "--timeout", "3m", check=False, timeout=240)
    assert proc.returncode == 0 and "Succeeded" in proc.stdout, proc.stdout + proc.stderr


def test_pods_find_the_cluster_by_name_and_nothing_outside_the_machine(cluster):
    """CoreDNS answers the cluster's names and forwards nothing; a pod has no route off the node."""
    api = next(p for p in pods(cluster, "app.kubernetes.io/component=api") if ready(p))
    probe = (
        "import socket, urllib.request\n"
        "print('kafka', socket.gethostbyname('kafka-0.kafka.kafka.svc.cluster.local'))\n"
        "print('api', socket.gethostbyname('wallet-api'))\n"
        "for name in ('example.com', 'deb.debian.org'):\n"
        "    try: print('resolved', name, socket.gethostbyname(name))\n"
        "    except OSError as exc: print('unresolved', name, exc.errno)\n"
        "for address in ('192.0.2.1', '1.1.1.1'):\n"
        "    try: urllib.request.urlopen(f'http://{address}/', timeout=3); print('reached', address)\n"
        "    except OSError as exc: print('unreached', address, getattr(exc, 'reason', exc))\n"
    )
    out = cluster.control_plane.kubectl("exec", api["metadata"]["name"], "--", "python3", "-c", probe).stdout
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    kafka = next(
        p for p in json.loads(cluster.control_plane.kubectl("-n", "kafka", "get", "pods", "-o", "json").stdout)["items"]
    )
    assert out.splitlines()[0] == f"kafka {kafka['status']['podIP']}", out
    service = json.loads(cluster.control_plane.kubectl("get", "service", "wallet-api", "-o", "json").stdout)
    assert out.splitlines()[1] == f"api {service['spec']['clusterIP']}", out
    assert "resolved" not in lines and "reached" not in lines, out
    assert out.count("unresolved") == 2 and out.count("unreached") == 2, out


@dataclass
class Traffic:
    """Deposits and reads at a steady rate through 8080, in two threads, for as long as it runs.
    A deposit that fails (no answer, or 5xx) is retried with its Idempotency-Key until it is
    acknowledged, so each one counts once or the test fails; every failure's time is kept."""

    wallets: list[str]
    rate: float = 10.0
    acked: dict[str, int] = field(default_factory=dict)
    write_failures: list[float] = field(default_factory=list)
    read_failures: list[float] = field(default_factory=list)
    write_ok: list[float] = field(default_factory=list)
    read_ok: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._write, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]
        self.acked = {w: 0 for w in self.wallets}

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _write(self) -> None:
        n = 0
        while not self.stop.is_set():
            wallet = self.wallets[n % len(self.wallets)]
            key = uuid.uuid4().hex
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    status, raw = call(
                        "POST",
                        "/deposit",
                        {"WalletID": wallet, "Amount": 1},
                        headers={"Idempotency-Key": key},
                        timeout=5,
                    )
                except OSError:
                    status, raw = 0, b""
                if status == 202:
                    self.acked[wallet] += 1
                    self.write_ok.append(time.monotonic())
                    break
                if status and status < 500 and status != 429:
                    self.errors.append(f"deposit answered {status}: {raw[:200]!r}")
                    break
                self.write_failures.append(time.monotonic())
                time.sleep(0.1)
            n += 1
            time.sleep(1 / self.rate)

    def _read(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                status, _ = call("GET", f"/details/{self.wallets[n % len(self.wallets)]}", timeout=5)
            except OSError:
                status = 0
            (self.read_ok if status in (200, 404) else self.read_failures).append(time.monotonic())
            n += 1
            time.sleep(1 / self.rate)

    @staticmethod
    def longest_gap(failures: list[float], successes: list[float]) -> float:
        """The longest time from a failure to the next success (0 without failures)."""
        longest, ok = 0.0, sorted(successes)
        for t in failures:
            after = next((s for s in ok if s > t), None)
            start = max((s for s in ok if s < t), default=t)
            if after is not None:
                longest = max(longest, after - start)
        return longest


def new_build(cluster, tag: str) -> None:
    """A new image build of each service (the same layers, a new image config, so a new image id)
    imported under ``tag``: what a rebuild after a release looks like to the cluster."""
    buildah = images.Buildah()
    built = images.build_all(buildah, log=lambda _: None)
    for image, name in built.items():
        ctr = buildah("from", "--pull=never", name)
        try:
            buildah("config", "--label", f"org.opencontainers.image.version={tag}", ctr)
            buildah("commit", "--rm", ctr, f"localhost/{image}:{tag}")
        except BaseException:
            buildah("rm", ctr, check=False)
            raise
        archive = images.archive(buildah, f"localhost/{image}:{tag}", f"{image}:{tag}", cluster.root / "images")
        import_archive(cluster, archive)
        archive.unlink()


def image_ids(cluster) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for pod in pods(cluster, f"app.kubernetes.io/instance={RELEASE}"):
        if pod["metadata"].get("deletionTimestamp"):
            continue  # terminating: helm's --wait does not wait for a replaced pod to be gone
        for s in pod["status"].get("containerStatuses", []):
            out.setdefault(pod["metadata"]["labels"]["app.kubernetes.io/component"], set()).add(s["image"])
    return out


def test_upgrade_to_a_new_build_while_deposits_flow_counts_every_acknowledged_deposit_once(cluster):
    tag = "rebuild-" + uuid.uuid4().hex[:8]
    new_build(cluster, tag)
    before = image_ids(cluster)
    wallets = [f"roll-{uuid.uuid4().hex[:6]}-{i}" for i in range(8)]
    with Traffic(wallets) as traffic:
        time.sleep(5)
        started = time.monotonic()
        cluster.control_plane.helm(
            "upgrade",
            RELEASE,
            str(CHART),
            *helm_values(*[f"--set={value}.image.tag={tag}" for value in SERVICES]),
            "--wait",
            "--timeout",
            "6m",
            timeout=420,
        )
        rolled = time.monotonic() - started
        time.sleep(5)
    after = image_ids(cluster)
    for component in ("api", "balance", "above-threshold"):
        assert after[component] and all(tag in image for image in after[component]), (component, after)
        assert after[component] != before[component]
    assert not traffic.errors, traffic.errors[:5]
    total = sum(traffic.acked.values())
    assert total > 50, f"only {total} deposits were acknowledged during the upgrade"
    wait_for(
        lambda: balances(wallets) == traffic.acked or (balances(wallets), traffic.acked),
        120,
        "every acknowledged deposit in the balances, once",
    )
    write_gap = Traffic.longest_gap(traffic.write_failures, traffic.write_ok)
    read_gap = Traffic.longest_gap(traffic.read_failures, traffic.read_ok)
    print(
        f"\nfigure: helm upgrade (API Deployment and both StatefulSets rolled) took {rolled:.0f} s; "
        f"{total} deposits acknowledged, each counted once; failed deposit attempts {len(traffic.write_failures)}, "
        f"longest window without a successful deposit after a failure {write_gap:.2f} s; failed reads "
        f"{len(traffic.read_failures)}, longest such window {read_gap:.2f} s"
    )


def _restart_and_count(cluster, name: str, port: int, how, same_volume: bool = True) -> int:
    """Restart pod ``name`` with ``how``; the records its new process restored from the changelog."""
    before = pod_named(cluster, name)
    assert before is not None, f"{name} does not exist"
    claim = next(
        v["persistentVolumeClaim"]["claimName"] for v in before["spec"]["volumes"] if "persistentVolumeClaim" in v
    )
    volume = json.loads(cluster.control_plane.kubectl("get", "pvc", claim, "-o", "json").stdout)["spec"]["volumeName"]
    how(before, claim)

    def back():
        pod = pod_named(cluster, name)
        if pod is None or not pod["status"].get("containerStatuses"):
            return "not created yet" if pod is None else pod["status"].get("phase")
        restarted = (
            pod["metadata"]["uid"] != before["metadata"]["uid"]
            or pod["status"]["containerStatuses"][0]["restartCount"]
            > before["status"]["containerStatuses"][0]["restartCount"]
        )
        return (restarted and ready(pod)) or pod["status"].get("phase")

    wait_for(back, 180, f"{name} back and Ready")
    after = pod_named(cluster, name)
    again = json.loads(cluster.control_plane.kubectl("get", "pvc", claim, "-o", "json").stdout)["spec"]["volumeName"]
    if same_volume:
        assert again == volume, f"{name} came back on {again}, not its volume {volume}"
    else:
        assert again != volume, f"{name} came back on its old volume {volume}"
    return int(metric(after, port, "stream_restore_records_total"))


def test_a_balance_pod_deleted_or_killed_comes_back_on_its_volume_restoring_only_the_tail(cluster):
    wallets = [f"kill-{uuid.uuid4().hex[:6]}-{i}" for i in range(5)]
    written = 0
    expected = {w: 0 for w in wallets}

    def deposit(n: int) -> None:
        nonlocal written
        for i in range(n):
            wallet = wallets[i % len(wallets)]
            status, raw = call("POST", "/deposit", {"WalletID": wallet, "Amount": 3})
            assert status == 202, raw
            expected[wallet] += 3
            written += 1

    deposit(200)
    wait_for(lambda: balances(wallets) == expected or balances(wallets), 120, "the deposits before the restarts")

    def delete(pod, claim):
        cluster.control_plane.kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")

    deleted = _restart_and_count(cluster, "wallet-balance-0", 8081, delete)
    deposit(50)
    wait_for(lambda: balances(wallets) == expected or balances(wallets), 120, "the deposits after the delete")

    def kill_inside(pod, claim):  # SIGKILL to the service process, from inside its own container
        script = (
            "import os, signal\n"
            "for p in os.listdir('/proc'):\n"
            "    if p.isdigit() and p not in ('1', str(os.getpid())) and "
            "b'wallet-balance' in open(f'/proc/{p}/cmdline', 'rb').read():\n"
            "        os.kill(int(p), signal.SIGKILL)\n"
        )
        cluster.control_plane.kubectl(
            "exec",
            pod["metadata"]["name"],
            "-c",
            pod["spec"]["containers"][0]["name"],
            "--",
            "python3",
            "-c",
            script,
            check=False,
        )

    killed = _restart_and_count(cluster, "wallet-balance-0", 8081, kill_inside)
    deposit(50)
    wait_for(lambda: balances(wallets) == expected or balances(wallets), 120, "the deposits after the kill")

    def lose_volume(pod, claim):  # what the two restarts above would be without the volume
        cluster.control_plane.kubectl("delete", "pvc", claim, "--wait=false")
        cluster.control_plane.kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")

    lost = _restart_and_count(cluster, "wallet-balance-0", 8081, lose_volume, same_volume=False)
    wait_for(lambda: balances(wallets) == expected or balances(wallets), 120, "the deposits after the volume loss")
    print(
        f"\nfigure: wallet-balance-0 restored {deleted} changelog records after a delete and {killed} after a "
        f"SIGKILL inside its container, on its own volume; on a new, empty volume it restored {lost}; "
        f"{written} deposits were written by this test"
    )
    assert lost >= written, f"an empty volume restored only {lost} of {written} records: the count says nothing"
    assert deleted < 200, f"a deleted pod restored {deleted} of 200 records: not only the tail"
    assert killed < 250, f"a killed pod restored {killed} of 250 records: not only the tail"


def test_rollback_then_uninstall_keeps_the_volumes_and_the_topics(cluster):
    helm = cluster.control_plane.helm
    kubectl = cluster.control_plane.kubectl
    helm("rollback", RELEASE, "1", "--wait", "--timeout", "6m", timeout=420)
    current = image_ids(cluster)
    app_version = images.chart_app_version()
    wait_for(
        lambda: (
            all(all(i.endswith(f":{app_version}") for i in ids) for ids in image_ids(cluster).values())
            or image_ids(cluster)
        ),
        180,
        "every pod back on the first release's images",
    )
    assert current  # the rollback left pods running
    wait_for(
        lambda: (
            call("GET", "/details/walletID001")[1]
            == b'{"WalletID":"walletID001","Balance":12000,"AboveThreshold":true}'
            or call("GET", "/details/walletID001")
        ),
        60,
        "the seed wallet after the rollback",
    )
    claims = {
        c["metadata"]["name"]: c["spec"]["volumeName"]
        for c in json.loads(kubectl("get", "pvc", "-o", "json").stdout)["items"]
    }
    assert any(name.startswith("state-wallet-balance") or "balance" in name for name in claims), claims
    helm("uninstall", RELEASE, "--wait", "--timeout", "3m", timeout=240)
    wait_for(
        lambda: (
            not pods(cluster, f"app.kubernetes.io/instance={RELEASE}")
            or [p["metadata"]["name"] for p in pods(cluster, f"app.kubernetes.io/instance={RELEASE}")]
        ),
        120,
        "the release's pods gone",
    )
    kept = {
        c["metadata"]["name"]: c["spec"]["volumeName"]
        for c in json.loads(kubectl("get", "pvc", "-o", "json").stdout)["items"]
    }
    assert kept == claims, f"uninstall changed the volumes: {claims} -> {kept}"
    # The topics' partitions on the broker's volume (a deleted topic's would be renamed *-delete).
    logs = kubectl("-n", "kafka", "exec", "kafka-0", "--", "ls", "/var/lib/kafka/data").stdout.split()
    topics = {name.rpartition("-")[0] for name in logs if name.rpartition("-")[2].isdigit()}
    assert {"deposit", "balance-table", "above_threshold-table"} <= topics, logs
    # Installed again, the release finds its ledger and its tables: the seed wallet is as it was.
    helm("install", RELEASE, str(CHART), *helm_values(), "--wait", "--timeout", "5m", timeout=400)
    wait_for(
        lambda: (
            call("GET", "/details/walletID001")[1]
            == b'{"WalletID":"walletID001","Balance":12000,"AboveThreshold":true}'
            or call("GET", "/details/walletID001")
        ),
        120,
        "the seed wallet after a reinstall",
    )
    after = {
        c["metadata"]["name"]: c["spec"]["volumeName"]
        for c in json.loads(kubectl("get", "pvc", "-o", "json").stdout)["items"]
    }
    assert after == claims, f"the reinstall did not reattach the kept volumes: {claims} -> {after}"
