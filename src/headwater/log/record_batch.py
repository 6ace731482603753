"""Kafka's record batch format, magic 2: encode, parse, verify and decode.

A batch is a 61-byte header followed by its records, compressed as one unit when the batch is
compressed. Every field is big-endian; the records use zigzag varints. The CRC-32C covers the
bytes from the attributes to the end of the batch, so the base offset and the partition leader
epoch, which the broker assigns, can be rewritten without recomputing it.

Encoding and decoding are the broker's hot path, so both have hand-inlined fast paths for the
common shapes (small varints, records without headers); everything else takes the general path.
"""

from __future__ import annotations

import enum
import itertools
import struct
import time
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

import crc32c

from headwater import limits
from headwater._invariant import invariant
from headwater.errors import (
    CorruptRecordError,
    InvalidRecordError,
    RecordBatchTooLargeError,
    UnsupportedCompressionError,
)
from headwater.log.compression import Compression, compress, decompress

__all__ = [
    "BATCH_HEADER_SIZE",
    "LOG_OVERHEAD",
    "MAGIC",
    "NO_PARTITION_LEADER_EPOCH",
    "NO_PRODUCER_EPOCH",
    "NO_PRODUCER_ID",
    "NO_SEQUENCE",
    "TRANSACTION_FLAGS",
    "BatchHeader",
    "ControlType",
    "NewRecord",
    "Record",
    "TimestampType",
    "control_type_of",
    "decode_records",
    "encode_batch",
    "encode_control_batch",
    "encode_values_batch",
    "iter_batches",
    "parse_header",
    "set_base_offset",
    "set_log_append_time",
    "verify_crc",
    "with_partition_leader_epoch",
]

BATCH_HEADER_SIZE = 61
LOG_OVERHEAD = 12
MAGIC = 2
NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_PARTITION_LEADER_EPOCH = -1

# Byte positions of the header fields that are read or rewritten on their own.
_PARTITION_LEADER_EPOCH_AT = 12
_CRC_AT = 17
_ATTRIBUTES_AT = 21
_MAX_TIMESTAMP_AT = 35

_HEADER = struct.Struct(">qiibIhiqqqhii")
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT16 = struct.Struct(">h")
invariant(_HEADER.size == BATCH_HEADER_SIZE, "the header struct matches Kafka's 61 bytes")

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD

_CODEC_MASK = 0x07
_TIMESTAMP_TYPE_FLAG = 0x08
_TRANSACTIONAL_FLAG = 0x10
_CONTROL_FLAG = 0x20
_DELETE_HORIZON_FLAG = 0x40
TRANSACTION_FLAGS = _TRANSACTIONAL_FLAG | _CONTROL_FLAG
"""The attribute bits of a batch that takes part in a transaction: data or a marker."""

# A control record's key: version int16, type int16; a marker's value: version int16,
# coordinator epoch int32. Version 0 of both is the only one Kafka writes.
_CONTROL_KEY = struct.Struct(">hh")
_MARKER_VALUE = struct.Struct(">hi")
_CONTROL_RECORD_VERSION = 0


class ControlType(enum.IntEnum):
    """The type in a control record's key: which end a transaction marker writes."""

    ABORT = 0
    COMMIT = 1


class TimestampType(enum.IntEnum):
    """Bit 3 of the batch attributes: who chose the timestamps."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record, with its absolute offset and timestamp."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


class NewRecord(NamedTuple):
    """A record to encode; a None timestamp means "now"."""

    key: bytes | None
    value: bytes | None
    timestamp: int | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()


class BatchHeader(NamedTuple):
    """The 61 header bytes of a batch, parsed but not otherwise checked."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size_bytes(self) -> int:
        """The whole batch, including the base offset and length fields."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> Compression:
        """The codec; raises `UnsupportedCompressionError` for the ids Kafka has not assigned."""
        codec = self.attributes & _CODEC_MASK
        if codec > Compression.ZSTD:
            raise UnsupportedCompressionError(f"unknown compression codec {codec}")
        return Compression(codec)

    @property
    def timestamp_type(self) -> TimestampType:
        if self.attributes & _TIMESTAMP_TYPE_FLAG:
            return TimestampType.LOG_APPEND_TIME
        return TimestampType.CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_FLAG)

    @property
    def has_delete_horizon(self) -> bool:
        """Compaction stored its delete horizon in `base_timestamp` (bit 6)."""
        return bool(self.attributes & _DELETE_HORIZON_FLAG)


# --- header -------------------------------------------------------------------------------


_new_header = tuple.__new__  # skips NamedTuple._make's argument checks on the hot path


def parse_header(buffer: bytes | bytearray | memoryview, position: int = 0) -> BatchHeader:
    """Parse the header of the batch at `position`; the CRC is not checked (see `verify_crc`)."""
    available = len(buffer) - position
    if position < 0 or available < BATCH_HEADER_SIZE:
        raise CorruptRecordError(
            f"batch header at position {position} needs {BATCH_HEADER_SIZE} bytes, "
            f"{max(available, 0)} are available"
        )
    header = _new_header(BatchHeader, _HEADER.unpack_from(buffer, position))
    if header.magic != MAGIC:
        raise CorruptRecordError(
            f"batch at offset {header.base_offset} has magic {header.magic}, "
            f"only {MAGIC} is supported"
        )
    if not _MIN_BATCH_LENGTH <= header.batch_length <= limits.BATCH_BYTES_MAX:
        raise CorruptRecordError(
            f"batch at offset {header.base_offset} has an impossible length {header.batch_length}"
        )
    if header.record_count < 0 or header.last_offset_delta < 0:
        raise CorruptRecordError(
            f"batch at offset {header.base_offset} has record count {header.record_count} "
            f"and last offset delta {header.last_offset_delta}"
        )
    return header


def verify_crc(buffer: bytes | bytearray | memoryview, position: int, header: BatchHeader) -> None:
    """Check the batch's CRC-32C, reading the buffer in place."""
    end = position + header.size_bytes
    if end > len(buffer):
        raise CorruptRecordError(
            f"batch at offset {header.base_offset} is truncated: it needs {header.size_bytes} "
            f"bytes, {len(buffer) - position} are available"
        )
    with memoryview(buffer) as view:
        actual = crc32c.crc32c(view[position + _ATTRIBUTES_AT : end])
    if actual != header.crc:
        raise CorruptRecordError(
            f"batch at offset {header.base_offset} failed its CRC check: "
            f"expected {header.crc:#010x}, computed {actual:#010x}"
        )


def iter_batches(
    buffer: bytes | bytearray | memoryview, position: int = 0
) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) for each complete batch; stop quietly at a partial one.

    A bad header raises `CorruptRecordError`; CRCs are not checked.
    """
    size = len(buffer)
    while size - position >= BATCH_HEADER_SIZE:
        header = parse_header(buffer, position)
        end = position + header.size_bytes
        if end > size:
            return
        yield position, header
        position = end


def set_base_offset(batch: bytes | bytearray | memoryview, base_offset: int) -> bytes:
    """The 8 bytes that replace `batch[:8]` to give it `base_offset`; the CRC stays valid."""
    invariant(len(batch) >= BATCH_HEADER_SIZE, "set_base_offset needs a whole batch header")
    invariant(0 <= base_offset <= _INT64_MAX, "base offset out of int64 range")
    return _INT64.pack(base_offset)


def with_partition_leader_epoch(batch: bytearray, epoch: int) -> None:
    """Stamp the partition leader epoch in place; it lies outside the CRC."""
    parse_header(batch)
    invariant(-(2**31) <= epoch < 2**31, f"partition leader epoch {epoch} is out of range")
    _INT32.pack_into(batch, _PARTITION_LEADER_EPOCH_AT, epoch)


def set_log_append_time(batch: bytearray, timestamp_ms: int) -> None:
    """Mark the batch at the start of `batch` LogAppendTime at `timestamp_ms`, in place.

    As Kafka's broker does for magic 2, only the header changes: the timestamp type bit and the
    max timestamp, which then stands for every record. The old CRC is checked first so that the
    new one cannot vouch for bytes that were already corrupt.
    """
    header = parse_header(batch)
    verify_crc(batch, 0, header)
    invariant(_INT64_MIN <= timestamp_ms <= _INT64_MAX, f"timestamp {timestamp_ms} out of range")
    _INT16.pack_into(batch, _ATTRIBUTES_AT, header.attributes | _TIMESTAMP_TYPE_FLAG)
    _INT64.pack_into(batch, _MAX_TIMESTAMP_AT, timestamp_ms)
    with memoryview(batch) as view:
        crc = crc32c.crc32c(view[_ATTRIBUTES_AT : header.size_bytes])
    _UINT32.pack_into(batch, _CRC_AT, crc)


# --- control batches ----------------------------------------------------------------------


def encode_control_batch(
    *,
    producer_id: int,
    producer_epoch: int,
    control_type: ControlType,
    coordinator_epoch: int,
    timestamp_ms: int,
) -> bytes:
    """A transaction marker: one control record, transactional and control bits set.

    The base offset is 0 and the base sequence -1; the log assigns offsets as for any batch.
    """
    if producer_id < 0 or producer_epoch < 0:
        raise InvalidRecordError(
            f"a transaction marker needs a producer, not id {producer_id} epoch {producer_epoch}"
        )
    try:
        key = _CONTROL_KEY.pack(_CONTROL_RECORD_VERSION, ControlType(control_type))
        value = _MARKER_VALUE.pack(_CONTROL_RECORD_VERSION, coordinator_epoch)
    except (struct.error, ValueError) as error:
        raise InvalidRecordError(f"a transaction marker field is out of range: {error}") from None
    return encode_batch(
        [NewRecord(key, value, timestamp_ms)],
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=NO_SEQUENCE,
        is_transactional=True,
        is_control=True,
    )


def control_type_of(batch: bytes | bytearray | memoryview) -> ControlType:
    """The type of the control batch at the start of `batch`, CRC-checked.

    Not a control batch: `InvalidRecordError`. A control batch whose one record does not hold a
    version-0 key naming ABORT or COMMIT: `CorruptRecordError` (Kafka has other control types,
    for its own metadata log, that never belong in a partition's data).
    """
    header = parse_header(batch)
    if not header.attributes & _CONTROL_FLAG:
        raise InvalidRecordError(f"batch at offset {header.base_offset} is not a control batch")
    records = decode_records(batch)
    if len(records) != 1:
        raise _structural(header, f"a control batch holds {len(records)} records, not 1")
    key = records[0].key
    if key is None or len(key) < _CONTROL_KEY.size:
        raise _structural(header, "a control record's key is too short")
    version, kind = _CONTROL_KEY.unpack_from(key)
    if version != _CONTROL_RECORD_VERSION or kind not in (ControlType.ABORT, ControlType.COMMIT):
        raise _structural(header, f"control record version {version} type {kind} is unknown")
    return ControlType(kind)


# --- varints ------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    """Zigzag, then base-128 little-endian groups (protobuf's sint encoding)."""
    zigzag = value << 1 if value >= 0 else (~value << 1) | 1
    out = bytearray()
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def _read_varint(data: bytes, position: int, bits: int) -> tuple[int, int]:
    """Decode the zigzag varint at `position` as a `bits`-wide integer; return it and the end.

    Running off the end raises IndexError, which the callers turn into `CorruptRecordError`.
    """
    result = 0
    shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift >= bits:
            raise CorruptRecordError(f"a varint at position {position} is longer than {bits} bits")
    if result >> bits:
        raise CorruptRecordError(f"a varint before position {position} overflows {bits} bits")
    return (result >> 1) ^ -(result & 1), position


# Encodings of small non-negative values, which lengths and deltas nearly always are.
_VARINT_TABLE_SIZE = 4096
_VARINTS = tuple(_varint(value) for value in range(_VARINT_TABLE_SIZE))
# The record attributes byte (always 0) followed by a small timestamp delta.
_ATTRIBUTES_AND_DELTAS = tuple(b"\x00" + encoded for encoded in _VARINTS)
_NULL_LENGTH = _varint(-1)
_NO_HEADERS = _varint(0)
# Attributes (0), a zero timestamp delta and the offset delta: how records of one instant start.
_ZERO_DELTA_PREFIXES = tuple(b"\x00\x00" + encoded for encoded in _VARINTS)
# ... followed by a null key.
_NULL_KEY_PREFIXES = tuple(prefix + _NULL_LENGTH for prefix in _ZERO_DELTA_PREFIXES)
# Decoded values of the one-byte varints.
_ONE_BYTE_VALUES = tuple((byte >> 1) ^ -(byte & 1) for byte in range(0x80))


# --- encoding -----------------------------------------------------------------------------


def encode_batch(
    records: Sequence[NewRecord],
    *,
    base_offset: int = 0,
    compression: Compression = Compression.NONE,
    timestamp_type: TimestampType = TimestampType.CREATE_TIME,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
    is_transactional: bool = False,
    is_control: bool = False,
    now_ms: int | None = None,
    offset_deltas: Sequence[int] | None = None,
) -> bytes:
    """Encode `records` as one batch; record i gets offset `base_offset + i`.

    `offset_deltas` (strictly increasing, from 0) keeps the gaps a compacted batch has instead.

    A record without a timestamp gets `now_ms` (default: the clock). The base timestamp is the
    first record's, as in Kafka. For LogAppendTime every record is stamped with `now_ms`.
    """
    count = len(records)
    if count == 0:
        raise InvalidRecordError("a record batch needs at least one record")
    if count > limits.RECORDS_PER_BATCH_MAX:
        raise InvalidRecordError(
            f"{count} records exceed the limit of {limits.RECORDS_PER_BATCH_MAX} per batch"
        )
    if base_offset < 0 or base_offset + count - 1 > _INT64_MAX:
        raise InvalidRecordError(f"base offset {base_offset} is out of range for {count} records")
    last_offset_delta = count - 1
    if offset_deltas is not None:
        if (
            len(offset_deltas) != count
            or offset_deltas[0] != 0
            or any(later <= earlier for earlier, later in itertools.pairwise(offset_deltas))
        ):
            raise InvalidRecordError("offset deltas must start at 0 and increase, one per record")
        last_offset_delta = offset_deltas[-1]
        if last_offset_delta > 2**31 - 1:
            raise InvalidRecordError("offset deltas must fit in int32")
    timestamps: list[int]
    if timestamp_type == TimestampType.LOG_APPEND_TIME:
        timestamps = [_now(now_ms)] * count
    else:
        given = [record[2] for record in records]
        if None in given:
            now = _now(now_ms)
            timestamps = [now if stamp is None else stamp for stamp in given]
        else:
            timestamps = cast("list[int]", given)
    base_timestamp = timestamps[0]
    max_timestamp = max(timestamps)
    min_timestamp = min(timestamps)
    if (
        min_timestamp < _INT64_MIN
        or max_timestamp > _INT64_MAX
        or max_timestamp - base_timestamp > _INT64_MAX
        or min_timestamp - base_timestamp < _INT64_MIN
    ):
        raise InvalidRecordError("record timestamps must fit in int64, and so must their deltas")

    body = _encode_records(records, timestamps, base_timestamp, offset_deltas)
    return _finish_batch(
        body,
        count,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        base_offset=base_offset,
        compression=compression,
        timestamp_type=timestamp_type,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        partition_leader_epoch=partition_leader_epoch,
        is_transactional=is_transactional,
        is_control=is_control,
    )


def encode_values_batch(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None = None,
    *,
    timestamp: int,
    base_offset: int = 0,
    compression: Compression = Compression.NONE,
    timestamp_type: TimestampType = TimestampType.CREATE_TIME,
) -> bytes:
    """Encode records that share one timestamp and have no headers: a producer's fast path.

    The same bytes `encode_batch` makes for those records, without building a `NewRecord` per
    record or computing per-record timestamp deltas (all zero).
    """
    count = len(values)
    if count == 0:
        raise InvalidRecordError("a record batch needs at least one record")
    if count > limits.RECORDS_PER_BATCH_MAX:
        raise InvalidRecordError(
            f"{count} records exceed the limit of {limits.RECORDS_PER_BATCH_MAX} per batch"
        )
    if keys is not None and len(keys) != count:
        raise InvalidRecordError(f"{len(keys)} keys for {count} values")
    if not _INT64_MIN <= timestamp <= _INT64_MAX:
        raise InvalidRecordError("record timestamps must fit in int64")
    table = _VARINTS
    table_size = _VARINT_TABLE_SIZE
    varint = _varint
    parts: list[bytes] = []
    if keys is None:
        prefixes = _NULL_KEY_PREFIXES
        for index, value in enumerate(values):
            prefix = (
                prefixes[index] if index < table_size else b"\x00\x00" + varint(index) + b"\x01"
            )
            if value is None:
                size = len(prefix) + 2
                parts += (table[size], prefix, b"\x01\x00")
                continue
            length = len(value)
            encoded_length = table[length] if length < table_size else varint(length)
            size = len(prefix) + len(encoded_length) + length + 1
            parts += (
                table[size] if size < table_size else varint(size),
                prefix,
                encoded_length,
                value,
                b"\x00",
            )
    else:
        null_length = _NULL_LENGTH
        for index, (key, value) in enumerate(zip(keys, values, strict=True)):
            prefix = (
                _ZERO_DELTA_PREFIXES[index] if index < table_size else b"\x00\x00" + varint(index)
            )
            if key is None:
                key_length, key = null_length, b""
            else:
                key_length = table[len(key)] if len(key) < table_size else varint(len(key))
            if value is None:
                value_length, value = null_length, b""
            else:
                value_length = table[len(value)] if len(value) < table_size else varint(len(value))
            size = len(prefix) + len(key_length) + len(key) + len(value_length) + len(value) + 1
            parts += (
                table[size] if size < table_size else varint(size),
                prefix,
                key_length,
                key,
                value_length,
                value,
                b"\x00",
            )
    return _finish_batch(
        b"".join(parts),
        count,
        count - 1,
        timestamp,
        timestamp,
        base_offset=base_offset,
        compression=compression,
        timestamp_type=timestamp_type,
    )


def _finish_batch(
    body: bytes,
    count: int,
    last_offset_delta: int,
    base_timestamp: int,
    max_timestamp: int,
    *,
    base_offset: int,
    compression: Compression,
    timestamp_type: TimestampType,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
    is_transactional: bool = False,
    is_control: bool = False,
) -> bytes:
    """Compress the records section, then prepend the header with its CRC."""
    attributes = int(compression) & _CODEC_MASK
    if compression != Compression.NONE:
        body = compress(compression, body)
    if timestamp_type == TimestampType.LOG_APPEND_TIME:
        attributes |= _TIMESTAMP_TYPE_FLAG
    if is_transactional:
        attributes |= _TRANSACTIONAL_FLAG
    if is_control:
        attributes |= _CONTROL_FLAG
    batch_length = _MIN_BATCH_LENGTH + len(body)
    if batch_length + LOG_OVERHEAD > limits.BATCH_BYTES_MAX:
        raise RecordBatchTooLargeError(
            f"a batch of {batch_length + LOG_OVERHEAD} bytes exceeds the limit of "
            f"{limits.BATCH_BYTES_MAX}"
        )
    try:
        header = bytearray(
            _HEADER.pack(
                base_offset,
                batch_length,
                partition_leader_epoch,
                MAGIC,
                0,
                attributes,
                last_offset_delta,
                base_timestamp,
                max_timestamp,
                producer_id,
                producer_epoch,
                base_sequence,
                count,
            )
        )
    except struct.error as error:
        raise InvalidRecordError(f"a batch header field is out of range: {error}") from None
    with memoryview(header) as view:
        crc = crc32c.crc32c(body, crc32c.crc32c(view[_ATTRIBUTES_AT:]))
    _UINT32.pack_into(header, _CRC_AT, crc)
    return b"".join((header, body))


def _now(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else now_ms


def _encode_records(
    records: Sequence[NewRecord],
    timestamps: list[int],
    base_timestamp: int,
    offset_deltas: Sequence[int] | None = None,
) -> bytes:
    """The records section, uncompressed: one varint-length-prefixed entry per record."""
    table = _VARINTS
    table_size = _VARINT_TABLE_SIZE
    attributes_and_deltas = _ATTRIBUTES_AND_DELTAS
    varint = _varint
    null_length = _NULL_LENGTH
    no_headers = _NO_HEADERS
    parts: list[bytes] = []
    for index, ((key, value, _, headers), timestamp) in enumerate(
        zip(records, timestamps, strict=True)
    ):
        offset_delta = index if offset_deltas is None else offset_deltas[index]
        delta = timestamp - base_timestamp
        if 0 <= delta < table_size:
            leading = attributes_and_deltas[delta]
        else:
            leading = b"\x00" + varint(delta)
        encoded_offset_delta = (
            table[offset_delta] if offset_delta < table_size else varint(offset_delta)
        )
        if key is None:
            key_length = null_length
            key = b""
        else:
            size = len(key)
            key_length = table[size] if size < table_size else varint(size)
        if value is None:
            value_length = null_length
            value = b""
        else:
            size = len(value)
            value_length = table[size] if size < table_size else varint(size)
        encoded_headers = _encode_headers(headers) if headers else no_headers
        size = (
            len(leading)
            + len(encoded_offset_delta)
            + len(key_length)
            + len(key)
            + len(value_length)
            + len(value)
            + len(encoded_headers)
        )
        parts += (
            table[size] if size < table_size else varint(size),
            leading,
            encoded_offset_delta,
            key_length,
            key,
            value_length,
            value,
            encoded_headers,
        )
    return b"".join(parts)


def _encode_headers(headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    if len(headers) > limits.HEADERS_PER_RECORD_MAX:
        raise InvalidRecordError(
            f"{len(headers)} headers exceed the limit of {limits.HEADERS_PER_RECORD_MAX}"
        )
    parts = [_varint(len(headers))]
    for header_key, header_value in headers:
        try:
            encoded_key = header_key.encode("utf-8")
        except (AttributeError, UnicodeEncodeError) as error:
            raise InvalidRecordError(
                f"header key {header_key!r} is not encodable text: {error}"
            ) from None
        parts.append(_varint(len(encoded_key)))
        parts.append(encoded_key)
        if header_value is None:
            parts.append(_NULL_LENGTH)
        else:
            parts.append(_varint(len(header_value)))
            parts.append(header_value)
    return b"".join(parts)


# --- decoding -----------------------------------------------------------------------------

# Record is frozen, so its generated __init__ sets each field through object.__setattr__,
# which is slow; the decoder fills the slots through their descriptors instead.
_new_object = object.__new__
_set_offset = Record.__dict__["offset"].__set__
_set_timestamp = Record.__dict__["timestamp"].__set__
_set_key = Record.__dict__["key"].__set__
_set_value = Record.__dict__["value"].__set__
_set_headers = Record.__dict__["headers"].__set__
invariant(
    all(
        isinstance(Record.__dict__[name], types.MemberDescriptorType)
        for name in ("offset", "timestamp", "key", "value", "headers")
    ),
    "Record's fields are slots",
)


def decode_records(
    buffer: bytes | bytearray | memoryview, position: int = 0, *, verify: bool = True
) -> list[Record]:
    """Decode every record of the batch at `position`, with absolute offsets and timestamps.

    The CRC is checked first unless `verify` is false. Any fault in the batch, including a codec
    id Kafka has not assigned, raises `CorruptRecordError`.
    """
    header = parse_header(buffer, position)
    end = position + header.size_bytes
    if end > len(buffer):
        raise CorruptRecordError(
            f"batch at offset {header.base_offset} is truncated: it needs {header.size_bytes} "
            f"bytes, {len(buffer) - position} are available"
        )
    if verify:
        verify_crc(buffer, position, header)
    if header.record_count > limits.RECORDS_PER_BATCH_MAX:
        raise CorruptRecordError(
            f"batch at offset {header.base_offset} claims {header.record_count} records"
        )
    codec = header.attributes & _CODEC_MASK
    if codec > Compression.ZSTD:
        # Stored or received bytes naming a codec that does not exist are damaged bytes.
        raise _structural(header, f"unknown compression codec {codec}")
    with memoryview(buffer) as view:
        section = view[position + BATCH_HEADER_SIZE : end]
        data = bytes(section) if codec == Compression.NONE else decompress(codec, section)
        section.release()
    try:
        return _decode_section(data, header)
    except IndexError:
        raise CorruptRecordError(
            f"batch at offset {header.base_offset}: its records run past the end of the batch"
        ) from None
    except UnicodeDecodeError:
        raise CorruptRecordError(
            f"batch at offset {header.base_offset}: a header key is not valid UTF-8"
        ) from None


def _decode_section(data: bytes, header: BatchHeader) -> list[Record]:
    """Decode the records section; running past its end raises IndexError (mapped by caller)."""
    base_offset = header.base_offset
    base_timestamp = header.base_timestamp
    log_append_time = header.max_timestamp if header.attributes & _TIMESTAMP_TYPE_FLAG else None
    one_byte = _ONE_BYTE_VALUES
    read_varint = _read_varint
    new_object = _new_object
    set_offset = _set_offset
    set_timestamp = _set_timestamp
    set_key = _set_key
    set_value = _set_value
    set_headers = _set_headers
    records: list[Record] = []
    append = records.append
    position = 0
    # Each varint below is decoded inline when it has one or two bytes, else by read_varint.
    for _ in range(header.record_count):
        byte = data[position]
        if byte < 0x80:
            length = one_byte[byte]
            position += 1
        else:
            second = data[position + 1]
            if second < 0x80:
                zigzag = (byte & 0x7F) | (second << 7)
                length = (zigzag >> 1) ^ -(zigzag & 1)
                position += 2
            else:
                length, position = read_varint(data, position, 32)
        end = position + length
        # The attributes byte is unused in magic 2.
        byte = data[position + 1]
        if byte < 0x80:
            timestamp_delta = one_byte[byte]
            position += 2
        else:
            second = data[position + 2]
            if second < 0x80:
                zigzag = (byte & 0x7F) | (second << 7)
                timestamp_delta = (zigzag >> 1) ^ -(zigzag & 1)
                position += 3
            else:
                timestamp_delta, position = read_varint(data, position + 1, 64)
        byte = data[position]
        if byte < 0x80:
            offset_delta = one_byte[byte]
            position += 1
        else:
            second = data[position + 1]
            if second < 0x80:
                zigzag = (byte & 0x7F) | (second << 7)
                offset_delta = (zigzag >> 1) ^ -(zigzag & 1)
                position += 2
            else:
                offset_delta, position = read_varint(data, position, 32)
        byte = data[position]
        if byte < 0x80:
            size = one_byte[byte]
            position += 1
        else:
            second = data[position + 1]
            if second < 0x80:
                zigzag = (byte & 0x7F) | (second << 7)
                size = (zigzag >> 1) ^ -(zigzag & 1)
                position += 2
            else:
                size, position = read_varint(data, position, 32)
        key: bytes | None
        if size >= 0:
            if position + size > end:
                raise _structural(header, "a key runs past the end of its record")
            key = data[position : position + size]
            position += size
        elif size == -1:
            key = None
        else:
            raise _structural(header, f"a key has negative length {size}")
        byte = data[position]
        if byte < 0x80:
            size = one_byte[byte]
            position += 1
        else:
            second = data[position + 1]
            if second < 0x80:
                zigzag = (byte & 0x7F) | (second << 7)
                size = (zigzag >> 1) ^ -(zigzag & 1)
                position += 2
            else:
                size, position = read_varint(data, position, 32)
        value: bytes | None
        if size >= 0:
            if position + size > end:
                raise _structural(header, "a value runs past the end of its record")
            value = data[position : position + size]
            position += size
        elif size == -1:
            value = None
        else:
            raise _structural(header, f"a value has negative length {size}")
        if data[position] == 0:
            headers: tuple[tuple[str, bytes | None], ...] = ()
            position += 1
        else:
            headers, position = _decode_headers(data, position, end, header)
        if position != end:
            raise _structural(header, "a record's length does not match its contents")
        record = new_object(Record)
        set_offset(record, base_offset + offset_delta)
        set_timestamp(
            record, base_timestamp + timestamp_delta if log_append_time is None else log_append_time
        )
        set_key(record, key)
        set_value(record, value)
        set_headers(record, headers)
        append(record)
    if position != len(data):
        raise _structural(
            header, f"{len(data) - position} bytes follow its {header.record_count} records"
        )
    return records


def _decode_headers(
    data: bytes, position: int, end: int, header: BatchHeader
) -> tuple[tuple[tuple[str, bytes | None], ...], int]:
    count, position = _read_varint(data, position, 32)
    if not 0 <= count <= limits.HEADERS_PER_RECORD_MAX:
        raise _structural(header, f"a record has {count} headers")
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        size, position = _read_varint(data, position, 32)
        if size < 0 or position + size > end:
            raise _structural(header, f"a header key has a bad length {size}")
        key = data[position : position + size].decode("utf-8")
        position += size
        size, position = _read_varint(data, position, 32)
        value: bytes | None
        if size >= 0:
            if position + size > end:
                raise _structural(header, "a header value runs past the end of its record")
            value = data[position : position + size]
            position += size
        elif size == -1:
            value = None
        else:
            raise _structural(header, f"a header value has negative length {size}")
        headers.append((key, value))
    return tuple(headers), position


def _structural(header: BatchHeader, problem: str) -> CorruptRecordError:
    return CorruptRecordError(f"batch at offset {header.base_offset}: {problem}")
