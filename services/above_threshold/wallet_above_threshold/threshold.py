"""The threshold rule, pure: no Kafka, no storage.

For a deposit at time t its window is (t - window, t]. A wallet is flagged when, for
any of its deposits, the sum of its deposits in that deposit's window is strictly
more than the threshold; once flagged it stays flagged.

The answer must not depend on arrival order. A deposit can only change the windows
of deposits at times [t, t + window), plus its own, so the state keeps every deposit
newer than ``newest - window - lateness``: any deposit that arrives at most
``lateness`` behind the newest one seen is evaluated exactly as if all had arrived
in time order. (Times are set by the API, so disorder is bounded by clock skew
between API replicas and produce delays; a deposit later than ``lateness`` is
evaluated against what is kept.) A flagged wallet needs no window any more, so its
state shrinks to the newest deposit.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field

from walletkit.wallet.money import SCALE

MICROS = 1_000_000


@dataclass(frozen=True, slots=True)
class Rule:
    """Threshold (micro-units, strictly exceeded), window and lateness (microseconds)."""

    threshold: int = 10_000 * SCALE
    window: int = 120 * MICROS
    lateness: int = 60 * MICROS

    def __post_init__(self) -> None:
        if self.threshold < 0 or self.window <= 0 or self.lateness < 0:
            raise ValueError("threshold >= 0, window > 0 and lateness >= 0 are required")


@dataclass(order=True, slots=True)
class Entry:
    """One deposit kept in the window state, ordered by (time, offset)."""

    at: int
    offset: int
    amount: int = field(compare=False)
    #: Sum of the wallet's deposits in (at - window, at].
    cumulative: int = field(default=0, compare=False)
    #: Opaque to the rule: the table codec caches this entry's encoding here.
    wire: tuple | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class WindowState:
    """A wallet's deposits within the look-back horizon, and its sticky flag."""

    entries: list[Entry] = field(default_factory=list)
    flagged: bool = False
    #: Input offset of the last deposit applied (see the stream toolkit).
    applied_offset: int = -1
    wallet_id: str = ""
    #: Keyed deposits within the idempotency horizon (bookkeeping of the processor;
    #: the rule does not look at it).
    recent: list = field(default_factory=list)

    def add(self, entry: Entry, rule: Rule) -> bool:
        """Apply one deposit; return True if it flagged the wallet now."""
        entries = self.entries
        if self.flagged:
            if not entries or entry > entries[-1]:
                entry.cumulative = entry.amount
                self.entries = [entry]
            return False
        if not entries or entries[-1].at < entry.at or (entries[-1].at == entry.at and entries[-1].offset < entry.offset):
            return self._append(entry, rule)
        insort(entries, entry)
        times = [e.at for e in entries]
        # Its own window: every deposit in (at - window, at], equal times included.
        lo = bisect_right(times, entry.at - rule.window)
        hi = bisect_right(times, entry.at)
        own = sum(e.amount for e in entries[lo:hi])
        # Later windows that now include it: anchors in [at, at + window), other than itself
        # and the equal-time anchors that already counted it through `own`.
        for e in entries[bisect_left(times, entry.at):bisect_left(times, entry.at + rule.window)]:
            if e is entry or e.at == entry.at:
                e.cumulative = own
            else:
                e.cumulative += entry.amount
        flagged_now = any(e.cumulative > rule.threshold for e in entries[bisect_left(times, entry.at):])
        if flagged_now:
            self.flagged = True
            self._compact()
            return True
        horizon = entries[-1].at - rule.window - rule.lateness
        cut = bisect_right(times, horizon)
        if cut:
            del entries[:cut]
        return False

    def _append(self, entry: Entry, rule: Rule) -> bool:
        """``add`` for a deposit that sorts after every kept one (deposits arrive in time
        order almost always): the same result without sorting or building index lists."""
        entries = self.entries
        entries.append(entry)
        at = entry.at
        start = at - rule.window
        own = 0
        i = len(entries) - 1
        while i >= 0 and entries[i].at > start:  # its own window (at - window, at]
            own += entries[i].amount
            i -= 1
        i = len(entries) - 1
        while i >= 0 and entries[i].at == at:  # no later anchors: only itself and equal times
            entries[i].cumulative = own
            i -= 1
        if own > rule.threshold:
            self.flagged = True
            self._compact()
            return True
        horizon = at - rule.window - rule.lateness
        cut = 0
        while entries[cut].at <= horizon:  # stops at the latest entry at the latest
            cut += 1
        if cut:
            del entries[:cut]
        return False

    def _compact(self) -> None:
        if self.entries:
            self.entries = [self.entries[-1]]


def flagged_by_definition(deposits: list[tuple[int, int]], rule: Rule) -> bool:
    """The rule written as stated, O(n^2): the oracle the incremental state is tested against.

    ``deposits`` are (time in microseconds, amount in micro-units).
    """
    for t, _ in deposits:
        if sum(a for s, a in deposits if t - rule.window < s <= t) > rule.threshold:
            return True
    return False
