"""Fencing members that left without a word (killed, partitioned away), at assignment.

A departed member's open transaction holds its changelog partitions' last stable offset,
and its offset commits keep ours from being read (committed offsets are fetched stable),
until the broker aborts it after ``transaction.timeout.ms``. With static membership its
transactional id is known (``<group>-<instance id>``): registering that id ends the
transaction and fences the member now. Only members gone from the group are fenced, and
only under exactly-once with an instance id of our own (else ids are not predictable).

Beside :mod:`~walletkit.stream.standby`, which reads the same membership to plan warm copies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from walletkit.stream.errors import StreamError
from walletkit.stream.kafka import init_transactions
from walletkit.stream.standby import Member, MembershipWatch

log = logging.getLogger("walletkit.stream.processor")


def transactional_id(group: str, member: str) -> str:
    """The transactional id of ``member`` (its instance id, or its store's persistent id) in ``group``."""
    return f"{group}-{member}"


def fence_departed(
    group: str, instance_id: str, watch: MembershipWatch, known: Sequence[Member], make_producer: Callable[..., Any]
) -> list[Member] | None:
    """Fence the members of ``known`` (the group as last read) that are gone from it now.

    Returns the group's members as read now (None if the broker could not say: nothing is
    fenced, and the broker's timeout ends what was left open anyway).
    """
    try:
        members = watch.describe_now(timeout=5.0)
    except Exception as exc:  # noqa: BLE001 - the broker's timeout ends it anyway
        log.info("group %s: cannot list members to fence departed ones: %s", group, exc)
        return None
    current = {m.instance_id for m in members}
    departed = sorted({m.instance_id for m in known if m.instance_id} - current - {instance_id})
    for instance in departed:
        tid = transactional_id(group, instance)
        started = time.monotonic()
        try:
            producer = make_producer(**{"transactional.id": tid})
            init_transactions(producer, tid, time.monotonic() + 10.0, 5.0)
            producer.flush(0)
            log.info(
                "group %s: fenced departed member %s (transactional id %s) in %.2fs, ending what it left open",
                group,
                instance,
                tid,
                time.monotonic() - started,
            )
        except StreamError as exc:
            log.warning("group %s: could not fence departed member %s: %s", group, instance, exc)
    return list(members)
