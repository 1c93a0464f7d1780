"""Standby replicas: which partitions a member keeps warm for the next rebalance.

librdkafka runs the group's assignor inside one member and takes no custom assignor, so
the assignment cannot be steered towards warm copies. It can be *predicted*: the range
assignor (which keeps co-partitioned topics together) lays the partitions out in order over
the members sorted by ``group.instance.id`` when every member has one (static membership, a
StatefulSet's pod names), else by member id. Given the group's members, every member can
compute what it would own after any ``replicas`` other members left, and after the next
StatefulSet ordinal joined, and keep exactly those partitions warm (followed from the
changelog, ``read_committed``).

The guarantee: after up to ``replicas`` members fail at once (or one is added by a scale-up),
every partition that moves lands on a member that holds it warm, and the takeover restores
only the tail written since. With ``replicas`` at least the number of other members, every
member keeps every partition (Goka's hot standby).

The membership comes from the broker (``DescribeConsumerGroups``), read after each
assignment without blocking the processor's loop.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Failure scenarios computed at most; beyond that every partition is kept warm.
MAX_SCENARIOS = 20_000


@dataclass(frozen=True)
class Member:
    """A group member as the assignor sorts it."""

    member_id: str
    instance_id: str | None = None


def sort_keys(members: Sequence[Member]) -> list[str]:
    """The members' sort keys, as the range assignor compares them (see the module doc)."""
    static = all(m.instance_id for m in members)
    return sorted((m.instance_id if static else m.member_id) or "" for m in members)


def range_assignment(keys: Sequence[str], partitions: int) -> dict[str, list[int]]:
    """The range assignor's layout of ``partitions`` over members ``keys`` (sorted)."""
    keys = sorted(keys)
    if not keys:
        return {}
    per, extra = divmod(partitions, len(keys))
    out: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        start = per * i + min(i, extra)
        out[key] = list(range(start, start + per + (1 if i < extra else 0)))
    return out


def next_ordinal(keys: Sequence[str]) -> str | None:
    """The next StatefulSet pod name (``<name>-<n>``) when every key is one of the same set."""
    parsed = [re.fullmatch(r"(.+)-(\d+)", k) for k in keys]
    if not keys or not all(parsed) or len({m.group(1) for m in parsed if m}) != 1:
        return None
    prefix = parsed[0].group(1) if parsed[0] else ""
    return f"{prefix}-{max(int(m.group(2)) for m in parsed if m) + 1}"


def standby_partitions(me: str, keys: Sequence[str], partitions: int, replicas: int) -> set[int]:
    """Partitions ``me`` does not own now but would after up to ``replicas`` other members
    left, or after the next ordinal joined (see the module doc)."""
    if replicas <= 0 or me not in keys:
        return set()
    owned = set(range_assignment(keys, partitions).get(me, []))
    others = [k for k in keys if k != me]
    if replicas >= len(others):
        return set(range(partitions)) - owned
    scenarios = sum(math.comb(len(others), k) for k in range(1, replicas + 1))
    if scenarios > MAX_SCENARIOS:
        return set(range(partitions)) - owned
    wanted: set[int] = set()
    for k in range(1, replicas + 1):
        for gone in itertools.combinations(others, k):
            left = [key for key in keys if key not in gone]
            wanted.update(range_assignment(left, partitions)[me])
    joining = next_ordinal(keys)
    if joining is not None and joining not in keys:
        wanted.update(range_assignment([*keys, joining], partitions).get(me, []))
    return wanted - owned


class MembershipWatch:
    """Reads the group's members after each assignment, without blocking the caller.

    ``request()`` starts a DescribeConsumerGroups; ``poll()`` returns the members once the
    broker answered with a stable group that includes ``member_id`` (else None, retrying
    every ``retry_seconds``).
    """

    def __init__(self, admin: Any, group: str, *, retry_seconds: float = 1.0, timeout: float = 10.0) -> None:
        self._admin = admin
        self.group = group
        self._retry = retry_seconds
        self._timeout = timeout
        self._future: concurrent.futures.Future | None = None
        self._wanted_member: str | None = None
        self._next_try = 0.0
        self._pending: list[concurrent.futures.Future] = []

    def request(self, member_id: str) -> None:
        self._wanted_member = member_id
        self._next_try = 0.0
        self._future = None

    def poll(self) -> list[Member] | None:
        if self._wanted_member is None:
            return None
        now = time.monotonic()
        if self._future is None:
            if now < self._next_try:
                return None
            self._future = self._admin.describe_consumer_groups([self.group], request_timeout=self._timeout)[self.group]
            self._pending.append(self._future)
            self._pending = [f for f in self._pending if not f.done()]
            return None
        if not self._future.done():
            return None
        future, self._future = self._future, None
        self._next_try = now + self._retry
        try:
            description = future.result()
        except Exception as exc:  # noqa: BLE001 - retried; the standby plan waits
            log.debug("describing group %s: %s", self.group, exc)
            return None
        members = [Member(m.member_id, m.group_instance_id) for m in description.members]
        state = str(getattr(description.state, "name", description.state)).upper()
        if "STABLE" not in state or not any(m.member_id == self._wanted_member for m in members):
            return None  # mid-rebalance: try again
        self._wanted_member = None
        return members

    def describe_now(self, timeout: float) -> list[Member]:
        """The group's members now, blocking up to ``timeout``."""
        future = self._admin.describe_consumer_groups([self.group], request_timeout=timeout)[self.group]
        self._pending.append(future)
        description = future.result(timeout=timeout + 1)
        return [Member(m.member_id, m.group_instance_id) for m in description.members]

    def close(self, grace: float = 5.0) -> None:
        """Wait (bounded) for requests librdkafka still holds: destroying an admin client under
        its own background thread can crash the process."""
        concurrent.futures.wait(self._pending, timeout=grace)
        self._pending.clear()
        self._future = None
