"""What is running: the version, the commit it was built from, Python and librdkafka.

Shown by ``--version`` on every console script, in each service's start-up log line and as
the ``wallet_build_info`` gauge (value 1, the facts as labels), so a dashboard or an
operator paged at night can tell which build answers.

The commit comes from ``WALLET_BUILD_COMMIT`` (set in the images at build time), else from
the git checkout the code runs from, else ``unknown``.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from prometheus_client import Gauge

#: The distribution the services are installed from (pyproject.toml).
DISTRIBUTION = "wallet-service"


@functools.cache
def build_info() -> dict[str, str]:
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = "unknown"
    import confluent_kafka

    client = confluent_kafka.version()
    return {
        "version": version,
        "commit": _commit(),
        "python": platform.python_version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "confluent_kafka": client[0] if isinstance(client, tuple) else str(client),
    }


def _commit() -> str:
    commit = os.environ.get("WALLET_BUILD_COMMIT", "").strip()
    if commit:
        return commit[:12]
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
            )
            if out.returncode == 0 and out.stdout.strip():
                dirty = subprocess.run(
                    ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.strip()
                return out.stdout.strip() + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return "unknown"


def version_text(prog: str) -> str:
    """The ``--version`` line."""
    b = build_info()
    return (
        f"{prog} {b['version']} (commit {b['commit']}; Python {b['python']}, librdkafka {b['librdkafka']}, "
        f"confluent-kafka {b['confluent_kafka']})"
    )


def add_version_flag(parser) -> None:
    """``--version``: print what is running and exit (before any other flag is checked)."""
    import argparse

    class _Version(argparse.Action):
        def __init__(self, option_strings, dest, **kwargs):
            super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

        def __call__(self, parser, namespace, values, option_string=None):
            print(version_text(parser.prog), flush=True)  # on stdout, as argparse's own version action does
            parser.exit()

    parser.add_argument("--version", action=_Version, help="print the version, commit, Python and librdkafka; exit")


BUILD_INFO = Gauge(
    "wallet_build_info",
    "What is running: version, commit, Python and librdkafka (always 1).",
    ["service", "version", "commit", "python", "librdkafka"],
)


def register_build_info(service: str) -> None:
    """``wallet_build_info{service,version,commit,python,librdkafka} 1`` in the default registry."""
    b = build_info()
    BUILD_INFO.labels(service, b["version"], b["commit"], b["python"], b["librdkafka"]).set(1)
