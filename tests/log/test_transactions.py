"""Transactions in the log: markers, the last stable offset, aborted transactions, read
committed, fencing, recovery (including a SIGKILLed writer), retention and compaction.

A "crash" is either a copy of a partition directory taken while its log is open (after a flush:
exactly the files a SIGKILL leaves) or a real child process killed with SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.errors import CorruptRecordError, InvalidRecordError
from headwater.log.cleaner import clean_partition
from headwater.log.config import TopicConfig
from headwater.log.loader import load_partition_log
from headwater.log.partition_log import (
    READ_COMMITTED,
    READ_UNCOMMITTED,
    AbortedTransaction,
    PartitionLog,
    producer_snapshot_offsets,
    producer_snapshot_path,
)
from headwater.log.producer_state import (
    SNAPSHOT_VERSION,
    AbortedTxn,
    CorruptProducerSnapshotError,
    InvalidProducerEpochError,
    OutOfOrderSequenceError,
    ProducerStateManager,
)
from headwater.log.record_batch import (
    NO_SEQUENCE,
    ControlType,
    NewRecord,
    Record,
    control_type_of,
    decode_records,
    encode_batch,
    encode_control_batch,
    iter_batches,
    parse_header,
    verify_crc,
)

COMMIT = ControlType.COMMIT
ABORT = ControlType.ABORT

CONFIG = TopicConfig.from_overrides({"segment.bytes": "1500", "index.interval.bytes": "200"})
COMPACTED = TopicConfig.from_overrides(
    {
        "cleanup.policy": "compact",
        "segment.bytes": "1024",
        "min.cleanable.dirty.ratio": "0.01",
    }
)


def open_log(
    directory: Path | str, config: TopicConfig = CONFIG, *, clean: bool = False
) -> PartitionLog:
    log, _ = load_partition_log(
        str(directory), "t", 0, config, recovery_point=0, log_start_offset=0, clean_shutdown=clean
    )
    return log


class Producer:
    """A transactional producer's batches for one partition: sequences kept, epoch settable."""

    def __init__(self, producer_id: int, epoch: int = 0) -> None:
        self.producer_id = producer_id
        self.epoch = epoch
        self.sequence = 0

    def batch(self, *values: bytes, key: bytes = b"k", transactional: bool = True) -> bytes:
        data = encode_batch(
            [NewRecord(key, value, 1_000 + index) for index, value in enumerate(values)],
            producer_id=self.producer_id,
            producer_epoch=self.epoch,
            base_sequence=self.sequence,
            is_transactional=transactional,
        )
        self.sequence += len(values)
        return data

    def send(self, log: PartitionLog, *values: bytes, key: bytes = b"k") -> int:
        """Append a transactional batch; its base offset."""
        return log.append(self.batch(*values, key=key)).base_offset

    def end(self, log: PartitionLog, control_type: ControlType) -> int:
        """Write the marker; its offset."""
        result = log.append_transaction_marker(self.producer_id, self.epoch, control_type)
        assert result.base_offset == result.last_offset
        return result.base_offset


def plain(log: PartitionLog, *values: bytes, key: bytes = b"k") -> int:
    return log.append_records([NewRecord(key, value, 1_000) for value in values]).base_offset


def values(records: list[Record]) -> list[bytes | None]:
    return [record.value for record in records]


def read_all(log: PartitionLog, isolation_level: int, max_bytes: int = 1 << 20) -> list[Record]:
    """Every record a reader at `isolation_level` sees, read in chunks of `max_bytes`."""
    end = log.last_stable_offset if isolation_level == READ_COMMITTED else log.high_watermark
    out: list[Record] = []
    offset = log.log_start_offset
    while offset < end:
        result = log.read_records(offset, max_bytes, isolation_level=isolation_level)
        assert result.next_offset > offset, f"no progress at {offset}"
        out += result.records
        offset = result.next_offset
    assert offset == end
    return out


def batch_offsets(data: bytes) -> list[tuple[int, int]]:
    return [(header.base_offset, header.last_offset) for _, header in iter_batches(data)]


def state_of(log: PartitionLog) -> tuple[dict[int, int], int, list[AbortedTxn], int]:
    return (
        log.ongoing_transactions(),
        log.last_stable_offset,
        log.aborted_transactions_in(0, log.log_end_offset + 1),
        log.log_end_offset,
    )


# --- control batches ----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**15 - 1),
    st.sampled_from(ControlType),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 2**50),
)
def test_control_batch_round_trip(
    producer_id: int, epoch: int, control_type: ControlType, coordinator_epoch: int, stamp: int
) -> None:
    data = encode_control_batch(
        producer_id=producer_id,
        producer_epoch=epoch,
        control_type=control_type,
        coordinator_epoch=coordinator_epoch,
        timestamp_ms=stamp,
    )
    header = parse_header(data)
    verify_crc(data, 0, header)
    assert header.size_bytes == len(data)
    assert header.is_control and header.is_transactional
    assert (header.producer_id, header.producer_epoch) == (producer_id, epoch)
    assert (header.base_offset, header.base_sequence, header.record_count) == (0, NO_SEQUENCE, 1)
    (record,) = decode_records(data)  # CRC checked again by the existing decoder
    assert record.key == control_type.to_bytes(4, "big")  # version 0, then the type
    assert record.value == b"\x00\x00" + coordinator_epoch.to_bytes(4, "big", signed=True)
    assert record.timestamp == stamp
    assert control_type_of(data) is control_type


def test_control_type_of_refuses_what_is_not_a_marker() -> None:
    with pytest.raises(InvalidRecordError):
        control_type_of(encode_batch([NewRecord(b"\x00\x00\x00\x01", b"")]))
    for key in (b"\x00\x00\x00\x02", b"\x00\x01\x00\x00", b"\x00\x00", None):
        odd = encode_batch([NewRecord(key, b"")], producer_id=1, producer_epoch=0, is_control=True)
        with pytest.raises(CorruptRecordError):
            control_type_of(odd)
    two = encode_batch(
        [NewRecord(b"\x00\x00\x00\x00", b"")] * 2, producer_id=1, producer_epoch=0, is_control=True
    )
    with pytest.raises(CorruptRecordError):
        control_type_of(two)
    marker = bytearray(
        encode_control_batch(
            producer_id=1,
            producer_epoch=0,
            control_type=COMMIT,
            coordinator_epoch=0,
            timestamp_ms=0,
        )
    )
    marker[-3] ^= 0x01  # inside the record: the CRC catches it
    with pytest.raises(CorruptRecordError):
        control_type_of(marker)


def test_append_refuses_bad_transactional_batches(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    try:
        no_producer = encode_batch([NewRecord(b"k", b"v")], is_transactional=True)
        with pytest.raises(InvalidRecordError):
            log.append(no_producer)
        unknown_type = encode_batch(
            [NewRecord(b"\x00\x00\x00\x07", b"\x00\x00\x00\x00\x00\x00")],
            producer_id=1,
            producer_epoch=0,
            is_transactional=True,
            is_control=True,
        )
        with pytest.raises(CorruptRecordError):
            log.append(unknown_type, allow_control=True)
        not_transactional = encode_batch(
            [NewRecord(b"\x00\x00\x00\x01", b"")], producer_id=1, producer_epoch=0, is_control=True
        )
        with pytest.raises(InvalidRecordError):
            log.append(not_transactional, allow_control=True)
        # A well-formed marker from a client is refused: only the coordinator writes markers.
        client_marker = encode_control_batch(
            producer_id=1,
            producer_epoch=0,
            control_type=ControlType.COMMIT,
            coordinator_epoch=0,
            timestamp_ms=0,
        )
        with pytest.raises(InvalidRecordError, match="coordinator only"):
            log.append(client_marker)
        assert log.log_end_offset == 0
    finally:
        log.close()


# --- commit, abort, last stable offset ----------------------------------------------------


def test_commit_moves_the_last_stable_offset_to_the_high_watermark(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    try:
        producer = Producer(1)
        assert plain(log, b"a", b"b") == 0
        first = producer.send(log, b"t1", b"t2", b"t3")
        assert first == 2
        plain(log, b"c")
        producer.send(log, b"t4", b"t5")
        assert log.high_watermark == 8
        assert log.last_stable_offset == first
        assert log.ongoing_transactions() == {1: first}

        read = log.read(0, 1 << 20, isolation_level=READ_COMMITTED)
        assert read.last_stable_offset == first
        assert all(last < first for _, last in batch_offsets(read.read_bytes()))
        assert read.aborted_transactions == []
        uncommitted = log.read(0, 1 << 20)
        assert batch_offsets(uncommitted.read_bytes())[-1] == (6, 7)
        assert uncommitted.last_stable_offset == first  # reported in both modes
        assert values(read_all(log, READ_COMMITTED)) == [b"a", b"b"]
        stalled = log.read_records(first, isolation_level=READ_COMMITTED)
        assert (stalled.records, stalled.next_offset) == ([], first)  # waits, never skips
        everything = [b"a", b"b", b"t1", b"t2", b"t3", b"c", b"t4", b"t5"]
        assert values(read_all(log, READ_UNCOMMITTED)) == everything

        marker = producer.end(log, COMMIT)
        assert marker == 8
        assert log.ongoing_transactions() == {}
        assert log.last_stable_offset == log.high_watermark == 9
        committed = read_all(log, READ_COMMITTED)
        assert [record.offset for record in committed] == [0, 1, 2, 3, 4, 5, 6, 7]
        # The marker is stored (and served to fetches) but is never a record of either reader.
        assert read_all(log, READ_UNCOMMITTED) == committed
        raw = log.read(0, 1 << 20, isolation_level=READ_COMMITTED).read_bytes()
        last = list(iter_batches(raw))[-1]
        assert last[1].base_offset == marker and last[1].is_control
        assert control_type_of(raw[last[0] :]) is COMMIT
        assert log.aborted_transactions_in(0, 100) == []
    finally:
        log.close()


def test_abort_lists_the_transaction_and_read_committed_drops_it(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    try:
        aborting, committing = Producer(1), Producer(2)
        plain(log, b"plain-0")  # 0
        aborting.send(log, b"bad-1", b"bad-2")  # 1-2
        committing.send(log, b"good-3", b"good-4")  # 3-4
        plain(log, b"plain-5")  # 5
        aborting.send(log, b"bad-6")  # 6
        assert log.last_stable_offset == 1
        assert aborting.end(log, ABORT) == 7
        assert log.last_stable_offset == 3
        assert committing.end(log, COMMIT) == 8
        plain(log, b"plain-9")  # 9
        assert log.last_stable_offset == log.high_watermark == 10

        committed = log.read(0, 1 << 20, isolation_level=READ_COMMITTED)
        assert committed.aborted_transactions == [AbortedTransaction(1, 1)]
        assert log.read(0, 1 << 20).aborted_transactions == []  # read uncommitted: none
        # From inside the aborted range, it is still listed; from past its marker, not.
        assert log.read(6, 1 << 20, isolation_level=READ_COMMITTED).aborted_transactions == [
            AbortedTransaction(1, 1)
        ]
        assert log.read(8, 1 << 20, isolation_level=READ_COMMITTED).aborted_transactions == []
        # A range that ends before the transaction starts does not list it.
        before = log.read(0, 1 << 20, max_offset=1, isolation_level=READ_COMMITTED)
        assert batch_offsets(before.read_bytes()) == [(0, 0)]
        assert before.aborted_transactions == []

        assert values(read_all(log, READ_COMMITTED)) == [
            b"plain-0",
            b"good-3",
            b"good-4",
            b"plain-5",
            b"plain-9",
        ]
        assert values(read_all(log, READ_UNCOMMITTED)) == [
            b"plain-0",
            b"bad-1",
            b"bad-2",
            b"good-3",
            b"good-4",
            b"plain-5",
            b"bad-6",
            b"plain-9",
        ]
        # One batch per read: the abort marker arrives in another read than the data.
        assert values(read_all(log, READ_COMMITTED, max_bytes=1)) == values(
            read_all(log, READ_COMMITTED)
        )
        assert values(log.read_records(6, isolation_level=READ_COMMITTED).records) == [b"plain-9"]
    finally:
        log.close()


def test_interleaved_transactions_the_oldest_open_one_holds_the_lso(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    try:
        one, two, three = Producer(1), Producer(2), Producer(3)
        first_one = one.send(log, b"1a")
        first_two = two.send(log, b"2a")
        one.send(log, b"1b")
        two.send(log, b"2b")
        assert log.ongoing_transactions() == {1: first_one, 2: first_two}
        assert log.last_stable_offset == first_one
        two.end(log, COMMIT)  # the younger one ends first: the older still holds the LSO
        assert log.last_stable_offset == first_one
        first_three = three.send(log, b"3a")
        one.end(log, ABORT)
        assert log.last_stable_offset == first_three
        assert log.ongoing_transactions() == {3: first_three}
        three.end(log, COMMIT)
        assert log.last_stable_offset == log.high_watermark
        assert values(read_all(log, READ_COMMITTED)) == [b"2a", b"2b", b"3a"]
    finally:
        log.close()


def test_marker_without_open_transaction_is_written_and_aborts_nothing(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    try:
        plain(log, b"x")
        other = Producer(2)
        other.send(log, b"open")
        end = log.last_stable_offset
        assert log.append_transaction_marker(9, 0, ABORT).base_offset == 2
        assert log.log_end_offset == 3
        assert log.last_stable_offset == end == 1
        assert log.aborted_transactions_in(0, 10) == []
        assert log.ongoing_transactions() == {2: 1}
    finally:
        log.close()


def test_read_committed_range_ends_on_batch_boundaries(tmp_path: Path) -> None:
    """Across segments and index entries, no read-committed range reaches the LSO."""
    log = open_log(tmp_path / "p")
    try:
        producer = Producer(1)
        for number in range(30):
            plain(log, b"p%02d" % number + b"." * 60)
        first = producer.send(log, b"open" + b"." * 60)
        for number in range(30):
            plain(log, b"q%02d" % number + b"." * 60)
        assert len(log.segments) > 3
        for offset in range(first + 1):
            for max_bytes in (1, 150, 1000, 1 << 20):
                result = log.read(offset, max_bytes, isolation_level=READ_COMMITTED)
                offsets = batch_offsets(result.read_bytes())
                assert all(last < first for _, last in offsets), (offset, max_bytes)
                if offset < first:
                    assert offsets, (offset, max_bytes)
        assert len(read_all(log, READ_COMMITTED, max_bytes=200)) == first
    finally:
        log.close()


def test_isolation_level_must_be_known(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    try:
        with pytest.raises(ValueError):
            log.read(0, 100, isolation_level=2)
    finally:
        log.close()


# --- fencing ------------------------------------------------------------------------------


def test_marker_with_a_bumped_epoch_fences_the_old_epoch(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    try:
        producer = Producer(5, epoch=3)
        first = producer.send(log, b"a", b"b")
        # The coordinator aborts with a bumped epoch (fencing the producer).
        marker = log.append_transaction_marker(5, 4, ABORT, coordinator_epoch=1).base_offset
        assert log.ongoing_transactions() == {}
        assert log.aborted_transactions_in(0, 100) == [AbortedTxn(5, first, marker, marker + 1)]
        with pytest.raises(InvalidProducerEpochError) as fenced:
            producer.send(log, b"late")  # epoch 3, next sequence
        assert fenced.value.error_code == 47  # INVALID_PRODUCER_EPOCH
        with pytest.raises(InvalidProducerEpochError):
            log.append_transaction_marker(5, 3, COMMIT)  # a stale marker
        assert log.log_end_offset == marker + 1
        # The new epoch starts at sequence 0.
        bumped = Producer(5, epoch=4)
        bumped.sequence = 2
        with pytest.raises(OutOfOrderSequenceError):
            bumped.send(log, b"x")
        bumped.sequence = 0
        assert bumped.send(log, b"new") == marker + 1
        assert log.ongoing_transactions() == {5: marker + 1}
        assert bumped.end(log, COMMIT) == marker + 2
        assert values(read_all(log, READ_COMMITTED)) == [b"new"]
    finally:
        log.close()


def test_marker_epoch_for_an_unknown_producer_fences_it(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    try:
        log.append_transaction_marker(8, 2, ABORT)
        with pytest.raises(InvalidProducerEpochError):
            Producer(8, epoch=1).send(log, b"old")
        assert Producer(8, epoch=2).send(log, b"ok") == 1
    finally:
        log.close()


def test_producers_in_a_transaction_are_never_evicted() -> None:
    state = ProducerStateManager(max_producer_ids=2)
    offset = 0
    for producer_id in (1, 2, 3):
        header = parse_header(Producer(producer_id).batch(b"v"))
        state.update(header, offset, -1)
        offset += 1
    assert state.ongoing_transactions() == {1: 0, 2: 1, 3: 2}
    assert state.producer_ids() == [1, 2, 3]  # over the bound rather than forget one
    idle = parse_header(Producer(4).batch(b"v", transactional=False))
    state.update(idle, offset, -1)
    marker = parse_header(
        encode_control_batch(
            producer_id=1,
            producer_epoch=0,
            control_type=COMMIT,
            coordinator_epoch=0,
            timestamp_ms=0,
        )
    )
    state.update(marker, offset + 1, -1, COMMIT)
    state.update(parse_header(Producer(6).batch(b"v", transactional=False)), offset + 2, -1)
    # Those without a transaction go (4, then 1 once it committed); 2 and 3 stay, though
    # written before them; the one written last is spared.
    assert state.producer_ids() == [2, 3, 6]
    assert state.first_unstable_offset == 1
    restored = ProducerStateManager.restore(state.snapshot(), max_producer_ids=2)
    assert restored.snapshot() == state.snapshot()


# --- recovery -----------------------------------------------------------------------------


def _mixed_history(log: PartitionLog) -> None:
    """Two aborted, one committed and one open transaction over several segments."""
    one, two, three = Producer(1), Producer(2), Producer(3)
    for round_number in range(6):
        plain(log, b"p%d" % round_number + b"." * 80)
        one.send(log, b"one-%d" % round_number + b"." * 80)
        two.send(log, b"two-%d" % round_number + b"." * 80)
        if round_number == 1:
            one.end(log, ABORT)
        if round_number == 3:
            two.end(log, COMMIT)
        if round_number == 4:
            three.send(log, b"three" + b"." * 80)
    one.end(log, ABORT)
    # Producer 2 has a transaction open since round 4, producer 3 since round 4 too.


def _copy(directory: str, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(directory, copy)
    return copy


def test_transactions_survive_close_crash_and_a_lost_snapshot(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    _mixed_history(log)
    assert len(log.segments) > 2
    before = state_of(log)
    ongoing, last_stable, aborted, _ = before
    assert set(ongoing) == {2, 3} and last_stable < log.high_watermark
    assert [txn.producer_id for txn in aborted] == [1, 1]
    committed = read_all(log, READ_COMMITTED)
    log.flush()
    crashed = _copy(log.directory, tmp_path, "crashed")
    log.close()

    reopened = open_log(tmp_path / "p", clean=True)
    try:
        assert state_of(reopened) == before
        assert read_all(reopened, READ_COMMITTED) == committed
    finally:
        reopened.close()

    recovered = open_log(crashed)
    try:
        assert state_of(recovered) == before
        assert read_all(recovered, READ_COMMITTED) == committed
    finally:
        recovered.close()

    rebuilt_dir = _copy(str(crashed), tmp_path, "rebuilt")
    for offset in producer_snapshot_offsets(str(rebuilt_dir)):
        os.unlink(producer_snapshot_path(str(rebuilt_dir), offset))
    rebuilt = open_log(rebuilt_dir)
    try:
        assert state_of(rebuilt) == before
        assert read_all(rebuilt, READ_COMMITTED) == committed
        # The transactions go on after the restart: commit both, everything becomes stable.
        for producer_id in (2, 3):
            rebuilt.append_transaction_marker(producer_id, 0, COMMIT)
        assert rebuilt.last_stable_offset == rebuilt.high_watermark
        assert len(read_all(rebuilt, READ_COMMITTED)) > len(committed)
    finally:
        rebuilt.close()


def test_a_version_1_snapshot_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    _mixed_history(log)
    before = state_of(log)
    log.close()
    directory = str(tmp_path / "p")
    for offset in producer_snapshot_offsets(directory):
        path = Path(producer_snapshot_path(directory, offset))
        data = bytearray(path.read_bytes())
        assert int.from_bytes(data[:2], "big") == SNAPSHOT_VERSION == 2
        data[:2] = (1).to_bytes(2, "big")  # the version lies outside the CRC
        path.write_bytes(bytes(data))
        with pytest.raises(CorruptProducerSnapshotError):
            ProducerStateManager.restore(bytes(data))
    reopened = open_log(directory, clean=True)
    try:
        assert state_of(reopened) == before
    finally:
        reopened.close()


_KILLED_WRITER = """
import sys, time
from headwater.log.config import TopicConfig
from headwater.log.loader import load_partition_log
from headwater.log.record_batch import ControlType, NewRecord, encode_batch

config = TopicConfig.from_overrides(
    {"segment.bytes": "1500", "index.interval.bytes": "200", "flush.messages": "1"}
)
log, _ = load_partition_log(
    sys.argv[1], "t", 0, config, recovery_point=0, log_start_offset=0, clean_shutdown=False
)
sequences = {1: 0, 2: 0, 3: 0}

def send(producer_id, value):
    log.append(
        encode_batch(
            [NewRecord(b"k", value + b"." * 80, 1_000)],
            producer_id=producer_id,
            producer_epoch=0,
            base_sequence=sequences[producer_id],
            is_transactional=True,
        )
    )
    sequences[producer_id] += 1

for number in range(8):
    log.append_records([NewRecord(b"k", b"plain-%d" % number + b"." * 80, 1_000)])
    send(1, b"aborted-%d" % number)
    send(2, b"committed-%d" % number)
log.append_transaction_marker(1, 0, ControlType.ABORT)
log.append_transaction_marker(2, 0, ControlType.COMMIT)
send(3, b"open-0")
for number in range(8, 12):
    log.append_records([NewRecord(b"k", b"plain-%d" % number + b"." * 80, 1_000)])
send(3, b"open-1")
log.flush()
print(log.log_end_offset, log.last_stable_offset, flush=True)
time.sleep(60)
"""


def test_sigkill_mid_transaction_keeps_it_open(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
    finally:
        process.kill()  # SIGKILL, mid-transaction
        _, errors = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, errors
    log_end, last_stable = (int(field) for field in line.split())

    log = open_log(directory)
    try:
        assert log.log_end_offset == log_end
        assert log.last_stable_offset == last_stable
        assert log.ongoing_transactions() == {3: last_stable}
        (aborted,) = log.aborted_transactions_in(0, log_end)
        assert (aborted.producer_id, aborted.first_offset) == (1, 1)
        visible = values(read_all(log, READ_COMMITTED))
        assert all(value is not None and not value.startswith(b"aborted") for value in visible)
        assert sum(1 for value in visible if value and value.startswith(b"committed")) == 8
        assert not any(value and value.startswith(b"open") for value in visible)
        log.append_transaction_marker(3, 0, COMMIT)
        visible = values(read_all(log, READ_COMMITTED))
        assert sum(1 for value in visible if value and value.startswith(b"open")) == 2
    finally:
        log.close()


# --- retention ----------------------------------------------------------------------------


def test_delete_records_prunes_aborted_transactions_below_the_log_start(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    try:
        one, two = Producer(1), Producer(2)
        one.send(log, b"a")  # 0
        first_marker = one.end(log, ABORT)  # 1
        two.send(log, b"b")  # 2
        plain(log, b"c")  # 3
        second_marker = two.end(log, ABORT)  # 4
        assert [txn.last_offset for txn in log.aborted_transactions_in(0, 10)] == [
            first_marker,
            second_marker,
        ]
        log.delete_records(first_marker)  # the marker itself is still in the log
        assert len(log.aborted_transactions_in(0, 10)) == 2
        log.delete_records(first_marker + 1)
        assert [txn.producer_id for txn in log.aborted_transactions_in(0, 10)] == [2]
        log.delete_records(3)  # inside the second one: still needed to read from 3
        assert log.read(3, 1 << 20, isolation_level=READ_COMMITTED).aborted_transactions == [
            AbortedTransaction(2, 2)
        ]
        assert values(read_all(log, READ_COMMITTED)) == [b"c"]
    finally:
        log.close()
    reopened = open_log(tmp_path / "p", clean=True)
    try:
        assert [txn.producer_id for txn in reopened.aborted_transactions_in(0, 10)] == [2]
    finally:
        reopened.close()


def test_retention_prunes_aborted_transactions_with_their_segments(tmp_path: Path) -> None:
    config = TopicConfig.from_overrides({"segment.bytes": "1024", "retention.bytes": "2500"})
    log = open_log(tmp_path / "p", config)
    try:
        producer = Producer(1)
        for _ in range(12):
            producer.send(log, b"x" * 150)
            producer.end(log, ABORT)
        before = log.aborted_transactions_in(0, log.log_end_offset)
        assert len(before) == 12
        assert log.apply_retention() > 0
        start = log.log_start_offset
        after = log.aborted_transactions_in(0, log.log_end_offset)
        assert after == [txn for txn in before if txn.last_offset >= start]
        assert 0 < len(after) < 12
        # A transaction open across the deleted segments holds the LSO at the log start.
        producer.send(log, b"open")
        log.apply_retention()
        assert log.log_start_offset <= log.last_stable_offset <= log.high_watermark
    finally:
        log.close()


def test_lso_is_never_below_the_log_start(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    try:
        Producer(1).send(log, b"open")  # 0
        plain(log, b"a", b"b")  # 1-2
        log.delete_records(2)
        assert log.last_stable_offset == 2
        assert read_all(log, READ_COMMITTED) == []
    finally:
        log.close()


# --- compaction ---------------------------------------------------------------------------


def test_compaction_never_lets_an_aborted_value_hide_the_committed_one(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p", COMPACTED)
    try:
        good, bad = Producer(1), Producer(2)
        good.send(log, b"committed" + b"." * 100, key=b"key")
        good.end(log, COMMIT)
        bad.send(log, b"aborted" + b"." * 100, key=b"key")
        bad.send(log, b"aborted-other" + b"." * 100, key=b"other")
        bad.end(log, ABORT)
        for number in range(20):  # filler with other keys, so segments roll
            plain(log, b"f%d" % number + b"." * 100, key=b"filler-%d" % (number % 3))
        assert len(log.segments) > 3
        markers_before = [
            header.base_offset
            for segment in log.segments
            for _, header in segment.headers_from(0, segment.size_bytes)
            if header.is_control
        ]
        result = clean_partition(log, now=10_000, force=True)
        assert result.records_removed > 0
        by_key = {record.key: record.value for record in read_all(log, READ_COMMITTED)}
        assert by_key[b"key"] == b"committed" + b"." * 100
        assert b"other" not in by_key
        # Aborted records are gone for every reader; the markers stay, whole and valid.
        assert not any(
            value and value.startswith(b"aborted")
            for value in values(read_all(log, READ_UNCOMMITTED))
        )
        markers_after = [
            header.base_offset
            for segment in log.segments
            for _, header in segment.headers_from(0, segment.size_bytes)
            if header.is_control
        ]
        assert markers_after == markers_before
        assert log.verify() == []
        # Its data gone, the aborted transaction is forgotten: a compacted log's start never
        # moves, so this is what bounds the list.
        assert log.aborted_transactions_in(0, log.log_end_offset) == []
    finally:
        log.close()


def test_compaction_stops_at_the_last_stable_offset(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p", COMPACTED)
    try:
        for number in range(10):
            plain(log, b"early-%d" % number + b"." * 100, key=b"k")
        producer = Producer(1)
        first = producer.send(log, b"open" + b"." * 100, key=b"k")
        for number in range(20):
            plain(log, b"late-%d" % number + b"." * 100, key=b"k")
        assert log.last_stable_offset == first
        cleanable_end = min(
            segment.base_offset for segment in log.segments if segment.next_offset > first
        )
        assert 0 < cleanable_end <= first
        unstable = [
            (segment.base_offset, segment.size_bytes)
            for segment in log.segments
            if segment.next_offset > first
        ]
        clean_partition(log, now=10_000, force=True)
        # Every segment from the one holding the LSO on is untouched.
        assert [
            (segment.base_offset, segment.size_bytes)
            for segment in log.segments
            if segment.next_offset > first
        ] == unstable
        stable = [record.offset for record in read_all(log, READ_UNCOMMITTED)]
        # Of the cleaned range only the newest "k" is left; from its end on, everything.
        assert stable[: 1 + first - cleanable_end] == [
            cleanable_end - 1,
            *range(cleanable_end, first),
        ]
        assert len([offset for offset in stable if offset >= first]) == 21
        producer.end(log, COMMIT)
        assert log.last_stable_offset == log.high_watermark
    finally:
        log.close()


# --- properties ---------------------------------------------------------------------------

_ACTIONS = st.lists(
    st.tuples(st.sampled_from(["plain", "data", "commit", "abort"]), st.integers(1, 3)),
    max_size=40,
)


@settings(max_examples=25, deadline=None)
@given(_ACTIONS, st.sampled_from([1, 120, 1 << 20]))
def test_read_committed_matches_a_model(actions: list[tuple[str, int]], max_bytes: int) -> None:
    """Any interleaving: LSO, open transactions, aborted ranges and what each reader sees match
    a plain model; so does the state after a crash and after a rebuild without snapshots."""
    with tempfile.TemporaryDirectory() as scratch:
        log = open_log(Path(scratch) / "p")
        producers = {producer_id: Producer(producer_id) for producer_id in (1, 2, 3)}
        open_since: dict[int, int] = {}
        txn_values: dict[int, list[tuple[int, bytes]]] = {}
        visible: dict[int, bytes] = {}  # offset -> value, for committed and plain records
        everything: dict[int, bytes] = {}
        aborted: list[tuple[int, int, int]] = []
        for number, (kind, producer_id) in enumerate(actions):
            value = b"%s-%d-%d" % (kind.encode(), producer_id, number) + b"." * 30
            if kind == "plain":
                offset = plain(log, value)
                visible[offset] = everything[offset] = value
            elif kind == "data":
                offset = producers[producer_id].send(log, value)
                open_since.setdefault(producer_id, offset)
                txn_values.setdefault(producer_id, []).append((offset, value))
                everything[offset] = value
            else:
                control = COMMIT if kind == "commit" else ABORT
                offset = producers[producer_id].end(log, control)
                first = open_since.pop(producer_id, None)
                done = txn_values.pop(producer_id, [])
                if first is not None and control is ABORT:
                    aborted.append((producer_id, first, offset))
                if control is COMMIT:
                    visible.update(done)
        last_stable = min(open_since.values(), default=log.log_end_offset)

        def check(subject: PartitionLog) -> None:
            assert subject.last_stable_offset == last_stable
            assert subject.ongoing_transactions() == open_since
            listed = subject.aborted_transactions_in(0, subject.log_end_offset)
            assert [(t.producer_id, t.first_offset, t.last_offset) for t in listed] == aborted
            committed = read_all(subject, READ_COMMITTED, max_bytes)
            assert [(r.offset, r.value) for r in committed] == sorted(
                (offset, value) for offset, value in visible.items() if offset < last_stable
            )
            uncommitted = read_all(subject, READ_UNCOMMITTED, max_bytes)
            assert [(r.offset, r.value) for r in uncommitted] == sorted(everything.items())
            # Every aborted transaction a committed read lists overlaps the read's range.
            for start in range(0, last_stable, 3):
                result = subject.read(start, max_bytes, isolation_level=READ_COMMITTED)
                for entry in result.aborted_transactions:
                    assert any(
                        (entry.producer_id, entry.first_offset) == (pid, first) and last >= start
                        for pid, first, last in aborted
                    )

        check(log)
        log.flush()
        crashed = Path(scratch) / "crashed"
        shutil.copytree(log.directory, crashed)
        log.close()
        for offset in producer_snapshot_offsets(str(crashed))[1:]:
            os.unlink(producer_snapshot_path(str(crashed), offset))  # older snapshots + replay
        recovered = open_log(crashed)
        try:
            check(recovered)
        finally:
            recovered.close()


@settings(max_examples=60, deadline=None)
@given(_ACTIONS, st.data())
def test_snapshot_and_replay_equal_incremental_state(
    actions: list[tuple[str, int]], data: st.DataObject
) -> None:
    state = ProducerStateManager(max_producer_ids=2)
    producers = {producer_id: Producer(producer_id) for producer_id in (1, 2, 3)}
    applied: list[tuple[bytes, int, ControlType | None]] = []
    offset = 0
    for kind, producer_id in actions:
        control: ControlType | None = None
        if kind == "plain":
            batch = encode_batch([NewRecord(b"k", b"v")])
        elif kind == "data":
            batch = producers[producer_id].batch(b"v", b"w")
        else:
            control = COMMIT if kind == "commit" else ABORT
            batch = encode_control_batch(
                producer_id=producer_id,
                producer_epoch=0,
                control_type=control,
                coordinator_epoch=0,
                timestamp_ms=0,
            )
        header = parse_header(batch)
        state.update(header, offset, -1, control)
        applied.append((batch, offset, control))
        offset += header.last_offset_delta + 1
    snapshot = state.snapshot()
    assert ProducerStateManager.restore(snapshot, max_producer_ids=2).snapshot() == snapshot
    cut = data.draw(st.integers(0, len(applied)))
    partial = ProducerStateManager(max_producer_ids=2)
    for batch, base, control in applied[:cut]:
        partial.replay(parse_header(batch), base, control)
    resumed = ProducerStateManager.restore(partial.snapshot(), max_producer_ids=2)
    for batch, base, control in applied:
        resumed.replay(parse_header(batch), base, control)
    assert resumed.snapshot() == snapshot
    assert resumed.first_unstable_offset == min(state.ongoing_transactions().values(), default=None)
    # The early stop of the overlap search never loses an entry.
    everything = state.aborted_transactions()
    for start in range(0, offset + 1, 2):
        for end in range(start, offset + 2, 3):
            assert state.aborted_overlapping(start, end) == [
                txn for txn in everything if txn.last_offset >= start and txn.first_offset < end
            ]


def test_snapshot_with_transactions_detects_damage() -> None:
    state = ProducerStateManager()
    state.update(parse_header(Producer(1).batch(b"a")), 0, -1)
    state.update(parse_header(Producer(2).batch(b"b")), 1, -1)
    marker = encode_control_batch(
        producer_id=2, producer_epoch=0, control_type=ABORT, coordinator_epoch=0, timestamp_ms=0
    )
    state.update(parse_header(marker), 2, -1, ABORT)
    data = state.snapshot()
    restored = ProducerStateManager.restore(data)
    assert restored.ongoing_transactions() == {1: 0}
    assert restored.aborted_transactions() == [AbortedTxn(2, 1, 2, 0)]
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        with pytest.raises(CorruptProducerSnapshotError):
            ProducerStateManager.restore(bytes(damaged))
    with pytest.raises(CorruptProducerSnapshotError):
        ProducerStateManager.restore(data[:-1])
