"""Kafka's default partitioner: murmur2 golden values, kafka-python agreement, sticky choice."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from headwater.errors import InvalidPartitionsError
from headwater.log.partitioner import StickyPartitioner, murmur2, partition_for_key

# Kafka's own UtilsTest.testMurmur2 cases (Java's signed 32-bit results).
GOLDEN = [
    ("21", -973932308),
    ("foobar", -790332482),
    ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829),
    ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    ("abc", 479470107),
]


def _signed(value: int) -> int:
    """kafka-python returns murmur2 unsigned; Java (and we) return it signed."""
    return value - (1 << 32) if value >= 1 << 31 else value


def _reference_partition(key: bytes, partition_count: int) -> int:
    # kafka.partitioner.default.DefaultPartitioner.partition, minus the cluster metadata.
    return (kafka_python_murmur2(key) & 0x7FFFFFFF) % partition_count


@pytest.mark.parametrize(("text", "expected"), GOLDEN)
def test_murmur2_matches_kafka_golden_values(text: str, expected: int) -> None:
    data = text.encode()
    assert murmur2(data) == expected
    assert _signed(kafka_python_murmur2(data)) == expected


def test_murmur2_of_empty_input() -> None:
    # Only the seed and the finalisation mix: 0x9747b28c ^ 0, then mixed.
    assert murmur2(b"") == 275646681
    assert _signed(kafka_python_murmur2(b"")) == 275646681


def test_murmur2_is_a_signed_32_bit_int() -> None:
    values = [murmur2(bytes([i % 256]) * i) for i in range(300)]
    assert all(-(1 << 31) <= v < 1 << 31 for v in values)
    assert any(v < 0 for v in values)
    assert any(v > 0 for v in values)


def test_murmur2_accepts_bytes_like() -> None:
    data = b"a-little-bit-longer-string"
    assert murmur2(bytearray(data)) == murmur2(data)
    assert murmur2(memoryview(data)) == murmur2(data)


def test_murmur2_long_keys_use_the_same_hash() -> None:
    # Past the ready-made unpackers (256 bytes) the block decoding takes another path.
    rng = random.Random(7)
    for length in (252, 255, 256, 257, 259, 260, 1000, 4099):
        data = rng.randbytes(length)
        assert murmur2(data) == _signed(kafka_python_murmur2(data)), length


@settings(max_examples=500)
@given(st.binary(min_size=0, max_size=100))
def test_murmur2_agrees_with_kafka_python(data: bytes) -> None:
    assert murmur2(data) == _signed(kafka_python_murmur2(data))


@pytest.mark.parametrize("tail", [0, 1, 2, 3])
@settings(max_examples=100)
@given(data=st.data())
def test_murmur2_agrees_for_every_tail_length(tail: int, data: st.DataObject) -> None:
    blocks = data.draw(st.integers(min_value=0, max_value=25))
    key = data.draw(st.binary(min_size=4 * blocks + tail, max_size=4 * blocks + tail))
    assert murmur2(key) == _signed(kafka_python_murmur2(key))


@settings(max_examples=500)
@given(st.binary(min_size=0, max_size=100), st.integers(min_value=1, max_value=1000))
def test_partition_for_key_agrees_with_kafka_python(key: bytes, partition_count: int) -> None:
    partition = partition_for_key(key, partition_count)
    assert partition == _reference_partition(key, partition_count)
    assert 0 <= partition < partition_count


def test_partition_for_key_uses_to_positive_not_abs() -> None:
    # Java's toPositive masks the sign bit; abs() would give a different partition.
    key = b"foobar"  # murmur2 = -790332482
    assert partition_for_key(key, 7) == (-790332482 & 0x7FFFFFFF) % 7
    assert partition_for_key(key, 7) != abs(-790332482) % 7


def test_partition_for_key_single_partition() -> None:
    assert partition_for_key(b"anything", 1) == 0
    assert partition_for_key(b"", 1) == 0


@pytest.mark.parametrize("count", [0, -1, -1000])
def test_partition_for_key_rejects_invalid_counts(count: int) -> None:
    with pytest.raises(InvalidPartitionsError):
        partition_for_key(b"key", count)


# --- sticky partitioner --------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, -1, -5])
def test_sticky_rejects_invalid_counts(count: int) -> None:
    with pytest.raises(InvalidPartitionsError):
        StickyPartitioner(count)


def test_sticky_stays_until_next_batch() -> None:
    sticky = StickyPartitioner(12, rng=random.Random(1))
    for _ in range(50):
        first = sticky.partition()
        assert 0 <= first < 12
        assert all(sticky.partition() == first for _ in range(100))
        moved = sticky.next_batch()
        assert moved != first
        assert sticky.partition() == moved


def test_sticky_single_partition_stays_put() -> None:
    sticky = StickyPartitioner(1)
    assert sticky.partition() == 0
    for _ in range(10):
        assert sticky.next_batch() == 0
        assert sticky.partition() == 0


def test_sticky_two_partitions_alternate() -> None:
    sticky = StickyPartitioner(2, rng=random.Random(3))
    seen = [sticky.partition()]
    for _ in range(10):
        seen.append(sticky.next_batch())
    assert all(a != b for a, b in itertools.pairwise(seen))


@pytest.mark.parametrize("count", [2, 3, 7, 50])
def test_sticky_covers_all_partitions_roughly_evenly(count: int) -> None:
    sticky = StickyPartitioner(count, rng=random.Random(count))
    batches = 400 * count
    hits = [0] * count
    hits[sticky.partition()] += 1
    for _ in range(batches):
        hits[sticky.next_batch()] += 1
    assert all(h > 0 for h in hits)
    expected = (batches + 1) / count
    assert all(0.75 * expected < h < 1.25 * expected for h in hits), hits


def test_sticky_start_is_random_across_instances() -> None:
    starts = {StickyPartitioner(100).partition() for _ in range(200)}
    assert len(starts) > 10


def test_sticky_reproducible_with_seeded_rng() -> None:
    a = StickyPartitioner(30, rng=random.Random(42))
    b = StickyPartitioner(30, rng=random.Random(42))
    assert [a.next_batch() for _ in range(20)] == [b.next_batch() for _ in range(20)]


def test_sticky_reports_its_partition_count() -> None:
    sticky = StickyPartitioner(9)
    assert sticky.partition_count == 9
    assert "partition_count=9" in repr(sticky)
