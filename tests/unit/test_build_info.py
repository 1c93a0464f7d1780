"""What is running, as every console script's ``--version`` and the ``wallet_build_info`` gauge say."""

from __future__ import annotations

import os
import re
import subprocess

import confluent_kafka
import pytest
from prometheus_client import REGISTRY

from walletkit.devstack.processes import console_script
from walletkit.service import build

SCRIPTS = ["wallet-api", "wallet-balance", "wallet-above-threshold", "wallet-operator", "walletctl", "wallet-stack"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_says_what_it_is_and_exits(script):
    env = {**os.environ, "WALLET_BUILD_COMMIT": "0123456789abcdef0123"}
    # No broker, no flags: --version answers before anything else is checked or started.
    run = subprocess.run([console_script(script), "--version"], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stderr
    m = re.fullmatch(
        rf"{re.escape(script)} (\S+) \(commit (\S+); Python (\S+), librdkafka (\S+), "
        r"confluent-kafka (\S+)\)\n",
        run.stdout,
    )
    assert m, run.stdout
    assert m.group(2) == "0123456789ab"  # the build's commit, shortened
    assert m.group(4) == confluent_kafka.libversion()[0]


def test_the_gauge_carries_the_same_facts():
    build.register_build_info("wallet-test")
    b = build.build_info()
    labels = {
        "service": "wallet-test",
        "version": b["version"],
        "commit": b["commit"],
        "python": b["python"],
        "librdkafka": b["librdkafka"],
    }
    assert REGISTRY.get_sample_value("wallet_build_info", labels) == 1
    assert b["version"] != "unknown"  # installed from pyproject.toml
