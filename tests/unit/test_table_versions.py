"""Table versions (walletkit.stream.versions): names, and the records of the versions topic."""

from __future__ import annotations

import json

import pytest

from walletkit.stream.versions import TableVersion, _decode, version_of


def test_versions_follow_each_other_under_the_base_name():
    first = TableVersion.first("balance")
    assert (first.group, first.version) == ("balance", 1)
    second = first.next()
    assert (second.base, second.group, second.version) == ("balance", "balance-v2", 2)
    assert second.next().group == "balance-v3"
    assert version_of("above_threshold", "above_threshold-v12") == 12
    assert version_of("balance", "balance") == 1


@pytest.mark.parametrize("group", ["balance-v", "balance-vx", "above_threshold-v2", "balance2", "balance-v2-extra"])
def test_a_group_that_is_no_version_of_the_table_is_refused(group):
    with pytest.raises(ValueError):
        version_of("balance", group)


def test_records_decode_to_versions_and_bad_ones_are_ignored():
    assert _decode(b"balance", json.dumps({"group": "balance-v3", "version": 3}).encode()) == TableVersion(
        "balance", "balance-v3", 3
    )
    # The version number is the group's, whatever the record claims: one source of truth.
    assert _decode(b"balance", json.dumps({"group": "balance-v3", "version": 9}).encode()).version == 3
    for key, value in [
        (b"balance", b"not json"),
        (b"balance", b"{}"),
        (b"balance", b'{"group": "other-v2"}'),
        (b"\xff", b'{"group": "x"}'),
        (None, b"{}"),
        (b"balance", None),
    ]:
        assert _decode(key, value) is None
