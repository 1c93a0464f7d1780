"""The operator end to end: kopf running the real handlers against the kmock Kubernetes API
emulator, with a real Apache Kafka broker for the lag.

What the emulator is: an in-memory API server (discovery, list/watch, create, merge patches,
finalizers). What it is not: no admission, no schema or CEL validation, no controllers (a
StatefulSet's pods never appear; ``follow_statefulsets`` plays its controller by copying
spec.replicas to status.replicas), and a ``/scale`` call is served on the StatefulSet object
itself (same ``spec.replicas``/``status.replicas`` paths as a real Scale).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from harness import (
    SCALERS,
    SCALERS_URL,
    STATEFULSETS_URL,
    Emulator,
    LagMaker,
    condition_of,
    create,
    declare_resources,
    event_reasons,
    events_for,
    follow_statefulsets,
    merge_patch,
    replicas_of,
    running_operator,
    scaler_manifest,
    statefulset_manifest,
    status_of,
    stored,
    wait_for,
)
from prometheus_client import REGISTRY

pytestmark = [pytest.mark.integration, pytest.mark.kmock(cls=Emulator)]

SYNC = 0.5  # seconds between syncs
DOWN_WINDOW = 3  # scale-down stabilization window in these tests


@pytest.fixture
def broker(tmp_path):
    from walletkit.devstack.kafka import ApacheKafka

    b = ApacheKafka(log_path=tmp_path / "broker.log").start()
    yield b
    b.stop()


def metric(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def http_get_json(url: str) -> tuple[int, object]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def test_lag_scales_the_statefulset_up_to_the_partitions_and_down_after_the_window(kmock, broker):
    declare_resources(kmock)
    lag = LagMaker(broker.bootstrap, "deposit", "balance", partitions=8)
    lag.produce(per_partition=250)  # 2000 records
    lag.commit([0] * 8)  # the group exists and has read nothing: lag 2000
    await create(kmock, STATEFULSETS_URL, statefulset_manifest("wallet-balance", 1))
    stop = asyncio.Event()
    controller = asyncio.create_task(follow_statefulsets(kmock, ["wallet-balance"], stop))
    try:
        async with running_operator(kmock, broker.bootstrap, sync_seconds=SYNC) as op:
            await create(
                kmock,
                SCALERS_URL,
                scaler_manifest(
                    "wallet-balance",
                    "wallet-balance",
                    group="balance",
                    topic="deposit",
                    min_replicas=1,
                    max_replicas=12,
                    target_lag=500,
                    down_window=DOWN_WINDOW,
                ),
            )

            # Lag 2000 at 500 per replica: 4 replicas, through the scale subresource.
            await wait_for(lambda: replicas_of(kmock, "wallet-balance") == 4, 15, "a scale-up to 4 replicas")
            status = await wait_for(
                lambda: (s := status_of(kmock, "wallet-balance")).get("currentReplicas") == 4 and s,
                10,
                "status after the scale-up",
            )
            assert (status["totalLag"], status["partitions"], status["desiredReplicas"]) == (2000, 8, 4)
            assert [
                (p["partition"], p["lag"], p["committedOffset"], p["endOffset"]) for p in status["partitionLag"]
            ] == [(p, 250, 0, 250) for p in range(8)]
            assert status["lastScaleReason"] == "up from 1 to 4: lag 2000 at 500 per replica needs 4"
            assert status["lastScaleTime"].endswith("Z") and status["observedGeneration"] == 1
            assert condition_of(kmock, "wallet-balance", "Ready")["status"] == "True"
            assert condition_of(kmock, "wallet-balance", "Degraded")["status"] == "False"
            await wait_for(lambda: "ScaledUp" in event_reasons(kmock, "wallet-balance"), 10, "the ScaledUp Event")
            scaled_up = next(e for e in events_for(kmock, "wallet-balance") if e["reason"] == "ScaledUp")
            assert scaled_up["type"] == "Normal" and "from 1 to 4" in scaled_up["message"]
            assert scaled_up["involvedObject"]["kind"] == "ProcessorScaler"
            # The stand-in controller brings the pods; the Scaling condition settles.
            await wait_for(
                lambda: condition_of(kmock, "wallet-balance", "Scaling").get("reason") == "Stable",
                10,
                "the Scaling condition to settle",
            )

            # More lag than 8 replicas could take: capped at the 8 partitions, not 12.
            lag.produce(per_partition=500)  # lag 6000 -> 12 wanted
            await wait_for(lambda: replicas_of(kmock, "wallet-balance") == 8, 15, "a scale-up capped at 8 partitions")
            status = await wait_for(
                lambda: (s := status_of(kmock, "wallet-balance")).get("totalLag") == 6000 and s,
                10,
                "lag 6000 in status",
            )
            assert status["recommendedReplicas"] == 8 and "partition count" in status["lastScaleReason"]

            # Metrics and health while it runs.
            labels = {"namespace": "wallet-test", "scaler": "wallet-balance"}
            assert metric("wallet_operator_consumer_lag", **labels, group="balance", topic="deposit") == 6000
            assert (
                metric("wallet_operator_partition_lag", **labels, group="balance", topic="deposit", partition="3")
                == 750
            )
            assert metric("wallet_operator_replicas", **labels, kind="current") == 8
            assert metric("wallet_operator_scalings_total", **labels, direction="up") == 2
            assert metric("wallet_operator_degraded", **labels) == 0
            code, body = await http_get_json(op.health_url)
            assert code == 200 and body == {"scalers": 1}

            # Drained: the group caught up. Not at once (the window), then down to the minimum.
            lag.drain()
            drained = time.monotonic()
            await wait_for(lambda: status_of(kmock, "wallet-balance").get("totalLag") == 0, 10, "lag 0 in status")
            assert replicas_of(kmock, "wallet-balance") == 8, "scaled down before the stabilization window"
            held = condition_of(kmock, "wallet-balance", "Scaling")
            assert held["reason"] == "Stabilizing" and "scale-down window" in held["message"], held
            await wait_for(lambda: replicas_of(kmock, "wallet-balance") == 1, DOWN_WINDOW + 10, "the scale-down to 1")
            assert time.monotonic() - drained >= DOWN_WINDOW - SYNC, "the window was not respected"
            status = await wait_for(
                lambda: (s := status_of(kmock, "wallet-balance")).get("currentReplicas") == 1 and s,
                10,
                "status after the scale-down",
            )
            assert status["lastScaleReason"].startswith("down from 8 to 1: no lag")
            # Events are posted in the background: wait for them, then count.
            await wait_for(lambda: "ScaledDown" in event_reasons(kmock, "wallet-balance"), 10, "the ScaledDown Event")
            assert event_reasons(kmock, "wallet-balance").count("ScaledDown") == 1
            assert event_reasons(kmock, "wallet-balance").count("ScaledUp") == 2

            # Deleted: the resource goes (its finalizer released), the StatefulSet keeps its
            # replicas and is left alone, the scaler's metric series disappear.
            async with kmock.delete(f"{SCALERS_URL}/wallet-balance") as resp:
                assert resp.status < 300
            await wait_for(lambda: stored(kmock, SCALERS, "wallet-balance") is None, 10, "the resource to be deleted")
            await wait_for(
                lambda: metric("wallet_operator_consumer_lag", **labels, group="balance", topic="deposit") is None,
                5,
                "its metrics to be dropped",
            )
            lag.produce(per_partition=500)
            await asyncio.sleep(4 * SYNC)
            assert replicas_of(kmock, "wallet-balance") == 1, "a deleted scaler must not scale"
            assert op.runtime.reconciler.scalers == 0
    finally:
        stop.set()
        await controller


async def test_pause_holds_the_replicas_and_an_invalid_spec_is_reported_not_fatal(kmock, broker):
    declare_resources(kmock)
    lag = LagMaker(broker.bootstrap, "deposit", "above_threshold", partitions=8)
    lag.commit([0] * 8)
    await create(kmock, STATEFULSETS_URL, statefulset_manifest("wallet-above-threshold", 2))
    url = f"{SCALERS_URL}/wallet-above-threshold"
    async with running_operator(kmock, broker.bootstrap, sync_seconds=SYNC):
        await create(
            kmock,
            SCALERS_URL,
            scaler_manifest(
                "wallet-above-threshold",
                "wallet-above-threshold",
                group="above_threshold",
                topic="deposit",
                min_replicas=2,
                target_lag=100,
                down_window=60,
                paused=True,
            ),
        )
        await wait_for(
            lambda: condition_of(kmock, "wallet-above-threshold", "Ready").get("reason") == "Paused",
            10,
            "a Ready/Paused condition",
        )

        # Paused: lag is measured and the wanted scale shown, but nothing is scaled.
        lag.produce(per_partition=100)  # 800 at 100 per replica: 8 wanted
        status = await wait_for(
            lambda: (s := status_of(kmock, "wallet-above-threshold")).get("totalLag") == 800 and s,
            10,
            "the lag of the paused scaler",
        )
        assert status["desiredReplicas"] == 8 and status["currentReplicas"] == 2
        assert condition_of(kmock, "wallet-above-threshold", "Scaling")["reason"] == "Paused"
        await asyncio.sleep(3 * SYNC)
        assert replicas_of(kmock, "wallet-above-threshold") == 2
        await wait_for(lambda: "ScaleSkipped" in event_reasons(kmock, "wallet-above-threshold"), 10, "ScaleSkipped")

        # Resumed: it acts on the lag at once.
        await merge_patch(kmock, url, {"spec": {"paused": False}, "metadata": {"generation": 2}})
        await wait_for(lambda: replicas_of(kmock, "wallet-above-threshold") == 8, 10, "the scale-up after resuming")
        await wait_for(lambda: "Resumed" in event_reasons(kmock, "wallet-above-threshold"), 10, "Resumed")

        # Invalid (the emulator, like `kubectl apply --validate=false` on an old server, does not
        # enforce the CRD's schema): Degraded with the reason, Ready false, nothing scaled, no crash.
        await merge_patch(kmock, url, {"spec": {"minReplicas": 9, "maxReplicas": 4}, "metadata": {"generation": 3}})
        degraded = await wait_for(
            lambda: (c := condition_of(kmock, "wallet-above-threshold", "Degraded")).get("status") == "True" and c,
            10,
            "Degraded on an invalid spec",
        )
        assert degraded["reason"] == "InvalidSpec"
        assert "spec.minReplicas (9) must not exceed spec.maxReplicas (4)" in degraded["message"]
        assert degraded["observedGeneration"] == 3
        assert condition_of(kmock, "wallet-above-threshold", "Ready")["status"] == "False"
        invalid = await wait_for(
            lambda: [e for e in events_for(kmock, "wallet-above-threshold") if e["reason"] == "InvalidSpec"],
            10,
            "the InvalidSpec Warning",
        )
        assert len(invalid) == 1 and invalid[0]["type"] == "Warning"
        await asyncio.sleep(3 * SYNC)
        assert replicas_of(kmock, "wallet-above-threshold") == 8
        assert len([e for e in events_for(kmock, "wallet-above-threshold") if e["reason"] == "InvalidSpec"]) == 1, (
            "one Warning per new problem, not one per sync"
        )

        # Fixed: healthy again.
        await merge_patch(kmock, url, {"spec": {"minReplicas": 2, "maxReplicas": 8}, "metadata": {"generation": 4}})
        await wait_for(
            lambda: condition_of(kmock, "wallet-above-threshold", "Degraded").get("status") == "False",
            10,
            "recovery from the invalid spec",
        )
        await wait_for(lambda: "Recovered" in event_reasons(kmock, "wallet-above-threshold"), 10, "Recovered")


async def test_kafka_down_or_a_missing_statefulset_is_degraded_with_a_message(kmock, broker):
    declare_resources(kmock)
    lag = LagMaker(broker.bootstrap, "deposit", "balance", partitions=8)
    lag.produce(per_partition=10)
    lag.commit([0] * 8)
    await create(kmock, STATEFULSETS_URL, statefulset_manifest("wallet-balance", 1))
    async with running_operator(kmock, broker.bootstrap, sync_seconds=SYNC, kafka_timeout=1.5):
        # A scaler whose StatefulSet does not exist.
        await create(kmock, SCALERS_URL, scaler_manifest("orphan", "wallet-nothing", group="balance", topic="deposit"))
        missing = await wait_for(
            lambda: (c := condition_of(kmock, "orphan", "Degraded")).get("status") == "True" and c,
            10,
            "Degraded for a missing StatefulSet",
        )
        assert missing["reason"] == "ScaleTargetNotFound" and "wallet-nothing" in missing["message"]

        await create(
            kmock,
            SCALERS_URL,
            scaler_manifest("wallet-balance", "wallet-balance", group="balance", topic="deposit", target_lag=1000),
        )
        await wait_for(
            lambda: condition_of(kmock, "wallet-balance", "Ready").get("status") == "True", 10, "a healthy scaler"
        )

        await asyncio.to_thread(broker.stop)  # a controlled shutdown takes a moment
        degraded = await wait_for(
            lambda: (c := condition_of(kmock, "wallet-balance", "Degraded")).get("status") == "True" and c,
            15,
            "Degraded once Kafka is gone",
        )
        assert degraded["reason"] == "KafkaUnavailable"
        # Which request notices first depends on how far the broker got in stopping.
        assert any(
            m in degraded["message"]
            for m in ("cluster metadata", "committed offsets", "no fetch answer", "cannot list offsets of deposit")
        ), degraded["message"]
        ready = condition_of(kmock, "wallet-balance", "Ready")
        assert ready["status"] == "False" and ready["reason"] == "KafkaUnavailable"
        warnings = await wait_for(
            lambda: [e for e in events_for(kmock, "wallet-balance") if e["type"] == "Warning"],
            10,
            "the KafkaUnavailable Warning",
        )
        assert [e["reason"] for e in warnings] == ["KafkaUnavailable"]
        assert replicas_of(kmock, "wallet-balance") == 1, "no scaling on what cannot be measured"
        assert status_of(kmock, "wallet-balance")["totalLag"] == 80, (
            "the last known lag stays, marked stale by Degraded"
        )
        assert metric("wallet_operator_degraded", namespace="wallet-test", scaler="wallet-balance") == 1
