"""Key → partition, the way Goka (Sarama's hash partitioner, FNV-1a 32) does it.

Using Goka's partitioner instead of librdkafka's default (CRC32) keeps a wallet's
records in the same partition whether a Go emitter or ours wrote them, so both can
share a cluster without splitting one wallet's state across two partitions.
"""

from __future__ import annotations

from functools import lru_cache

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


@lru_cache(maxsize=65536)
def partition_for(key: bytes, partitions: int) -> int:
    """Sarama: ``p = int32(fnv1a(key)) % n; if p < 0 { p = -p }``."""
    h = fnv1a32(key)
    if h >= 0x80000000:
        h -= 0x100000000  # int32 reinterpretation
    p = abs(h) % partitions  # Go's % truncates toward zero: |a % n| == |a| % n
    return p
