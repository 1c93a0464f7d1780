"""The one multi-target Dockerfile builds what the chart runs: each service's target runs its
console script under tini, as the numeric non-root user the chart expects, from sources that exist
and that .dockerignore keeps. (tests/images builds and runs the images themselves.)"""

from __future__ import annotations

import re

import pytest
from chart_support import (
    RELEASE,
    REPO,
    SERVICES,
    DockerIgnore,
    containers,
    copy_sources,
    parse_dockerfile,
    pyproject,
    render_scenario,
    repo_files,
)

from walletkit.devstack.images import artifacts

DOCKERFILE = REPO / "services" / "Dockerfile"
# Chart component name and values key of each service directory.
COMPONENTS = {
    "api": ("Deployment", "api"),
    "balance": ("StatefulSet", "balance"),
    "above_threshold": ("StatefulSet", "above-threshold"),
}
# skaffold.yaml's artifact of each service: its image is the chart's wallet-<component>.
TARGETS = {a.image.removeprefix("wallet-").replace("-", "_"): a.target for a in artifacts()}


def dockerfile(service: str | None = None):
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    return parse_dockerfile(DOCKERFILE)


def stages(instructions):
    """Instructions grouped by build stage: [(FROM args, [instructions])]."""
    out = []
    for ins in instructions:
        if ins.keyword == "FROM":
            out.append((ins.args, []))
        elif out:
            out[-1][1].append(ins)
    return out


def final_stage(service: str):
    """The instructions that make the service's image: its target stage after the stages it is
    built FROM, parents first (a later ENTRYPOINT or USER overrides an earlier one)."""
    by_name = {
        args.split()[-1]: (args.split()[0], body)
        for args, body in stages(dockerfile())
        if len(args.split()) == 3 and args.split()[1].upper() == "AS"
    }
    chain, name = [], TARGETS[service]
    while name in by_name:
        base, body = by_name[name]
        chain.insert(0, body)
        name = base
    assert chain, f"no stage {TARGETS[service]} in {DOCKERFILE}"
    return [ins for body in chain for ins in body]


def last(instructions, keyword):
    found = [i for i in instructions if i.keyword == keyword]
    assert found, f"no {keyword}"
    return found[-1]


def test_skaffold_builds_one_target_per_service_from_the_one_dockerfile():
    assert set(TARGETS) == set(SERVICES), TARGETS
    assert {a.dockerfile for a in artifacts()} == {DOCKERFILE}
    names = {args.split()[-1] for args, _ in stages(dockerfile()) if " AS " in f" {args.upper()} "}
    assert set(TARGETS.values()) <= names, f"targets {TARGETS} vs stages {names}"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_entrypoint_is_the_services_console_script_under_tini(service):
    scripts = pyproject()["project"]["scripts"]
    runtime = final_stage(service)
    entrypoint = last(runtime, "ENTRYPOINT").json_args()
    assert entrypoint, "exec form (JSON) so tini is PID 1 and no shell swallows SIGTERM"
    assert entrypoint[:2] == ["tini", "--"], "tini forwards SIGTERM to the service and reaps zombies"
    assert entrypoint[2:] == [SERVICES[service]], f"{service} must run its own script, got {entrypoint}"
    assert SERVICES[service] in scripts, f"{SERVICES[service]} is not a console script in pyproject.toml"
    assert not [i for i in runtime if i.keyword == "CMD"], "no CMD: arguments come from the chart"
    assert any("tini" in i.args and "apt-get install" in i.args for i in runtime if i.keyword == "RUN")


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_chart_runs_exactly_the_images_entrypoint(service):
    entrypoint = last(final_stage(service), "ENTRYPOINT").json_args()
    kind, component = COMPONENTS[service]
    container = containers(render_scenario("defaults").one(kind, f"{RELEASE}-{component}"))[0]
    assert container["command"] == entrypoint, "chart and image disagree on what runs"
    # Every port the chart names (the API: public and operations) is one the image says it serves.
    ports = sorted(str(p["containerPort"]) for p in container["ports"])
    exposed = sorted(last(final_stage(service), "EXPOSE").args.split())
    assert exposed == ports, f"EXPOSE {exposed} but the chart serves {ports}"


def test_the_api_images_healthcheck_probes_the_operations_port():
    """/healthz is served only on WALLET_OPS_PORT: the image's own check must look there."""
    check = last(final_stage("api"), "HEALTHCHECK").args
    assert "/healthz" in check and "WALLET_OPS_PORT" in check and "'8090'" in check, check
    ops = next(
        p
        for p in containers(render_scenario("defaults").one("Deployment", f"{RELEASE}-api"))[0]["ports"]
        if p["name"] == "ops"
    )
    assert ops["containerPort"] == 8090


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_runs_as_the_numeric_non_root_user_the_chart_expects(service):
    user = last(final_stage(service), "USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {user!r} must be a numeric non-root uid (runAsNonRoot checks numbers)"
    assert not gid or gid.isdigit(), f"USER group {gid!r} must be numeric"
    kind, component = COMPONENTS[service]
    doc = render_scenario("defaults").one(kind, f"{RELEASE}-{component}")
    psc = doc["spec"]["template"]["spec"]["securityContext"]
    assert psc["runAsUser"] == int(uid) and (not gid or psc["runAsGroup"] == int(gid))


def test_every_stage_starts_from_one_pinned_debian_slim_base():
    """Build and runtime stages share one base (the venv built in one runs on the other's Debian
    Python), a slim Debian suite named by release, not by a moving tag such as stable or latest."""
    instructions = dockerfile()
    named, bases = set(), set()
    for args, _ in stages(instructions):
        image, *rest = args.split()
        if image not in named:
            bases.add(image)
        if rest:
            named.add(rest[-1])
    assert len(bases) == 1, f"one base for every stage, not {bases}"
    assert re.fullmatch(r"debian:(bookworm|trixie|forky)-slim", bases.pop()), "a slim Debian suite named by release"
    assert len(stages(instructions)) >= 3, "multi-stage: build tools stay out of the runtime image"


def pip_commands():
    """Every pip install/wheel command of the Dockerfile's RUN instructions, one string each."""
    found = []
    for ins in dockerfile():
        if ins.keyword == "RUN":
            found += [
                part.strip()
                for part in re.split(r"&&|;", ins.args)
                if re.search(r"\bpip (install|wheel|download)\b", part)
            ]
    return found


def test_everything_fetched_is_hash_locked_and_the_rest_is_offline():
    """Each pip command either installs a hash-locked requirements file without resolving anything
    (--require-hashes --no-deps, wheels only) or reaches no index at all (--no-index)."""
    commands = pip_commands()
    locked = [c for c in commands if "--require-hashes" in c]
    assert {re.search(r"-r (\S+)", c).group(1) for c in locked} == {
        "requirements/image.txt",
        "requirements/image-build.txt",
    }, commands
    for command in commands:
        assert "[dev]" not in command and "-e " not in command, "the dev extra never enters an image"
        assert "--no-deps" in command, f"pip resolves dependencies beyond the lock: {command}"
        if "--require-hashes" in command:
            assert "--only-binary :all:" in command, f"an sdist would build (and fetch a backend): {command}"
            assert re.search(r"-r requirements/image(-build)?\.txt$", command), command
        else:
            assert "--no-index" in command, f"pip may fetch something unhashed: {command}"
    wheel = next(c for c in commands if " wheel " in c)
    assert "--no-build-isolation" in wheel, "build isolation would fetch setuptools unhashed"
    runtime = next(c for c in commands if c.startswith("/opt/wallet/bin/pip install") and "--no-index" in c)
    assert runtime.endswith(".whl"), "the runtime venv gets the built wheel, not the build backend"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_writable_paths_are_only_the_state_volume_and_tmp(service):
    runtime = final_stage(service)
    env = " ".join(i.args for i in runtime if i.keyword == "ENV")
    assert "WALLET_STATE_DIR=/var/lib/wallet" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "no .pyc writes into a read-only root filesystem"
    kind, component = COMPONENTS[service]
    container = containers(render_scenario("defaults").one(kind, f"{RELEASE}-{component}"))[0]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/var/lib/wallet", "/tmp"}
    workdir = last(runtime, "WORKDIR").args
    assert workdir in ("/var/lib/wallet", "/tmp"), f"WORKDIR {workdir} is not writable at run time"


def test_copy_sources_exist_and_survive_dockerignore():
    ignore_file = REPO / ".dockerignore"
    assert ignore_file.is_file()
    ignore = DockerIgnore(ignore_file.read_text())
    files = repo_files()
    checked = 0
    for service in ["one Dockerfile"]:
        for ins in dockerfile():
            if ins.keyword not in ("COPY", "ADD"):
                continue
            assert ins.keyword == "COPY", "ADD fetches and unpacks implicitly; use COPY"
            sources, _, flags = copy_sources(ins)
            if "from" in flags:
                continue  # from another stage, not the build context
            for source in sources:
                path = REPO / source
                assert path.exists(), f"services/Dockerfile:{ins.line} copies {source}, which does not exist"
                assert not ignore.excluded(source.rstrip("/")), f"{source} is excluded by .dockerignore"
                below = [f for f in files if f == source.rstrip("/") or f.startswith(source.rstrip("/") + "/")]
                assert below, f"{source} holds no files"
                lost = [
                    f
                    for f in below
                    if f.endswith((".py", ".pyi", ".proto", ".toml", ".txt"))
                    and ignore.excluded(f)
                    and "__pycache__" not in f
                ]
                assert not lost, f"COPY {source} needs files .dockerignore drops: {lost[:5]}"
                checked += 1
    assert checked >= 3


def test_copied_sources_hold_every_package_pyproject_installs():
    """`pip install .` in the image needs each package directory setuptools maps."""
    package_dirs = pyproject()["tool"]["setuptools"]["package-dir"]
    copied = set()
    for service in ["one Dockerfile"]:
        for ins in dockerfile():
            if ins.keyword == "COPY":
                sources, _, flags = copy_sources(ins)
                if "from" not in flags:
                    copied |= {s.rstrip("/") for s in sources}
    assert {"pyproject.toml", "requirements/image.txt", "requirements/image-build.txt"} <= copied
    for package, directory in package_dirs.items():
        assert any(directory == c or directory.startswith(c + "/") for c in copied), (
            f"package {package} ({directory}) is not copied into the build stage"
        )


def test_dockerignore_keeps_the_context_small():
    ignore = DockerIgnore((REPO / ".dockerignore").read_text())
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/chart/conftest.py",
        "charts/wallet/Chart.yaml",
        "walletkit/__pycache__/x.cpython-311.pyc",
        "services/Dockerfile",
        ".state/api/x",
        # the dev lock and the other requirements files: the image installs only its own lock
        "constraints.txt",
        "requirements/chart.txt",
        "requirements/lock-image.sh",
    ):
        assert ignore.excluded(path), f"{path} should not be sent to the builder"
    for path in (
        "pyproject.toml",
        "requirements/image.txt",
        "requirements/image-build.txt",
        "walletkit/__init__.py",
        "services/api/wallet_api/app.py",
    ):
        assert not ignore.excluded(path), f"{path} is needed by the build"


def test_dockerignore_matcher_follows_docker_semantics():
    """The matcher the checks above rely on: last rule wins, parents match, ! re-includes, ** spans."""
    ignore = DockerIgnore("*\n!keep/\nkeep/**/*.log\n!keep/important.log\n# comment\n")
    assert ignore.excluded("other.txt") and ignore.excluded("other/deep/file")
    assert not ignore.excluded("keep/a.py") and not ignore.excluded("keep/sub/b.py")
    assert ignore.excluded("keep/x.log") and ignore.excluded("keep/sub/y.log")
    assert not ignore.excluded("keep/important.log")
