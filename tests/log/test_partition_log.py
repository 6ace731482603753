from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from log_records import records

from headwater.errors import (
    CorruptRecordError,
    InvalidRecordError,
    OffsetOutOfRangeError,
    RecordBatchTooLargeError,
)
from headwater.log.compression import Compression
from headwater.log.manager import LogManager
from headwater.log.partition_log import PartitionLog
from headwater.log.record_batch import NewRecord, encode_batch, iter_batches


def _log(manager: LogManager, **configs: str) -> PartitionLog:
    manager.create_topic("t", 1, {key.replace("_", "."): value for key, value in configs.items()})
    return manager.partition("t", 0)


def _values(log: PartitionLog, offset: int = 0) -> list[bytes | None]:
    out: list[bytes | None] = []
    while offset < log.high_watermark:
        result = log.read_records(offset, 4096)
        out += [record.value for record in result.records]
        offset = result.next_offset
    return out


def test_append_assigns_consecutive_offsets_and_reads_back(manager: LogManager) -> None:
    log = _log(manager)
    first = log.append_records(records(3))
    second = log.append_records(records(2, start=3))
    assert (first.base_offset, first.last_offset) == (0, 2)
    assert (second.base_offset, second.last_offset) == (3, 4)
    assert log.log_end_offset == log.high_watermark == 5
    result = log.read_records(0)
    assert [record.offset for record in result.records] == [0, 1, 2, 3, 4]
    assert [record.timestamp for record in result.records] == [1000, 1001, 1002, 1003, 1004]
    assert result.records[4].value == records(1, start=4)[0].value
    assert result.next_offset == 5


def test_read_from_inside_a_batch_returns_the_whole_batch(manager: LogManager) -> None:
    log = _log(manager)
    log.append_records(records(10))
    raw = log.read(4, 1).read_bytes()
    batches = list(iter_batches(raw))
    assert len(batches) == 1 and batches[0][1].base_offset == 0 and batches[0][1].record_count == 10
    assert [record.offset for record in log.read_records(4).records] == [4, 5, 6, 7, 8, 9]


def test_read_at_end_is_empty_and_out_of_range_raises(manager: LogManager) -> None:
    log = _log(manager)
    log.append_records(records(2))
    assert log.read(2, 100).size == 0
    assert log.read_records(2).records == []
    with pytest.raises(OffsetOutOfRangeError):
        log.read(3, 100)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)


def test_rolls_by_size_and_reads_across_segments(manager: LogManager) -> None:
    log = _log(manager, segment_bytes="2048")
    for start in range(0, 200, 5):
        log.append_records(records(5, start=start, size=60))
    assert len(log.segments) > 5
    bases = [segment.base_offset for segment in log.segments]
    assert bases == sorted(bases) and bases[0] == 0
    assert all(segment.size_bytes <= 2048 for segment in log.segments[:-1])
    assert _values(log) == [record.value for record in records(200, size=60)]
    for offset in (0, 4, 5, 77, 199):
        assert log.read_records(offset, 1).records[0].offset == offset


def test_rolls_by_age(manager: LogManager) -> None:
    log = _log(manager, segment_ms="1")
    log.append_records(records(1))
    threading.Event().wait(0.01)
    log.append_records(records(1, start=1))
    assert [segment.base_offset for segment in log.segments] == [0, 1]


def test_offset_for_timestamp(manager: LogManager) -> None:
    log = _log(manager, segment_bytes="2048", index_interval_bytes="128")
    for start in range(0, 100, 4):
        log.append_records(records(4, start=start, size=50))
    assert log.offset_for_timestamp(0) == (0, 1000)
    assert log.offset_for_timestamp(1000) == (0, 1000)
    assert log.offset_for_timestamp(1057) == (57, 1057)
    assert log.offset_for_timestamp(1099) == (99, 1099)
    assert log.offset_for_timestamp(1100) is None
    assert log.max_timestamp() == (99, 1099)


def test_offset_for_timestamp_with_out_of_order_timestamps(manager: LogManager) -> None:
    log = _log(manager, index_interval_bytes="1")
    stamps = [50, 10, 70, 30, 90, 20]
    for offset, stamp in enumerate(stamps):
        log.append_records([NewRecord(b"k", b"v%d" % offset, stamp)])
    # Kafka: the first offset whose timestamp is >= the target.
    assert log.offset_for_timestamp(15) == (0, 50)
    assert log.offset_for_timestamp(60) == (2, 70)
    assert log.offset_for_timestamp(80) == (4, 90)


def test_oversized_batch_is_refused(manager: LogManager) -> None:
    log = _log(manager, max_message_bytes="500")
    with pytest.raises(RecordBatchTooLargeError, match=r"max\.message\.bytes"):
        log.append_records([NewRecord(None, b"x" * 600, 1)])
    assert log.log_end_offset == 0


def test_corrupt_or_inconsistent_batches_are_refused(manager: LogManager) -> None:
    log = _log(manager)
    batch = bytearray(encode_batch(records(3)))
    batch[-1] ^= 0xFF
    with pytest.raises(CorruptRecordError):
        log.append(bytes(batch))
    with pytest.raises(CorruptRecordError):
        log.append(encode_batch(records(3))[:-1])
    with pytest.raises(CorruptRecordError):
        log.append(encode_batch(records(3)) + b"\x00")
    assert log.log_end_offset == 0
    assert log.verify() == []


def test_compacted_topic_requires_keys(manager: LogManager) -> None:
    log = _log(manager, cleanup_policy="compact")
    with pytest.raises(InvalidRecordError, match="key"):
        log.append_records([NewRecord(None, b"v", 1)])
    log.append_records([NewRecord(b"k", b"v", 1)])
    assert log.log_end_offset == 1


@pytest.mark.parametrize("codec", list(Compression))
def test_compressed_batches_are_stored_as_sent(manager: LogManager, codec: Compression) -> None:
    log = _log(manager)
    batch = encode_batch(records(50), compression=codec)
    log.append(batch)
    stored = log.read(0, 1 << 20).read_bytes()
    assert stored[8:] == batch[8:]  # only the base offset is ours to set
    assert [record.value for record in log.read_records(0).records] == [
        r.value for r in records(50)
    ]


def test_log_append_time(manager: LogManager) -> None:
    log = _log(manager, message_timestamp_type="LogAppendTime")
    result = log.append_records(records(3))
    assert result.log_append_time_ms > 1_600_000_000_000
    stamps = {record.timestamp for record in log.read_records(0).records}
    assert stamps == {result.log_append_time_ms}
    assert log.verify() == []


def test_retention_by_time_deletes_whole_old_segments(manager: LogManager) -> None:
    log = _log(manager, segment_bytes="1024", retention_ms="1000")
    for start in range(0, 60, 3):
        log.append_records(records(3, start=start, size=100))
    segments = log.segments
    assert len(segments) > 3
    # Records carry timestamps 1000..1059; "now" 2030 expires those below 1030.
    deleted = log.apply_retention(now=2030)
    assert deleted >= 1
    assert log.log_start_offset == log.segments[0].base_offset > 0
    assert all(segment.max_timestamp >= 1030 for segment in log.segments if not segment.is_empty())
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)
    assert log.read_records(log.log_start_offset).records[0].offset == log.log_start_offset
    # Far in the future everything goes, the active segment too, and appends continue.
    log.apply_retention(now=10**12)
    assert log.log_start_offset == log.log_end_offset == 60
    assert log.append_records(records(1)).base_offset == 60


def test_retention_by_bytes(manager: LogManager) -> None:
    log = _log(manager, segment_bytes="1024", retention_bytes="3000")
    for start in range(0, 90, 3):
        log.append_records(records(3, start=start, size=100))
    log.apply_retention(now=0)
    assert log.size_bytes <= 3000 + 1024
    assert log.log_start_offset > 0
    assert _values(log, log.log_start_offset)[-1] == records(1, start=89, size=100)[0].value


def test_delete_records_advances_log_start(manager: LogManager) -> None:
    log = _log(manager, segment_bytes="1024")
    for start in range(0, 40, 2):
        log.append_records(records(2, start=start, size=100))
    assert log.delete_records(15) == 15
    assert log.log_start_offset == 15
    assert log.read_records(15).records[0].offset == 15
    with pytest.raises(OffsetOutOfRangeError):
        log.read(14, 100)
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records(41)
    assert all(segment.next_offset > 15 for segment in log.segments)


def test_deleted_segment_stays_readable_through_an_old_snapshot(manager: LogManager) -> None:
    log = _log(manager, segment_bytes="1024")
    for start in range(0, 30, 3):
        log.append_records(records(3, start=start, size=100))
    snapshot = log.read(0, 1 << 20)
    log.delete_records(20)
    assert not os.path.exists(snapshot.segment.path)  # type: ignore[union-attr]
    assert next(iter(iter_batches(snapshot.read_bytes())))[1].base_offset == 0


def test_flush_policy_every_append_hides_unflushed_records(manager: LogManager) -> None:
    log = _log(manager)
    result = log.append_records(records(2), wait_for_flush=False)
    assert result.flush_due
    assert log.high_watermark == 0 and log.log_end_offset == 2
    assert log.read_records(0).records == []
    log.flush()
    assert log.high_watermark == log.recovery_point == 2


def test_flush_policy_every_n_messages(manager: LogManager) -> None:
    log = _log(manager, flush_messages="5")
    log.append_records(records(2))
    assert log.recovery_point == 0 and log.high_watermark == 2
    log.append_records(records(3))
    assert log.recovery_point == 5


def test_flush_policy_by_time(manager: LogManager) -> None:
    log = _log(manager, flush_messages=str(2**62), flush_ms="0")
    log.append_records(records(2))
    assert log.recovery_point == 0
    assert log.flush_if_due(now=10**13)
    assert log.recovery_point == 2


def test_group_commit_shares_fsyncs(manager: LogManager, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(manager)
    syncs = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    threads = [
        threading.Thread(target=lambda: [log.append_records(records(1)) for _ in range(25)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.log_end_offset == log.recovery_point == 200
    assert syncs <= 200  # never more than one per append
    assert log.verify() == []


def test_records_survive_clean_reopen(data_dir: Path) -> None:
    with LogManager(str(data_dir)) as manager:
        manager.create_topic("t", 1, {"segment.bytes": "1024"})
        log = manager.partition("t", 0)
        for start in range(0, 50, 5):
            log.append_records(records(5, start=start, size=50))
    with LogManager(str(data_dir)) as manager:
        log = manager.partition("t", 0)
        assert manager.recovery["t-0"].segments_validated == 0
        assert log.log_end_offset == 50
        assert _values(log) == [record.value for record in records(50, size=50)]
        assert log.offset_for_timestamp(1033) == (33, 1033)
        assert log.append_records(records(1)).base_offset == 50
