"""The scaling decision, as pure unit tests: bounds, partition cap, zero lag, missing group,
stabilization against flapping. No broker, no Kubernetes."""

from __future__ import annotations

import dataclasses
import random

import pytest

from wallet_operator.decision import (
    Decision,
    LagSnapshot,
    PartitionOffsets,
    Recommendation,
    ScalingPolicy,
    bounds,
    decide,
    recommend,
)

POLICY = ScalingPolicy(
    min_replicas=1, max_replicas=8, target_lag_per_replica=1000, scale_up_window=0, scale_down_window=60
)


def snapshot(lags: list[int] | None = None, *, partitions: int = 8, committed: bool = True) -> LagSnapshot:
    """A topic whose partition i has lags[i] records unread (0 when not given)."""
    lags = lags or []
    return LagSnapshot(
        "balance",
        "deposit",
        tuple(
            PartitionOffsets(
                partition=p,
                committed=(100 if committed else None),
                end=100 + (lags[p] if p < len(lags) else 0),
                start=0 if committed else 100,
            )
            for p in range(partitions)
        ),
    )


def total(n: int, partitions: int = 8) -> LagSnapshot:
    """Lag n spread over the partitions."""
    per, extra = divmod(n, partitions)
    return snapshot([per + (1 if p < extra else 0) for p in range(partitions)], partitions=partitions)


def run(policy: ScalingPolicy, steps: list[tuple[float, int]], current: int) -> list[Decision]:
    """Feed (time, total lag) steps through decide(), applying each decision like the operator does."""
    history: tuple[Recommendation, ...] = ()
    out = []
    for at, lag in steps:
        d = decide(policy, total(lag), current, history, at)
        history, current = d.history, d.desired
        out.append(d)
    return out


# ---------------------------------------------------------------- lag arithmetic


def test_partition_lag_counts_from_the_commit_or_from_the_log_start():
    assert PartitionOffsets(0, committed=40, end=100).lag == 60
    assert PartitionOffsets(0, committed=None, end=100, start=30).lag == 70, "no commit: all records that exist"
    assert PartitionOffsets(0, committed=10, end=100, start=30).lag == 70, "records before the log start are gone"
    assert PartitionOffsets(0, committed=100, end=100).lag == 0
    assert PartitionOffsets(0, committed=120, end=100).lag == 0, "never negative"
    lag = snapshot([5, 0, 7])
    assert lag.total_lag == 12 and lag.lag_by_partition[2] == 7 and lag.partition_count == 8 and lag.group_found


# ---------------------------------------------------------------- bounds


def test_bounds_are_min_and_max_capped_by_the_partition_count():
    assert bounds(POLICY, 8) == (1, 8, ())
    assert bounds(POLICY, 4) == (1, 4, ("partitions",))
    wide = ScalingPolicy(min_replicas=6, max_replicas=20, target_lag_per_replica=10)
    assert bounds(wide, 4) == (4, 4, ("partitions",)), "the partition cap wins over minReplicas"


@pytest.mark.parametrize("lag,expected", [(0, 1), (1, 1), (1000, 1), (1001, 2), (3500, 4), (8000, 8), (10**9, 8)])
def test_recommendation_is_lag_over_target_within_bounds(lag, expected):
    replicas, why, _ = recommend(POLICY, total(lag), current=3)
    assert replicas == expected, why


def test_never_above_the_partition_count():
    policy = ScalingPolicy(min_replicas=1, max_replicas=50, target_lag_per_replica=10)
    d = decide(policy, total(100_000, partitions=6), current=2, history=(), now=0)
    assert (d.recommended, d.desired, d.upper_bound) == (6, 6, 6)
    assert "partitions" in d.limits and "partition count" in d.reason


def test_never_above_max_replicas():
    d = decide(dataclasses.replace(POLICY, max_replicas=3), total(100_000), current=1, history=(), now=0)
    assert d.desired == 3 and "maxReplicas" in d.limits


def test_never_below_min_replicas_and_zero_lag_goes_to_the_minimum():
    policy = ScalingPolicy(min_replicas=2, max_replicas=8, target_lag_per_replica=1000, scale_down_window=0)
    d = decide(policy, total(0), current=5, history=(), now=0)
    assert (d.recommended, d.desired, d.direction) == (2, 2, "down")
    assert d.reason.startswith("down from 5 to 2: no lag")
    d = decide(policy, total(10), current=1, history=(), now=0)
    assert d.desired == 2, "a StatefulSet below the minimum is raised at once"


def test_a_statefulset_outside_the_bounds_is_brought_back_at_once_despite_the_windows():
    slow = ScalingPolicy(
        min_replicas=2, max_replicas=8, target_lag_per_replica=1000, scale_up_window=600, scale_down_window=600
    )
    assert decide(slow, total(50_000, partitions=4), current=7, history=(), now=0).desired == 4
    assert decide(slow, total(0), current=1, history=(), now=0).desired == 2


# ---------------------------------------------------------------- missing group


def test_a_group_without_committed_offsets_holds_the_current_replicas():
    never_ran = snapshot(committed=False, partitions=8)
    assert not never_ran.group_found
    d = decide(POLICY, never_ran, current=3, history=(), now=0)
    assert (d.recommended, d.desired, d.direction) == (3, 3, None)
    assert "noCommittedOffsets" in d.limits and "no committed offsets" in d.reason
    # ...but still within the bounds.
    assert decide(POLICY, snapshot(committed=False, partitions=2), current=5, history=(), now=0).desired == 2


def test_a_group_with_some_partitions_uncommitted_counts_them_from_the_log_start():
    lag = LagSnapshot(
        "balance",
        "deposit",
        (PartitionOffsets(0, committed=90, end=100), PartitionOffsets(1, committed=None, end=2500, start=0)),
    )
    assert lag.group_found and lag.total_lag == 2510
    assert decide(POLICY, lag, current=1, history=(), now=0).desired == 2


# ---------------------------------------------------------------- stabilization


def test_scale_up_is_immediate_with_a_zero_window():
    decisions = run(POLICY, [(0, 0), (1, 5000)], current=1)
    assert [d.desired for d in decisions] == [1, 5]
    assert decisions[1].direction == "up" and decisions[1].reason.startswith("up from 1 to 5")


def test_scale_down_waits_for_the_whole_window():
    steps = [(0, 8000)] + [(t, 0) for t in range(5, 80, 5)]
    decisions = run(POLICY, steps, current=1)
    desired = {at: d.desired for (at, _), d in zip(steps, decisions)}
    assert desired[0] == 8
    assert all(desired[t] == 8 for t in range(5, 60, 5)), desired  # the 8 from t=0 is within 60 s
    assert desired[60] == 1, desired  # the window passed: only zero-lag recommendations remain
    held = decisions[3]
    assert "scaleDownWindow" in held.limits and "scale-down window" in held.reason


def test_a_spike_inside_the_scale_down_window_restarts_the_wait():
    steps = [(0, 8000), (30, 0), (50, 3000), (70, 0), (100, 0), (111, 0)]
    desired = [d.desired for d in run(POLICY, steps, current=1)]
    # at 70 the highest recommendation in (10, 70] is 3 (t=50): down to 3, not to 1
    assert desired == [8, 8, 8, 3, 3, 1]


def test_scale_up_window_ignores_a_short_spike():
    policy = ScalingPolicy(
        min_replicas=1, max_replicas=8, target_lag_per_replica=1000, scale_up_window=30, scale_down_window=0
    )
    history = (Recommendation(-10, 1),)  # one replica was enough until now
    d = decide(policy, total(6000), current=1, history=history, now=0)
    assert d.desired == 1, "the lowest recommendation in the window is still 1"
    assert "scaleUpWindow" in d.limits
    d2 = decide(policy, total(6000), current=1, history=d.history, now=31)
    assert d2.desired == 6, "six replicas recommended for the whole window"


def test_without_history_the_current_scale_counts_as_just_recommended():
    """A restarted operator does not scale down on its first look at a quiet group."""
    d = decide(POLICY, total(0), current=6, history=(), now=1000)
    assert d.desired == 6 and d.history[0] == Recommendation(1000, 6)
    assert decide(POLICY, total(0), current=6, history=d.history, now=1061).desired == 1


def test_history_is_pruned_to_the_longest_window():
    d = decide(POLICY, total(0), current=1, history=tuple(Recommendation(t, 1) for t in range(0, 1000, 10)), now=1000)
    assert all(r.at > 1000 - 60 for r in d.history) and d.history[-1] == Recommendation(1000, 1)


def test_oscillating_lag_does_not_flap():
    """Lag alternating every sync between high and none: one scale-up, then it stays."""
    steps = [(t, 6000 if (t // 5) % 2 == 0 else 0) for t in range(0, 300, 5)]
    decisions = run(POLICY, steps, current=1)
    changes = [d for d in decisions if d.direction]
    assert [(d.current, d.desired) for d in changes] == [(1, 6)]


def test_random_lag_series_respect_bounds_and_windows():
    """On random lag series: always within the bounds; a scale-down only when no recommendation in
    the scale-down window was higher; a scale-up only when none in the scale-up window was lower."""
    rng = random.Random(6)
    for _ in range(300):
        partitions = rng.randint(1, 12)
        policy = ScalingPolicy(
            min_replicas=rng.randint(1, 4),
            max_replicas=rng.randint(4, 16),
            target_lag_per_replica=rng.choice([1, 100, 1000]),
            scale_up_window=rng.choice([0, 10, 30]),
            scale_down_window=rng.choice([0, 20, 60]),
        )
        lower, upper, _ = bounds(policy, partitions)
        history: tuple[Recommendation, ...] = ()
        current, now = rng.randint(0, 20), 0.0
        seen = [Recommendation(rng.choice([1, 5, 15]), min(max(current, lower), upper))]  # the seed
        now = seen[0].at
        for step in range(40):
            if step:
                now += rng.choice([1, 5, 15])
            lag = LagSnapshot(
                "g",
                "t",
                tuple(
                    PartitionOffsets(p, committed=0, end=rng.choice([0, 0, 50, 3000, 90000])) for p in range(partitions)
                ),
            )
            d = decide(policy, lag, current, history, now)
            assert lower <= d.desired <= upper <= partitions
            in_bounds = lower <= current <= upper
            if d.direction == "down" and in_bounds:
                recent = [r.replicas for r in seen if r.at > now - policy.scale_down_window] + [d.recommended]
                assert max(recent) <= d.desired, (policy, d, seen)
            if d.direction == "up" and in_bounds:
                recent = [r.replicas for r in seen if r.at > now - policy.scale_up_window] + [d.recommended]
                assert min(recent) >= d.desired, (policy, d, seen)
            seen.append(Recommendation(now, d.recommended))
            history, current = d.history, d.desired
