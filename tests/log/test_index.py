from __future__ import annotations

from pathlib import Path

import pytest

from headwater.errors import CorruptRecordError, InvariantViolation
from headwater.log.index import OffsetIndex, TimeIndex


def test_offset_index_lookup_finds_greatest_entry_at_or_below(tmp_path: Path) -> None:
    index = OffsetIndex(str(tmp_path / "a.index"), 100, loaded=True)
    for offset, position in [(110, 4096), (130, 8200), (170, 12300)]:
        index.append(offset, position)
    assert index.lookup(99) == (100, 0)
    assert index.lookup(109) == (100, 0)
    assert index.lookup(110) == (110, 4096)
    assert index.lookup(169) == (130, 8200)
    assert index.lookup(10_000) == (170, 12300)
    with pytest.raises(InvariantViolation):
        index.append(170, 20_000)


def test_offset_index_persists_in_kafka_layout_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "b.index"
    index = OffsetIndex(str(path), 5, loaded=True)
    index.append(7, 100)
    index.append(9, 300)
    index.flush()
    index.close()
    assert path.read_bytes() == bytes.fromhex("00000002 00000064 00000004 0000012c")
    reloaded = OffsetIndex(str(path), 5, loaded=False)
    reloaded.check(segment_bytes=1000)
    assert reloaded.lookup(8) == (7, 100)
    assert len(reloaded) == 2
    with pytest.raises(CorruptRecordError):
        OffsetIndex(str(path), 5, loaded=False).check(segment_bytes=200)  # points past the log


def test_offset_index_truncate_and_partial_entry(tmp_path: Path) -> None:
    path = tmp_path / "c.index"
    index = OffsetIndex(str(path), 0, loaded=True)
    for offset in range(1, 6):
        index.append(offset * 10, offset * 100)
    index.truncate_to_offset(30)
    assert index.lookup(45) == (20, 200)
    index.close()
    assert path.stat().st_size == 16
    path.write_bytes(path.read_bytes() + b"\x00\x01")
    with pytest.raises(CorruptRecordError):
        OffsetIndex(str(path), 0, loaded=False).lookup(5)


def test_time_index_keeps_running_maximum(tmp_path: Path) -> None:
    index = TimeIndex(str(tmp_path / "a.timeindex"), 0, loaded=True)
    index.maybe_append(1000, 9)
    index.maybe_append(900, 19)  # not a new maximum: ignored
    index.maybe_append(2000, 29)
    assert len(index) == 2
    assert index.lookup_before(1000) is None
    assert index.lookup_before(1001) == 9
    assert index.lookup_before(5000) == 29
    assert index.last() == (2000, 29)
    index.truncate_to_offset(20)
    assert index.last() == (1000, 9)
    index.close()
    reloaded = TimeIndex(str(tmp_path / "a.timeindex"), 0, loaded=False)
    reloaded.check(next_offset=30)
    assert reloaded.last() == (1000, 9)
