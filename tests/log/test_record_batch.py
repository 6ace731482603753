"""Tests for the magic-2 record batch codec.

Golden batches are built here field by field from Kafka's documented layout, independently of the
module under test; kafka-python's record code serves as a second, independent implementation.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Sequence

import cramjam
import crc32c
import kafka.codec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record import default_records
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from headwater import limits
from headwater.errors import (
    CorruptRecordError,
    InvalidRecordError,
    RecordBatchTooLargeError,
    UnsupportedCompressionError,
)
from headwater.log.compression import Compression, compress, decompress
from headwater.log.record_batch import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    NO_PARTITION_LEADER_EPOCH,
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    NO_SEQUENCE,
    BatchHeader,
    NewRecord,
    Record,
    TimestampType,
    decode_records,
    encode_batch,
    encode_values_batch,
    iter_batches,
    parse_header,
    set_base_offset,
    set_log_append_time,
    verify_crc,
    with_partition_leader_epoch,
)

Headers = Sequence[tuple[str, bytes | None]]

TS = 1_700_000_000_000

# --- an independent writer for the documented layout -----------------------------------------


def zz(value: int) -> bytes:
    """Protobuf sint64: zigzag with int64 arithmetic, then 7-bit groups, low first."""
    unsigned = ((value << 1) ^ (value >> 63)) & 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while unsigned >= 0x80:
        out.append(0x80 | (unsigned & 0x7F))
        unsigned >>= 7
    out.append(unsigned)
    return bytes(out)


def raw_record(
    *,
    timestamp_delta: int = 0,
    offset_delta: int = 0,
    key: bytes | None = None,
    value: bytes | None = None,
    headers: Headers = (),
    attributes: int = 0,
) -> bytes:
    body = bytes([attributes]) + zz(timestamp_delta) + zz(offset_delta)
    body += zz(-1) if key is None else zz(len(key)) + key
    body += zz(-1) if value is None else zz(len(value)) + value
    body += zz(len(headers))
    for header_key, header_value in headers:
        encoded = header_key.encode("utf-8")
        body += zz(len(encoded)) + encoded
        body += zz(-1) if header_value is None else zz(len(header_value)) + header_value
    return zz(len(body)) + body


def raw_batch(
    records: bytes,
    *,
    record_count: int,
    last_offset_delta: int | None = None,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
    magic: int = 2,
    attributes: int = 0,
    base_timestamp: int = TS,
    max_timestamp: int = TS,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    crc: int | None = None,
) -> bytes:
    if last_offset_delta is None:
        last_offset_delta = record_count - 1
    after_crc = (
        struct.pack(">h", attributes)
        + struct.pack(">i", last_offset_delta)
        + struct.pack(">q", base_timestamp)
        + struct.pack(">q", max_timestamp)
        + struct.pack(">q", producer_id)
        + struct.pack(">h", producer_epoch)
        + struct.pack(">i", base_sequence)
        + struct.pack(">i", record_count)
        + records
    )
    if crc is None:
        crc = crc32c.crc32c(after_crc)
    batch_length = 4 + 1 + 4 + len(after_crc)  # leader epoch, magic, crc, the rest
    return (
        struct.pack(">q", base_offset)
        + struct.pack(">i", batch_length)
        + struct.pack(">i", partition_leader_epoch)
        + struct.pack(">b", magic)
        + struct.pack(">I", crc)
        + after_crc
    )


def plain(records: Sequence[Record]) -> list[tuple[object, ...]]:
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in records]


def test_crc32c_package_is_castagnoli() -> None:
    assert crc32c.crc32c(b"123456789") == 0xE3069283  # the standard check value


def test_local_varint_writer_matches_protobuf_examples() -> None:
    assert [zz(v) for v in (0, -1, 1, -2, 2, 63, -64, 64)] == [
        b"\x00",
        b"\x01",
        b"\x02",
        b"\x03",
        b"\x04",
        b"\x7e",
        b"\x7f",
        b"\x80\x01",
    ]
    assert zz(2**63 - 1) == b"\xfe" + b"\xff" * 8 + b"\x01"
    assert zz(-(2**63)) == b"\xff" * 9 + b"\x01"


def test_constants() -> None:
    assert (BATCH_HEADER_SIZE, LOG_OVERHEAD, MAGIC) == (61, 12, 2)
    assert NO_PRODUCER_ID == NO_PRODUCER_EPOCH == NO_SEQUENCE == NO_PARTITION_LEADER_EPOCH == -1
    assert [(t.name, int(t)) for t in TimestampType] == [("CREATE_TIME", 0), ("LOG_APPEND_TIME", 1)]


# --- golden batches --------------------------------------------------------------------------


def test_golden_single_record() -> None:
    expected = raw_batch(
        raw_record(key=b"k", value=b"v"),
        record_count=1,
        base_timestamp=TS,
        max_timestamp=TS,
    )
    batch = encode_batch([NewRecord(b"k", b"v", TS)])
    assert batch == expected
    ts = struct.pack(">q", TS).hex()
    # base offset 0, batch length 58, partition leader epoch -1, magic 2
    assert batch[:17] == bytes.fromhex("0000000000000000 0000003a ffffffff 02")
    # attributes, last offset delta, base and max timestamps, producer id, epoch, sequence, count
    header_rest = f"0000 00000000 {ts} {ts} {'ff' * 8} ffff ffffffff 00000001"
    # length 8, attributes, timestamp delta, offset delta, key "k", value "v", no headers
    record = "10 00 00 00 02 6b 02 76 00"
    assert batch[21:] == bytes.fromhex(header_rest + record)
    assert plain(decode_records(expected)) == [(0, TS, b"k", b"v", ())]


def test_golden_nulls_tombstone_headers_and_negative_delta() -> None:
    headers = [("h1", b"x"), ("h-null", None), ("\u00fc", b"")]
    expected = raw_batch(
        raw_record(timestamp_delta=0, offset_delta=0, key=None, value=b"a")
        + raw_record(timestamp_delta=-10, offset_delta=1, key=b"k1", value=None)
        + raw_record(timestamp_delta=5, offset_delta=2, key=b"k2", value=b"v", headers=headers),
        record_count=3,
        base_offset=100,
        base_timestamp=TS,
        max_timestamp=TS + 5,
    )
    records = [
        NewRecord(None, b"a", TS),
        NewRecord(b"k1", None, TS - 10),
        NewRecord(b"k2", b"v", TS + 5, headers),
    ]
    assert encode_batch(records, base_offset=100) == expected
    assert plain(decode_records(expected)) == [
        (100, TS, None, b"a", ()),
        (101, TS - 10, b"k1", None, ()),
        (102, TS + 5, b"k2", b"v", tuple(headers)),
    ]


def test_golden_idempotent_transactional_producer() -> None:
    expected = raw_batch(
        raw_record(key=b"key", value=b"value-1")
        + raw_record(offset_delta=1, timestamp_delta=1, key=b"key", value=b"value-2"),
        record_count=2,
        base_offset=42,
        partition_leader_epoch=7,
        attributes=0x10,
        base_timestamp=TS,
        max_timestamp=TS + 1,
        producer_id=123_456_789_012,
        producer_epoch=3,
        base_sequence=17,
    )
    batch = encode_batch(
        [NewRecord(b"key", b"value-1", TS), NewRecord(b"key", b"value-2", TS + 1)],
        base_offset=42,
        partition_leader_epoch=7,
        producer_id=123_456_789_012,
        producer_epoch=3,
        base_sequence=17,
        is_transactional=True,
    )
    assert batch == expected
    header = parse_header(expected)
    assert header == BatchHeader(
        base_offset=42,
        batch_length=len(expected) - 12,
        partition_leader_epoch=7,
        magic=2,
        crc=crc32c.crc32c(expected[21:]),
        attributes=0x10,
        last_offset_delta=1,
        base_timestamp=TS,
        max_timestamp=TS + 1,
        producer_id=123_456_789_012,
        producer_epoch=3,
        base_sequence=17,
        record_count=2,
    )
    assert header.is_transactional and not header.is_control
    assert plain(decode_records(expected)) == [
        (42, TS, b"key", b"value-1", ()),
        (43, TS + 1, b"key", b"value-2", ()),
    ]


def test_golden_control_batch() -> None:
    commit_key = struct.pack(">hh", 0, 1)  # version 0, type 1 (commit)
    marker_value = struct.pack(">hi", 0, 5)  # version 0, coordinator epoch 5
    expected = raw_batch(
        raw_record(key=commit_key, value=marker_value),
        record_count=1,
        base_offset=9,
        attributes=0x30,
        producer_id=4000,
        producer_epoch=1,
    )
    batch = encode_batch(
        [NewRecord(commit_key, marker_value, TS)],
        base_offset=9,
        producer_id=4000,
        producer_epoch=1,
        is_transactional=True,
        is_control=True,
    )
    assert batch == expected
    header = parse_header(batch)
    assert header.is_control and header.is_transactional
    assert plain(decode_records(batch)) == [(9, TS, commit_key, marker_value, ())]


def test_golden_compressed_batch_wraps_the_same_records() -> None:
    records_section = raw_record(key=b"k", value=b"v" * 200) + raw_record(
        offset_delta=1, key=b"k", value=b"w" * 200
    )
    batch = encode_batch(
        [NewRecord(b"k", b"v" * 200, TS), NewRecord(b"k", b"w" * 200, TS)],
        compression=Compression.GZIP,
    )
    header = parse_header(batch)
    assert header.attributes == 1 and header.compression is Compression.GZIP
    assert decompress(Compression.GZIP, batch[61:]) == records_section
    # The header as the layout gives it, around the (deterministic) gzip of the same section.
    assert batch == raw_batch(
        compress(Compression.GZIP, records_section), record_count=2, attributes=1
    )


# --- header parsing --------------------------------------------------------------------------


def test_header_properties() -> None:
    batch = encode_batch(
        [NewRecord(b"a", b"b", TS), NewRecord(b"c", b"d", TS + 3)],
        base_offset=1000,
        compression=Compression.ZSTD,
        timestamp_type=TimestampType.LOG_APPEND_TIME,
        now_ms=TS + 50,
    )
    header = parse_header(batch)
    assert header.size_bytes == len(batch)
    assert header.last_offset == 1001
    assert header.next_offset == 1002
    assert header.compression is Compression.ZSTD
    assert header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert not header.is_transactional and not header.is_control
    assert not header.has_delete_horizon
    assert header.base_timestamp == header.max_timestamp == TS + 50


def test_parse_header_at_a_position_in_a_memoryview() -> None:
    batch = encode_batch([NewRecord(b"k", b"v", TS)], base_offset=77)
    buffer = memoryview(b"\xee" * 13 + batch)
    assert parse_header(buffer, 13).base_offset == 77
    assert plain(decode_records(buffer, 13)) == [(77, TS, b"k", b"v", ())]


def test_header_compression_of_an_unassigned_codec_is_unsupported() -> None:
    batch = raw_batch(raw_record(), record_count=1, attributes=5)
    with pytest.raises(UnsupportedCompressionError):
        _ = parse_header(batch).compression


@pytest.mark.parametrize(
    "batch",
    [
        raw_batch(raw_record(), record_count=1, magic=1),
        raw_batch(raw_record(), record_count=1, magic=0),
        raw_batch(raw_record(), record_count=-1),
        raw_batch(raw_record(), record_count=1, last_offset_delta=-1),
        struct.pack(">qi", 0, 48) + raw_batch(b"", record_count=0)[12:],
        struct.pack(">qi", 0, limits.BATCH_BYTES_MAX + 1) + raw_batch(b"", record_count=0)[12:],
        raw_batch(raw_record(), record_count=1)[:60],
        b"",
    ],
    ids=[
        "magic-1",
        "magic-0",
        "negative-count",
        "negative-last-delta",
        "length-too-small",
        "length-too-large",
        "60-bytes",
        "empty",
    ],
)
def test_parse_header_rejects(batch: bytes) -> None:
    with pytest.raises(CorruptRecordError):
        parse_header(batch)
    with pytest.raises(CorruptRecordError):
        decode_records(batch, verify=False)


def test_parse_header_accepts_an_empty_batch_left_by_compaction() -> None:
    batch = raw_batch(b"", record_count=0, last_offset_delta=4)
    header = parse_header(batch)
    assert header.record_count == 0 and header.last_offset == 4
    assert header.batch_length == BATCH_HEADER_SIZE - LOG_OVERHEAD
    assert decode_records(batch) == []


# --- cross-implementation: kafka-python ------------------------------------------------------


@pytest.fixture
def kafka_python_codecs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give kafka-python the codecs it lacks here, from cramjam (it has only gzip built in).

    Its own xerial snappy framing is kept; lz4 and zstd get cramjam's plain frames (linked lz4
    blocks, with checksums), unlike ours.
    """

    class RawSnappy:
        @staticmethod
        def compress(data: bytes) -> bytes:
            return bytes(cramjam.snappy.compress_raw(bytes(data)))

        @staticmethod
        def decompress(data: bytes) -> bytes:
            return bytes(cramjam.snappy.decompress_raw(bytes(data)))

    monkeypatch.setattr(kafka.codec, "snappy", RawSnappy)
    monkeypatch.setattr(kafka.codec, "has_lz4", lambda: True)
    monkeypatch.setattr(kafka.codec, "has_zstd", lambda: True)
    for name, function in {
        "lz4_encode": lambda data: bytes(cramjam.lz4.compress(bytes(data))),
        "lz4_decode": lambda data: bytes(cramjam.lz4.decompress(bytes(data))),
        "zstd_encode": lambda data: bytes(cramjam.zstd.compress(bytes(data))),
        "zstd_decode": lambda data: bytes(cramjam.zstd.decompress(bytes(data))),
    }.items():
        monkeypatch.setattr(default_records, name, function)


def _sample_records(count: int) -> list[NewRecord]:
    records = []
    for i in range(count):
        key = None if i % 7 == 3 else b"key-%d" % (i % 5)
        value = None if i % 11 == 4 else b"value %d " % i * (1 + i % 4)
        headers: list[tuple[str, bytes | None]] = []
        if i % 3 == 0:
            headers = [("trace", b"t-%d" % i), ("empty", None), ("\u00e9t\u00e9", b"")]
        records.append(NewRecord(key, value, TS + (i * 37) % 1000 - 300, headers))
    return records


ALL_CODECS = list(Compression)


@pytest.mark.usefixtures("kafka_python_codecs")
@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda codec: codec.name)
def test_kafka_python_batches_decode_with_ours(codec: Compression) -> None:
    records = _sample_records(300)
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=int(codec),
        is_transactional=False,
        producer_id=5555,
        producer_epoch=2,
        base_sequence=100,
        batch_size=1 << 22,
    )
    for i, record in enumerate(records):
        metadata = builder.append(
            i,
            timestamp=record.timestamp,
            key=record.key,
            value=record.value,
            headers=list(record.headers),
        )
        assert metadata is not None
    batch = bytes(builder.build())

    header = parse_header(batch)
    assert header.compression is codec, "kafka-python kept the codec (it drops useless ones)"
    assert header.size_bytes == len(batch)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (5555, 2, 100)
    assert header.record_count == 300 and header.last_offset_delta == 299
    verify_crc(batch, 0, header)
    assert plain(decode_records(batch)) == [
        (i, r.timestamp, r.key, r.value, tuple(r.headers)) for i, r in enumerate(records)
    ]


@pytest.mark.usefixtures("kafka_python_codecs")
@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda codec: codec.name)
def test_our_batches_decode_with_kafka_python(codec: Compression) -> None:
    records = _sample_records(300)
    batch = encode_batch(
        records,
        base_offset=5000,
        compression=codec,
        producer_id=77,
        producer_epoch=1,
        base_sequence=9,
        partition_leader_epoch=3,
        is_transactional=True,
    )
    theirs = DefaultRecordBatch(batch)
    assert theirs.validate_crc()
    assert theirs.compression_type == int(codec)
    assert theirs.base_offset == 5000 and theirs.last_offset == 5299
    assert theirs.leader_epoch == 3 and theirs.is_transactional
    assert (theirs.producer_id, theirs.producer_epoch, theirs.base_sequence) == (77, 1, 9)
    assert theirs.first_timestamp == records[0].timestamp
    assert theirs.max_timestamp == max(r.timestamp for r in records if r.timestamp is not None)
    decoded = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in theirs]
    assert decoded == [
        (5000 + i, r.timestamp, r.key, r.value, list(r.headers)) for i, r in enumerate(records)
    ]


def test_control_and_log_append_time_batches_read_by_kafka_python() -> None:
    batch = bytearray(
        encode_batch(
            [NewRecord(struct.pack(">hh", 0, 0), struct.pack(">hi", 0, 1), TS)],
            producer_id=1,
            producer_epoch=0,
            is_transactional=True,
            is_control=True,
        )
    )
    set_log_append_time(batch, TS + 999)
    theirs = DefaultRecordBatch(bytes(batch))
    assert theirs.validate_crc() and theirs.is_control_batch
    assert theirs.timestamp_type == 1
    (marker,) = list(theirs)
    assert marker.abort and marker.timestamp == TS + 999


# --- property tests --------------------------------------------------------------------------

header_pairs = st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=12))
new_records = st.builds(
    NewRecord,
    key=st.none() | st.binary(max_size=40),
    value=st.none() | st.binary(max_size=300),
    timestamp=st.integers(-(2**62), 2**62 - 1),  # any two differ by at most int64 max
    headers=st.lists(header_pairs, max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(new_records, min_size=1, max_size=20),
    codec=st.sampled_from(ALL_CODECS),
    base_offset=st.integers(0, 2**62),
    producer=st.tuples(
        st.integers(-1, 2**63 - 1), st.integers(-1, 2**15 - 1), st.integers(-1, 2**31 - 1)
    ),
    leader_epoch=st.integers(-1, 2**31 - 1),
    transactional=st.booleans(),
)
def test_encode_decode_round_trip(
    records: list[NewRecord],
    codec: Compression,
    base_offset: int,
    producer: tuple[int, int, int],
    leader_epoch: int,
    transactional: bool,
) -> None:
    producer_id, producer_epoch, base_sequence = producer
    batch = encode_batch(
        records,
        base_offset=base_offset,
        compression=codec,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        partition_leader_epoch=leader_epoch,
        is_transactional=transactional,
    )
    stamps = [r.timestamp for r in records if r.timestamp is not None]
    header = parse_header(batch)
    assert header == BatchHeader(
        base_offset=base_offset,
        batch_length=len(batch) - LOG_OVERHEAD,
        partition_leader_epoch=leader_epoch,
        magic=2,
        crc=crc32c.crc32c(batch[21:]),
        attributes=int(codec) | (0x10 if transactional else 0),
        last_offset_delta=len(records) - 1,
        base_timestamp=stamps[0],
        max_timestamp=max(stamps),
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        record_count=len(records),
    )
    verify_crc(batch, 0, header)
    assert plain(decode_records(batch)) == [
        (base_offset + i, r.timestamp, r.key, r.value, tuple(r.headers))
        for i, r in enumerate(records)
    ]


@settings(max_examples=50, deadline=None)
@given(
    batches=st.lists(
        st.tuples(st.lists(new_records, min_size=1, max_size=5), st.sampled_from(ALL_CODECS)),
        min_size=1,
        max_size=6,
    ),
    cut=st.integers(1, 60),
)
def test_iter_batches_walks_a_concatenation(
    batches: list[tuple[list[NewRecord], Compression]], cut: int
) -> None:
    encoded = [
        encode_batch(records, base_offset=i * 10, compression=codec)
        for i, (records, codec) in enumerate(batches)
    ]
    log = b"".join(encoded)
    positions = [sum(len(b) for b in encoded[:i]) for i in range(len(encoded))]
    walked = list(iter_batches(log))
    assert [position for position, _ in walked] == positions
    assert [header for _, header in walked] == [parse_header(b) for b in encoded]
    for position, header in walked:
        verify_crc(log, position, header)
        assert decode_records(log, position)[0].offset == header.base_offset
    # A partial last batch (header cut or body cut) ends the walk without error.
    partial = log[: len(log) - min(cut, len(encoded[-1]) - 1)]
    assert [p for p, _ in iter_batches(partial)] == positions[:-1]
    # Starting part-way through.
    assert [p for p, _ in iter_batches(log, positions[-1])] == positions[-1:]


def test_iter_batches_of_nothing_and_of_a_bad_header() -> None:
    assert list(iter_batches(b"")) == []
    assert list(iter_batches(b"\x00" * 60)) == []
    good = encode_batch([NewRecord(b"k", b"v", TS)])
    bad = bytearray(good)
    bad[16] = 1  # magic
    walker = iter_batches(good + bytes(bad))
    assert next(walker)[0] == 0
    with pytest.raises(CorruptRecordError):
        next(walker)


# --- corruption ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_batch() -> bytes:
    return encode_batch(
        [
            NewRecord(b"key", b"value", TS),
            NewRecord(None, b"x" * 30, TS + 1, [("h", b"1"), ("n", None)]),
            NewRecord(b"tomb", None, TS - 1),
        ],
        base_offset=10,
        producer_id=3,
        producer_epoch=0,
        base_sequence=0,
    )


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_any_flipped_byte_under_the_crc_is_caught(small_batch: bytes, mask: int) -> None:
    header = parse_header(small_batch)
    for position in range(21, len(small_batch)):
        damaged = bytearray(small_batch)
        damaged[position] ^= mask
        with pytest.raises(CorruptRecordError, match="CRC"):
            verify_crc(damaged, 0, header)
        with pytest.raises(CorruptRecordError):
            decode_records(damaged)


def test_flipped_length_magic_or_crc_is_caught(small_batch: bytes) -> None:
    for position in range(8, 21):
        if 12 <= position < 16:
            continue  # the partition leader epoch is outside the CRC by design
        damaged = bytearray(small_batch)
        damaged[position] ^= 0x01
        with pytest.raises(CorruptRecordError):
            decode_records(damaged)


def test_crc_error_names_the_batch_and_both_crcs(small_batch: bytes) -> None:
    damaged = bytearray(small_batch)
    damaged[-1] ^= 0x01
    header = parse_header(damaged)
    with pytest.raises(CorruptRecordError) as caught:
        verify_crc(damaged, 0, header)
    message = str(caught.value)
    assert "offset 10" in message
    assert f"{header.crc:#010x}" in message
    assert f"{crc32c.crc32c(bytes(damaged[21:])):#010x}" in message


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda codec: codec.name)
def test_truncation_anywhere_is_caught(codec: Compression) -> None:
    batch = encode_batch(_sample_records(12), compression=codec)
    for cut in range(len(batch)):
        with pytest.raises(CorruptRecordError):
            decode_records(batch[:cut])
        with pytest.raises(CorruptRecordError):
            decode_records(batch[:cut], verify=False)
        if cut >= BATCH_HEADER_SIZE:
            with pytest.raises(CorruptRecordError, match="truncated"):
                verify_crc(batch[:cut], 0, parse_header(batch[:cut]))
        assert [p for p, _ in iter_batches(batch + batch[:cut])] == [0]


@settings(max_examples=400, deadline=None)
@given(garbage=st.binary(max_size=400))
def test_garbage_only_ever_raises_corrupt(garbage: bytes) -> None:
    with contextlib.suppress(CorruptRecordError):
        decode_records(garbage, verify=False)


@st.composite
def plausible_batches(draw: st.DrawFn) -> bytes:
    """A valid header around a random or randomly damaged body: reaches the record decoder."""
    if draw(st.booleans()):
        body = draw(st.binary(max_size=300))
    else:
        damaged = bytearray(b"".join(raw_record(key=b"k%d" % i, value=b"v") for i in range(3)))
        for _ in range(draw(st.integers(1, 4))):
            damaged[draw(st.integers(0, len(damaged) - 1))] = draw(st.integers(0, 255))
        body = bytes(damaged)
    codec = draw(st.integers(0, 7))
    if 0 < codec < 5 and draw(st.booleans()):
        body = compress(Compression(codec), body)
    return raw_batch(body, record_count=draw(st.integers(0, 5)), attributes=codec)


@settings(max_examples=500, deadline=None)
@given(batch=plausible_batches())
def test_damaged_bodies_only_ever_raise_corrupt(batch: bytes) -> None:
    try:
        records = decode_records(batch)
    except CorruptRecordError:
        return
    assert len(records) == parse_header(batch).record_count


def _decode_raw(records: bytes, record_count: int, attributes: int = 0) -> list[Record]:
    return decode_records(raw_batch(records, record_count=record_count, attributes=attributes))


def test_record_count_mismatch_is_corrupt() -> None:
    two = raw_record(key=b"a") + raw_record(offset_delta=1, key=b"b")
    assert len(_decode_raw(two, 2)) == 2
    with pytest.raises(CorruptRecordError, match="follow"):
        _decode_raw(two, 1)
    with pytest.raises(CorruptRecordError):
        _decode_raw(two, 3)


def test_record_length_that_does_not_add_up_is_corrupt() -> None:
    good = raw_record(key=b"abc", value=b"defg")
    for delta in (-1, 1):
        bad = zz(len(good) - 1 + delta) + good[1:]
        with pytest.raises(CorruptRecordError):
            _decode_raw(bad + raw_record(offset_delta=1), 2)


def test_key_or_value_past_the_record_is_corrupt() -> None:
    body = b"\x00" + zz(0) + zz(0) + zz(50) + b"abc" + zz(-1) + zz(0)
    with pytest.raises(CorruptRecordError, match="key"):
        _decode_raw(zz(len(body)) + body, 1)
    body = b"\x00" + zz(0) + zz(0) + zz(-1) + zz(50) + b"abc" + zz(0)
    with pytest.raises(CorruptRecordError, match="value"):
        _decode_raw(zz(len(body)) + body, 1)


def test_negative_lengths_other_than_null_are_corrupt() -> None:
    for body in (
        b"\x00" + zz(0) + zz(0) + zz(-2) + zz(-1) + zz(0),
        b"\x00" + zz(0) + zz(0) + zz(-1) + zz(-7) + zz(0),
        b"\x00" + zz(0) + zz(0) + zz(-1) + zz(-1) + zz(1) + zz(-1) + zz(-1),
        b"\x00" + zz(0) + zz(0) + zz(-1) + zz(-1) + zz(1) + zz(1) + b"h" + zz(-3),
        b"\x00" + zz(0) + zz(0) + zz(-1) + zz(-1) + zz(-1),
    ):
        with pytest.raises(CorruptRecordError):
            _decode_raw(zz(len(body)) + body, 1)


def test_overlong_varints_are_corrupt() -> None:
    # An offset delta in six bytes (a varint has at most five) and a timestamp delta in eleven.
    body = b"\x00" + zz(0) + b"\x80" * 5 + b"\x00" + zz(-1) + zz(-1) + zz(0)
    with pytest.raises(CorruptRecordError, match="longer"):
        _decode_raw(zz(len(body)) + body, 1)
    body = b"\x00" + b"\x80" * 10 + b"\x00" + zz(0) + zz(-1) + zz(-1) + zz(0)
    with pytest.raises(CorruptRecordError, match="longer"):
        _decode_raw(zz(len(body)) + body, 1)
    # Five bytes whose value needs more than 32 bits.
    body = b"\x00" + zz(0) + b"\xff\xff\xff\xff\x7f" + zz(-1) + zz(-1) + zz(0)
    with pytest.raises(CorruptRecordError, match="overflows"):
        _decode_raw(zz(len(body)) + body, 1)


def test_bad_utf8_header_key_is_corrupt() -> None:
    body = b"\x00" + zz(0) + zz(0) + zz(-1) + zz(-1) + zz(1) + zz(2) + b"\xc3\x28" + zz(-1)
    with pytest.raises(CorruptRecordError, match="UTF-8"):
        _decode_raw(zz(len(body)) + body, 1)


def test_header_count_over_the_limit_is_corrupt() -> None:
    count = limits.HEADERS_PER_RECORD_MAX
    one_header = zz(1) + b"h" + zz(-1)
    body = b"\x00" + zz(0) + zz(0) + zz(-1) + zz(-1) + zz(count) + one_header * count
    assert len(_decode_raw(zz(len(body)) + body, 1)[0].headers) == count
    body = b"\x00" + zz(0) + zz(0) + zz(-1) + zz(-1) + zz(count + 1) + one_header * (count + 1)
    with pytest.raises(CorruptRecordError, match="headers"):
        _decode_raw(zz(len(body)) + body, 1)


@pytest.mark.parametrize("codec", [5, 6, 7])
def test_unassigned_codec_in_a_batch_is_corrupt(codec: int) -> None:
    with pytest.raises(CorruptRecordError, match="codec"):
        _decode_raw(raw_record(), 1, attributes=codec)


def test_compressed_garbage_in_a_batch_is_corrupt() -> None:
    with pytest.raises(CorruptRecordError):
        _decode_raw(b"this is not gzip", 1, attributes=1)


def test_decode_ignores_unused_record_attributes_and_batch_bits() -> None:
    batch = raw_batch(raw_record(key=b"k", attributes=0x5A), record_count=1, attributes=0x0380)
    assert plain(decode_records(batch)) == [(0, TS, b"k", None, ())]


# --- rewriting in place ----------------------------------------------------------------------


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda codec: codec.name)
def test_set_base_offset_keeps_the_crc_valid(codec: Compression) -> None:
    batch = encode_batch(_sample_records(5), compression=codec)
    prefix = set_base_offset(batch, 123_456)
    assert prefix == struct.pack(">q", 123_456)
    moved = prefix + batch[8:]
    header = parse_header(moved)
    verify_crc(moved, 0, header)
    assert header.base_offset == 123_456
    assert [r.offset for r in decode_records(moved)] == list(range(123_456, 123_461))


def test_with_partition_leader_epoch_keeps_the_crc_valid() -> None:
    batch = bytearray(encode_batch(_sample_records(3)))
    with_partition_leader_epoch(batch, 41)
    header = parse_header(batch)
    assert header.partition_leader_epoch == 41
    verify_crc(batch, 0, header)


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda codec: codec.name)
def test_set_log_append_time_recomputes_the_crc(codec: Compression) -> None:
    original = encode_batch(_sample_records(6), compression=codec)
    batch = bytearray(original)
    set_log_append_time(batch, TS + 10_000)
    header = parse_header(batch)
    assert header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert header.max_timestamp == TS + 10_000
    assert header.crc != parse_header(original).crc
    verify_crc(batch, 0, header)
    decoded = decode_records(batch)
    assert [r.timestamp for r in decoded] == [TS + 10_000] * 6
    assert [r.value for r in decoded] == [r.value for r in _sample_records(6)]


def test_set_log_append_time_refuses_to_bless_a_corrupt_batch() -> None:
    batch = bytearray(encode_batch(_sample_records(3)))
    batch[-1] ^= 0x01
    with pytest.raises(CorruptRecordError):
        set_log_append_time(batch, TS)


# --- encoding rules --------------------------------------------------------------------------


def test_empty_batch_is_invalid() -> None:
    with pytest.raises(InvalidRecordError):
        encode_batch([])


def test_missing_timestamps_take_now() -> None:
    batch = encode_batch(
        [NewRecord(b"a", b"1"), NewRecord(b"b", b"2", TS - 5), NewRecord(b"c", b"3")],
        now_ms=TS,
    )
    assert [r.timestamp for r in decode_records(batch)] == [TS, TS - 5, TS]
    header = parse_header(batch)
    assert (header.base_timestamp, header.max_timestamp) == (TS, TS)


def test_missing_timestamps_default_to_the_clock() -> None:
    import time

    before = int(time.time() * 1000)
    (record,) = decode_records(encode_batch([NewRecord(b"a", b"1")]))
    assert before <= record.timestamp <= int(time.time() * 1000)


def test_base_timestamp_is_the_first_records_not_the_smallest() -> None:
    batch = encode_batch([NewRecord(b"a", b"1", TS), NewRecord(b"b", b"2", TS - 100)])
    header = parse_header(batch)
    assert (header.base_timestamp, header.max_timestamp) == (TS, TS)
    assert [r.timestamp for r in decode_records(batch)] == [TS, TS - 100]


def test_log_append_time_stamps_every_record_with_now() -> None:
    batch = encode_batch(
        [NewRecord(b"a", b"1", TS), NewRecord(b"b", b"2", None)],
        timestamp_type=TimestampType.LOG_APPEND_TIME,
        now_ms=TS + 1,
    )
    header = parse_header(batch)
    assert header.attributes == 0x08
    assert (header.base_timestamp, header.max_timestamp) == (TS + 1, TS + 1)
    assert [r.timestamp for r in decode_records(batch)] == [TS + 1, TS + 1]


def test_large_values_and_many_records_leave_the_fast_paths() -> None:
    # Lengths and deltas past the one- and two-byte varints and past the encoder's table.
    records = [NewRecord(b"k", b"v", TS + i * 1000) for i in range(5000)]
    records[10] = NewRecord(b"K" * 20_000, b"V" * 3_000_000, TS - 2**40)
    batch = encode_batch(records, base_offset=2**40)
    decoded = decode_records(batch)
    assert len(decoded) == 5000
    assert plain(decoded[:2]) == [
        (2**40, TS, b"k", b"v", ()),
        (2**40 + 1, TS + 1000, b"k", b"v", ()),
    ]
    assert plain([decoded[10]]) == [(2**40 + 10, TS - 2**40, b"K" * 20_000, b"V" * 3_000_000, ())]
    assert decoded[-1].offset == 2**40 + 4999 and decoded[-1].timestamp == TS + 4999 * 1000
    # The same bytes as the layout's own writer produces.
    body = b"".join(
        raw_record(timestamp_delta=r.timestamp - TS, offset_delta=i, key=r.key, value=r.value)
        for i, r in enumerate(records)
        if r.timestamp is not None
    )
    assert batch[61:] == body


@pytest.mark.parametrize(
    "stamps", [[0, 2**63 - 1, -(2**62)], [-(2**63), -1, -(2**63)], [-1, -1]], ids=str
)
def test_extreme_timestamps_round_trip(stamps: list[int]) -> None:
    batch = encode_batch([NewRecord(None, None, stamp) for stamp in stamps])
    assert [r.timestamp for r in decode_records(batch)] == stamps


@pytest.mark.parametrize(
    "stamps",
    [[2**63], [-(2**63) - 1], [-(2**63), 2**63 - 1], [2**63 - 1, -2]],
    ids=["over", "under", "delta-over", "delta-under"],
)
def test_timestamps_or_deltas_outside_int64_are_invalid(stamps: list[int]) -> None:
    with pytest.raises(InvalidRecordError):
        encode_batch([NewRecord(None, None, stamp) for stamp in stamps])


@pytest.mark.parametrize(
    "fields",
    [
        {"producer_epoch": 2**15},
        {"base_sequence": 2**31},
        {"partition_leader_epoch": -(2**31) - 1},
        {"producer_id": 2**63},
        {"base_offset": -1},
        {"base_offset": 2**63 - 1},
    ],
    ids=lambda fields: next(iter(fields)),
)
def test_header_fields_out_of_range_are_invalid(fields: dict[str, int]) -> None:
    with pytest.raises(InvalidRecordError):
        encode_batch([NewRecord(b"k", b"v", TS), NewRecord(b"k", b"v", TS)], **fields)  # type: ignore[arg-type]


def test_bad_headers_are_invalid() -> None:
    too_many = [("h", None)] * (limits.HEADERS_PER_RECORD_MAX + 1)
    with pytest.raises(InvalidRecordError):
        encode_batch([NewRecord(b"k", b"v", TS, too_many)])
    with pytest.raises(InvalidRecordError):
        encode_batch([NewRecord(b"k", b"v", TS, [(b"bytes-key", b"v")])])  # type: ignore[list-item]
    with pytest.raises(InvalidRecordError):
        encode_batch([NewRecord(b"k", b"v", TS, [("\ud800", b"v")])])


def test_too_many_records_is_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "RECORDS_PER_BATCH_MAX", 3)
    encode_batch([NewRecord(None, None, TS)] * 3)
    with pytest.raises(InvalidRecordError):
        encode_batch([NewRecord(None, None, TS)] * 4)


def test_batch_over_the_size_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "BATCH_BYTES_MAX", 1000)
    encode_batch([NewRecord(None, b"x" * 900, TS)])
    with pytest.raises(RecordBatchTooLargeError):
        encode_batch([NewRecord(None, b"x" * 1000, TS)])


def test_records_are_immutable_values() -> None:
    (record,) = decode_records(encode_batch([NewRecord(b"k", b"v", TS, [("h", None)])]))
    assert record == Record(0, TS, b"k", b"v", (("h", None),))
    assert hash(record) == hash(Record(0, TS, b"k", b"v", (("h", None),)))
    with pytest.raises(AttributeError):
        record.key = b"other"  # type: ignore[misc]


def test_decode_reads_bytearray_and_memoryview_buffers() -> None:
    batch = encode_batch(_sample_records(20), compression=Compression.LZ4)
    expected = plain(decode_records(batch))
    assert plain(decode_records(bytearray(batch))) == expected
    assert plain(decode_records(memoryview(batch))) == expected


# --- the producer's fast path -----------------------------------------------------------------

_payloads = st.one_of(st.none(), st.binary(max_size=300), st.sampled_from([b"x" * 5000]))


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(_payloads, min_size=1, max_size=40),
    keyed=st.booleans(),
    key_data=st.data(),
    timestamp=st.integers(min_value=-(2**40), max_value=2**45),
    compression=st.sampled_from(list(Compression)),
)
def test_encode_values_batch_equals_encode_batch(
    values: list[bytes | None],
    keyed: bool,
    key_data: st.DataObject,
    timestamp: int,
    compression: Compression,
) -> None:
    keys = (
        key_data.draw(st.lists(_payloads, min_size=len(values), max_size=len(values)))
        if keyed
        else None
    )
    fast = encode_values_batch(
        values, keys, timestamp=timestamp, base_offset=7, compression=compression
    )
    records = [
        NewRecord(None if keys is None else keys[i], value, timestamp)
        for i, value in enumerate(values)
    ]
    slow = encode_batch(records, base_offset=7, compression=compression)
    if compression is Compression.NONE:
        assert fast == slow
    decoded = decode_records(fast)
    assert [(r.offset, r.timestamp, r.key, r.value) for r in decoded] == [
        (7 + i, timestamp, r.key, r.value) for i, r in enumerate(records)
    ]


def test_encode_values_batch_past_the_varint_table() -> None:
    """Offset deltas beyond the precomputed table (4,096 records) encode the same way."""
    values = [b"v%d" % i for i in range(5000)]
    keys = [b"k%d" % i for i in range(5000)]
    for batch_keys in (None, keys):
        fast = encode_values_batch(values, batch_keys, timestamp=1)
        slow = encode_batch(
            [
                NewRecord(None if batch_keys is None else batch_keys[i], v, 1)
                for i, v in enumerate(values)
            ]
        )
        assert fast == slow


def test_encode_values_batch_rejects_bad_input() -> None:
    with pytest.raises(InvalidRecordError):
        encode_values_batch([], timestamp=1)
    with pytest.raises(InvalidRecordError):
        encode_values_batch([b"a"], [b"k", b"l"], timestamp=1)
    with pytest.raises(InvalidRecordError):
        encode_values_batch([b"a"], timestamp=2**63)
