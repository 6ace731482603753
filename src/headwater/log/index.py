"""Sparse offset and time indexes of one segment: disposable caches rebuilt from the log.

Layout on disk is Kafka's: the offset index holds (relative offset int32, position int32)
pairs, the time index (timestamp int64, relative offset int32), all big-endian, appended as the
segment grows. Entries are also kept in memory (`array`) for binary search; a closed segment's
index is read from disk only when first used. Not thread-safe: the owning segment serializes.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
from array import array
from bisect import bisect_right

from headwater._invariant import invariant
from headwater.errors import CorruptRecordError
from headwater.log._files import storage_error

_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")
_NEEDS_SWAP = sys.byteorder == "little"


class _IndexFile:
    """The file under an index: buffered appends, truncation and fsync.

    Appends stay in memory until `flush` or `close` (a segment flushes its indexes when it is
    sealed): an index is a cache, and recovery rebuilds any that a crash left short.
    """

    __slots__ = ("_fd", "_pending", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._pending = bytearray()

    def _open(self) -> int:
        if self._fd < 0:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError as error:
                raise storage_error(error, f"open index {self.path}") from error
        return self._fd

    def read_all(self) -> bytes:
        try:
            with open(self.path, "rb") as file:
                return file.read()
        except FileNotFoundError:
            return b""

    def append(self, data: bytes) -> None:
        self._pending += data

    def _write_pending(self) -> None:
        if self._pending:
            fd = self._open()
            size = os.fstat(fd).st_size
            try:
                written = os.write(fd, self._pending)
                if written != len(self._pending):
                    raise OSError(28, "short write")
            except OSError as error:
                os.ftruncate(fd, size)  # whole entries only; the pending ones are kept
                raise storage_error(error, f"write index {self.path}") from error
            self._pending.clear()

    def replace(self, data: bytes) -> None:
        self._pending.clear()
        fd = self._open()
        try:
            os.ftruncate(fd, 0)
            if data:
                os.write(fd, data)
        except OSError as error:
            raise storage_error(error, f"write index {self.path}") from error

    def flush(self) -> None:
        self._write_pending()
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError as error:
                raise storage_error(error, f"fsync index {self.path}") from error

    def close(self) -> None:
        try:
            self._write_pending()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def delete(self) -> None:
        self._pending.clear()
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class _SparseIndex:
    """What both indexes share: a base offset, a backing file, and a lazily loaded flag."""

    __slots__ = ("_file", "_loaded", "base_offset")

    def __init__(self, path: str, base_offset: int, *, loaded: bool) -> None:
        self.base_offset = base_offset
        self._file = _IndexFile(path)
        self._loaded = loaded

    @property
    def path(self) -> str:
        return self._file.path

    def _ensure_loaded(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def delete(self) -> None:
        self._file.delete()


class OffsetIndex(_SparseIndex):
    """Maps a relative offset to the file position of the batch that starts there."""

    __slots__ = ("_offsets", "_positions")

    def __init__(self, path: str, base_offset: int, *, loaded: bool) -> None:
        super().__init__(path, base_offset, loaded=loaded)
        self._offsets = array("q")
        self._positions = array("q")

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        data = self._file.read_all()
        if len(data) % _OFFSET_ENTRY.size:
            raise CorruptRecordError(f"offset index {self.path} has a partial entry")
        values = array("i")
        values.frombytes(data)
        if _NEEDS_SWAP:
            values.byteswap()
        self._offsets = array("q", values[0::2])
        self._positions = array("q", values[1::2])
        self._loaded = True

    def check(self, segment_bytes: int) -> None:
        """Raise `CorruptRecordError` unless entries increase strictly and lie inside the log."""
        self._ensure_loaded()
        previous_offset = previous_position = -1
        for offset, position in zip(self._offsets, self._positions, strict=True):
            if offset <= previous_offset or position <= previous_position:
                raise CorruptRecordError(f"offset index {self.path} is not increasing")
            if position >= segment_bytes or offset < 0:
                raise CorruptRecordError(f"offset index {self.path} points past its segment")
            previous_offset, previous_position = offset, position

    def append(self, offset: int, position: int) -> None:
        self._ensure_loaded()
        relative = offset - self.base_offset
        invariant(
            (not self._offsets or relative > self._offsets[-1])
            and 0 <= relative < 2**31
            and 0 <= position < 2**31,
            "offset index entries increase and fit int32",
        )
        self._offsets.append(relative)
        self._positions.append(position)
        self._file.append(_OFFSET_ENTRY.pack(relative, position))

    def lookup(self, offset: int) -> tuple[int, int]:
        """The greatest entry at or below `offset` as (offset, position); (base, 0) if none."""
        self._ensure_loaded()
        slot = bisect_right(self._offsets, offset - self.base_offset) - 1
        if slot < 0:
            return self.base_offset, 0
        return self.base_offset + self._offsets[slot], self._positions[slot]

    def entry_at_or_below_position(self, position: int) -> tuple[int, int]:
        """The indexed batch with the greatest position <= `position`, as (offset, position);
        (base, 0) if none. Its position is a batch boundary."""
        self._ensure_loaded()
        slot = bisect_right(self._positions, position) - 1
        if slot < 0:
            return self.base_offset, 0
        return self.base_offset + self._offsets[slot], self._positions[slot]

    def last(self) -> tuple[int, int]:
        self._ensure_loaded()
        if not self._offsets:
            return self.base_offset, 0
        return self.base_offset + self._offsets[-1], self._positions[-1]

    def truncate_to_offset(self, offset: int) -> None:
        """Drop entries at or above `offset`."""
        self._ensure_loaded()
        keep = bisect_right(self._offsets, offset - self.base_offset - 1)
        if keep == len(self._offsets):
            return
        del self._offsets[keep:]
        del self._positions[keep:]
        self._file.replace(self._serialize())

    def reset(self, entries: list[tuple[int, int]]) -> None:
        """Replace every entry with `entries` (absolute offset, position), as a rebuild does."""
        self._offsets = array("q", (offset - self.base_offset for offset, _ in entries))
        self._positions = array("q", (position for _, position in entries))
        self._loaded = True
        self._file.replace(self._serialize())

    def _serialize(self) -> bytes:
        return b"".join(
            _OFFSET_ENTRY.pack(offset, position)
            for offset, position in zip(self._offsets, self._positions, strict=True)
        )

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._offsets)


class TimeIndex(_SparseIndex):
    """Maps a segment's running maximum timestamp to the last offset of the batch reaching it."""

    __slots__ = ("_offsets", "_timestamps")

    def __init__(self, path: str, base_offset: int, *, loaded: bool) -> None:
        super().__init__(path, base_offset, loaded=loaded)
        self._timestamps = array("q")
        self._offsets = array("q")

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        data = self._file.read_all()
        if len(data) % _TIME_ENTRY.size:
            raise CorruptRecordError(f"time index {self.path} has a partial entry")
        timestamps = array("q")
        offsets = array("q")
        for timestamp, relative in _TIME_ENTRY.iter_unpack(data):
            timestamps.append(timestamp)
            offsets.append(relative)
        self._timestamps, self._offsets = timestamps, offsets
        self._loaded = True

    def check(self, next_offset: int) -> None:
        self._ensure_loaded()
        previous_timestamp = previous_offset = -(2**63)
        for timestamp, relative in zip(self._timestamps, self._offsets, strict=True):
            if timestamp <= previous_timestamp or relative < previous_offset or relative < 0:
                raise CorruptRecordError(f"time index {self.path} is not increasing")
            if self.base_offset + relative >= next_offset:
                raise CorruptRecordError(f"time index {self.path} points past its segment")
            previous_timestamp, previous_offset = timestamp, relative

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Add (timestamp, offset) if `timestamp` is a new maximum."""
        self._ensure_loaded()
        if self._timestamps and timestamp <= self._timestamps[-1]:
            return
        relative = offset - self.base_offset
        invariant(0 <= relative < 2**31, "time index entry range")
        self._timestamps.append(timestamp)
        self._offsets.append(relative)
        self._file.append(_TIME_ENTRY.pack(timestamp, relative))

    def lookup_before(self, timestamp: int) -> int | None:
        """The offset of the last entry whose timestamp is strictly below `timestamp`.

        Every record at or before that offset is older than `timestamp`, so a search for the
        first record at or after `timestamp` may start just past it.
        """
        self._ensure_loaded()
        slot = bisect_right(self._timestamps, timestamp - 1) - 1
        if slot < 0:
            return None
        return self.base_offset + self._offsets[slot]

    def last(self) -> tuple[int, int] | None:
        """The newest entry as (timestamp, absolute offset), if any."""
        self._ensure_loaded()
        if not self._timestamps:
            return None
        return self._timestamps[-1], self.base_offset + self._offsets[-1]

    def truncate_to_offset(self, offset: int) -> None:
        self._ensure_loaded()
        keep = len(self._offsets)
        while keep and self.base_offset + self._offsets[keep - 1] >= offset:
            keep -= 1
        if keep == len(self._offsets):
            return
        del self._timestamps[keep:]
        del self._offsets[keep:]
        self._file.replace(self._serialize())

    def reset(self, entries: list[tuple[int, int]]) -> None:
        """Replace every entry with `entries` (timestamp, absolute offset)."""
        self._timestamps = array("q", (timestamp for timestamp, _ in entries))
        self._offsets = array("q", (offset - self.base_offset for _, offset in entries))
        self._loaded = True
        self._file.replace(self._serialize())

    def _serialize(self) -> bytes:
        return b"".join(
            _TIME_ENTRY.pack(timestamp, relative)
            for timestamp, relative in zip(self._timestamps, self._offsets, strict=True)
        )

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._offsets)


__all__ = ["OffsetIndex", "TimeIndex"]
