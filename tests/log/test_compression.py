"""Tests for the batch codecs: round trips, Kafka framing, bounds and error mapping."""

from __future__ import annotations

import contextlib
import gzip
import os
import struct

import cramjam
import kafka.codec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.errors import CorruptRecordError, UnsupportedCompressionError
from headwater.log.compression import Compression, compress, decompress

CODECS = list(Compression)
REAL_CODECS = [codec for codec in Compression if codec is not Compression.NONE]

XERIAL_MAGIC = b"\x82SNAPPY\x00"
LZ4_MAGIC = b"\x04\x22\x4d\x18"  # 0x184D2204, little-endian

# Mixed text-like data: compressible, but not trivially so.
SAMPLE = b"".join(b"record-%06d:" % i + bytes(range(i % 50)) for i in range(8000))


def test_sample_is_large_enough_to_need_several_blocks() -> None:
    assert len(SAMPLE) > 3 * 64 * 1024


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.name)
@pytest.mark.parametrize(
    "payload",
    [b"", b"x", b"hello kafka " * 10, SAMPLE, os.urandom(100_000)],
    ids=["empty", "one-byte", "short", "sample", "random"],
)
def test_round_trip(codec: Compression, payload: bytes) -> None:
    compressed = compress(codec, payload)
    assert isinstance(compressed, bytes)
    assert decompress(codec, compressed) == payload


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.name)
def test_accepts_memoryview_and_bytearray(codec: Compression) -> None:
    compressed = compress(codec, memoryview(SAMPLE))
    assert decompress(codec, bytearray(compressed)) == SAMPLE
    assert decompress(codec, memoryview(compressed)) == SAMPLE


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=5000), codec=st.sampled_from(CODECS))
def test_round_trip_property(payload: bytes, codec: Compression) -> None:
    assert decompress(codec, compress(codec, payload)) == payload


def test_real_codecs_shrink_compressible_data() -> None:
    for codec in REAL_CODECS:
        assert len(compress(codec, SAMPLE)) < len(SAMPLE) // 2, codec


def test_decompress_takes_plain_ints_as_codec_ids() -> None:
    assert decompress(1, compress(Compression.GZIP, b"abc")) == b"abc"


# --- gzip ------------------------------------------------------------------------------


def test_gzip_interoperates_with_the_standard_library() -> None:
    assert gzip.decompress(compress(Compression.GZIP, SAMPLE)) == SAMPLE
    assert decompress(Compression.GZIP, gzip.compress(SAMPLE)) == SAMPLE


# --- snappy ----------------------------------------------------------------------------


def _xerial_blocks(stream: bytes) -> list[bytes]:
    assert stream[:16] == XERIAL_MAGIC + struct.pack(">ii", 1, 1)
    blocks = []
    position = 16
    while position < len(stream):
        (length,) = struct.unpack_from(">i", stream, position)
        position += 4
        blocks.append(stream[position : position + length])
        position += length
    assert position == len(stream)
    return blocks


def test_snappy_writes_xerial_framing_with_32k_blocks() -> None:
    stream = compress(Compression.SNAPPY, SAMPLE)
    blocks = _xerial_blocks(stream)
    sizes = [len(bytes(cramjam.snappy.decompress_raw(block))) for block in blocks]
    assert sizes[:-1] == [32 * 1024] * (len(sizes) - 1)
    assert 0 < sizes[-1] <= 32 * 1024
    assert b"".join(bytes(cramjam.snappy.decompress_raw(block)) for block in blocks) == SAMPLE


def test_snappy_of_nothing_is_a_bare_xerial_header() -> None:
    assert compress(Compression.SNAPPY, b"") == XERIAL_MAGIC + struct.pack(">ii", 1, 1)
    assert decompress(Compression.SNAPPY, XERIAL_MAGIC + struct.pack(">ii", 1, 1)) == b""


def test_snappy_reads_raw_snappy_as_librdkafka_sends_it() -> None:
    raw = bytes(cramjam.snappy.compress_raw(SAMPLE))
    assert not raw.startswith(XERIAL_MAGIC)
    assert decompress(Compression.SNAPPY, raw) == SAMPLE


def test_snappy_reads_hand_built_xerial_with_odd_blocks_and_versions() -> None:
    pieces = [SAMPLE[:1000], SAMPLE[1000:70_000], SAMPLE[70_000:70_001], SAMPLE[70_001:]]
    # Version fields written little-endian, as some producers do; they are not checked.
    stream = XERIAL_MAGIC + struct.pack("<ii", 1, 1)
    for piece in pieces:
        block = bytes(cramjam.snappy.compress_raw(piece))
        stream += struct.pack(">i", len(block)) + block
    assert decompress(Compression.SNAPPY, stream) == SAMPLE


def test_snappy_reads_concatenated_xerial_streams() -> None:
    first = compress(Compression.SNAPPY, b"first part ")
    second = compress(Compression.SNAPPY, b"second part")
    assert decompress(Compression.SNAPPY, first + second) == b"first part second part"


def test_snappy_interoperates_with_kafka_python_framing(monkeypatch: pytest.MonkeyPatch) -> None:
    # kafka-python's own xerial framing code, given a raw snappy implementation to call.
    class RawSnappy:
        @staticmethod
        def compress(data: bytes) -> bytes:
            return bytes(cramjam.snappy.compress_raw(bytes(data)))

        @staticmethod
        def decompress(data: bytes) -> bytes:
            return bytes(cramjam.snappy.decompress_raw(bytes(data)))

    monkeypatch.setattr(kafka.codec, "snappy", RawSnappy)
    theirs = kafka.codec.snappy_encode(SAMPLE)
    assert theirs.startswith(XERIAL_MAGIC)
    assert decompress(Compression.SNAPPY, theirs) == SAMPLE
    assert kafka.codec.snappy_decode(compress(Compression.SNAPPY, SAMPLE)) == SAMPLE


@pytest.mark.parametrize(
    "stream",
    [
        XERIAL_MAGIC + b"\x00\x00\x00\x01",  # header cut short
        XERIAL_MAGIC + struct.pack(">ii", 1, 1) + b"\x00\x00",  # block length cut short
        XERIAL_MAGIC + struct.pack(">iii", 1, 1, 100) + b"abc",  # block runs past the end
        XERIAL_MAGIC + struct.pack(">iii", 1, 1, -5) + b"abc",  # negative block length
        XERIAL_MAGIC + struct.pack(">iii", 1, 1, 3) + b"\xff\xff\xff",  # not snappy
    ],
    ids=["short-header", "short-length", "overrun", "negative", "garbage-block"],
)
def test_snappy_bad_xerial_framing_is_corrupt(stream: bytes) -> None:
    with pytest.raises(CorruptRecordError):
        decompress(Compression.SNAPPY, stream)


# --- lz4 -------------------------------------------------------------------------------


def _lz4_frame_blocks(frame: bytes) -> tuple[int, int, list[tuple[bool, bytes]]]:
    """Walk an LZ4 frame by the spec; return (FLG, BD, [(compressed, block data)])."""
    assert frame[:4] == LZ4_MAGIC
    flg, bd = frame[4], frame[5]
    position = 6 + (8 if flg & 0x08 else 0) + 1  # optional content size, then header checksum
    blocks = []
    while True:
        (word,) = struct.unpack_from("<I", frame, position)
        position += 4
        if word == 0:
            break
        size = word & 0x7FFFFFFF
        blocks.append((not word & 0x80000000, frame[position : position + size]))
        position += size + (4 if flg & 0x10 else 0)
    position += 4 if flg & 0x04 else 0
    assert position == len(frame), "the frame holds nothing but its blocks"
    return flg, bd, blocks


def test_lz4_frame_flags_suit_kafkas_java_reader() -> None:
    frame = compress(Compression.LZ4, SAMPLE)
    flg, bd, blocks = _lz4_frame_blocks(frame)
    assert flg >> 6 == 0b01, "frame format version 1"
    assert flg & 0x20, "blocks are independent"
    assert not flg & 0x08, "no content size field"
    assert not flg & 0x04, "no content checksum"
    assert not flg & 0x03, "reserved bit and dictionary id clear"
    assert bd == 0x40, "64 KiB maximum block size"
    assert len(blocks) >= 3


def test_lz4_blocks_decompress_independently() -> None:
    # Linked blocks would refer back into the previous block and fail on their own.
    _, _, blocks = _lz4_frame_blocks(compress(Compression.LZ4, SAMPLE))
    pieces = []
    for compressed, data in blocks:
        if compressed:
            output = bytearray(64 * 1024)
            written = cramjam.lz4.decompress_block_into(data, output)
            pieces.append(bytes(output[:written]))
        else:
            pieces.append(data)
    assert b"".join(pieces) == SAMPLE


def test_lz4_reads_frames_with_linked_blocks_and_checksums() -> None:
    # cramjam's default frame links blocks and has a content checksum: other writers may too.
    frame = bytes(cramjam.lz4.compress(SAMPLE))
    flg, _, _ = _lz4_frame_blocks(frame)
    assert not flg & 0x20 and flg & 0x04
    assert decompress(Compression.LZ4, frame) == SAMPLE


# --- zstd ------------------------------------------------------------------------------


def test_zstd_writes_a_standard_frame() -> None:
    frame = compress(Compression.ZSTD, SAMPLE)
    assert frame[:4] == b"\x28\xb5\x2f\xfd"
    assert bytes(cramjam.zstd.decompress(frame)) == SAMPLE


# --- bounds and errors -----------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.name)
def test_limit_is_inclusive(codec: Compression) -> None:
    payload = bytes(300_000)
    compressed = compress(codec, payload)
    assert decompress(codec, compressed, limit_bytes=len(payload)) == payload
    with pytest.raises(CorruptRecordError, match="limit"):
        decompress(codec, compressed, limit_bytes=len(payload) - 1)


@pytest.mark.parametrize("codec", REAL_CODECS, ids=lambda codec: codec.name)
def test_decompression_bomb_is_refused(codec: Compression) -> None:
    bomb = compress(codec, bytes(64 * 1024 * 1024))
    assert len(bomb) < 4 * 1024 * 1024
    with pytest.raises(CorruptRecordError, match="limit"):
        decompress(codec, bomb, limit_bytes=1024 * 1024)


@pytest.mark.parametrize("codec", REAL_CODECS, ids=lambda codec: codec.name)
def test_high_ratio_data_under_the_limit_decompresses(codec: Compression) -> None:
    # Far beyond the first output buffer's guess, so the buffer has to grow several times.
    payload = b"a" * (20 * 1024 * 1024)
    assert decompress(codec, compress(codec, payload)) == payload


def test_raw_snappy_bomb_is_refused_from_its_stated_size() -> None:
    # A raw snappy stream whose header claims 1 GiB: refused before any output is made.
    lie = bytes([0x80, 0x80, 0x80, 0x80, 0x04]) + b"\x00"
    with pytest.raises(CorruptRecordError, match="limit"):
        decompress(Compression.SNAPPY, lie)


@pytest.mark.parametrize("codec", REAL_CODECS, ids=lambda codec: codec.name)
@pytest.mark.parametrize(
    "garbage",
    [b"", b"\xff", b"not compressed at all, just text", bytes(range(256)) * 4],
    ids=["empty", "one-byte", "text", "bytes"],
)
def test_garbage_is_corrupt(codec: Compression, garbage: bytes) -> None:
    with pytest.raises(CorruptRecordError):
        decompress(codec, garbage)


@pytest.mark.parametrize("codec", REAL_CODECS, ids=lambda codec: codec.name)
def test_truncated_streams_are_corrupt(codec: Compression) -> None:
    compressed = compress(codec, SAMPLE)
    for cut in (1, 7, len(compressed) // 2, len(compressed) - 1):
        with pytest.raises(CorruptRecordError):
            decompress(codec, compressed[:cut])


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=300), codec=st.sampled_from(REAL_CODECS))
def test_arbitrary_bytes_decompress_or_raise_corrupt(garbage: bytes, codec: Compression) -> None:
    try:
        result = decompress(codec, garbage, limit_bytes=1 << 20)
    except CorruptRecordError:
        return
    assert isinstance(result, bytes)
    assert len(result) <= 1 << 20


@settings(max_examples=100, deadline=None)
@given(data=st.data(), codec=st.sampled_from(REAL_CODECS))
def test_damaged_streams_decompress_or_raise_corrupt(
    data: st.DataObject, codec: Compression
) -> None:
    stream = bytearray(compress(codec, SAMPLE[:5000]))
    position = data.draw(st.integers(0, len(stream) - 1))
    stream[position] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(CorruptRecordError):
        decompress(codec, stream)


def test_none_codec_respects_the_limit() -> None:
    assert decompress(Compression.NONE, b"abc", limit_bytes=3) == b"abc"
    with pytest.raises(CorruptRecordError):
        decompress(Compression.NONE, b"abcd", limit_bytes=3)


@pytest.mark.parametrize("codec", [5, 6, 7, -1, 99])
def test_unknown_codec_is_unsupported(codec: int) -> None:
    with pytest.raises(UnsupportedCompressionError):
        decompress(codec, b"data")
    with pytest.raises(UnsupportedCompressionError):
        compress(codec, b"data")  # type: ignore[arg-type]


def test_codec_ids_are_kafkas() -> None:
    assert [(codec.name, int(codec)) for codec in Compression] == [
        ("NONE", 0),
        ("GZIP", 1),
        ("SNAPPY", 2),
        ("LZ4", 3),
        ("ZSTD", 4),
    ]
