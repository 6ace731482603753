"""Producer snapshots on disk: written at each roll and at close, chosen at open after a crash.

A "crash" here is a copy of a partition directory taken while its log is open (after a flush),
so the copy has no clean close behind it: exactly the files a SIGKILL leaves.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from headwater.log.config import TopicConfig
from headwater.log.loader import load_partition_log
from headwater.log.partition_log import (
    PRODUCER_SNAPSHOTS_KEPT,
    PartitionLog,
    producer_snapshot_offsets,
    producer_snapshot_path,
)
from headwater.log.producer_state import DuplicateOf
from headwater.log.record_batch import NewRecord, encode_batch
from headwater.log.record_batch import parse_header as parse

# Small segments: a roll every few batches.
CONFIG = TopicConfig.from_overrides({"segment.bytes": "2000"})


def open_log(directory: Path, *, clean: bool = False) -> PartitionLog:
    log, _ = load_partition_log(
        str(directory), "t", 0, CONFIG, recovery_point=0, log_start_offset=0, clean_shutdown=clean
    )
    return log


def batch(producer_id: int, sequence: int, count: int = 5) -> bytes:
    return encode_batch(
        [NewRecord(b"k", b"v" * 40, 1_000 + i) for i in range(count)],
        producer_id=producer_id,
        producer_epoch=0,
        base_sequence=sequence,
    )


def fill(log: PartitionLog, producers: range, rounds: int) -> dict[int, int]:
    """Each producer appends `rounds` batches of 5 in turn; the next sequence of each."""
    sequences = dict.fromkeys(producers, 0)
    for _ in range(rounds):
        for producer_id in producers:
            log.append(batch(producer_id, sequences[producer_id]))
            sequences[producer_id] += 5
    log.flush()
    return sequences


def crash_copy(log: PartitionLog, tmp_path: Path, name: str = "crashed") -> Path:
    copy = tmp_path / name
    shutil.copytree(log.directory, copy)
    return copy


def test_rolls_write_snapshots_and_keep_the_newest(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    fill(log, range(1, 4), rounds=10)
    assert len(log.segments) > 3
    offsets = producer_snapshot_offsets(log.directory)
    assert len(offsets) == PRODUCER_SNAPSHOTS_KEPT
    # Each names the base offset of a segment the roll started.
    assert offsets == [segment.base_offset for segment in log.segments[-PRODUCER_SNAPSHOTS_KEPT:]]
    log.close()
    # The clean close adds one at the log end.
    assert producer_snapshot_offsets(str(tmp_path / "p"))[-1] == log.log_end_offset


def test_state_after_a_crash_equals_the_state_before(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    sequences = fill(log, range(1, 6), rounds=8)
    before = log._producers.snapshot()
    copy = crash_copy(log, tmp_path)
    log.close()
    recovered = open_log(copy)
    try:
        assert recovered._producers.snapshot() == before
        # A retry of each producer's last batch is a duplicate; the next batch is in order.
        last = recovered.log_end_offset
        for producer_id in range(1, 6):
            retried = recovered._producers.check(
                parse(batch(producer_id, sequences[producer_id] - 5))
            )
            assert isinstance(retried, DuplicateOf)
        recovered.append(batch(3, sequences[3]))
        assert recovered.log_end_offset == last + 5
    finally:
        recovered.close()


def test_the_snapshot_remembers_producers_whose_batches_are_deleted(tmp_path: Path) -> None:
    """Producer 1 wrote only to the first segments; retention deletes them. Kafka keeps such a
    producer's state (until producer id expiration), so a retry of its last batch is still a
    duplicate rather than an unknown producer: only a snapshot can know it after a crash."""
    log = open_log(tmp_path / "p")
    fill(log, range(1, 2), rounds=3)
    sequences = fill(log, range(2, 3), rounds=12)
    log.delete_records(log.segments[-1].base_offset)
    log.apply_retention()
    assert log.log_start_offset > 15
    copy = crash_copy(log, tmp_path)
    log.close()
    recovered = open_log(copy)
    try:
        assert recovered._producers.check(parse(batch(1, 10))) is not None
        assert isinstance(
            recovered._producers.check(parse(batch(2, sequences[2] - 5))), DuplicateOf
        )
    finally:
        recovered.close()


def test_snapshots_past_a_torn_tail_are_deleted(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    fill(log, range(1, 3), rounds=10)
    copy = crash_copy(log, tmp_path)
    log.close()
    newest = producer_snapshot_offsets(str(copy))[-1]
    # Cut the copy's log back into the segment before the newest snapshot: recovery ends the
    # log below that snapshot, which must not be trusted (it saw records that are gone).
    segment_names = sorted(name for name in os.listdir(copy) if name.endswith(".log"))
    for name in segment_names:
        if int(name[:20]) >= newest:
            (copy / name).write_bytes(b"")
    before_cut = [name for name in segment_names if int(name[:20]) < newest][-1]
    path = copy / before_cut
    path.write_bytes(path.read_bytes()[:-30])  # a torn last batch
    recovered = open_log(copy)
    try:
        assert recovered.log_end_offset < newest
        assert all(
            offset <= recovered.log_end_offset for offset in producer_snapshot_offsets(str(copy))
        )
        # The state equals a rebuild from scratch of what is left.
        rebuilt = crash_copy(recovered, tmp_path, "rebuilt")
        for offset in producer_snapshot_offsets(str(rebuilt)):
            os.unlink(producer_snapshot_path(str(rebuilt), offset))
        scratch = open_log(rebuilt)
        assert scratch._producers.snapshot() == recovered._producers.snapshot()
        scratch.close()
    finally:
        recovered.close()


def test_a_damaged_newest_snapshot_falls_back_to_the_one_before(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    fill(log, range(1, 4), rounds=10)
    before = log._producers.snapshot()
    copy = crash_copy(log, tmp_path)
    log.close()
    _older, newest = producer_snapshot_offsets(str(copy))
    damaged = Path(producer_snapshot_path(str(copy), newest))
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    recovered = open_log(copy)
    try:
        assert recovered._producers.snapshot() == before
    finally:
        recovered.close()
