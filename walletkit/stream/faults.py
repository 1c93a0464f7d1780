"""Crash injection for fault tests: exit abruptly at named points of a batch.

Testing only. A real SIGKILL rarely lands in the few milliseconds between a
batch's changelog write and its commit; these points put a crash exactly there,
so the tests prove replays are harmless rather than hope they happened.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time

log = logging.getLogger(__name__)

#: Points of a processor batch where a crash can be injected.
#: after_changelog: the changelog acknowledged (in a transaction still open under
#: exactly-once); after_commit: the transaction committed, the store not yet written;
#: after_store: the store written, the input offsets not yet committed (applied-offsets
#: mode commits them later); pause_before_changelog: the process stops itself
#: (SIGSTOP) with the batch computed and nothing written, a zombie once its session expires.
POINTS = ("after_changelog", "after_commit", "after_store", "pause_before_changelog")
#: Knobs for the fence tests, not points: ``no_local_fence=1`` turns off the checkpoint's own
#: check of the group membership (so the broker's fence is seen alone); ``linger_after_pause=S``
#: waits S seconds after an injected pause ends, so the client's heartbeat learns first that the
#: member was removed (so the local fence is seen alone, where no broker fence exists).
KNOBS = ("no_local_fence", "linger_after_pause")
#: Exit code of an injected crash (tells it apart from real failures).
CRASH_EXIT_CODE = 86


class CrashInjector:
    """``spec`` like ``"after_changelog=0.05,after_store=0.05"``: probability per batch."""

    def __init__(self, spec: str, seed: int | None = None, trigger: str | None = None) -> None:
        #: A pause point fires only once this file exists, when one is given (the test
        #: chooses the moment: ``WALLET_FAULT_TRIGGER``).
        self.trigger = trigger
        self.odds: dict[str, float] = {}
        knobs: dict[str, float] = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            point, _, odds = item.partition("=")
            if point in KNOBS:
                knobs[point] = float(odds or 1)
                continue
            if point not in POINTS:
                raise ValueError(f"unknown crash point {point!r}; known: {', '.join(POINTS + KNOBS)}")
            self.odds[point] = float(odds or 1)
        #: The checkpoint checks the group membership itself (False: the broker's fence alone).
        self.local_fence = not knobs.get("no_local_fence")
        self.linger_after_pause = knobs.get("linger_after_pause", 0.0)
        if knobs:
            log.warning("FENCE TEST KNOBS ENABLED (testing only): %s", knobs)
        self._rng = random.Random(seed)
        if self.odds:
            log.warning("CRASH INJECTION ENABLED (testing only): %s", self.odds)

    def maybe_crash(self, point: str) -> None:
        odds = self.odds.get(point)
        if odds and self._rng.random() < odds:
            if point.startswith("pause_"):
                if self.trigger and not os.path.exists(self.trigger):
                    return
                # Once: the test sends SIGCONT and the batch goes on as a zombie's would.
                self.odds.pop(point)
                log.warning("injected pause at %s (SIGSTOP)", point)
                os.kill(os.getpid(), signal.SIGSTOP)
                log.warning("resumed after the injected pause at %s", point)
                if self.linger_after_pause:
                    time.sleep(self.linger_after_pause)
                return
            log.warning("injected crash at %s", point)
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)
