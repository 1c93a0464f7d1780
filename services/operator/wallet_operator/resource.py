"""The ProcessorScaler custom resource: its name, its spec (validated) and its status conditions.

Pure: parsing and condition bookkeeping only. The CRD itself is charts/wallet/crds/; the schema
there rejects most bad specs at the API server, but the operator validates again (the emulator,
old API servers and ``kubectl apply --validate=false`` do not enforce it) and reports problems in
status instead of failing.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wallet_operator.decision import ScalingPolicy
from wallet_operator.errors import InvalidSpec

GROUP = "scaling.wallet.dev"
VERSION = "v1alpha1"
PLURAL = "processorscalers"
KIND = "ProcessorScaler"

#: The one kind of scale target this operator knows (the processors are StatefulSets).
TARGET_API_VERSION = "apps/v1"
TARGET_KIND = "StatefulSet"

DEFAULT_SCALE_UP_WINDOW = 0
DEFAULT_SCALE_DOWN_WINDOW = 300
#: A day: longer windows would only hide a broken operator.
MAX_WINDOW = 86_400

# Condition types and their meaning.
READY = "Ready"  # the last sync read Kafka and the StatefulSet and acted on a valid spec
SCALING = "Scaling"  # a scale was just made and the StatefulSet has not reached it yet
DEGRADED = "Degraded"  # Kafka or the StatefulSet unreachable, or the spec invalid (message says which)
CONDITION_TYPES = (READY, SCALING, DEGRADED)


@dataclass(frozen=True)
class ScalerSpec:
    """One processor group: what it scales, which group and topic measure its lag, and how."""

    target_name: str
    consumer_group: str
    topic: str
    policy: ScalingPolicy
    paused: bool = False


def parse_spec(spec: Mapping[str, Any] | None) -> ScalerSpec:
    """The validated spec, with defaults applied; :class:`InvalidSpec` lists every problem."""
    spec = spec or {}
    problems: list[str] = []

    def integer(path: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
        if value is None:
            problems.append(f"{path} is required")
            return minimum
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path} must be an integer, got {value!r}")
            return minimum
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            problems.append(f"{path} must be {bound}, got {value}")
            return minimum
        return value

    def name(path: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{path} is required (a non-empty string)")
            return ""
        return value

    ref = spec.get("scaleTargetRef")
    if not isinstance(ref, Mapping):
        problems.append("spec.scaleTargetRef is required: {apiVersion: apps/v1, kind: StatefulSet, name: ...}")
        ref = {}
    if ref.get("kind", TARGET_KIND) != TARGET_KIND or ref.get("apiVersion", TARGET_API_VERSION) != TARGET_API_VERSION:
        problems.append(
            f"spec.scaleTargetRef must name an {TARGET_API_VERSION} {TARGET_KIND}, "
            f"got {ref.get('apiVersion')} {ref.get('kind')}"
        )
    target = name("spec.scaleTargetRef.name", ref.get("name"))
    group = name("spec.consumerGroup", spec.get("consumerGroup"))
    topic = name("spec.topic", spec.get("topic"))

    min_replicas = integer("spec.minReplicas", spec.get("minReplicas", 1), minimum=1)
    max_replicas = integer("spec.maxReplicas", spec.get("maxReplicas"), minimum=1)
    if "maxReplicas" in spec and min_replicas > max_replicas:
        problems.append(f"spec.minReplicas ({min_replicas}) must not exceed spec.maxReplicas ({max_replicas})")
    target_lag = integer("spec.targetLagPerReplica", spec.get("targetLagPerReplica"), minimum=1)

    windows = []
    for key, default in (("scaleUp", DEFAULT_SCALE_UP_WINDOW), ("scaleDown", DEFAULT_SCALE_DOWN_WINDOW)):
        section = spec.get(key) or {}
        if not isinstance(section, Mapping):
            problems.append(f"spec.{key} must be an object with stabilizationWindowSeconds")
            section = {}
        windows.append(
            integer(
                f"spec.{key}.stabilizationWindowSeconds",
                section.get("stabilizationWindowSeconds", default),
                minimum=0,
                maximum=MAX_WINDOW,
            )
        )

    paused = spec.get("paused", False)
    if not isinstance(paused, bool):
        problems.append(f"spec.paused must be true or false, got {paused!r}")
        paused = False

    if problems:
        raise InvalidSpec(problems)
    return ScalerSpec(
        target_name=target,
        consumer_group=group,
        topic=topic,
        paused=paused,
        policy=ScalingPolicy(
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_lag_per_replica=target_lag,
            scale_up_window=windows[0],
            scale_down_window=windows[1],
        ),
    )


def timestamp(now: datetime.datetime) -> str:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times (metav1.Time: seconds)."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    previous: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int | None,
) -> dict[str, Any]:
    """A metav1.Condition; its lastTransitionTime moves only when its status changes."""
    value = "True" if status else "False"
    before = next((c for c in previous or () if c.get("type") == type_), None)
    since = before.get("lastTransitionTime") if before and before.get("status") == value else None
    out: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message[:32_768],
        "lastTransitionTime": since or timestamp(now),
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def find_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)
