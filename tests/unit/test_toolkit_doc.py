"""docs/toolkit.md's code runs as written: its Python blocks, in order, as one module (the
worked example's group, its tester session with a crash and a restart, the Kafka runner)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "toolkit.md"


def test_the_worked_example_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 3, "docs/toolkit.md lost its code blocks"
    namespace: dict = {"__name__": "toolkit_doc"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC}:block{i + 1}", "exec"), namespace)  # the blocks assert what they show
    assert callable(namespace["stats_group"]) and callable(namespace["run_stats"])
    assert namespace["stats_group"]().outputs.keys() == {"large-deposits"}
