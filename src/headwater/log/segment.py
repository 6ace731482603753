"""One segment: a `.log` file of record batches plus its sparse `.index` and `.timeindex`.

A segment is named by the 20-digit base offset of its first possible record. It owns its file
descriptors. Not thread-safe: the partition log serializes writers; readers may call the
read-only methods concurrently with one writer because every read is a positioned `pread`
bounded by a size the caller captured.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from headwater import limits
from headwater._invariant import invariant
from headwater.errors import CorruptRecordError, StorageError
from headwater.log._files import storage_error
from headwater.log.index import OffsetIndex, TimeIndex
from headwater.log.record_batch import (
    BATCH_HEADER_SIZE,
    BatchHeader,
    decode_records,
    parse_header,
    set_base_offset,
    verify_crc,
)

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
NO_TIMESTAMP = -1


def segment_file_name(base_offset: int, suffix: str = LOG_SUFFIX) -> str:
    return f"{base_offset:020d}{suffix}"


class DataSyncError(StorageError):
    """An fsync of log data failed: what was written since the last good sync may be gone."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a scan of a segment found: valid bytes, batches, and whether a tail was cut."""

    valid_bytes: int
    batch_count: int
    next_offset: int
    truncated_bytes: int
    error: str | None


class LogSegment:
    """A `.log` file and its indexes; see the module docstring for thread-safety."""

    __slots__ = (
        "_bytes_since_index_entry",
        "_fd",
        "base_offset",
        "created_ms",
        "directory",
        "first_batch_timestamp",
        "index_interval_bytes",
        "max_timestamp",
        "next_offset",
        "offset_index",
        "offset_of_max_timestamp",
        "path",
        "size_bytes",
        "time_index",
    )

    def __init__(
        self, directory: str, base_offset: int, index_interval_bytes: int, *, new: bool
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.path = os.path.join(directory, segment_file_name(base_offset))
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT | os.O_EXCL if new else 0)
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as error:
            raise storage_error(error, f"open segment {self.path}") from error
        self.size_bytes = os.fstat(self._fd).st_size
        self.created_ms = int(time.time() * 1000)
        self.offset_index = OffsetIndex(
            os.path.join(directory, segment_file_name(base_offset, INDEX_SUFFIX)),
            base_offset,
            loaded=new,
        )
        self.time_index = TimeIndex(
            os.path.join(directory, segment_file_name(base_offset, TIME_INDEX_SUFFIX)),
            base_offset,
            loaded=new,
        )
        self.next_offset = base_offset
        self.max_timestamp = NO_TIMESTAMP
        self.offset_of_max_timestamp = base_offset
        self.first_batch_timestamp = NO_TIMESTAMP
        self._bytes_since_index_entry = 0

    @classmethod
    def create(cls, directory: str, base_offset: int, index_interval_bytes: int) -> LogSegment:
        segment = cls(directory, base_offset, index_interval_bytes, new=True)
        try:
            # A crash may leave stale indexes of an earlier segment with this name: start clean.
            segment.offset_index.reset([])
            segment.time_index.reset([])
        except StorageError:
            # Leave nothing half-made behind, so that a retry (after space is freed) can create it.
            segment.close()
            segment.delete_files()
            raise
        return segment

    @classmethod
    def open_existing(
        cls, directory: str, base_offset: int, index_interval_bytes: int
    ) -> LogSegment:
        """Open a segment whose indexes are trusted (clean shutdown or before the recovery point)."""
        segment = cls(directory, base_offset, index_interval_bytes, new=False)
        try:
            if segment.size_bytes and not (
                os.path.exists(segment.offset_index.path)
                and os.path.exists(segment.time_index.path)
            ):
                raise CorruptRecordError(f"indexes of {segment.path} are missing")
            segment.offset_index.check(segment.size_bytes)
            segment._load_tail()
            segment.time_index.check(segment.next_offset)
            if segment.size_bytes and segment.time_index.last() is None:
                # A sealed segment always ends its time index with its maximum timestamp.
                raise CorruptRecordError(f"time index {segment.time_index.path} is empty")
        except CorruptRecordError:
            # Indexes are caches: rebuild from the batches without cutting any data.
            segment.scan(verify=False, truncate=False)
        return segment

    # --- writing ----------------------------------------------------------------------------

    def append(self, batch: memoryview, header: BatchHeader, base_offset: int) -> int:
        """Write one validated batch at the end, stamped with `base_offset`; return its position.

        On any write failure the file is cut back to where it was, so no torn batch remains.
        """
        size = len(batch)
        last_offset = base_offset + header.last_offset_delta
        invariant(
            size == header.batch_length + 12
            and base_offset >= self.next_offset
            and last_offset - self.base_offset <= limits.SEGMENT_RELATIVE_OFFSET_MAX,
            "a batch fits the end of its segment",
        )
        position = self.size_bytes
        try:
            written = os.writev(self._fd, [set_base_offset(batch, base_offset), batch[8:]])
            while written < size:
                written += os.write(self._fd, batch[written:])
        except OSError as error:
            self._cut_back(position)
            raise storage_error(error, f"append to {self.path}") from error
        if self._bytes_since_index_entry >= self.index_interval_bytes and position > 0:
            self.offset_index.append(base_offset, position)
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self._bytes_since_index_entry = 0
        self._bytes_since_index_entry += size
        if header.max_timestamp > self.max_timestamp:
            self.max_timestamp = header.max_timestamp
            self.offset_of_max_timestamp = last_offset
        if position == 0:
            self.first_batch_timestamp = header.max_timestamp
        self.size_bytes = position + size
        self.next_offset = last_offset + 1
        return position

    def _cut_back(self, position: int) -> None:
        try:
            os.ftruncate(self._fd, position)
        except OSError as error:  # pragma: no cover - the disk is failing beyond repair
            raise storage_error(error, f"cut back {self.path} after a failed append") from error

    def seal(self) -> None:
        """Make this segment inactive: a final time-index entry, then fsync everything."""
        if self.max_timestamp != NO_TIMESTAMP:
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
        self.flush(indexes=True)

    def flush(self, *, indexes: bool = False) -> None:
        """fsync the log file (and write out and fsync the indexes if `indexes`).

        Raises `DataSyncError` if the log file's fsync fails (its data may be lost), and a plain
        `StorageError` if only an index could not be written (a cache, rebuilt if need be).
        """
        try:
            os.fsync(self._fd)
        except OSError as error:
            raise DataSyncError(f"fsync {self.path}: {error.strerror}") from error
        if indexes:
            self.offset_index.flush()
            self.time_index.flush()

    # --- reading ----------------------------------------------------------------------------

    def read(self, position: int, size: int) -> bytes:
        try:
            data = os.pread(self._fd, size, position)
        except OSError as error:
            raise storage_error(error, f"read {self.path}") from error
        return data

    @property
    def fileno(self) -> int:
        """The descriptor, for zero-copy `sendfile` by the broker."""
        return self._fd

    def read_header(self, position: int) -> BatchHeader:
        data = self.read(position, BATCH_HEADER_SIZE)
        return parse_header(data)

    def headers_from(self, position: int, end_position: int) -> Iterator[tuple[int, BatchHeader]]:
        """Walk batch headers from `position` up to `end_position`."""
        while position < end_position:
            header = self.read_header(position)
            if position + header.size_bytes > end_position:
                raise CorruptRecordError(
                    f"batch at position {position} of {self.path} runs past the end of the segment"
                )
            yield position, header
            position += header.size_bytes

    def find_position(self, offset: int, end_position: int) -> tuple[int, BatchHeader | None]:
        """Position of the first batch whose last offset is >= `offset` (None past the end)."""
        _, position = self.offset_index.lookup(offset)
        for batch_position, header in self.headers_from(position, end_position):
            if header.base_offset + header.last_offset_delta >= offset:
                return batch_position, header
        return end_position, None

    def find_timestamp(
        self, timestamp: int, end_position: int, min_offset: int = 0
    ) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after `min_offset` with a timestamp
        >= `timestamp`, if any."""
        if self.max_timestamp < timestamp and self.max_timestamp != NO_TIMESTAMP:
            return None
        after = self.time_index.lookup_before(timestamp)
        start = max(self.base_offset if after is None else after + 1, min_offset)
        position, _ = self.find_position(start, end_position)
        for batch_position, header in self.headers_from(position, end_position):
            if header.max_timestamp < timestamp or header.is_control:
                continue
            data = self.read(batch_position, header.size_bytes)
            for record in decode_records(data):
                if record.timestamp >= timestamp and record.offset >= start:
                    return record.offset, record.timestamp
        return None

    # --- recovery and maintenance -----------------------------------------------------------

    def _load_tail(self) -> None:
        """Derive next offset, timestamps and index spacing from the last index entry onward."""
        if self.size_bytes == 0:
            return
        self.first_batch_timestamp = self.read_header(0).max_timestamp
        _, position = self.offset_index.last()
        last_time_entry = self.time_index.last()
        if last_time_entry is not None:
            self.max_timestamp, self.offset_of_max_timestamp = last_time_entry
        largest = 0
        for batch_position, header in self.headers_from(position, self.size_bytes):
            self._bytes_since_index_entry = batch_position + header.size_bytes - position
            largest = max(largest, header.size_bytes)
            if header.max_timestamp > self.max_timestamp:
                self.max_timestamp = header.max_timestamp
                self.offset_of_max_timestamp = header.last_offset
            self.next_offset = header.last_offset + 1
        if self._bytes_since_index_entry > self.index_interval_bytes + largest:
            # More unindexed bytes than appending would ever leave: the index lost its tail.
            raise CorruptRecordError(f"offset index {self.offset_index.path} is short")

    def scan(self, *, verify: bool, truncate: bool, min_offset: int | None = None) -> ScanResult:
        """Read every batch from the start, rebuild both indexes, and (if `truncate`) cut the
        file at the first invalid batch: a torn tail, garbage, a CRC mismatch (when `verify`)
        or offsets that go backwards.
        """
        offset_entries: list[tuple[int, int]] = []
        time_entries: list[tuple[int, int]] = []
        self.max_timestamp = NO_TIMESTAMP
        self.offset_of_max_timestamp = self.base_offset
        self.first_batch_timestamp = NO_TIMESTAMP
        self._bytes_since_index_entry = 0
        expected_offset = self.base_offset if min_offset is None else min_offset
        position = 0
        batches = 0
        error: str | None = None
        buffer = b""
        buffer_start = 0
        while position < self.size_bytes:
            # Keep a window of the file in memory so small batches cost no syscall each.
            if position + BATCH_HEADER_SIZE > buffer_start + len(buffer):
                buffer_start = position
                buffer = self.read(
                    position, min(limits.SCAN_CHUNK_BYTES, self.size_bytes - position)
                )
            try:
                header = parse_header(buffer, position - buffer_start)
            except CorruptRecordError as exc:
                error = str(exc)
                break
            end = position + header.size_bytes
            if end > self.size_bytes:
                error = f"torn batch at position {position}: {header.size_bytes} bytes declared"
                break
            if header.base_offset < expected_offset:
                error = f"batch at position {position} has offset {header.base_offset} < {expected_offset}"
                break
            if header.last_offset - self.base_offset > limits.SEGMENT_RELATIVE_OFFSET_MAX:
                error = f"batch at position {position} has an offset out of this segment's range"
                break
            if end > buffer_start + len(buffer):
                buffer_start = position
                buffer = self.read(
                    position,
                    max(
                        header.size_bytes, min(limits.SCAN_CHUNK_BYTES, self.size_bytes - position)
                    ),
                )
            if verify:
                try:
                    verify_crc(buffer, position - buffer_start, header)
                except CorruptRecordError as exc:
                    error = str(exc)
                    break
            if self._bytes_since_index_entry >= self.index_interval_bytes and position > 0:
                offset_entries.append((header.base_offset, position))
                if self.max_timestamp != NO_TIMESTAMP and (
                    not time_entries or self.max_timestamp > time_entries[-1][0]
                ):
                    time_entries.append((self.max_timestamp, self.offset_of_max_timestamp))
                self._bytes_since_index_entry = 0
            self._bytes_since_index_entry += header.size_bytes
            if header.max_timestamp > self.max_timestamp:
                self.max_timestamp = header.max_timestamp
                self.offset_of_max_timestamp = header.last_offset
            if position == 0:
                self.first_batch_timestamp = header.max_timestamp
            expected_offset = header.last_offset + 1
            position = end
            batches += 1
        truncated = 0
        if error is not None and truncate:
            truncated = self.size_bytes - position
            self._cut_back(position)
            self.size_bytes = position
        elif error is not None:
            raise CorruptRecordError(f"segment {self.path}: {error}")
        self.next_offset = expected_offset if batches else self.base_offset
        self.offset_index.reset(offset_entries)
        self.time_index.reset(time_entries)
        return ScanResult(position, batches, self.next_offset, truncated, error)

    def truncate_to_offset(self, offset: int) -> None:
        """Drop every batch whose base offset is >= `offset` (whole batches only)."""
        position, header = self.find_position(offset, self.size_bytes)
        if header is not None and header.base_offset < offset:
            position += header.size_bytes
        if position >= self.size_bytes:
            return
        self._cut_back(position)
        self.size_bytes = position
        self.scan(verify=False, truncate=True)

    def is_empty(self) -> bool:
        return self.size_bytes == 0

    def close(self) -> None:
        try:
            self.offset_index.close()
        finally:
            try:
                self.time_index.close()
            finally:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1

    def delete_files(self) -> None:
        """Unlink the files; the descriptor stays open for readers until `close`."""
        for path in (self.path, self.offset_index.path, self.time_index.path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def __repr__(self) -> str:
        return f"LogSegment(base_offset={self.base_offset}, size_bytes={self.size_bytes})"


__all__ = [
    "INDEX_SUFFIX",
    "LOG_SUFFIX",
    "TIME_INDEX_SUFFIX",
    "DataSyncError",
    "LogSegment",
    "ScanResult",
    "segment_file_name",
]
