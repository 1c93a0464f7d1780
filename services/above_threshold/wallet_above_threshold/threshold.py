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

A state is bounded: once it keeps more than ``MAX_ENTRIES`` deposits it is coalesced
to a coarser time resolution (10 ms, then 100 ms, then whole seconds, the Go
reference's own resolution, where the default 180 s horizon holds at most 181 entries;
a configured horizon longer than 1,024 s goes on to 10 s and a minute), and
new deposits are floored to it, merging deposits of the same instant (which is exact:
they share every window). Near a window's edge a coarsened wallet is judged to within
that resolution. It returns to exact times once it keeps few deposits again. So a
wallet sending thousands of deposits a minute neither outgrows a Kafka record nor
makes each of its deposits cost more than ``MAX_ENTRIES`` steps.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field

from walletkit.wallet.money import SCALE

MICROS = 1_000_000
#: Deposits a wallet's state keeps at exact times at most (~85 bytes each, plus the wallet id).
MAX_ENTRIES = 1024
#: Time resolutions (microseconds) a crowded state is coalesced to, in turn.
RESOLUTIONS = (1, 10_000, 100_000, 1_000_000, 10_000_000, 60_000_000)


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
    #: Time resolution of new entries, microseconds (1: exact); see the module doc.
    resolution: int = 1
    #: Quarantine notes (bookkeeping of the processor, in side entries), and the newest
    #: offset whose note was dropped (-1: none).
    quarantine: list = field(default_factory=list)
    quarantine_forgotten: int = -1

    def add(self, entry: Entry, rule: Rule) -> bool:
        """Apply one deposit; return True if it flagged the wallet now."""
        entries = self.entries
        if self.flagged:
            if not entries or entry > entries[-1]:
                entry.cumulative = entry.amount
                self.entries = [entry]
            return False
        flagged_now = self._add_coarse(entry, rule) if self.resolution > 1 else self._add_exact(entry, rule)
        if self.flagged:
            return flagged_now
        if len(self.entries) > MAX_ENTRIES:
            self._coarsen()
            if self._recompute(rule):
                self.flagged = True
                self._compact()
                return True
        elif self.resolution > 1 and len(self.entries) <= MAX_ENTRIES // 8:
            self.resolution = 1  # few deposits again: new ones are exact
        return flagged_now

    def _coarsen(self) -> None:
        """Coalesce the entries to the next resolutions until they fit ``MAX_ENTRIES``."""
        while len(self.entries) > MAX_ENTRIES and self.resolution < RESOLUTIONS[-1]:
            self.resolution = next(r for r in RESOLUTIONS if r > self.resolution)
            merged: list[Entry] = []
            for e in self.entries:
                at = e.at - e.at % self.resolution
                if merged and merged[-1].at == at:
                    last = merged[-1]
                    last.amount += e.amount
                    last.offset = max(last.offset, e.offset)
                else:
                    merged.append(Entry(at=at, offset=e.offset, amount=e.amount))
            self.entries = merged

    def _recompute(self, rule: Rule) -> bool:
        """Every entry's window sum again (two pointers, O(n)); True if one exceeds the threshold."""
        entries = self.entries
        n, lo, hi, total = len(entries), 0, 0, 0
        for e in entries:
            while hi < n and entries[hi].at <= e.at:
                total += entries[hi].amount
                hi += 1
            while entries[lo].at <= e.at - rule.window:
                total -= entries[lo].amount
                lo += 1
            e.cumulative = total
        return any(e.cumulative > rule.threshold for e in entries)

    def _add_coarse(self, entry: Entry, rule: Rule) -> bool:
        """``add`` at a coarse resolution: floored, merged into an entry of the same instant."""
        entry.at -= entry.at % self.resolution
        entries = self.entries
        i = bisect_left(entries, entry)
        same = next((e for e in entries[max(i - 1, 0) : i + 1] if e.at == entry.at), None)
        if same is not None:
            same.amount += entry.amount
            same.offset = max(same.offset, entry.offset)
        else:
            entries.insert(i, entry)
        if self._recompute(rule):
            self.flagged = True
            self._compact()
            return True
        horizon = entries[-1].at - rule.window - rule.lateness
        cut = 0
        while entries[cut].at <= horizon:
            cut += 1
        if cut:
            del entries[:cut]
        return False

    def _add_exact(self, entry: Entry, rule: Rule) -> bool:
        entries = self.entries
        if (
            not entries
            or entries[-1].at < entry.at
            or (entries[-1].at == entry.at and entries[-1].offset < entry.offset)
        ):
            return self._append(entry, rule)
        insort(entries, entry)
        times = [e.at for e in entries]
        # Its own window: every deposit in (at - window, at], equal times included.
        lo = bisect_right(times, entry.at - rule.window)
        hi = bisect_right(times, entry.at)
        own = sum(e.amount for e in entries[lo:hi])
        # Later windows that now include it: anchors in [at, at + window), other than itself
        # and the equal-time anchors that already counted it through `own`.
        for e in entries[bisect_left(times, entry.at) : bisect_left(times, entry.at + rule.window)]:
            if e is entry or e.at == entry.at:
                e.cumulative = own
            else:
                e.cumulative += entry.amount
        flagged_now = any(e.cumulative > rule.threshold for e in entries[bisect_left(times, entry.at) :])
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
