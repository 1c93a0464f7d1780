"""Process-wide tuning shared by every service entry point (and the benchmark's workers)."""

from __future__ import annotations

import faulthandler
import gc
import signal


def tune_gc() -> None:
    """Collect garbage cycles rarely.

    A service holds many long-lived objects (a processor's decoded table values, a
    view's buffers, aiohttp's machinery) and allocates many short-lived ones per
    record, almost none of them in cycles. With CPython's default thresholds
    (700, 10, 10) the collector kept walking the long-lived ones: raising them made
    the above_threshold processor ~14 % faster (``make bench``). Objects alive at
    start-up (modules, settings) are frozen out of collection altogether.
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def dump_stacks_on_signal(signum: int = signal.SIGUSR1) -> None:
    """On ``signum`` (``kill -USR1 <pid>``), print every thread's stack to stderr.

    For a process that is alive but stuck: the log then says where each thread waits,
    without stopping the process. Python's own format, not a JSON log line.
    """
    faulthandler.register(signum, all_threads=True, chain=False)


def prepare_process(service: str) -> None:
    """What every service does once, after start-up and before its work begins: say what
    runs (log line, ``wallet_build_info``), dump stacks on SIGUSR1, tune the collector."""
    import logging

    from walletkit.service.build import register_build_info, version_text

    logging.getLogger(__name__).info("%s", version_text(service))
    register_build_info(service)
    dump_stacks_on_signal()
    tune_gc()
