"""The three images, built with buildah from services/Dockerfile and skaffold.yaml's artifact list,
then run by their own entrypoints against Apache Kafka on loopback: the seed's curl flow goes
through the three containers.

Image registries cannot be reached here, so the Dockerfile's base (debian:trixie-slim) is made
from Debian's packages by walletkit.devstack.images and every build runs with --pull=never.
buildah runs with vfs storage and chroot isolation: the containers share the host's network (so
they reach the broker on loopback) but have their own root filesystem, user and environment,
which is what these tests look at. Images are cached by a digest of their sources in buildah's
store under the wallet cache, so an unchanged tree is not rebuilt.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
from support import missing_tool, post_deposit, wait_for

from walletkit.devstack import images
from walletkit.devstack.net import free_port, http_get

REPO = Path(__file__).resolve().parents[2]
# Paths buildah run itself creates or bind-mounts in the container's root for every command
# (not the service's doing): its marker file and the generated name-resolution files.
RUNTIME_MOUNTS = {"run/.containerenv", "etc/hosts", "etc/resolv.conf", "etc/hostname"}
SCRIPT_OF_IMAGE = {
    "wallet-api": "wallet-api",
    "wallet-balance": "wallet-balance",
    "wallet-above-threshold": "wallet-above-threshold",
}


@pytest.fixture(scope="module")
def buildah():
    try:
        return images.Buildah()
    except images.ImageToolMissing as exc:
        missing_tool(str(exc))


@pytest.fixture(scope="module")
def built(buildah):
    """{image: local name} of every skaffold artifact, built (or found built) from these sources."""
    lines: list[str] = []
    try:
        return images.build_all(buildah, log=lines.append)
    except RuntimeError as exc:
        pytest.fail(f"{exc}\n" + "\n".join(lines))


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under a container's root with its type, size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_mode >> 12, st.st_size, st.st_mtime_ns)
        dirnames[:] = [d for d in dirnames if not os.path.ismount(Path(dirpath) / d)]
    return out


class Container:
    """A working container of one image, run by its own entrypoint with ``buildah run``."""

    def __init__(self, buildah: images.Buildah, image: str, workdir: Path) -> None:
        self.buildah, self.image = buildah, image
        self.config = buildah.config(image)
        self.name = f"wallet-test-{uuid.uuid4().hex[:10]}"
        buildah("from", "--pull=never", "--name", self.name, image)
        self.root = Path(buildah("mount", self.name))
        self.state = workdir / "state"
        self.state.mkdir(parents=True)
        os.chown(self.state, 10001, 10001)
        self.log = workdir / "container.log"
        self.proc: subprocess.Popen | None = None
        self.before: dict[str, tuple] = {}

    def start(self, env: dict[str, str]) -> Container:
        self.before = snapshot(self.root)
        args = ["run", "--isolation", "chroot", "--network", "host", "-v", f"{self.state}:/var/lib/wallet"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        command = self.buildah.command(*args, self.name, "--", *self.config["Entrypoint"])
        self.proc = subprocess.Popen(
            command,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def descendants(self) -> list[tuple[int, list[bytes]]]:
        """(pid, argv) of every process below ``buildah run``."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                todo += [int(c) for c in task.read_text().split()]
            try:
                found.append((pid, Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")))
            except OSError:
                continue
        return found[1:]

    def service_pids(self) -> list[int]:
        """PIDs of the interpreter running the image's console script."""
        script = f"/opt/wallet/bin/{self.config['Entrypoint'][-1]}".encode()
        return [pid for pid, argv in self.descendants() if script in argv]

    def uids(self, pid: int) -> list[int]:
        line = next(row for row in Path(f"/proc/{pid}/status").read_text().splitlines() if row.startswith("Uid:"))
        return [int(u) for u in line.split()[1:]]

    def stop(self) -> int | None:
        """SIGTERM to the entrypoint's first process, as a container runtime stops a container
        (buildah run itself would SIGKILL its command and orphan the service); the command's exit
        code. Whatever is still running after the grace period is killed by its PID, so no
        test leaves a process behind."""
        if self.proc is None:
            return None
        inside = self.descendants() if self.proc.poll() is None else []
        entry = self.config["Entrypoint"][0]
        first = [pid for pid, argv in inside if Path(argv[0].decode()).name == entry]
        if first:
            os.kill(first[0], signal.SIGTERM)
        elif self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            code = None
        for pid, argv in inside:  # the same process still (its command line), not a reused PID
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") == argv:
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # already gone
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return code

    def writes(self) -> list[str]:
        """Paths of the root filesystem created or changed since start, outside /tmp."""
        after = snapshot(self.root)
        # A directory counts when it is new; an existing one's mtime only says an entry below it
        # changed, and that entry is reported itself.
        changed = [
            p for p, v in after.items() if p not in self.before or (self.before[p] != v and v[0] != stat.S_IFDIR >> 12)
        ]
        return sorted(p for p in changed if not (p == "tmp" or p.startswith("tmp/")) and p not in RUNTIME_MOUNTS)

    def remove(self) -> None:
        self.buildah("rm", self.name, check=False)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def test_skaffold_lists_one_target_per_service_of_one_dockerfile():
    found = images.artifacts()
    assert sorted(a.image for a in found) == sorted(SCRIPT_OF_IMAGE)
    assert {a.dockerfile for a in found} == {REPO / "services" / "Dockerfile"}, "one multi-target Dockerfile"
    assert len({a.target for a in found}) == 3 and all(a.target for a in found)
    assert images.base_images(REPO / "services" / "Dockerfile") == {"debian:trixie-slim"}


def test_images_run_their_console_script_as_the_non_root_user(buildah, built):
    for image, name in built.items():
        config = buildah.config(name)
        assert config["Entrypoint"] == ["tini", "--", SCRIPT_OF_IMAGE[image]], image
        assert config["User"] == "10001:10001", image
        assert config["WorkingDir"] == "/var/lib/wallet", image
        assert "WALLET_STATE_DIR=/var/lib/wallet" in config["Env"] and "PYTHONDONTWRITEBYTECODE=1" in config["Env"]
        assert not config.get("Cmd"), "no CMD: arguments come from the chart"


def test_runtime_holds_debians_python_and_not_the_build_secret(buildah, built, tmp_path):
    """Debian's interpreter under the venv; no pip cache, no build secret, no build tools, and the CA
    store is Debian's own even though the build trusted the machine's bundle through a secret."""
    ctr = Container(buildah, built["wallet-api"], tmp_path)
    try:
        assert Path(ctr.root / "opt/wallet/bin/python3").resolve(strict=False).name.startswith("python3")
        out = subprocess.run(
            buildah.command(
                "run",
                "--isolation",
                "chroot",
                ctr.name,
                "--",
                "python3",
                "-c",
                "import sys, wallet_api.app as a; print(sys.version.split()[0], sys.prefix, a.OPENAPI.is_file())",
            ),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert out[0].startswith("3.13.") and out[1] == "/opt/wallet" and out[2] == "True", out
        assert not (ctr.root / "run/secrets/ca-bundle").exists()
        assert not (ctr.root / "src").exists(), "the build stage's sources stay in the build stage"
        assert not list((ctr.root / "usr/bin").glob("gcc*")) and not (ctr.root / "root/.cache/pip").exists()
        host = images.CA_BUNDLE.read_bytes() if images.CA_BUNDLE.is_file() else None
        bundle = ctr.root / "etc/ssl/certs/ca-certificates.crt"
        assert bundle.is_file(), "ca-certificates: TLS to a broker with a public certificate works"
        if host is not None and host != bundle.read_bytes():
            assert not any(p.is_file() and p.read_bytes() == host for p in (ctr.root / "etc/ssl").rglob("*"))
    finally:
        ctr.remove()


def test_seed_flow_through_the_three_containers(buildah, built, broker, tmp_path):
    """The README's curl commands against the API container, with both processor containers
    running: 202, then the balance and flag; /openapi.json and .yaml answer from the installed
    package; every service runs as uid 10001 and writes nothing outside its volume and /tmp."""
    ports = {"wallet-api": free_port(), "wallet-balance": free_port(), "wallet-above-threshold": free_port()}
    # The API's probes are on its operations port; a processor serves them on its only port.
    ops_ports = {**ports, "wallet-api": free_port()}
    containers: dict[str, Container] = {}
    try:
        for image in ("wallet-balance", "wallet-above-threshold", "wallet-api"):
            ctr = containers[image] = Container(buildah, built[image], tmp_path / image)
            ctr.start(
                {
                    "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                    "WALLET_HTTP_PORT": str(ports[image]),
                    "WALLET_OPS_PORT": str(ops_ports[image]),
                    "WALLET_HTTP_HOST": "127.0.0.1",
                    "WALLET_PARTITIONS": "4",
                    "WALLET_LOG_LEVEL": "info",
                }
            )
        for image, ctr in containers.items():

            def ready(ctr=ctr, port=ops_ports[image]):
                if ctr.proc.poll() is not None:
                    raise AssertionError(f"{ctr.image} exited {ctr.proc.returncode}:\n{ctr.tail()}")
                try:
                    return http_get(f"http://127.0.0.1:{port}/readyz", timeout=1)[0] == 200 or ctr.tail(3)
                except OSError as exc:  # not listening yet
                    return f"{exc}; {ctr.tail(3)}"

            wait_for(ready, 120, f"{image} ready")

        api = ports["wallet-api"]
        # The README's seed deposit, then one that takes the wallet over the threshold.
        for amount in (8000, 4000):
            status, body, _ = post_deposit(api, {"WalletID": "walletID001", "Amount": amount})
            assert status == 202, body

        def shown():
            code, raw = http_get(f"http://127.0.0.1:{api}/details/walletID001", timeout=2)
            return raw == b'{"WalletID":"walletID001","Balance":12000,"AboveThreshold":true}' or (code, raw)

        wait_for(shown, 60, "the deposits in /details")

        for path in ("/openapi.json", "/openapi.yaml"):
            code, raw = http_get(f"http://127.0.0.1:{api}{path}", timeout=5)
            assert code == 200, (path, code, raw[:300])
        assert json.loads(http_get(f"http://127.0.0.1:{api}/openapi.json")[1])["paths"]["/deposit"]

        for image, ctr in containers.items():
            pids = ctr.service_pids()
            assert pids, f"no {image} process found under buildah run"
            for pid in pids:
                assert ctr.uids(pid) == [10001] * 4, f"{image} pid {pid} runs as {ctr.uids(pid)}"
            assert any(ctr.state.rglob("*")), f"{image} wrote nothing to its state volume"
    finally:
        codes = {image: ctr.stop() for image, ctr in containers.items()}
        written = {image: ctr.writes() for image, ctr in containers.items()}
        tails = {image: ctr.tail() for image, ctr in containers.items()}
        for ctr in containers.values():
            ctr.remove()
    assert all(not w for w in written.values()), f"writes outside the state volume and /tmp: {written}"
    assert all(code == 0 for code in codes.values()), f"exit codes after SIGTERM: {codes}\n{tails}"


def test_the_venv_holds_exactly_the_hash_locked_dependencies(buildah, built, tmp_path):
    """What services/Dockerfile installed with --require-hashes is requirements/image.txt, all of it
    and nothing more: every distribution in /opt/wallet is a locked one at its locked version (plus
    the service itself and the venv's pip), `pip check` finds nothing missing, and the build
    backend (setuptools, requirements/image-build.txt) stayed in the build stage."""
    locked = {}
    for line in (REPO / "requirements" / "image.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith(("#", "--")):
            name, _, version = line.split(" ")[0].partition("==")
            locked[name.lower().replace("_", "-").replace(".", "-")] = version
    assert locked, "requirements/image.txt pins nothing"
    ctr = Container(buildah, built["wallet-api"], tmp_path)
    try:
        listing = subprocess.run(
            buildah.command(
                "run",
                "--isolation",
                "chroot",
                ctr.name,
                "--",
                "/opt/wallet/bin/python",
                "-c",
                "import importlib.metadata as m, json, re; print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower():"
                " d.version for d in m.distributions()}))",
            ),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        check = subprocess.run(
            buildah.command(
                "run", "--isolation", "chroot", ctr.name, "--", "/opt/wallet/bin/python", "-m", "pip", "check"
            ),
            capture_output=True,
            text=True,
        )
    finally:
        ctr.remove()
    installed = json.loads(listing)
    import tomllib

    assert installed.pop("wallet-service") == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    installed.pop("pip", None)
    assert installed == locked, {
        n: (installed.get(n), locked.get(n)) for n in set(installed) | set(locked) if installed.get(n) != locked.get(n)
    }
    assert "setuptools" not in installed, "the build backend stays in the build stage"
    assert check.returncode == 0, check.stdout + check.stderr
