"""Crash injection for fault tests: exit abruptly at named points of a batch.

Testing only. A real SIGKILL rarely lands in the few milliseconds between a
batch's changelog write and its commit; these points put a crash exactly there,
so the tests prove replays are harmless rather than hope they happened.
"""

from __future__ import annotations

import logging
import os
import random

log = logging.getLogger(__name__)

#: Points of a processor batch where a crash can be injected.
POINTS = ("after_changelog", "after_store")
#: Exit code of an injected crash (tells it apart from real failures).
CRASH_EXIT_CODE = 86


class CrashInjector:
    """``spec`` like ``"after_changelog=0.05,after_store=0.05"``: probability per batch."""

    def __init__(self, spec: str, seed: int | None = None) -> None:
        self.odds: dict[str, float] = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            point, _, odds = item.partition("=")
            if point not in POINTS:
                raise ValueError(f"unknown crash point {point!r}; known: {', '.join(POINTS)}")
            self.odds[point] = float(odds or 1)
        self._rng = random.Random(seed)
        if self.odds:
            log.warning("CRASH INJECTION ENABLED (testing only): %s", self.odds)

    def maybe_crash(self, point: str) -> None:
        odds = self.odds.get(point)
        if odds and self._rng.random() < odds:
            log.warning("injected crash at %s", point)
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)
