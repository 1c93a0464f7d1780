"""The ProcessorScaler spec as the operator reads it, and its status conditions (pure)."""

from __future__ import annotations

import datetime

import pytest

from wallet_operator.errors import InvalidSpec
from wallet_operator.resource import condition, parse_spec

SPEC = {
    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "wallet-balance"},
    "consumerGroup": "balance",
    "topic": "deposit",
    "maxReplicas": 8,
    "targetLagPerReplica": 1000,
}


def test_a_minimal_spec_gets_the_documented_defaults():
    spec = parse_spec(SPEC)
    assert (spec.target_name, spec.consumer_group, spec.topic, spec.paused) == (
        "wallet-balance",
        "balance",
        "deposit",
        False,
    )
    p = spec.policy
    assert (p.min_replicas, p.max_replicas, p.target_lag_per_replica) == (1, 8, 1000)
    assert (p.scale_up_window, p.scale_down_window) == (0, 300)


@pytest.mark.parametrize(
    "change,problem",
    [
        ({"minReplicas": 9}, "spec.minReplicas (9) must not exceed spec.maxReplicas (8)"),
        ({"minReplicas": 0}, "spec.minReplicas must be at least 1"),
        ({"maxReplicas": None}, "spec.maxReplicas is required"),
        ({"targetLagPerReplica": "1000"}, "spec.targetLagPerReplica must be an integer"),
        ({"targetLagPerReplica": True}, "spec.targetLagPerReplica must be an integer"),
        (
            {"scaleDown": {"stabilizationWindowSeconds": -1}},
            "spec.scaleDown.stabilizationWindowSeconds must be between 0",
        ),
        (
            {"scaleUp": {"stabilizationWindowSeconds": 10**6}},
            "spec.scaleUp.stabilizationWindowSeconds must be between 0",
        ),
        (
            {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}},
            "must name an apps/v1 StatefulSet",
        ),
        ({"scaleTargetRef": {"kind": "StatefulSet"}}, "spec.scaleTargetRef.name is required"),
        ({"consumerGroup": ""}, "spec.consumerGroup is required"),
        ({"topic": None}, "spec.topic is required"),
        ({"paused": "yes"}, "spec.paused must be true or false"),
    ],
)
def test_invalid_specs_say_what_is_wrong(change, problem):
    spec = {**SPEC, **change}
    spec = {k: v for k, v in spec.items() if v is not None}
    with pytest.raises(InvalidSpec) as failure:
        parse_spec(spec)
    assert any(problem in p for p in failure.value.problems), failure.value.problems
    assert failure.value.reason == "InvalidSpec"


def test_every_problem_is_reported_at_once():
    with pytest.raises(InvalidSpec) as failure:
        parse_spec({"minReplicas": 0})
    assert len(failure.value.problems) >= 5, failure.value.problems  # target, group, topic, min, max, lag
    with pytest.raises(InvalidSpec):
        parse_spec(None)


def test_condition_transition_time_moves_only_when_the_status_changes():
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    t1 = t0 + datetime.timedelta(minutes=5)
    first = condition([], "Degraded", False, "Healthy", "ok", t0, 3)
    assert first == {
        "type": "Degraded",
        "status": "False",
        "reason": "Healthy",
        "message": "ok",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 3,
    }
    same = condition([first], "Degraded", False, "Healthy", "still ok", t1, 4)
    assert same["lastTransitionTime"] == "2026-01-01T00:00:00Z" and same["message"] == "still ok"
    flipped = condition([same], "Degraded", True, "KafkaUnavailable", "down", t1, 4)
    assert flipped["lastTransitionTime"] == "2026-01-01T00:05:00Z" and flipped["status"] == "True"
