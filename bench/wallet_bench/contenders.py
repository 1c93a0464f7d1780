"""Starting contender processes and timing them to the end of the input."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from wallet_bench.kafka_io import CommittedOffsets
from wallet_bench.machine import cpu_seconds, rss_mb
from wallet_bench.progress import Progress
from walletkit.devstack.processes import terminate

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "bench"
PROJECT_PYTHON = sys.executable
QUIX_PYTHON = REPO / ".venv" / "bench" / "bin" / "python"


def env(**extra: str) -> dict[str, str]:
    """Environment of a contender: this package and the repository's sources importable."""
    paths = [
        str(BENCH_DIR),
        str(REPO),
        str(REPO / "services" / "balance"),
        str(REPO / "services" / "above_threshold"),
        str(REPO / "services" / "api"),
    ]
    old = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths + ([old] if old else [])),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def worker_cmd(*args: str) -> list[str]:
    return [PROJECT_PYTHON, "-m", "wallet_bench.workers", *args]


def quix_available() -> str | None:
    """None if the Quix baseline can run, else why not."""
    if not QUIX_PYTHON.exists():
        return f"{QUIX_PYTHON} missing: python3 -m venv .venv/bench && .venv/bench/bin/pip install -r requirements/bench.txt"
    probe = subprocess.run([str(QUIX_PYTHON), "-c", "import quixstreams"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"quixstreams not importable in {QUIX_PYTHON}: {probe.stderr.strip().splitlines()[-1:]}"
    return None


GOKA_DIR = BENCH_DIR / "goka"


def go_binary() -> str | None:
    import shutil

    return shutil.which("go") or (str(Path("/usr/local/go/bin/go")) if Path("/usr/local/go/bin/go").exists() else None)


def goka_available() -> str | None:
    """None if the Goka peer can be built, else why not."""
    if go_binary() is None:
        return "go not found: the Goka peer (bench/goka) is built with the Go toolchain (1.26 or newer)"
    return None


def go_build(source: Path, work: Path, name: str, what: str, progress: Progress) -> Path:
    """``go build`` the Go program in ``source`` into ``work/bin/name``; modules from the Go module proxy."""
    out = work / "bin" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    progress.say(f"building {what} ({source.relative_to(REPO)}, go build)")
    started = time.monotonic()
    result = subprocess.run(
        [go_binary(), "build", "-o", str(out), "."], cwd=source, capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        raise RuntimeError(f"go build of {source.relative_to(REPO)} failed:\n{result.stdout}{result.stderr}")
    progress.say(f"{what} built in {time.monotonic() - started:.0f}s")
    return out


def build_goka(work: Path, progress: Progress) -> Path:
    """The Goka peer (bench/goka)."""
    return go_build(GOKA_DIR, work, "goka-peer", "the Goka peer", progress)


def build_openloop(work: Path, progress: Progress) -> Path:
    """The open-loop HTTP load generator (bench/openloop, the standard library only)."""
    return go_build(BENCH_DIR / "openloop", work, "openloop", "the open-loop load generator", progress)


KSTREAMS_DIR = BENCH_DIR / "kstreams"


def kstreams_available() -> str | None:
    """None if the Kafka Streams peer can be built (Java and Maven), else why not."""
    import shutil

    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not found: the Kafka Streams peer (bench/kstreams) needs them" if missing else None


def build_kstreams(work: Path, progress: Progress) -> list[str]:
    """``mvn package`` the Kafka Streams peer into ``work`` (its jars come from Maven Central);
    the command that runs it, without its arguments."""
    out = work / "kstreams"
    progress.say("processors: building the Kafka Streams peer (bench/kstreams, mvn package)")
    started = time.monotonic()
    result = subprocess.run(
        ["mvn", "-B", "-q", "-f", str(KSTREAMS_DIR / "pom.xml"), "package", f"-Dkstreams.build.dir={out}"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mvn package of bench/kstreams failed:\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
    progress.say(f"processors: Kafka Streams peer built in {time.monotonic() - started:.0f}s")
    return ["java", "-Xmx1g", "-cp", f"{out / 'classes'}:{out / 'lib'}/*", "wallet.bench.WalletStreams"]


def pyspy_binary() -> str | None:
    for candidate in (REPO / ".venv" / "bench" / "bin" / "py-spy", Path(sys.executable).parent / "py-spy"):
        if candidate.exists():
            return str(candidate)
    import shutil

    return shutil.which("py-spy")


@dataclass
class Throughput:
    name: str
    records: int
    wall_seconds: float  # launch -> all committed (includes start-up and the group join)
    steady_seconds: float  # first commit -> all committed
    steady_records: int  # records committed in the steady span
    cpu_seconds: float  # the process's CPU in the steady span
    total_cpu_seconds: float  # the process's CPU from launch (start-up included)
    peak_rss_mb: float
    #: (seconds since launch, records committed), every TIMELINE_STEP seconds: the plots' data.
    timeline: list[tuple[float, int]] = field(default_factory=list)

    @property
    def steady(self) -> bool:
        """Whether there was a steady span (more than one commit); tiny inputs have none."""
        return self.steady_records > 0 and self.steady_seconds > 0

    @property
    def rate(self) -> float:
        if not self.steady:
            return self.records / max(self.wall_seconds, 1e-3)
        return self.steady_records / self.steady_seconds

    @property
    def rate_per_cpu(self) -> float:
        if not self.steady:
            return self.records / max(self.total_cpu_seconds, 1e-3)
        return self.steady_records / max(self.cpu_seconds, 1e-3)


#: Seconds between two points of a contender's timeline.
TIMELINE_STEP = 0.25


def time_to_end(
    name: str,
    cmd: list[str],
    bootstrap: str,
    group: str,
    topic: str,
    ends: list[int],
    progress: Progress,
    log_path: Path,
    timeout: float,
    poll: float = 0.05,
    profile_to: Path | None = None,
    profile_rate: int = 100,
) -> Throughput:
    """Run ``cmd`` until ``group``'s committed offsets on ``topic`` equal ``ends``; then SIGTERM it.

    With ``profile_to``, py-spy samples the process from launch to exit into that file.
    """
    total = sum(ends)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        launched = time.monotonic()
        proc = subprocess.Popen(cmd, env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    spy = None
    if profile_to is not None:
        from wallet_bench import profiling

        spy = profiling.attach(proc.pid, profile_to, profile_rate, log_path)
    offsets = CommittedOffsets(bootstrap, group, topic, len(ends))
    first_t = first_cpu = None
    first_n = 0
    timeline: list[tuple[float, int]] = []
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {log_path}")
            done = offsets.read()
            now = time.monotonic()
            n = sum(min(d, e) for d, e in zip(done, ends))
            if not timeline or now - launched - timeline[-1][0] >= TIMELINE_STEP or n == total:
                timeline.append((round(now - launched, 3), n))
            if n and first_t is None:
                first_t, first_n, first_cpu = now, n, cpu_seconds(proc.pid)
            if done == ends or all(d >= e for d, e in zip(done, ends)):
                end_cpu = cpu_seconds(proc.pid)
                _, peak = rss_mb(proc.pid)
                break
            if now - launched > timeout:
                raise TimeoutError(f"{name}: {n:,}/{total:,} records after {timeout:.0f}s; see {log_path}")
            progress.tick(f"{name}: {n:,}/{total:,} committed ({100 * n / max(total, 1):.0f}%)")
            time.sleep(poll)
        progress.say(
            f"{name}: all {total:,} records committed in {now - launched:.1f}s "
            f"({(total - first_n) / max(now - first_t, 1e-3):,.0f} records/s after the first commit, "
            f"{cpu_seconds(proc.pid):.1f} CPU-s)"
        )
        return Throughput(
            name, total, now - launched, now - first_t, total - first_n, end_cpu - first_cpu, end_cpu, peak, timeline
        )
    finally:
        offsets.close()
        stop(proc)
        if spy is not None:
            stop(spy, 10, wait_first=30)


def stop(proc: subprocess.Popen, timeout: float = 20.0, wait_first: float = 0.0) -> None:
    if wait_first:
        try:
            proc.wait(wait_first)
        except subprocess.TimeoutExpired:
            pass
    terminate(proc, timeout)
