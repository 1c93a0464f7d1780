"""Key → partition (walletkit.stream.partitioner) must equal Goka's default: Sarama's hash
partitioner over FNV-1a 32, ``p = int32(h) % n`` (Go truncated modulo), negated if negative.

The expected values are computed here independently: ctypes fixed-width arithmetic for
the hash, ctypes int32 reinterpretation and math.fmod (truncating) for the modulo.
"""

from __future__ import annotations

import ctypes
import math
import random

import pytest

from walletkit.stream.partitioner import fnv1a32, partition_for


def reference_fnv1a32(data: bytes) -> int:
    h = ctypes.c_uint32(2166136261)
    for byte in data:
        h = ctypes.c_uint32(h.value ^ byte)
        h = ctypes.c_uint32(h.value * 16777619)  # ctypes truncates to 32 bits
    return h.value


def reference_partition(key: bytes, n: int) -> int:
    signed = ctypes.c_int32(reference_fnv1a32(key)).value  # Go: int32(hasher.Sum32())
    p = int(math.fmod(signed, n))  # Go's %: truncates toward zero, sign of the dividend
    if p < 0:
        p = -p
    return p


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", 0x811C9DC5),
        (b"a", 0xE40C292C),
        (b"b", 0xE70C2DE5),
        (b"c", 0xE60C2C52),
        (b"foo", 0xA9F37ED7),
        (b"foobar", 0xBF9CF968),
    ],
)
def test_fnv1a32_known_vectors(data, expected):
    assert fnv1a32(data) == expected
    assert reference_fnv1a32(data) == expected


def test_fnv1a32_matches_reference_on_random_bytes():
    rng = random.Random(5)
    for _ in range(500):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        assert fnv1a32(data) == reference_fnv1a32(data)


def keys() -> list[bytes]:
    rng = random.Random(6)
    out = [b"", b"a", b"walletID001", b"walletID002", "wället".encode(), b"\x00", b"\xff" * 8]
    out += [f"walletID{i:03d}".encode() for i in range(300)]
    out += [f"user-{rng.getrandbits(64):x}".encode() for _ in range(300)]
    out += [bytes(rng.randrange(256) for _ in range(rng.randint(1, 24))) for _ in range(200)]
    return out


KEYS = keys()


def test_key_set_covers_negative_int32_hashes():
    negatives = [k for k in KEYS if ctypes.c_int32(reference_fnv1a32(k)).value < 0]
    assert 0.3 * len(KEYS) < len(negatives) < 0.7 * len(KEYS)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 10, 32, 7, 100])
def test_partition_for_matches_sarama_hash_partitioner(n):
    seen = set()
    for key in KEYS:
        p = partition_for(key, n)
        assert p == reference_partition(key, n), key
        assert 0 <= p < n
        seen.add(p)
    assert len(seen) == n  # every partition gets keys


@pytest.mark.parametrize(
    "key, n, expected",
    [
        # fnv1a32(b"a") = 0xe40c292c → int32 -468965076; Go: -468965076 % n = -(468965076 % n), negated
        (b"a", 8, 468965076 % 8),
        (b"a", 10, 468965076 % 10),
        (b"a", 3, 468965076 % 3),
        # fnv1a32(b"") = 0x811c9dc5 → int32 -2128831035
        (b"", 32, 2128831035 % 32),
        (b"", 10, 2128831035 % 10),
        # fnv1a32(b"foobar") = 0xbf9cf968 → int32 -1080231576
        (b"foobar", 8, 1080231576 % 8),
    ],
)
def test_partition_for_negative_hashes_hand_computed(key, n, expected):
    assert partition_for(key, n) == expected


def test_negative_hash_differs_from_unsigned_modulo():
    # the reason the int32 step matters: uint32 % n would put b"a" elsewhere for n=10
    assert 0xE40C292C % 10 != partition_for(b"a", 10)


def test_positive_hash_is_plain_modulo():
    key = next(k for k in KEYS if fnv1a32(k) < 0x80000000)
    for n in (3, 8, 10, 32):
        assert partition_for(key, n) == fnv1a32(key) % n
