"""Kafka's default partitioning, so a record lands where a Kafka client would put it.

Keyed records go to `toPositive(murmur2(key)) % partition_count`, exactly as the Java client's
`BuiltInPartitioner` does (and librdkafka's `murmur2_random`, but not its default
`consistent_random`). `murmur2` is Kafka's variant of MurmurHash2: seed `0x9747b28c`, 4-byte
little-endian blocks, and a signed 32-bit result like Java's `Utils.murmur2`.

Keyless records use `StickyPartitioner` (KIP-480): stay on one partition until the batch for it
is done, then move to a different one, so batches fill up instead of spreading thin.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

from headwater.errors import InvalidPartitionsError

__all__ = ["StickyPartitioner", "murmur2", "partition_for_key"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF

# Ready-made unpackers for keys of up to 64 whole blocks (256 bytes): one C call decodes every
# block, which beats slicing or `int.from_bytes` per block. Longer keys format their own.
_UNPACKERS: tuple[Callable[[Any], tuple[Any, ...]], ...] = tuple(
    struct.Struct(f"<{blocks}I").unpack_from for blocks in range(65)
)
_UNPACKER_LIMIT = len(_UNPACKERS)


def _murmur2_unsigned(data: bytes) -> int:
    """Kafka's murmur2 of `data` as an unsigned 32-bit int (masking stands in for Java's wrap)."""
    m = _M
    mask = _MASK
    length = len(data)
    h = _SEED ^ length
    blocks = length >> 2
    if blocks:
        if blocks < _UNPACKER_LIMIT:
            words = _UNPACKERS[blocks](data)
        else:
            words = struct.unpack_from(f"<{blocks}I", data)
        for word in words:
            k = (word * m) & mask
            # k ^= k >>> 24; k *= m; h *= m; h ^= k  (the two products are masked once)
            h = ((h * m) ^ ((k ^ (k >> 24)) * m)) & mask
    tail = length & 3
    if tail:
        end = length - tail
        if tail == 3:
            h ^= data[end + 2] << 16
        if tail >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    return h ^ (h >> 15)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of `data`, signed 32-bit as Java's `Utils.murmur2` returns it."""
    h = _murmur2_unsigned(data)
    return h - 0x100000000 if h & 0x80000000 else h


def _check_partition_count(partition_count: int) -> None:
    if partition_count < 1:
        raise InvalidPartitionsError(f"partition count must be at least 1, got {partition_count}")


def partition_for_key(key: bytes, partition_count: int) -> int:
    """The partition a Kafka client's default partitioner picks for a record with `key`.

    Raises `InvalidPartitionsError` if `partition_count` is less than 1.
    """
    if partition_count < 1:
        _check_partition_count(partition_count)
    return (_murmur2_unsigned(key) & 0x7FFFFFFF) % partition_count


class StickyPartitioner:
    """Partitions keyless records the way Kafka's sticky partitioner does (KIP-480).

    Every record goes to `partition()` until `next_batch()` is called (when the batch for that
    partition is sent or full); then a different partition is chosen at random, when there is
    more than one. Over time every partition is used. Not locked: give each producer thread its
    own instance, or guard it.
    """

    __slots__ = ("_current", "_partition_count", "_rng")

    def __init__(self, partition_count: int, *, rng: random.Random | None = None) -> None:
        """Start on a random partition of `partition_count` (at least 1).

        `rng` makes the choices reproducible (tests); by default each instance seeds its own.
        """
        _check_partition_count(partition_count)
        self._partition_count = partition_count
        self._rng = rng if rng is not None else random.Random()
        self._current = self._rng.randrange(partition_count)

    @property
    def partition_count(self) -> int:
        return self._partition_count

    def partition(self) -> int:
        """The partition for the next keyless record."""
        return self._current

    def next_batch(self) -> int:
        """The current batch is done: move to another partition and return it.

        The new partition is uniform over the others; with a single partition it stays put.
        """
        count = self._partition_count
        if count > 1:
            pick = self._rng.randrange(count - 1)
            # Skip over the current partition so the choice is never a repeat.
            self._current = pick + 1 if pick >= self._current else pick
        return self._current

    def __repr__(self) -> str:
        return (
            f"StickyPartitioner(partition_count={self._partition_count}, partition={self._current})"
        )
