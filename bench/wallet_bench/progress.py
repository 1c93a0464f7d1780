"""Progress lines on stderr (the table goes to stdout)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.started = time.monotonic()
        self._last = 0.0

    def say(self, msg: str) -> None:
        if self.enabled:
            print(f"[bench {time.monotonic() - self.started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def tick(self, msg: str, every: float = 2.0) -> None:
        """Say ``msg`` at most once per ``every`` seconds."""
        now = time.monotonic()
        if now - self._last >= every:
            self._last = now
            self.say(msg)
