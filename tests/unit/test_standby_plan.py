"""The standby plan: what each member keeps warm so that a takeover restores only the tail.

The guarantee checked here for every small group: after any ``replicas`` other members
leave at once (or the next StatefulSet ordinal joins), every partition a survivor is
assigned is one it owned or kept warm. That the broker's range assignor really lays
partitions out as ``range_assignment`` predicts is checked against Apache Kafka in
tests/faults/test_standby_failover.py.
"""

from __future__ import annotations

import itertools
import random

import pytest

from walletkit.stream.standby import Member, next_ordinal, range_assignment, sort_keys, standby_partitions


def test_range_assignment_is_librdkafkas_layout():
    # librdkafka's documented example: 2 consumers, 3 partitions -> C0 [0, 1], C1 [2].
    assert range_assignment(["c1", "c0"], 3) == {"c0": [0, 1], "c1": [2]}
    assert range_assignment(["a", "b", "c"], 8) == {"a": [0, 1, 2], "b": [3, 4, 5], "c": [6, 7]}
    assert range_assignment(["a", "b", "c"], 2) == {"a": [0], "b": [1], "c": []}
    assert range_assignment([], 4) == {}


def test_static_members_sort_by_instance_id_else_all_by_member_id():
    static = [Member("m-zz", "wallet-balance-1"), Member("m-aa", "wallet-balance-0")]
    assert sort_keys(static) == ["wallet-balance-0", "wallet-balance-1"]
    mixed = [Member("m-zz", "wallet-balance-0"), Member("m-aa", None)]
    assert sort_keys(mixed) == ["m-aa", "m-zz"]


def test_next_ordinal_only_for_one_statefulset():
    assert next_ordinal(["wallet-balance-0", "wallet-balance-1"]) == "wallet-balance-2"
    assert next_ordinal(["wallet-balance-9", "wallet-balance-10"]) == "wallet-balance-11"
    assert next_ordinal(["a-0", "b-1"]) is None
    assert next_ordinal(["wallet-7f3c"]) is None


def _assert_covered(keys: list[str], partitions: int, replicas: int) -> None:
    now = range_assignment(keys, partitions)
    warm = {k: standby_partitions(k, keys, partitions, replicas) for k in keys}
    for k in keys:
        assert not warm[k] & set(now[k]), "a member never keeps a standby of what it owns"
    for size in range(1, min(replicas, len(keys) - 1) + 1):
        for gone in itertools.combinations(keys, size):
            left = [k for k in keys if k not in gone]
            for k, got in range_assignment(left, partitions).items():
                cold = set(got) - set(now[k]) - warm[k]
                assert not cold, (keys, partitions, replicas, gone, k, cold)
    joining = next_ordinal(keys)
    if joining is not None:
        for k, got in range_assignment([*keys, joining], partitions).items():
            if k != joining:
                assert set(got) <= set(now[k]) | warm[k], (keys, partitions, "scale-up", k)


@pytest.mark.parametrize("members", range(1, 7))
@pytest.mark.parametrize("partitions", [1, 3, 8, 12])
@pytest.mark.parametrize("replicas", [1, 2])
def test_any_covered_failure_lands_every_moved_partition_on_a_warm_copy(members, partitions, replicas):
    _assert_covered([f"wallet-balance-{i}" for i in range(members)], partitions, replicas)


def test_random_member_ids_are_covered_too():
    rng = random.Random(7)
    for _ in range(200):
        keys = [f"wallet-{rng.getrandbits(32):08x}" for _ in range(rng.randint(1, 6))]
        _assert_covered(keys, rng.randint(1, 16), rng.randint(0, 3))


def test_no_replicas_keeps_nothing_and_enough_replicas_keep_everything():
    keys = ["wallet-balance-0", "wallet-balance-1", "wallet-balance-2"]
    assert standby_partitions("wallet-balance-0", keys, 8, 0) == set()
    assert standby_partitions("wallet-balance-0", keys, 8, 2) == set(range(3, 8))  # Goka's hot standby
    assert standby_partitions("stranger", keys, 8, 1) == set()


def test_one_replica_keeps_far_less_than_everything_in_a_large_group():
    keys = [f"wallet-balance-{i}" for i in range(8)]
    sizes = [len(standby_partitions(k, keys, 64, 1)) for k in keys]
    assert max(sizes) < 64 - 8, sizes  # a plan, not a full copy
    assert min(sizes) > 0
