"""The operator under test: kopf running our handlers against the kmock Kubernetes emulator, with a
real Apache Kafka broker for the lag. Helpers to build lag and to watch the emulator's objects."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from support import require_module  # noqa: E402

kopf = require_module("kopf", "pip install -c constraints.txt kopf")
kmock_lib = require_module("kmock", "pip install -c constraints.txt kmock")

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from wallet_operator.handlers import OperatorRuntime, build_registry, settings  # noqa: E402
from wallet_operator.kafka_lag import LagReader  # noqa: E402
from wallet_operator.kube import KubeEndpoint, ScaleClient  # noqa: E402
from wallet_operator.reconciler import Reconciler  # noqa: E402
from wallet_operator.resource import GROUP, KIND, PLURAL, VERSION  # noqa: E402

NAMESPACE = "wallet-test"
SCALERS = f"{GROUP}/{VERSION}/{PLURAL}"
STATEFULSETS = "apps/v1/statefulsets"
EVENTS = "v1/events"
SCALERS_URL = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"
STATEFULSETS_URL = f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets"

log = logging.getLogger(__name__)
#: librdkafka's own log lines (e.g. "connection refused" once a test stops its broker) go to
#: Python logging, where pytest captures them, instead of stderr.
_RDKAFKA_LOG = logging.getLogger("librdkafka")


class Emulator(kmock_lib.KubernetesEmulator):
    """kmock's emulator plus what an API server does and kmock leaves out: a name from
    ``metadata.generateName`` (kopf names its Events that way; without it the second Event
    conflicts with the first), a uid, and a new ``resourceVersion`` on every write (kopf waits
    for the version its patch returned to come back on the watch; a version that never changes
    costs its full consistency timeout on every patch). Use with ``pytest.mark.kmock(cls=Emulator)``."""

    _versions = itertools.count(1)

    async def _handle(self, request: Any) -> Any:
        data = request.data
        version = str(next(self._versions))
        if request.action == kmock_lib.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:8]}"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["resourceVersion"] = version
        elif request.action == kmock_lib.action.UPDATE and isinstance(data, dict):
            data.setdefault("metadata", {})["resourceVersion"] = version
        elif request.action == kmock_lib.action.UPDATE and isinstance(data, list):  # a JSON patch
            # A failed "test" is 422 Unprocessable on an API server (kopf then retries on the next
            # event with the fresh version); kmock would answer 500, which kopf retries as is.
            try:
                stored_version = (
                    self.objects[request.resource, request.namespace, request.name]
                    .raw.get("metadata", {})
                    .get("resourceVersion")
                )
            except KeyError:
                stored_version = None
            for op in data:
                if (
                    op.get("op") == "test"
                    and op.get("path") == "/metadata/resourceVersion"
                    and op.get("value") != stored_version
                ):
                    raise kmock_lib.KubernetesError(
                        status=422,
                        reason="Invalid",
                        message=(
                            f"the object has been modified (resourceVersion {stored_version}, not {op.get('value')})"
                        ),
                    )
            data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
        return await super()._handle(request)


def declare_resources(kmock: Any) -> None:
    """Everything kopf and the operator touch, as the API server's discovery would list it."""
    kmock.resources[SCALERS] = dict(
        kind=KIND,
        singular="processorscaler",
        namespaced=True,
        verbs={"list", "watch", "get", "patch", "create", "delete"},
        subresources={"status"},
        shortnames=set(),
        categories=set(),
    )
    kmock.resources[STATEFULSETS] = dict(
        kind="StatefulSet",
        singular="statefulset",
        namespaced=True,
        verbs={"get", "list", "patch", "create"},
        subresources={"scale", "status"},
        shortnames=set(),
        categories=set(),
    )
    kmock.resources[EVENTS] = dict(
        kind="Event",
        singular="event",
        namespaced=True,
        verbs={"create", "list"},
        subresources=set(),
        shortnames=set(),
        categories=set(),
    )
    kmock.resources["v1/namespaces"] = dict(
        kind="Namespace",
        singular="namespace",
        namespaced=False,
        verbs={"list", "watch", "get"},
        subresources=set(),
        shortnames=set(),
        categories=set(),
    )


# ---------------------------------------------------------------- the operator


@dataclass
class RunningOperator:
    runtime: OperatorRuntime
    task: asyncio.Task
    stop_flag: asyncio.Event
    health_url: str


@contextlib.asynccontextmanager
async def running_operator(
    kmock: Any, bootstrap: str, *, sync_seconds: float = 0.5, kafka_timeout: float = 2.0, health_port: int | None = None
) -> AsyncIterator[RunningOperator]:
    """kopf.operator() as a task, in this event loop, with the test's Kafka and emulator."""
    from walletkit.devstack.net import free_port

    endpoint = KubeEndpoint(server=str(kmock.url).rstrip("/"), namespace=NAMESPACE)
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-lag")
    scale = ScaleClient(endpoint, timeout=5)
    reader = LagReader({"bootstrap.servers": bootstrap, "logger": _RDKAFKA_LOG}, timeout=kafka_timeout)
    runtime = OperatorRuntime(
        endpoint=endpoint, reconciler=Reconciler(reader, scale, executor), scale=scale, sync_seconds=sync_seconds
    )
    s = settings(reporting_instance="test")
    s.posting.default_backoffs = (0.1, 0.2)
    s.networking.error_backoffs = (0.1, 0.2, 0.5)
    s.watching.reconnect_backoff = 0.1
    s.background.instant_exit_timeout = 0.1
    s.persistence.consistency_timeout = 0.7
    port = health_port or free_port()
    stop_flag, ready_flag = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=build_registry(runtime),
            settings=s,
            namespaces=[NAMESPACE],
            standalone=True,
            liveness_endpoint=f"http://127.0.0.1:{port}/healthz",
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    )
    try:
        await wait_for(lambda: ready_flag.is_set() or task.done(), 20, "the operator to start")
        if task.done():
            task.result()  # raise its error
        yield RunningOperator(runtime, task, stop_flag, f"http://127.0.0.1:{port}/healthz")
    finally:
        stop_flag.set()
        try:
            await asyncio.wait_for(task, 15)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)  # queued reads go; running ones end in close()
            await runtime.close()


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` (sync) until truthy; its value. Fails the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (KeyError, TypeError, IndexError, AssertionError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout:g}s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- the emulator's objects


def scaler_manifest(
    name: str,
    target: str,
    *,
    group: str,
    topic: str,
    min_replicas: int = 1,
    max_replicas: int = 8,
    target_lag: int = 500,
    up_window: int = 0,
    down_window: int = 3,
    paused: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": target},
        "consumerGroup": group,
        "topic": topic,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "targetLagPerReplica": target_lag,
        "scaleUp": {"stabilizationWindowSeconds": up_window},
        "scaleDown": {"stabilizationWindowSeconds": down_window},
        "paused": paused,
        **extra,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": NAMESPACE, "generation": 1},
        "spec": spec,
    }


def statefulset_manifest(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"replicas": replicas, "serviceName": f"{name}-headless", "selector": {"matchLabels": {"app": name}}},
        "status": {"replicas": replicas},
    }


async def create(kmock: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with kmock.post(url, json=body) as resp:
        assert resp.status < 300, await resp.text()
        return await resp.json()


async def merge_patch(kmock: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with kmock.patch(url, json=body, headers={"Content-Type": "application/merge-patch+json"}) as resp:
        assert resp.status < 300, await resp.text()
        return await resp.json()


def stored(kmock: Any, resource: str, name: str) -> dict[str, Any] | None:
    """The emulator's current copy of an object (a plain dict), or None when absent or deleted."""
    try:
        obj = kmock.objects[resource, NAMESPACE, name]
    except KeyError:
        return None
    return None if obj.deleted else copy.deepcopy(obj.raw)


def replicas_of(kmock: Any, statefulset: str) -> int:
    return stored(kmock, STATEFULSETS, statefulset)["spec"]["replicas"]


def status_of(kmock: Any, scaler: str) -> dict[str, Any]:
    return (stored(kmock, SCALERS, scaler) or {}).get("status") or {}


def condition_of(kmock: Any, scaler: str, type_: str) -> dict[str, Any]:
    return next((c for c in status_of(kmock, scaler).get("conditions", []) if c["type"] == type_), {})


def events_for(kmock: Any, scaler: str) -> list[dict[str, Any]]:
    """Events the operator posted about one scaler, oldest first."""
    found = []
    for key in list(kmock.objects):
        if key[0].plural != "events":
            continue
        obj = kmock.objects[key]
        if obj.deleted:
            continue
        event = copy.deepcopy(obj.raw)
        if (event.get("involvedObject") or {}).get("name") == scaler:
            found.append(event)
    return found


def event_reasons(kmock: Any, scaler: str) -> list[str]:
    return [e.get("reason") for e in events_for(kmock, scaler)]


async def follow_statefulsets(kmock: Any, names: list[str], stop: asyncio.Event) -> None:
    """A stand-in for the StatefulSet controller: status.replicas follows spec.replicas (the
    emulator has no controllers), so the Scaling condition can be seen to settle."""
    while not stop.is_set():
        for name in names:
            sts = stored(kmock, STATEFULSETS, name)
            if sts and sts.get("status", {}).get("replicas") != sts["spec"]["replicas"]:
                await merge_patch(
                    kmock, f"{STATEFULSETS_URL}/{name}/status", {"status": {"replicas": sts["spec"]["replicas"]}}
                )
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------- Kafka: topics and lag


class LagMaker:
    """Builds lag for a group on a topic: produce records, commit the group's offsets by hand
    (manual assign + synchronous commit: no group join, which takes seconds on the test broker)."""

    def __init__(self, bootstrap: str, topic: str, group: str, partitions: int = 8) -> None:
        self.bootstrap, self.topic, self.group, self.partitions = bootstrap, topic, group, partitions
        admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _RDKAFKA_LOG})
        for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
            future.result(15)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "logger": _RDKAFKA_LOG})
        self.end = [0] * partitions

    def produce(self, per_partition: int) -> None:
        for p in range(self.partitions):
            for i in range(per_partition):
                self.producer.produce(self.topic, value=b"x" * 16, key=str(i).encode(), partition=p)
            self.producer.poll(0)
        assert self.producer.flush(15) == 0
        self.end = [e + per_partition for e in self.end]

    def commit(self, offsets: list[int]) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.group,
                "enable.auto.commit": False,
                "logger": _RDKAFKA_LOG,
            }
        )
        try:
            consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in enumerate(offsets)], asynchronous=False
            )
        finally:
            consumer.close()

    def drain(self) -> None:
        """The group caught up: its offsets at the end of every partition."""
        self.commit(list(self.end))
