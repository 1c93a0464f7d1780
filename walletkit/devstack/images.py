"""The three service images, built and run without a Docker engine: buildah (Debian's package).

``python -m walletkit.devstack.images build`` (``make images``) builds every artifact that
skaffold.yaml lists, from services/Dockerfile, into buildah's local store; ``push`` or ``save``
hands them on (to a registry, or to ``kind load image-archive``). Where no image registry can be
reached, the Dockerfile's base (``debian:trixie-slim``) is made here from Debian's packages
first: debootstrap ``--variant=minbase``, trimmed the way Debian's slim images are (no docs, man
pages or locales), committed under the exact name the Dockerfile uses, and every build runs with
``--pull=never`` so nothing but that local base can be used.

buildah runs with chroot isolation and the overlay storage driver where the kernel mounts one
(else vfs, which needs nothing but is slower): neither needs a daemon, and ``buildah run`` then
shares the host's network, so a container reaches a broker on loopback. The machine's CA bundle is handed to the build as the secret ``ca-bundle``
(pip behind a TLS-intercepting proxy needs it): mounted for the RUN steps that ask for it, never
part of a layer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from walletkit.devstack.kafka import cache_root

REPO = Path(__file__).resolve().parents[2]
SKAFFOLD = REPO / "skaffold.yaml"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_MIRROR = os.environ.get("WALLET_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What Debian's slim images leave out (debuerreotype's --slim): dpkg never unpacks these paths.
SLIM_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""


class ImageToolMissing(RuntimeError):
    pass


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ImageToolMissing(f"building images needs {tool}: apt-get install -y {package}")
    return path


@dataclass(frozen=True)
class Artifact:
    """One image of skaffold.yaml's build.artifacts."""

    image: str
    dockerfile: Path
    target: str | None
    context: Path


def artifacts(skaffold: Path = SKAFFOLD) -> list[Artifact]:
    doc = yaml.safe_load(skaffold.read_text())
    out = []
    for a in doc["build"]["artifacts"]:
        context = (skaffold.parent / a.get("context", ".")).resolve()
        docker = a.get("docker", {})
        out.append(
            Artifact(a["image"], context / docker.get("dockerfile", "Dockerfile"), docker.get("target"), context)
        )
    return out


def base_images(dockerfile: Path) -> set[str]:
    """The external images the Dockerfile's FROM lines name, with ARG defaults substituted."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    bases: set[str] = set()
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "ARG" and "=" in words[1] and not stages:
            key, _, value = words[1].partition("=")
            args[key] = value
        elif words[0].upper() == "FROM":
            image = words[1]
            for key, value in args.items():
                image = image.replace(f"${{{key}}}", value).replace("$" + key, value)
            if image not in stages:
                bases.add(image)
            if len(words) >= 4 and words[2].upper() == "AS":
                stages.add(words[3])
    return bases


def qualified(image: str) -> str:
    """The name buildah stores a short Docker Hub name under (debian:trixie-slim -> docker.io/library/...)."""
    first = image.split("/")[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image if '/' in image else 'library/' + image}"


def storage_driver() -> str:
    """overlay where this process can mount one (root, a kernel with overlayfs), else vfs.

    Both need no daemon; vfs copies the whole root filesystem for every layer, which makes each
    build step seconds slower (a source change: about 25 s of builds with overlay, 110 s with
    vfs, measured here). WALLET_BUILDAH_DRIVER chooses one."""
    chosen = os.environ.get("WALLET_BUILDAH_DRIVER")
    if chosen:
        return chosen
    if os.geteuid() != 0 or not shutil.which("mount"):
        return "vfs"
    with tempfile.TemporaryDirectory(prefix="overlay-probe-") as tmp:
        dirs = {name: Path(tmp) / name for name in ("lower", "upper", "work", "merged")}
        for d in dirs.values():
            d.mkdir()
        options = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
        mounted = (
            subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", options, str(dirs["merged"])],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ).returncode
            == 0
        )
        if mounted:
            subprocess.run(["umount", str(dirs["merged"])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return "overlay" if mounted else "vfs"


class Buildah:
    """buildah with its store under the wallet cache (kept between runs; one per storage driver)
    and chroot isolation."""

    def __init__(self, root: Path | None = None, driver: str | None = None) -> None:
        self.binary = _need("buildah", "buildah")
        self.driver = driver or storage_driver()
        self.root = Path(root or cache_root() / "containers" / self.driver)
        self.global_args = [
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            self.driver,
        ]

    def command(self, *args: str) -> list[str]:
        return [self.binary, *self.global_args, *args]

    def __call__(self, *args: str, capture: bool = True, check: bool = True) -> str:
        proc = subprocess.run(
            self.command(*args),
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"buildah {' '.join(args[:3])} failed ({proc.returncode}):\n{(proc.stderr or '')[-3000:]}"
            )
        return (proc.stdout or "").strip()

    def exists(self, image: str) -> bool:
        return (
            subprocess.run(
                self.command("inspect", "--type", "image", image), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            ).returncode
            == 0
        )

    def config(self, image: str) -> dict:
        """The OCI image config (Entrypoint, User, Env, WorkingDir, ExposedPorts, Labels)."""
        return json.loads(self("inspect", "--type", "image", image))["OCIv1"]["config"]


def make_debian_base(buildah: Buildah, image: str, *, log=print) -> None:
    """Make ``debian:<suite>-slim`` from Debian's packages and commit it under that name."""
    name, _, tag = image.rpartition("/")[2].partition(":")
    suite = tag.removesuffix("-slim")
    if name != "debian" or not suite:
        raise RuntimeError(f"cannot make base image {image} here: only debian:<suite>[-slim] is made locally")
    debootstrap = _need("debootstrap", "debootstrap")
    work = Path(tempfile.mkdtemp(prefix="debian-base-", dir=buildah.root))
    rootfs = work / "rootfs"
    try:
        log(f"making {image} from Debian's packages (debootstrap --variant=minbase {suite}, about a minute)")
        # dpkg's excludes must be in place before the packages are unpacked.
        (rootfs / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True)
        (rootfs / "etc/dpkg/dpkg.cfg.d/docker-slim").write_text(SLIM_EXCLUDES)
        proc = subprocess.run(
            [debootstrap, "--variant=minbase", suite, str(rootfs), DEBIAN_MIRROR],
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"debootstrap {suite} failed:\n{proc.stdout[-3000:]}")
        _slim(rootfs, suite)
        ctr = buildah("from", "--pull=never", "scratch")
        try:
            buildah("copy", ctr, str(rootfs), "/")
            buildah(
                "config",
                "--cmd",
                "bash",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--label",
                f"org.opencontainers.image.description=debian:{tag} made locally by debootstrap "
                f"--variant=minbase {suite} from {DEBIAN_MIRROR}",
                ctr,
            )
            buildah("commit", "--rm", ctr, qualified(image))
        except BaseException:
            buildah("rm", ctr, check=False)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _slim(rootfs: Path, suite: str) -> None:
    """What Debian's container images do after debootstrap: their apt sources, apt kept clean."""
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(
        f"Types: deb\nURIs: {DEBIAN_MIRROR}\nSuites: {suite} {suite}-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {DEBIAN_MIRROR}-security\nSuites: {suite}-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };\n'
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n'
    )
    (rootfs / "etc/apt/apt.conf.d/docker-no-languages").write_text('Acquire::Languages "none";\n')
    for path in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / path).glob("*"):
            if entry.is_file():
                entry.unlink()
    for path in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        for entry in (rootfs / path).glob("*"):
            if entry.is_dir() and path == "usr/share/doc":
                for f in entry.iterdir():
                    if f.name != "copyright":
                        shutil.rmtree(f) if f.is_dir() else f.unlink()
            elif entry.name != "locale.alias":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def ensure_bases(buildah: Buildah, dockerfile: Path, *, pull: bool = False, log=print) -> None:
    """Every base the Dockerfile names in the local store: pulled when ``pull`` and a registry
    answers, else made from Debian's packages."""
    for image in sorted(base_images(dockerfile)):
        if buildah.exists(qualified(image)):
            continue
        if pull:
            try:
                subprocess.run(
                    buildah.command("pull", "--quiet", qualified(image)),
                    check=True,
                    timeout=120,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                log(f"pulled {image}")
                continue
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                log(f"cannot pull {image}; making it here instead")
        make_debian_base(buildah, image, log=log)


def tag_of(artifact: Artifact) -> str:
    """A tag from the build inputs (what skaffold's inputDigest does): same sources, same tag."""
    digest = hashlib.sha256()
    for path in [artifact.dockerfile, *context_files(artifact.context)]:
        digest.update(str(path.relative_to(artifact.context)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def context_files(context: Path) -> list[Path]:
    """The files the build receives: the context after its .dockerignore, as the builder sends it."""
    ignore_file = context / ".dockerignore"
    ignore = DockerIgnore(ignore_file.read_text() if ignore_file.is_file() else "")
    found = [ignore_file] if ignore_file.is_file() else []
    for dirpath, dirnames, filenames in os.walk(context):
        rel = Path(dirpath).relative_to(context)
        dirnames[:] = sorted(
            d for d in dirnames if not ignore.excluded(str(rel / d)) or ignore.may_include_below(str(rel / d))
        )
        found += [Path(dirpath) / f for f in sorted(filenames) if not ignore.excluded(str(rel / f))]
    return found


class DockerIgnore:
    """The build context filter with Docker's semantics: last matching rule wins, a rule that
    matches a parent directory matches everything below it, `!` re-includes, `**` spans dirs."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str], str]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line[1:].strip() if negate else line).lstrip("/")
            self.rules.append((negate, re.compile(self._translate(pattern)), line))

    @staticmethod
    def _translate(pattern: str) -> str:
        out, i = [], 0
        while i < len(pattern):
            c = pattern[i]
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            if c == "*":
                out.append("[^/]*")
            elif c == "?":
                out.append("[^/]")
            elif c == "[":
                end = pattern.find("]", i)
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]")
                i = end
            else:
                out.append(re.escape(c))
            i += 1
        return "^" + "".join(out) + "$"

    def may_include_below(self, directory: str) -> bool:
        """Whether a `!` rule could let back in something below an excluded directory."""
        prefix = directory.strip("/") + "/"
        return any(negate and raw.lstrip("!").strip().lstrip("/").startswith(prefix) for negate, _, raw in self.rules)

    def excluded(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for negate, regex, _ in self.rules:
            if any(regex.match(c) for c in candidates):
                result = not negate
        return result


def build(buildah: Buildah, artifact: Artifact, tag: str | None = None, *, pull: bool = False, log=print) -> str:
    """Build one artifact from its Dockerfile target, offline from the local base; its image name."""
    name = f"localhost/{artifact.image}:{tag or tag_of(artifact)}"
    if buildah.exists(name):
        log(f"{name}: already built from these sources")
        return name
    ensure_bases(buildah, artifact.dockerfile, pull=pull, log=log)
    args = [
        "bud",
        "--pull=never",
        "--layers",
        "--force-rm",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "-f",
        str(artifact.dockerfile),
        "-t",
        name,
    ]
    if artifact.target:
        args += ["--target", artifact.target]
    if CA_BUNDLE.is_file():
        args += ["--secret", f"id=ca-bundle,src={CA_BUNDLE}"]
    from walletkit.service.build import build_info

    args += ["--build-arg", f"WALLET_BUILD_COMMIT={build_info()['commit']}"]
    log(f"building {name} (target {artifact.target}) with buildah")
    buildah(*args, str(artifact.context), capture=log is not print)
    return name


# The stage that installs the dependencies: tagged too, so that pruning keeps its layers and a
# source change rebuilds only the layers after the dependencies (it is no target's ancestor).
CACHED_STAGE = "build"


def build_all(buildah: Buildah | None = None, *, pull: bool = False, log=print) -> dict[str, str]:
    buildah = buildah or Buildah()
    found = artifacts()
    first = found[0]
    cache = build(
        buildah,
        Artifact("wallet-build-stage", first.dockerfile, CACHED_STAGE, first.context),
        tag_of(first),
        pull=pull,
        log=log,
    )
    built = {a.image: build(buildah, a, pull=pull, log=log) for a in found}
    prune(buildah, keep={*built.values(), cache})
    return built


def prune(buildah: Buildah, keep: set[str]) -> None:
    """Remove the images of earlier sources (the same names, other tags) and the build layers only
    they used: with vfs every layer is a full copy, and each source change makes a new tag."""
    names = {name.rpartition(":")[0] for name in keep}
    listed = buildah("images", "--format", "{{.Name}}:{{.Tag}}").splitlines()
    stale = [image for image in listed if image.rpartition(":")[0] in names and image not in keep]
    # Working containers a failed or interrupted build left behind (buildah's default names).
    leftovers = [
        c
        for c in buildah("containers", "--format", "{{.ContainerName}}").splitlines()
        if c.endswith("-working-container") or "-working-container-" in c
    ]
    if leftovers:
        buildah("rm", *leftovers, check=False)
    if stale:
        buildah("rmi", *stale, check=False)
    buildah("rmi", "--prune", check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m walletkit.devstack.images", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the three images (skaffold.yaml's artifacts) into buildah's store")
    push = sub.add_parser("push", help="build, then push each image to REGISTRY/<image>:<tag>")
    push.add_argument("registry", help="e.g. registry.example.com/wallet")
    save = sub.add_parser("save", help="build, then write each image as a docker-archive (for kind load image-archive)")
    save.add_argument("directory", type=Path)
    p.add_argument(
        "--pull",
        action="store_true",
        help="pull a missing base image from its registry first (default: make it from Debian's packages)",
    )
    args = p.parse_args(argv)
    try:
        buildah = Buildah()
        built = build_all(buildah, pull=args.pull)
    except (ImageToolMissing, RuntimeError) as exc:
        print(exc, file=sys.stderr)
        return 1
    # The chart renders <registry>/<image>:<appVersion> unless told a tag: images go out under
    # that tag too, so `--set global.imageRegistry=REGISTRY` alone finds them; the content tag
    # pins exactly this build (the flags printed after a push).
    default_tag = chart_app_version()
    for image, name in built.items():
        content_tag = name.rpartition(":")[2]
        if args.command == "push":
            for target in push_targets(args.registry, image, content_tag, default_tag):
                buildah("push", name, f"docker://{target}", capture=False)
                print(f"pushed {target}")
        elif args.command == "save":
            args.directory.mkdir(parents=True, exist_ok=True)
            archive = args.directory / f"{image}.tar"
            archive.unlink(missing_ok=True)
            buildah("push", name, f"docker-archive:{archive}:{image}:{default_tag}", capture=False)
            print(f"wrote {archive} as {image}:{default_tag}  (kind load image-archive {archive} --name wallet)")
        else:
            print(name)
    if args.command == "push":
        values = chart_image_values()
        pins = " ".join(
            f"--set {values[image]}.image.tag={name.rpartition(':')[2]}"
            for image, name in built.items()
            if image in values
        )
        print(
            f"helm: --set global.imageRegistry={args.registry.rstrip('/')} (tag {default_tag}); to pin this "
            f"build: {pins}"
        )
    return 0


def push_targets(registry: str, image: str, content_tag: str, default_tag: str | None = None) -> list[str]:
    """Where ``push`` sends ``image``: under its content tag, and under the chart's default tag
    (its appVersion), which is what ``--set global.imageRegistry=<registry>`` alone renders."""
    tags = dict.fromkeys((content_tag, default_tag or chart_app_version()))
    return [f"{registry.rstrip('/')}/{image}:{tag}" for tag in tags]


def chart_image_values(helpers: Path = REPO / "charts" / "wallet" / "templates" / "_helpers.tpl") -> dict[str, str]:
    """Image name -> the chart's values block that sets its tag: the API's, and each processor's
    from the chart's own list of processors (``wallet.processors``), so a new one needs no entry here."""
    listed = re.search(r'define "wallet\.processors" -}}\n(.*?)\n{{- end', helpers.read_text(), re.S)
    if listed is None:
        raise RuntimeError(f"{helpers}: no wallet.processors list (the chart changed; update chart_image_values)")
    return {"wallet-api": "api", **{p["script"]: p["key"] for p in json.loads(listed.group(1))}}


def chart_app_version(chart: Path = REPO / "charts" / "wallet" / "Chart.yaml") -> str:
    """The chart's appVersion: the tag its templates give an image without one of its own."""
    for line in chart.read_text().splitlines():
        if line.startswith("appVersion:"):
            return line.split(":", 1)[1].strip().strip("\"'")
    raise RuntimeError(f"{chart} has no appVersion")


if __name__ == "__main__":
    sys.exit(main())


KAFKA_CONTEXT = REPO / "walletkit" / "devstack" / "kube" / "kafka"


def build_kafka(buildah: Buildah, *, log=print) -> str:
    """Apache Kafka's image for the local node: the pinned jars (kafka.pom.xml) on the services'
    Debian base, built the way theirs are (offline from the local base); its image name."""
    from walletkit.devstack.kafka import _LOG4J2, ensure_kafka

    libs = ensure_kafka(quiet=True)
    digest = hashlib.sha256(_LOG4J2.encode())
    for path in sorted(KAFKA_CONTEXT.iterdir()):
        if path.name != "kafka.yaml":
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for jar in sorted(libs.iterdir()):
        digest.update(f"{jar.name}\0{jar.stat().st_size}".encode())
    name = f"localhost/wallet-kafka:{digest.hexdigest()[:16]}"
    if buildah.exists(name):
        return name
    dockerfile = KAFKA_CONTEXT / "Dockerfile"
    ensure_bases(buildah, dockerfile, log=log)
    with tempfile.TemporaryDirectory(prefix="kafka-image-", dir=buildah.root) as tmp:
        context = Path(tmp)
        for f in ("Dockerfile", "kafka-node.sh"):
            shutil.copy2(KAFKA_CONTEXT / f, context / f)
        (context / "log4j2.yaml").write_text(_LOG4J2)
        shutil.copytree(libs, context / "libs")
        log(f"building {name} (Apache Kafka {libs.parent.name.split('-')[0]}) with buildah")
        buildah(
            "bud",
            "--pull=never",
            "--layers",
            "--force-rm",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "-f",
            str(context / "Dockerfile"),
            "-t",
            name,
            str(context),
            capture=log is not print,
        )
    return name


def archive(buildah: Buildah, name: str, ref: str, directory: Path) -> Path:
    """``name`` as a docker-archive under ``ref`` (what a node's ``ctr images import`` names it)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (ref.replace("/", "_").replace(":", "_") + ".tar")
    path.unlink(missing_ok=True)
    buildah("push", name, f"docker-archive:{path}:{ref}")
    return path
