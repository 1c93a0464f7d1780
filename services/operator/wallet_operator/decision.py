"""The scaling decision: how many replicas a processor group should run, given its lag.

Pure: no I/O and no clock (the time comes in as an argument), so every rule is a unit test.

The rules, in order:

1. **Bounds.** The upper bound is ``min(maxReplicas, partitions)``: a consumer group gives each
   partition to one member, so replicas beyond the partition count would idle. The lower bound is
   ``minReplicas``, itself capped by that upper bound (the partition cap wins a conflict, and the
   decision says so).
2. **Recommendation.** ``ceil(total lag / targetLagPerReplica)`` within the bounds; zero lag
   recommends the lower bound. A group with no committed offset on any partition (it never ran,
   or its offsets expired) gives no lag to judge: the recommendation is to hold the current
   replicas (within the bounds) rather than guess.
3. **Stabilization** (the HorizontalPodAutoscaler's algorithm). Every recommendation is kept with
   its time. Scaling up goes only as far as the *lowest* recommendation within the scale-up
   window; scaling down only as far as the *highest* recommendation within the scale-down window.
   So a short lag spike does not add pods (with a scale-up window), and a short lull does not
   remove them: only a recommendation that held for the whole window acts.
   With no history (a new resource, or a restarted operator) the current replicas count as
   recommended at that moment, so a scale-down waits one full window after the operator first
   sees the group.
4. The result is clamped to the bounds again, so a StatefulSet outside them (scaled by hand, or
   the partition count shrank the bound) is brought back at once, as an HPA does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScalingPolicy:
    """The scaling part of a resource's spec, validated."""

    min_replicas: int
    max_replicas: int
    target_lag_per_replica: int
    #: Seconds a higher recommendation must hold before scaling up to it (0: at once).
    scale_up_window: float = 0.0
    #: Seconds a lower recommendation must hold before scaling down to it.
    scale_down_window: float = 300.0


@dataclass(frozen=True)
class PartitionOffsets:
    """One partition of the input topic, as the lag reader saw it."""

    partition: int
    #: The group's committed offset (the next record it will read); None when it never committed.
    committed: int | None
    #: The log end offset (high watermark): the offset the next record will get.
    end: int
    #: The first offset still in the log (log start). Records before it no longer exist.
    start: int = 0

    @property
    def lag(self) -> int:
        """Records the group still has to read. A missing commit means "from the log start"
        (the processors' ``auto.offset.reset`` is ``earliest``); a commit below the log start
        counts only the records that still exist."""
        position = self.start if self.committed is None else max(self.committed, self.start)
        return max(0, self.end - position)


@dataclass(frozen=True)
class LagSnapshot:
    """A consumer group's position on its input topic, one entry per partition."""

    group: str
    topic: str
    partitions: tuple[PartitionOffsets, ...]

    @property
    def partition_count(self) -> int:
        return len(self.partitions)

    @property
    def group_found(self) -> bool:
        """Whether the group ever committed an offset on this topic."""
        return any(p.committed is not None for p in self.partitions)

    @property
    def lag_by_partition(self) -> Mapping[int, int]:
        return {p.partition: p.lag for p in self.partitions}

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass(frozen=True)
class Recommendation:
    """A recommended replica count and when it was made (seconds, any monotonic-enough clock)."""

    at: float
    replicas: int


@dataclass(frozen=True)
class Decision:
    """What the StatefulSet should run now, and why."""

    current: int
    #: From the lag alone, within the bounds, before stabilization.
    recommended: int
    #: What to scale to now: the recommendation after stabilization, within the bounds.
    desired: int
    lower_bound: int
    upper_bound: int
    reason: str
    #: Names of what shaped the result: "partitions", "maxReplicas", "minReplicas",
    #: "scaleUpWindow", "scaleDownWindow", "noCommittedOffsets".
    limits: tuple[str, ...] = ()
    #: The recommendations to keep for the next decision.
    history: tuple[Recommendation, ...] = field(default=(), repr=False)

    @property
    def direction(self) -> str | None:
        """ "up", "down", or None when the StatefulSet already has the desired replicas."""
        if self.desired > self.current:
            return "up"
        if self.desired < self.current:
            return "down"
        return None


def bounds(policy: ScalingPolicy, partitions: int) -> tuple[int, int, tuple[str, ...]]:
    """(lower, upper, limits): the replica range, and which rule narrowed it."""
    limits: list[str] = []
    upper = policy.max_replicas
    if partitions < upper:
        upper = max(1, partitions)
        limits.append("partitions")
    lower = policy.min_replicas
    if lower > upper:
        lower = upper
        limits.append("partitions")
    return lower, upper, tuple(dict.fromkeys(limits))


def recommend(policy: ScalingPolicy, lag: LagSnapshot, current: int) -> tuple[int, str, tuple[str, ...]]:
    """(replicas, why, limits) from the lag alone, within the bounds."""
    lower, upper, limits = bounds(policy, lag.partition_count)
    extra: list[str] = []
    if not lag.group_found:
        raw = current
        why = (
            f"consumer group {lag.group!r} has no committed offsets on {lag.topic!r}: "
            f"holding {min(max(current, lower), upper)} replicas"
        )
        extra.append("noCommittedOffsets")
    elif lag.total_lag == 0:
        raw = lower
        why = "no lag"
    else:
        raw = math.ceil(lag.total_lag / policy.target_lag_per_replica)
        why = f"lag {lag.total_lag} at {policy.target_lag_per_replica} per replica needs {raw}"
    replicas = min(max(raw, lower), upper)
    if raw > upper:
        cap = "partitions" if upper < policy.max_replicas else "maxReplicas"
        extra.append(cap)
        why += f", capped at {upper} ({'the partition count' if cap == 'partitions' else 'maxReplicas'})"
    elif raw < lower and lag.group_found:
        extra.append("minReplicas")
        if lag.total_lag:
            why += f", raised to minReplicas {lower}"
    if policy.min_replicas > upper:
        why += f" (minReplicas {policy.min_replicas} is above the {upper} partitions: extra replicas would idle)"
    return replicas, why, tuple(dict.fromkeys(limits + tuple(extra)))


def decide(
    policy: ScalingPolicy, lag: LagSnapshot, current: int, history: Sequence[Recommendation], now: float
) -> Decision:
    """The replicas to run now. ``history`` is the previous decision's ``history`` (empty at first)."""
    lower, upper, _ = bounds(policy, lag.partition_count)
    recommended, why, limits = recommend(policy, lag, current)

    horizon = max(policy.scale_up_window, policy.scale_down_window)
    past = [r for r in history if r.at > now - horizon and r.at <= now]
    if not history:
        # Nothing seen yet: the current scale counts as recommended now, so scaling down waits
        # one full window and a restarted operator does not act on a moment's lull.
        past = [Recommendation(now, min(max(current, lower), upper))]

    up_to = min([r.replicas for r in past if r.at > now - policy.scale_up_window] + [recommended])
    down_to = max([r.replicas for r in past if r.at > now - policy.scale_down_window] + [recommended])
    stabilized = current
    if stabilized < up_to:
        stabilized = up_to
    if stabilized > down_to:
        stabilized = down_to
    desired = min(max(stabilized, lower), upper)

    extra: list[str] = []
    if desired < recommended and recommended > current:
        extra.append("scaleUpWindow")
        why += (
            f"; scaling up only to {desired}: the lowest recommendation within the "
            f"{policy.scale_up_window:g}s scale-up window"
        )
    elif desired > recommended and recommended < current:
        extra.append("scaleDownWindow")
        why += (
            f"; holding {desired}: the highest recommendation within the "
            f"{policy.scale_down_window:g}s scale-down window"
        )
    if desired != current:
        why = f"{'up' if desired > current else 'down'} from {current} to {desired}: {why}"

    kept = tuple(past) + (Recommendation(now, recommended),)
    return Decision(
        current=current,
        recommended=recommended,
        desired=desired,
        lower_bound=lower,
        upper_bound=upper,
        reason=why,
        limits=tuple(dict.fromkeys(limits + tuple(extra))),
        history=kept,
    )
