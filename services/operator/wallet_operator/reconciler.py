"""One sync of one ProcessorScaler: read the scale and the lag, decide, scale, describe it in status.

Independent of kopf: a sync returns the status fields to write and the Events to post, and the
kopf handlers (handlers.py) apply them. Every failure the operator expects (invalid spec, Kafka or
the StatefulSet unreachable, a refused scale) becomes a Degraded condition with a message and one
Warning Event per new reason, never an exception out of a handler.

Per resource it keeps, in memory, the recommendation history the stabilization windows need (an
operator restart starts the windows afresh: see decision.py) and a lock, so a spec-change sync and
a timer sync never interleave.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from wallet_operator import metrics
from wallet_operator.decision import Decision, Recommendation, decide
from wallet_operator.errors import OperatorError
from wallet_operator.kafka_lag import LagReader
from wallet_operator.kube import ScaleClient
from wallet_operator.resource import DEGRADED, READY, SCALING, ScalerSpec, condition, parse_spec, timestamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the resource."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class SyncResult:
    """Status fields to merge into the resource's status, and Events to post."""

    status: dict[str, Any]
    events: list[Event]
    decision: Decision | None = None


@dataclass
class ScalerState:
    """What the operator remembers of one resource between syncs."""

    history: tuple[Recommendation, ...] = ()
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    degraded_reason: str | None = None
    paused: bool | None = None
    skipped_desired: int | None = None


class Reconciler:
    """Syncs resources; one instance per operator process."""

    def __init__(
        self,
        lag_reader: LagReader,
        scale: ScaleClient,
        executor: Executor,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        live_group: Callable[[str], str] = lambda group: group,
    ) -> None:
        self.lag_reader = lag_reader
        #: The group serving a table now (a rebuilt table's new version): its lag is what counts.
        self.live_group = live_group
        self.scale = scale
        self.executor = executor
        self._clock = clock
        self._wall_clock = wall_clock
        self._states: dict[str, ScalerState] = {}
        self.last_success: float | None = None

    @property
    def scalers(self) -> int:
        return len(self._states)

    def forget(self, uid: str, namespace: str, name: str) -> None:
        """The resource is gone: drop its history and its metric series. The StatefulSet keeps its replicas."""
        self._states.pop(uid, None)
        metrics.forget(namespace, name)

    async def sync(
        self,
        *,
        uid: str,
        namespace: str,
        name: str,
        spec: Mapping[str, Any] | None,
        status: Mapping[str, Any] | None,
        generation: int | None,
    ) -> SyncResult:
        state = self._states.setdefault(uid, ScalerState())
        async with state.lock:
            started = time.perf_counter()
            try:
                return await self._sync(state, namespace, name, spec or {}, status or {}, generation)
            finally:
                metrics.SYNC_SECONDS.observe(time.perf_counter() - started)

    async def _sync(
        self,
        state: ScalerState,
        namespace: str,
        name: str,
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        generation: int | None,
    ) -> SyncResult:
        now = self._wall_clock()
        previous = list(status.get("conditions") or [])
        out: dict[str, Any] = {"observedGeneration": generation, "lastSyncTime": timestamp(now)}
        if generation is None:
            out.pop("observedGeneration")
        events: list[Event] = []
        labels = (namespace, name)

        def degraded(error: OperatorError, message: str | None = None) -> SyncResult:
            text = message or str(error)
            out["conditions"] = [
                condition(previous, READY, False, error.reason, text, now, generation),
                condition(
                    previous, SCALING, False, error.reason, f"not scaling while degraded: {text}", now, generation
                ),
                condition(previous, DEGRADED, True, error.reason, text, now, generation),
            ]
            if state.degraded_reason != error.reason:
                events.append(Event("Warning", error.reason, text))
                log.warning(
                    "scaler %s/%s degraded: %s", namespace, name, text, extra={"scaler": name, "reason": error.reason}
                )
            state.degraded_reason = error.reason
            metrics.DEGRADED.labels(*labels).set(1)
            metrics.SYNCS.labels(*labels, error.reason).inc()
            return SyncResult(out, events)

        try:
            parsed: ScalerSpec = parse_spec(spec)
        except OperatorError as exc:
            return degraded(exc, f"invalid spec: {exc}")
        metrics.PAUSED.labels(*labels).set(1 if parsed.paused else 0)
        if state.paused is not None and state.paused != parsed.paused:
            events.append(
                Event(
                    "Normal",
                    "Paused" if parsed.paused else "Resumed",
                    f"scaling of StatefulSet {parsed.target_name} "
                    + ("paused: lag is still measured, replicas are left alone" if parsed.paused else "resumed"),
                )
            )
        state.paused = parsed.paused

        try:
            scale = await self.scale.get(namespace, parsed.target_name)
        except OperatorError as exc:
            return degraded(exc)
        out["currentReplicas"] = scale.replicas
        metrics.REPLICAS.labels(*labels, "current").set(scale.replicas)

        try:
            loop = asyncio.get_running_loop()
            group = self.live_group(parsed.consumer_group)
            lag = await loop.run_in_executor(self.executor, self.lag_reader.read, group, parsed.topic)
        except OperatorError as exc:
            return degraded(exc)

        decision = decide(parsed.policy, lag, scale.replicas, state.history, self._clock())
        state.history = decision.history
        out.update(
            {
                "consumerGroup": group,
                "partitions": lag.partition_count,
                "totalLag": lag.total_lag,
                "partitionLag": [
                    {
                        "partition": p.partition,
                        "lag": p.lag,
                        "endOffset": p.end,
                        **({"committedOffset": p.committed} if p.committed is not None else {}),
                    }
                    for p in lag.partitions
                ],
                "recommendedReplicas": decision.recommended,
                "desiredReplicas": decision.desired,
            }
        )
        group_labels = labels + (parsed.consumer_group, parsed.topic)
        metrics.CONSUMER_LAG.labels(*group_labels).set(lag.total_lag)
        for p in lag.partitions:
            metrics.PARTITION_LAG.labels(*group_labels, str(p.partition)).set(p.lag)
        metrics.PARTITIONS.labels(*labels).set(lag.partition_count)
        metrics.REPLICAS.labels(*labels, "recommended").set(decision.recommended)
        metrics.REPLICAS.labels(*labels, "desired").set(decision.desired)

        scaling = (False, "Stable", decision.reason)
        if decision.direction and parsed.paused:
            scaling = (False, "Paused", f"paused; would scale {decision.reason}")
            if state.skipped_desired != decision.desired:
                events.append(Event("Normal", "ScaleSkipped", f"paused; would scale {decision.reason}"))
            state.skipped_desired = decision.desired
        elif decision.direction:
            try:
                await self.scale.set_replicas(namespace, parsed.target_name, decision.desired)
            except OperatorError as exc:
                return degraded(exc, f"scaling {parsed.target_name} {decision.reason} failed: {exc}")
            reason = "ScaledUp" if decision.direction == "up" else "ScaledDown"
            events.append(Event("Normal", reason, f"StatefulSet {parsed.target_name} {decision.reason}"))
            log.info(
                "scaled %s %s",
                parsed.target_name,
                decision.reason,
                extra={"scaler": name, "from": decision.current, "to": decision.desired},
            )
            metrics.SCALINGS.labels(*labels, decision.direction).inc()
            out["currentReplicas"] = decision.desired
            out["lastScaleTime"] = timestamp(now)
            out["lastScaleReason"] = decision.reason
            metrics.REPLICAS.labels(*labels, "current").set(decision.desired)
            scaling = (True, reason, decision.reason)
        else:
            state.skipped_desired = None
            if scale.status_replicas != scale.replicas:
                scaling = (
                    True,
                    "Converging",
                    f"StatefulSet {parsed.target_name} has {scale.status_replicas} of {scale.replicas} pods",
                )
            elif {"scaleUpWindow", "scaleDownWindow"} & set(decision.limits):
                scaling = (False, "Stabilizing", decision.reason)
            elif (
                decision.desired == decision.upper_bound
                and decision.recommended == decision.upper_bound
                and {"partitions", "maxReplicas"} & set(decision.limits)
            ):
                scaling = (False, "AtUpperBound", decision.reason)

        if state.degraded_reason is not None:
            events.append(Event("Normal", "Recovered", f"no longer degraded ({state.degraded_reason})"))
            state.degraded_reason = None
        ready_message = f"{lag.total_lag} records behind on {lag.partition_count} partitions; {decision.reason}"
        out["conditions"] = [
            condition(previous, READY, True, "Paused" if parsed.paused else "Synced", ready_message, now, generation),
            condition(previous, SCALING, scaling[0], scaling[1], scaling[2], now, generation),
            condition(previous, DEGRADED, False, "Healthy", "Kafka and the StatefulSet answered", now, generation),
        ]
        metrics.DEGRADED.labels(*labels).set(0)
        metrics.LAST_SYNC.labels(*labels).set(now.timestamp())
        metrics.SYNCS.labels(*labels, "ok").inc()
        self.last_success = self._clock()
        return SyncResult(out, events, decision)
