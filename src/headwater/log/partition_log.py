"""The log of one partition: an ordered list of segments, one active for appends.

`PartitionLog` owns its segments and the offsets that describe them: log start offset, log end
offset, high watermark and recovery point (everything below it is known to be on disk).
Thread-safe: appends and structural changes hold `_lock`; an fsync holds only `_flush_lock`, so
appenders keep writing while one thread syncs for all of them (group commit); reads take a
snapshot under `_lock` and do their I/O outside it. Segments removed from the log are unlinked at
once but their descriptors stay open for `file.delete.delay.ms`, so a reader holding a snapshot
never reads a recycled descriptor.

Transactions: the producer state tracks each producer's open transaction and the aborted ones.
The last stable offset is the first offset of the oldest open transaction (at most the high
watermark); a read-committed read stops there and lists the aborted transactions its range
overlaps, so the client can drop their records, as Kafka's fetch does.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from headwater import limits
from headwater._invariant import invariant
from headwater.errors import (
    CorruptRecordError,
    InvalidRecordError,
    LogClosedError,
    OffsetOutOfRangeError,
    RecordBatchTooLargeError,
    StorageError,
)
from headwater.log._files import sync_directory, write_atomically
from headwater.log.compression import Compression
from headwater.log.config import TopicConfig
from headwater.log.producer_state import AbortedTxn, ProducerStateManager
from headwater.log.record_batch import (
    LOG_OVERHEAD,
    TRANSACTION_FLAGS,
    BatchHeader,
    ControlType,
    NewRecord,
    Record,
    control_type_of,
    decode_records,
    encode_batch,
    encode_control_batch,
    iter_batches,
    parse_header,
    set_log_append_time,
    verify_crc,
)
from headwater.log.segment import NO_TIMESTAMP, DataSyncError, LogSegment

# Idempotent producers' state as of an offset, `<offset, 20 digits>.snapshot` in the partition's
# directory, written at each roll and at a clean close (as Kafka does) so that opening the log
# replays batch headers only from the newest snapshot the recovered log still covers.
PRODUCER_SNAPSHOT_SUFFIX = ".snapshot"
# The newest two: if the newest is damaged, the one before still spares a rebuild from zero.
PRODUCER_SNAPSHOTS_KEPT = 2

READ_UNCOMMITTED = 0
"""Fetch isolation level 0: everything up to the high watermark."""
READ_COMMITTED = 1
"""Fetch isolation level 1: only up to the last stable offset, with the aborted transactions."""

_log = logging.getLogger(__name__)


def producer_snapshot_path(directory: str, end_offset: int) -> str:
    return os.path.join(directory, f"{end_offset:020d}{PRODUCER_SNAPSHOT_SUFFIX}")


def producer_snapshot_offsets(directory: str) -> list[int]:
    """The end offsets of the producer snapshots in `directory`, ascending."""
    offsets: list[int] = []
    for name in os.listdir(directory):
        stem = name[: -len(PRODUCER_SNAPSHOT_SUFFIX)]
        if name.endswith(PRODUCER_SNAPSHOT_SUFFIX) and len(stem) == 20 and stem.isdigit():
            offsets.append(int(stem))
    return sorted(offsets)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_CODECS = {
    "producer": Compression.NONE,
    "uncompressed": Compression.NONE,
    "gzip": Compression.GZIP,
    "snappy": Compression.SNAPPY,
    "lz4": Compression.LZ4,
    "zstd": Compression.ZSTD,
}


class AbortedTransaction(NamedTuple):
    """An aborted transaction as a fetch response lists it: the client drops its records."""

    producer_id: int
    first_offset: int


class AppendResult(NamedTuple):
    """Where an appended batch landed; `flush_due` asks the caller to `flush` per the policy."""

    base_offset: int
    last_offset: int
    log_append_time_ms: int  # -1 unless the topic stamps LogAppendTime
    log_start_offset: int
    flush_due: bool


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A byte range of one segment holding batches from the requested offset on.

    `size` ends on a batch boundary when the sparse index knows one in range; otherwise it may
    end inside a batch, as Kafka's fetch may (decoders stop at a partial trailing batch).
    """

    segment: LogSegment | None
    position: int
    size: int
    high_watermark: int
    log_start_offset: int
    log_end_offset: int
    last_stable_offset: int
    # The offset of the first batch after these bytes when known without reading them (the
    # range ended on an indexed boundary or at the read's upper bound); -1 otherwise.
    next_offset: int = -1
    # Read committed only: the aborted transactions with records in the range, oldest first.
    aborted_transactions: list[AbortedTransaction] = field(default_factory=list)

    def read_bytes(self) -> bytes:
        if self.segment is None or self.size == 0:
            return b""
        return self.segment.read(self.position, self.size)


@dataclass(frozen=True, slots=True)
class RecordsResult:
    """Decoded records and the offset to read from next."""

    records: list[Record]
    next_offset: int
    high_watermark: int
    log_start_offset: int
    last_stable_offset: int


class PartitionLog:
    """One partition's segments and offsets; see the module docstring for thread-safety."""

    def __init__(
        self,
        directory: str,
        topic: str,
        partition: int,
        config: TopicConfig,
        segments: list[LogSegment],
        *,
        log_start_offset: int,
        recovery_point: int,
        producers: ProducerStateManager | None = None,
    ) -> None:
        invariant(bool(segments), "a partition log has at least one segment")
        # Idempotent producers' sequences, checked and updated under `_lock` on every append.
        self._producers = producers if producers is not None else ProducerStateManager()
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.config = config
        self._segments = segments
        self._bases = [segment.base_offset for segment in segments]
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._next_offset = segments[-1].next_offset
        self._log_start_offset = log_start_offset
        self._recovery_point = recovery_point
        self._unflushed_messages = 0
        self._last_flush_ms = now_ms()
        self._retired: list[tuple[int, LogSegment]] = []
        self._failure: StorageError | None = None
        self._closed = False
        # Where the next compaction's dirty section starts; kept in memory only, so a restart
        # costs one extra cleaning pass and nothing else.
        self.first_dirty_offset = segments[0].base_offset
        # Set by the manager to persist the log start offset when DeleteRecords moves it.
        self.on_log_start_advanced: Callable[[], None] | None = None
        invariant(log_start_offset <= self._next_offset, "log start offset within the log")
        invariant(recovery_point <= self._next_offset, "recovery point within the log")
        self._producers.prune_aborted(log_start_offset)

    # --- offsets ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._next_offset

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    @property
    def high_watermark(self) -> int:
        """The last offset readers may see, exclusive.

        With fsync on every append, only synced records are exposed, so no reader ever sees a
        record that a crash could take back. Otherwise, as in Kafka, every written record is.
        """
        if self.config.flush_every_append:
            return self._recovery_point
        return self._next_offset

    @property
    def last_stable_offset(self) -> int:
        """Read-committed readers stop here: the first offset of the oldest open transaction,
        or the high watermark when that is lower (or no transaction is open)."""
        with self._lock:
            return self._last_stable_offset(self.high_watermark)

    def _last_stable_offset(self, high_watermark: int) -> int:
        first_unstable = self._producers.first_unstable_offset
        if first_unstable is None:
            return high_watermark
        # Retention may have deleted where an open transaction began; as Kafka, stop at the start.
        return min(max(first_unstable, self._log_start_offset), high_watermark)

    def ongoing_transactions(self) -> dict[int, int]:
        """Producer id -> first offset of its transaction open in this partition."""
        with self._lock:
            return self._producers.ongoing_transactions()

    def forget_aborted_below(self, offset: int) -> None:
        """Forget the aborted transactions ending below `offset` once compaction removed their
        data: a compacted log's start never moves, so this is what bounds the list there."""
        with self._lock:
            self._producers.prune_aborted(min(offset, self._next_offset))

    def has_open_transaction(self, producer_id: int) -> bool:
        """Whether `producer_id` has a transaction open in this partition (no copy made)."""
        with self._lock:
            return self._producers.has_open_transaction(producer_id)

    def aborted_transactions_in(self, first_offset: int, end_offset: int) -> list[AbortedTxn]:
        """The aborted transactions with records in [first_offset, end_offset), whole."""
        with self._lock:
            return self._producers.aborted_overlapping(first_offset, end_offset)

    @property
    def size_bytes(self) -> int:
        return sum(segment.size_bytes for segment in self._segments)

    @property
    def segments(self) -> list[LogSegment]:
        with self._lock:
            return list(self._segments)

    # --- appending --------------------------------------------------------------------------

    def append(
        self,
        batch: bytes | bytearray | memoryview,
        *,
        wait_for_flush: bool = True,
        allow_control: bool = False,
    ) -> AppendResult:
        """Validate one record batch, assign its offsets and write it.

        With `wait_for_flush`, returns only once the flush policy is satisfied (for the
        default policy: once the batch is on disk). Otherwise the caller must call `flush`
        when `flush_due` says so. A control batch (a transaction marker) is refused unless
        `allow_control`: only `append_transaction_marker` writes one, as only Kafka's
        coordinator may (a client's is INVALID_RECORD).
        """
        view = memoryview(batch)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        size = len(view)
        config = self.config
        header = parse_header(view)
        if header.batch_length + LOG_OVERHEAD != size:
            raise CorruptRecordError(
                f"{self.name}: batch declares {header.size_bytes} bytes but {size} were given"
            )
        if size > config.max_message_bytes:
            raise RecordBatchTooLargeError(
                f"{self.name}: batch of {size} bytes exceeds max.message.bytes={config.max_message_bytes}"
            )
        verify_crc(view, 0, header)
        record_count = header.record_count
        if record_count < 1 or record_count != header.last_offset_delta + 1:
            raise InvalidRecordError(
                f"{self.name}: record count {record_count} does not match last offset "
                f"delta {header.last_offset_delta}"
            )
        control_type: ControlType | None = None
        if header.attributes & TRANSACTION_FLAGS:
            control_type = self._check_transactional(view, header, allow_control)
        if config.compact and not header.is_control:
            for record in decode_records(view, verify=False):
                if record.key is None:
                    raise InvalidRecordError(
                        f"{self.name}: a compacted topic needs a key on every record"
                    )
        append_time = -1
        if config.message_timestamp_type == "LogAppendTime":
            append_time = now_ms()
            stamped = bytearray(view)
            set_log_append_time(stamped, append_time)
            view = memoryview(stamped)
            header = parse_header(view)
        with self._lock:
            self._check_writable()
            if header.producer_id >= 0:
                duplicate = self._producers.check(header)
                if duplicate is not None:
                    # A retry of a batch already in the log: answer with its offsets, as Kafka does.
                    return AppendResult(
                        duplicate.base_offset,
                        duplicate.last_offset,
                        duplicate.log_append_time,
                        self._log_start_offset,
                        False,
                    )
            base_offset = self._next_offset
            segment = self._maybe_roll(size, header.last_offset_delta)
            # On failure the segment cuts its file back: the log is unchanged and readable.
            segment.append(view, header, base_offset)
            # Every batch moves the state's end offset, so a snapshot covers the whole log.
            self._producers.update(header, base_offset, append_time, control_type)
            last_offset = base_offset + header.last_offset_delta
            self._next_offset = last_offset + 1
            self._unflushed_messages += record_count
            flush_due = self._unflushed_messages >= config.flush_messages
            log_start = self._log_start_offset
        if flush_due and wait_for_flush:
            self.flush(last_offset + 1)
        return AppendResult(
            base_offset, last_offset, append_time, log_start, flush_due and not wait_for_flush
        )

    def _check_transactional(
        self, view: memoryview, header: BatchHeader, allow_control: bool
    ) -> ControlType | None:
        """Validate a transactional batch; the control type of a transaction marker."""
        if header.producer_id < 0:
            raise InvalidRecordError(
                f"{self.name}: a transactional or control batch needs a producer id"
            )
        if not header.is_control:
            return None
        if not allow_control:
            raise InvalidRecordError(
                f"{self.name}: control batches are written by the transaction coordinator only"
            )
        if not header.is_transactional:
            raise InvalidRecordError(f"{self.name}: a control batch must be transactional")
        try:
            return control_type_of(view)
        except CorruptRecordError as error:
            raise CorruptRecordError(f"{self.name}: {error}") from None

    def append_transaction_marker(
        self,
        producer_id: int,
        producer_epoch: int,
        control_type: ControlType,
        coordinator_epoch: int = 0,
        *,
        wait_for_flush: bool = True,
    ) -> AppendResult:
        """Write the COMMIT or ABORT marker that ends the producer's transaction here.

        As `append` (same flush semantics and result). A marker from an older epoch than the
        partition has seen raises `InvalidProducerEpochError`; one from a newer epoch fences
        the older one. A marker without an open transaction is written all the same.
        """
        batch = encode_control_batch(
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            control_type=control_type,
            coordinator_epoch=coordinator_epoch,
            timestamp_ms=now_ms(),
        )
        return self.append(batch, wait_for_flush=wait_for_flush, allow_control=True)

    def append_records(
        self,
        records: Sequence[NewRecord],
        *,
        compression: Compression | None = None,
        wait_for_flush: bool = True,
    ) -> AppendResult:
        """Encode `records` as one batch (the topic's compression unless given) and append it."""
        codec = _CODECS[self.config.compression_type] if compression is None else compression
        batch = encode_batch(records, compression=codec)
        return self.append(batch, wait_for_flush=wait_for_flush)

    def _check_writable(self) -> None:
        if self._closed:
            raise LogClosedError(f"{self.name}: the log is closed")
        if self._failure is not None:
            raise LogClosedError(f"{self.name}: offline after a storage failure: {self._failure}")

    def _maybe_roll(self, batch_bytes: int, last_offset_delta: int) -> LogSegment:
        segment = self._segments[-1]
        if segment.is_empty():
            return segment
        relative_last = self._next_offset + last_offset_delta - segment.base_offset
        if (
            segment.size_bytes + batch_bytes > self.config.segment_bytes
            or now_ms() - segment.created_ms > self.config.segment_ms
            or relative_last > limits.SEGMENT_RELATIVE_OFFSET_MAX
        ):
            return self._roll()
        return segment

    def roll(self) -> None:
        """Start a new active segment if the current one holds anything."""
        with self._lock:
            self._check_writable()
            if not self._segments[-1].is_empty():
                self._roll()

    def _roll(self) -> LogSegment:
        old = self._segments[-1]
        try:
            old.seal()
        except DataSyncError as error:
            self._failure = error  # unknown what reached the disk: stop serving this log
            raise
        # Failing here (a full disk) leaves the log as it was: the caller may retry.
        segment = LogSegment.create(
            self.directory, self._next_offset, self.config.index_interval_bytes
        )
        try:
            sync_directory(self.directory)
        except StorageError:
            segment.close()
            segment.delete_files()
            raise
        self._segments.append(segment)
        self._bases.append(segment.base_offset)
        try:
            self._write_producer_snapshot()
        except StorageError as error:
            # Only a shortcut for the next open, which rebuilds from batch headers without it.
            _log.warning("%s: no producer snapshot at %d: %s", self.name, self._next_offset, error)
        return segment

    def _write_producer_snapshot(self) -> None:
        """Save the producers' state at the log end; keep the newest few snapshots."""
        invariant(
            self._producers.end_offset <= self._next_offset,
            "producer state never runs ahead of the log",
        )
        write_atomically(
            producer_snapshot_path(self.directory, self._next_offset), self._producers.snapshot()
        )
        for stale in producer_snapshot_offsets(self.directory)[:-PRODUCER_SNAPSHOTS_KEPT]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(producer_snapshot_path(self.directory, stale))

    # --- durability -------------------------------------------------------------------------

    def flush(self, up_to_offset: int | None = None) -> None:
        """Make every record below `up_to_offset` (default: all) durable.

        Group commit: callers queue on `_flush_lock`; whoever holds it syncs everything written
        so far, so the ones behind it usually find their records already durable.
        """
        target = self._next_offset if up_to_offset is None else up_to_offset
        if self._recovery_point >= target:
            return
        with self._flush_lock:
            if self._recovery_point >= target:
                return
            with self._lock:
                self._check_writable()
                end = self._next_offset
                start = self._recovery_point
                dirty = [segment for segment in self._segments if segment.next_offset > start]
                unflushed_at_start = self._unflushed_messages
            try:
                for segment in dirty:
                    segment.flush()
            except DataSyncError as error:
                # After a failed fsync the page cache state is unknown (Linux may drop the dirty
                # pages): take the log offline rather than serve what may not be on disk.
                with self._lock:
                    self._failure = error
                raise
            with self._lock:
                self._recovery_point = max(self._recovery_point, end)
                self._unflushed_messages = max(0, self._unflushed_messages - unflushed_at_start)
                self._last_flush_ms = now_ms()

    def flush_if_due(self, now: int) -> bool:
        """Apply `flush.ms`: sync when the oldest unflushed append is old enough."""
        if self._unflushed_messages and now - self._last_flush_ms >= self.config.flush_ms:
            self.flush()
            return True
        return False

    # --- reading ----------------------------------------------------------------------------

    def _segment_index(self, offset: int) -> int:
        return max(0, bisect.bisect_right(self._bases, offset) - 1)

    def read(
        self,
        offset: int,
        max_bytes: int,
        *,
        max_offset: int | None = None,
        isolation_level: int = READ_UNCOMMITTED,
    ) -> ReadResult:
        """Batches from the one holding `offset`, up to `max_bytes` (but at least one batch),
        never past the high watermark (or `max_offset`, if lower).

        `READ_COMMITTED` stops at the last stable offset too and lists the aborted
        transactions that have records from `offset` up to the end of the range.
        """
        if isolation_level != READ_UNCOMMITTED and isolation_level != READ_COMMITTED:
            raise ValueError(f"isolation level {isolation_level} is neither 0 nor 1")
        aborted: list[AbortedTxn] = []
        with self._lock:
            if self._closed:
                raise LogClosedError(f"{self.name}: the log is closed")
            high_watermark = self.high_watermark
            log_start = self._log_start_offset
            log_end = self._next_offset
            if offset < log_start or offset > log_end:
                raise OffsetOutOfRangeError(
                    f"{self.name}: offset {offset} is outside [{log_start}, {log_end}]"
                )
            last_stable = self._last_stable_offset(high_watermark)
            upper = high_watermark if max_offset is None else min(max_offset, high_watermark)
            if isolation_level == READ_COMMITTED:
                upper = min(upper, last_stable)
                if offset < upper:
                    aborted = self._producers.aborted_overlapping(offset, upper)
            first = self._segment_index(offset)
            candidates = [(segment, segment.size_bytes) for segment in self._segments[first:]]
        empty = ReadResult(None, 0, 0, high_watermark, log_start, log_end, last_stable)
        if offset >= upper:
            return empty
        for segment, size in candidates:
            if segment.base_offset >= upper:
                break
            end_position = size
            if segment.next_offset > upper:
                end_position, _ = segment.find_position(upper, size)
            position, header = segment.find_position(offset, end_position)
            if header is None:
                continue  # a gap left by compaction, or the end of this segment
            length = min(max(max_bytes, header.size_bytes), end_position - position)
            next_offset = upper if end_position < size else -1
            if position + length < end_position:
                # End on a batch boundary the index knows, if one lies past the first batch.
                next_offset = -1
                boundary_offset, boundary = segment.offset_index.entry_at_or_below_position(
                    position + length
                )
                if boundary >= position + header.size_bytes:
                    length = boundary - position
                    next_offset = boundary_offset
            listed: list[AbortedTransaction] = []
            if aborted:
                # Only those starting before the range's end, when the end is known.
                end = upper if next_offset == -1 else next_offset
                listed = [
                    AbortedTransaction(txn.producer_id, txn.first_offset)
                    for txn in aborted
                    if txn.first_offset < end
                ]
            return ReadResult(
                segment,
                position,
                length,
                high_watermark,
                log_start,
                log_end,
                last_stable,
                next_offset,
                listed,
            )
        return empty

    def read_records(
        self,
        offset: int,
        max_bytes: int = 1024 * 1024,
        *,
        isolation_level: int = READ_UNCOMMITTED,
    ) -> RecordsResult:
        """Decode, CRC-checked, the records from `offset` on (control batches skipped).

        `READ_COMMITTED` stops at the last stable offset and leaves out the records of aborted
        transactions, the way a Kafka consumer filters a fetch.
        """
        result = self.read(offset, max_bytes, isolation_level=isolation_level)
        data = result.read_bytes()
        records: list[Record] = []
        next_offset = offset
        # Aborted transactions not yet reached, by first offset; producers inside one.
        pending = sorted(
            result.aborted_transactions, key=lambda txn: txn.first_offset, reverse=True
        )
        aborting: set[int] = set()
        for position, header in iter_batches(data):
            try:
                batch_records = decode_records(data, position)
                aborted = bool(pending or aborting) and _in_aborted_transaction(
                    data, position, header, pending, aborting
                )
            except CorruptRecordError as error:
                raise CorruptRecordError(
                    f"topic {self.topic!r} partition {self.partition} offset {header.base_offset}: {error}"
                ) from None
            next_offset = max(next_offset, header.last_offset + 1)
            if header.is_control or aborted:
                continue
            records.extend(record for record in batch_records if record.offset >= offset)
        if result.segment is not None and next_offset == offset and result.size:
            # The range held only part of one batch: never expected (reads return at least one).
            raise CorruptRecordError(
                f"topic {self.topic!r} partition {self.partition} offset {offset}: unreadable batch"
            )
        readable_end = (
            result.last_stable_offset
            if isolation_level == READ_COMMITTED
            else result.high_watermark
        )
        if result.segment is None and offset < readable_end:
            next_offset = readable_end  # offsets compacted away up to the end
        return RecordsResult(
            records,
            next_offset,
            result.high_watermark,
            result.log_start_offset,
            result.last_stable_offset,
        )

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after `timestamp`, below the high watermark."""
        with self._lock:
            upper = self.high_watermark
            log_start = self._log_start_offset
            candidates = [(segment, segment.size_bytes) for segment in self._segments]
        for segment, size in candidates:
            if segment.base_offset >= upper:
                break
            if segment.max_timestamp != NO_TIMESTAMP and segment.max_timestamp < timestamp:
                continue
            end_position = size
            if segment.next_offset > upper:
                end_position, _ = segment.find_position(upper, size)
            found = segment.find_timestamp(timestamp, end_position, log_start)
            if found is not None:
                return found
        return None

    def max_timestamp(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the record with the greatest timestamp, as Kafka's MAX_TIMESTAMP."""
        with self._lock:
            best: LogSegment | None = None
            for segment in self._segments:
                if segment.max_timestamp != NO_TIMESTAMP and (
                    best is None or segment.max_timestamp > best.max_timestamp
                ):
                    best = segment
            if best is None:
                return None
            timestamp, batch_last_offset = best.max_timestamp, best.offset_of_max_timestamp
            end_position = best.size_bytes
        # The segment knows the batch; Kafka answers the record inside it that holds the maximum.
        position, header = best.find_position(batch_last_offset, end_position)
        if header is not None:
            for record in decode_records(best.read(position, header.size_bytes)):
                if record.timestamp == timestamp:
                    return record.offset, timestamp
        return batch_last_offset, timestamp

    # --- retention --------------------------------------------------------------------------

    def delete_records(self, before_offset: int) -> int:
        """Advance the log start offset to `before_offset` (Kafka's DeleteRecords)."""
        with self._lock:
            self._check_writable()
            if before_offset > self.high_watermark or before_offset < 0:
                raise OffsetOutOfRangeError(
                    f"{self.name}: cannot delete before {before_offset}, high watermark is {self.high_watermark}"
                )
            self._log_start_offset = max(self._log_start_offset, before_offset)
            self._delete_segments(lambda segment: segment.next_offset <= self._log_start_offset)
            log_start = self._log_start_offset
            self._producers.prune_aborted(log_start)
        if self.on_log_start_advanced is not None:
            # A crash must not bring deleted records back: persist the new start now.
            self.on_log_start_advanced()
        return log_start

    def apply_retention(self, now: int | None = None) -> int:
        """Delete whole segments past `retention.ms` or beyond `retention.bytes`; return how many."""
        if not self.config.delete:
            return 0
        now = now_ms() if now is None else now
        deleted = 0
        with self._lock:
            self._check_writable()
            if self.config.retention_ms >= 0:
                horizon = now - self.config.retention_ms
                deleted += self._delete_segments(
                    lambda segment: (
                        segment.max_timestamp != NO_TIMESTAMP and segment.max_timestamp < horizon
                    )
                )
            if self.config.retention_bytes >= 0:
                excess = self.size_bytes - self.config.retention_bytes

                def over(segment: LogSegment) -> bool:
                    nonlocal excess
                    if excess - segment.size_bytes < 0:
                        return False
                    excess -= segment.size_bytes
                    return True

                deleted += self._delete_segments(over)
        return deleted

    def _delete_segments(self, predicate: Callable[[LogSegment], bool]) -> int:
        """Delete segments from the oldest while `predicate` holds; never below the high watermark.

        The active segment is rolled first when it too must go, as Kafka does, so that
        retention can empty a quiet topic.
        """
        doomed = 0
        last = len(self._segments) - 1
        while doomed <= last:
            segment = self._segments[doomed]
            if segment.is_empty() and doomed < last:
                doomed += 1  # emptied by compaction: nothing to keep
            elif not segment.is_empty() and predicate(segment):
                doomed += 1
            else:
                break
        if doomed == 0:
            return 0
        if doomed == len(self._segments):
            if self._segments[-1].next_offset > self.high_watermark:
                doomed -= 1  # never delete what readers cannot yet see
            else:
                self._roll()
        victims = self._segments[:doomed]
        del self._segments[:doomed]
        del self._bases[:doomed]
        self._log_start_offset = max(self._log_start_offset, self._segments[0].base_offset)
        self._producers.prune_aborted(self._log_start_offset)
        if self._recovery_point < self._segments[0].base_offset:
            self._recovery_point = self._segments[0].base_offset
        self._retire(victims)
        return len(victims)

    def _retire(self, victims: list[LogSegment]) -> None:
        deadline = now_ms() + self.config.file_delete_delay_ms
        for segment in victims:
            segment.delete_files()
            self._retired.append((deadline, segment))
        sync_directory(self.directory)

    def close_retired(self, now: int | None = None, *, all_of_them: bool = False) -> None:
        """Close descriptors of deleted segments once no reader can still hold them."""
        now = now_ms() if now is None else now
        with self._lock:
            keep = []
            for deadline, segment in self._retired:
                if all_of_them or deadline <= now:
                    segment.close()
                else:
                    keep.append((deadline, segment))
            self._retired = keep

    # --- compaction support -----------------------------------------------------------------

    def replace_segment(self, old: LogSegment, new: LogSegment | None) -> None:
        """Swap a cleaned segment in for `old` (or drop it when cleaning left nothing)."""
        with self._lock:
            index = self._segments.index(old)
            invariant(index < len(self._segments) - 1, "the active segment is never replaced")
            if new is None:
                del self._segments[index]
                del self._bases[index]
            else:
                invariant(new.base_offset == old.base_offset, "a cleaned segment keeps its base")
                self._segments[index] = new
            deadline = now_ms() + self.config.file_delete_delay_ms
            self._retired.append((deadline, old))

    def set_config(self, config: TopicConfig) -> None:
        with self._lock:
            self.config = config
            for segment in self._segments:
                segment.index_interval_bytes = config.index_interval_bytes

    # --- shutdown ---------------------------------------------------------------------------

    def close(self) -> None:
        """Flush everything, seal the active segment's indexes and close every descriptor.

        The descriptors are closed even if the flush fails (the error is raised after).
        """
        with self._lock:
            if self._closed:
                return
            try:
                if self._failure is None:
                    self.flush()
                    self._segments[-1].seal()
                    # Everything is on disk: the snapshot saves the next open a rebuild.
                    self._write_producer_snapshot()
            finally:
                self._closed = True
                for segment in self._segments:
                    with contextlib.suppress(StorageError, OSError):
                        segment.close()
                self.close_retired(all_of_them=True)
            if self._failure is not None:
                # Not a clean close: the next open must recover this log, not trust it.
                raise LogClosedError(
                    f"{self.name}: closed after a storage failure: {self._failure}"
                )

    def verify(self, on_progress: Callable[[int], None] | None = None) -> list[str]:
        """Scrub: read every batch and check its CRC and offsets. Returns problems found."""
        problems: list[str] = []
        for segment in self.segments:
            expected = segment.base_offset
            try:
                for position, header in segment.headers_from(0, segment.size_bytes):
                    data = segment.read(position, header.size_bytes)
                    try:
                        verify_crc(data, 0, header)
                        decode_records(data, verify=False)
                    except CorruptRecordError as error:
                        problems.append(
                            f"topic {self.topic!r} partition {self.partition} offset {header.base_offset}: {error}"
                        )
                    if header.base_offset < expected:
                        problems.append(
                            f"topic {self.topic!r} partition {self.partition} offset {header.base_offset}: "
                            f"offsets go backwards (expected >= {expected})"
                        )
                    expected = header.last_offset + 1
                    if on_progress is not None:
                        on_progress(header.size_bytes)
            except CorruptRecordError as error:
                problems.append(
                    f"topic {self.topic!r} partition {self.partition} segment {segment.path}: {error}"
                )
        return problems

    def __repr__(self) -> str:
        return f"PartitionLog({self.name}, start={self._log_start_offset}, end={self._next_offset})"


def _in_aborted_transaction(
    data: bytes,
    position: int,
    header: BatchHeader,
    pending: list[AbortedTransaction],
    aborting: set[int],
) -> bool:
    """Whether the batch at `position` is data of an aborted transaction: a Kafka consumer's
    bookkeeping. A producer is inside an aborted transaction from the batch that reaches its
    listed first offset (`pending`, latest first) until its ABORT marker.
    """
    while pending and pending[-1].first_offset <= header.last_offset:
        aborting.add(pending.pop().producer_id)
    if header.producer_id not in aborting:
        return False
    if header.is_control:
        batch = memoryview(data)[position : position + header.size_bytes]
        if control_type_of(batch) == ControlType.ABORT:
            aborting.discard(header.producer_id)
        return False
    return header.is_transactional


__all__ = [
    "READ_COMMITTED",
    "READ_UNCOMMITTED",
    "AbortedTransaction",
    "AppendResult",
    "PartitionLog",
    "ReadResult",
    "RecordsResult",
    "now_ms",
]
