"""The kopf handlers, registered into a registry of their own (so tests can run several operators).

- ``on.create`` / ``on.update`` / ``on.resume``: sync at once, so a new resource, a spec change
  (pause, bounds, an invalid value) or an operator restart shows in status without waiting;
- ``timer`` (every ``sync_seconds``): the periodic sync that follows the lag;
- ``on.delete`` (optional: deletion is never blocked by it): forget the resource's history and
  metric series. The StatefulSet keeps the replicas it has; nothing else is owned.

kopf's own bookkeeping (handler progress, the last-handled spec) goes to annotations under the
resource's API group, not to status, so the CRD's status schema stays closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import kopf

from wallet_operator.kube import KubeEndpoint, ScaleClient
from wallet_operator.reconciler import Reconciler, SyncResult
from wallet_operator.resource import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)


@dataclass
class OperatorRuntime:
    """Everything the handlers use, built once per process (main.py, or a test)."""

    endpoint: KubeEndpoint
    reconciler: Reconciler
    scale: ScaleClient
    sync_seconds: float = 15.0

    async def close(self) -> None:
        await self.scale.close()
        # Waits (off the event loop) for Kafka reads still in flight before dropping the client.
        await asyncio.to_thread(self.reconciler.lag_reader.close)


def settings(*, reporting_instance: str = "wallet-operator") -> kopf.OperatorSettings:
    """kopf settings for a namespaced, least-privilege operator."""
    s = kopf.OperatorSettings()
    # One replica owns the resources (the chart runs one, Recreate): no peering objects needed.
    s.peering.standalone = True
    # No watching of CRDs and namespaces (that would need cluster-wide list/watch).
    s.scanning.disabled = True
    s.persistence.finalizer = f"{GROUP}/operator"
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    s.posting.reporting_component = "wallet-operator"
    s.posting.reporting_instance = reporting_instance
    s.posting.event_name_prefix = "wallet-operator-"
    # Bounded API calls: a hung API server must not stall a handler for the default 5 minutes.
    s.networking.request_timeout = 30
    s.networking.connect_timeout = 10
    s.watching.server_timeout = 300
    return s


def build_registry(runtime: OperatorRuntime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    resource = dict(group=GROUP, version=VERSION, plural=PLURAL)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return runtime.endpoint.connection_info()

    @kopf.on.probe(id="scalers", registry=registry)
    def scalers(**_: Any) -> int:
        return runtime.reconciler.scalers

    async def sync(body: kopf.Body, patch: kopf.Patch, stopped: Any = None) -> None:
        meta = body.metadata
        work = asyncio.ensure_future(
            runtime.reconciler.sync(
                uid=meta.uid,
                namespace=meta.namespace,
                name=meta.name,
                spec=body.spec,
                status=body.status,
                generation=meta.get("generation"),
            )
        )
        if stopped is not None:
            # A timer's sync may wait on Kafka for its whole timeout; an exiting operator (SIGTERM)
            # or a deleted resource should not wait for it. The abandoned read ends in its thread.
            stop = asyncio.ensure_future(stopped.wait())
            try:
                await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                return
        try:
            result = await work
        except Exception:  # a bug, not a state of the world: log it, keep the operator running
            log.exception("sync of %s/%s failed", meta.namespace, meta.name)
            kopf.warn(body, reason="InternalError", message="sync failed unexpectedly; see the operator's log")
            return
        apply(result, body, patch)

    # Explicit ids: kopf keys its progress annotations by them (they must be valid annotation keys).
    @kopf.on.resume(**resource, id="sync-on-resume", registry=registry)
    @kopf.on.create(**resource, id="sync-on-create", registry=registry)
    @kopf.on.update(**resource, id="sync-on-update", field="spec", registry=registry)
    async def spec_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await sync(body, patch)

    @kopf.timer(
        **resource, id="sync", interval=runtime.sync_seconds, initial_delay=runtime.sync_seconds, registry=registry
    )
    async def periodic(body: kopf.Body, patch: kopf.Patch, stopped: Any, **_: Any) -> None:
        await sync(body, patch, stopped)

    @kopf.on.delete(**resource, id="forget", optional=True, registry=registry)
    def deleted(meta: kopf.Meta, **_: Any) -> None:
        runtime.reconciler.forget(meta.uid, meta.namespace, meta.name)
        log.info("scaler %s/%s deleted; its StatefulSet keeps its replicas", meta.namespace, meta.name)

    return registry


def apply(result: SyncResult, body: kopf.Body, patch: kopf.Patch) -> None:
    """Write the sync's status through kopf's patch (applied after the handler) and post its Events."""
    for key, value in result.status.items():
        patch.status[key] = value
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
