from __future__ import annotations

import os
from pathlib import Path

from headwater.log.cleaner import clean_partition
from headwater.log.manager import LogManager
from headwater.log.partition_log import PartitionLog
from headwater.log.record_batch import NewRecord


def _compacted(manager: LogManager, **extra: str) -> PartitionLog:
    configs = {
        "cleanup.policy": "compact",
        "segment.bytes": "1024",
        "min.cleanable.dirty.ratio": "0.01",
    }
    configs.update(extra)
    manager.create_topic("c", 1, configs)
    return manager.partition("c", 0)


def _all(log: PartitionLog) -> list[tuple[int, bytes | None, bytes | None]]:
    out = []
    offset = log.log_start_offset
    while offset < log.high_watermark:
        result = log.read_records(offset, 1 << 20)
        out += [(record.offset, record.key, record.value) for record in result.records]
        offset = result.next_offset
    return out


def test_compaction_keeps_latest_value_per_key_with_offsets_unchanged(manager: LogManager) -> None:
    log = _compacted(manager)
    history: list[tuple[int, bytes, bytes]] = []
    for number in range(200):
        key = b"key-%d" % (number % 10)
        value = b"value-%03d-" % number + b"x" * 40
        offset = log.append_records([NewRecord(key, value, 10_000 + number)]).base_offset
        history.append((offset, key, value))
    active_base = log.segments[-1].base_offset
    before = log.size_bytes
    result = clean_partition(log, now=20_000)
    assert result.records_removed > 0
    assert log.size_bytes < before
    survivors = _all(log)
    offsets = [offset for offset, _, _ in survivors]
    assert offsets == sorted(offsets)
    # Below the active segment, exactly each key's latest record there remains, intact.
    latest_below: dict[bytes, tuple[int, bytes, bytes]] = {}
    for offset, key, value in history:
        if offset < active_base:
            latest_below[key] = (offset, key, value)
    cleaned = [entry for entry in survivors if entry[0] < active_base]
    assert cleaned == sorted(latest_below.values())
    # The active segment is never compacted.
    assert [entry for entry in survivors if entry[0] >= active_base] == [
        entry for entry in history if entry[0] >= active_base
    ]
    # Reads by offset still work, also for a compacted-away offset (the next survivor comes back).
    assert log.read_records(0).records[0].offset == offsets[0]
    assert log.verify() == []
    assert log.log_end_offset == 200


def test_tombstones_kept_until_delete_retention(manager: LogManager) -> None:
    log = _compacted(manager, **{"delete.retention.ms": "1000"})
    for number in range(30):
        log.append_records([NewRecord(b"k%d" % (number % 3), b"v" * 60, 5_000 + number)])
    log.append_records([NewRecord(b"k0", None, 5_100)])
    for number in range(30):
        log.append_records([NewRecord(b"other", b"w" * 60, 5_200 + number)])
    clean_partition(log, now=5_500)
    assert any(key == b"k0" and value is None for _, key, value in _all(log))
    clean_partition(log, now=50_000, force=True)
    assert all(key != b"k0" for _, key, _ in _all(log))
    assert {key for _, key, _ in _all(log)} == {b"k1", b"k2", b"other"}


def test_compaction_survives_reopen(data_dir: Path) -> None:
    with LogManager(str(data_dir)) as manager:
        log = _compacted(manager)
        for number in range(100):
            log.append_records(
                [NewRecord(b"k%d" % (number % 4), b"%d" % number + b"." * 50, number)]
            )
        clean_partition(log, now=1_000)
        before = _all(log)
    with LogManager(str(data_dir)) as manager:
        log = manager.partition("c", 0)
        assert _all(log) == before
        assert log.verify() == []
        assert not [
            name for name in os.listdir(data_dir / "c-0") if name.endswith((".cleaned", ".swap"))
        ]


def test_delete_policy_topic_is_not_compacted(manager: LogManager) -> None:
    manager.create_topic("d", 1, {"segment.bytes": "1024"})
    log = manager.partition("d", 0)
    for number in range(60):
        log.append_records([NewRecord(b"same", b"v" * 50, number)])
    manager.maintenance(now=10**6)
    assert len(_all(log)) == 60


def test_partially_retained_batches_keep_offsets_and_producer_fields(manager: LogManager) -> None:
    from headwater.log.record_batch import encode_batch, iter_batches

    log = _compacted(manager)
    for round_number in range(20):
        batch = encode_batch(
            [NewRecord(b"k%d" % (n % 3), b"r%d-%d" % (round_number, n), 100 + n) for n in range(6)],
            producer_id=42,
            producer_epoch=3,
            base_sequence=round_number * 6,
        )
        log.append(batch)
    clean_partition(log, now=10_000)
    closed = log.segments[:-1]
    assert closed
    for segment in closed:
        data = segment.read(0, segment.size_bytes)
        for _, header in iter_batches(data):
            assert header.producer_id == 42 and header.producer_epoch == 3
            assert header.record_count <= 3  # only the last of each key in the batch at most
    survivors = _all(log)
    assert [offset for offset, _, _ in survivors] == sorted({offset for offset, _, _ in survivors})
    for offset, key, value in survivors:
        round_number, n = divmod(offset, 6)
        assert value == b"r%d-%d" % (round_number, n) and key == b"k%d" % (n % 3)
    assert log.verify() == []
