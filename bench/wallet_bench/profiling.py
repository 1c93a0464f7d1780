"""py-spy: sample a process, then summarize where its CPU went, as text.

``py-spy record --format raw`` writes collapsed stacks, one line per distinct
stack: ``frame;frame;... count``, each frame ``function (path:line)``. Idle
samples (threads blocked in librdkafka, RocksDB or a syscall without Python work)
are left out by py-spy, so percentages are of the process's busy samples.
"""

from __future__ import annotations

import collections
import re
import subprocess
from pathlib import Path

from wallet_bench.contenders import REPO, pyspy_binary

_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")


def attach(pid: int, out: Path, rate: int, log_path: Path, duration: float | None = None) -> subprocess.Popen:
    """Start py-spy sampling ``pid`` into ``out`` (until it exits, or for ``duration`` seconds)."""
    spy = pyspy_binary()
    if spy is None:
        raise RuntimeError("py-spy not found: pip install -r requirements/bench.txt into .venv/bench")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
    ]
    if duration is not None:
        cmd += ["--duration", str(max(int(duration), 1))]
    with open(log_path.with_suffix(".py-spy.log"), "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def _short(path: str) -> str:
    p = path.replace(str(REPO) + "/", "")
    for marker in ("site-packages/", "lib/python3."):
        if marker in p:
            p = p.split(marker, 1)[1]
            if marker.startswith("lib/"):
                p = "stdlib:" + p.split("/", 1)[1]
            break
    return p


def summarize(path: Path, top: int = 12) -> dict:
    """Top self-time lines and top inclusive functions (project code), as % of busy samples."""
    if not path.exists():
        return {"error": f"no profile at {path}"}
    self_lines: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        m = _FRAME.match(frames[-1])
        if m:
            self_lines[f"{m['func']} ({_short(m['path'])}:{m['line'] or '?'})"] += n
        else:
            self_lines[frames[-1]] += n
        seen = set()
        for f in frames:
            m = _FRAME.match(f)
            if not m:
                continue
            short = _short(m["path"])
            if not short.startswith(("walletkit/", "services/")):
                continue
            name = f"{m['func']} ({short})"
            if name not in seen:
                seen.add(name)
                inclusive[name] += n
    pct = lambda c: round(100 * c / max(total, 1), 1)  # noqa: E731
    return {
        "samples": total,
        "self": [(name, pct(c)) for name, c in self_lines.most_common(top)],
        "inclusive_project": [(name, pct(c)) for name, c in inclusive.most_common(top)],
        "file": str(path),
    }


def format_summary(title: str, summary: dict) -> str:
    if "error" in summary:
        return f"{title}: {summary['error']}"
    lines = [
        f"{title} ({summary['samples']} busy samples; {summary['file']})",
        "  self time (where the CPU was, by line):",
    ]
    lines += [f"    {pct:5.1f}%  {name}" for name, pct in summary["self"]]
    lines.append("  inclusive, project functions (time in them and what they call):")
    lines += [f"    {pct:5.1f}%  {name}" for name, pct in summary["inclusive_project"]]
    return "\n".join(lines)
