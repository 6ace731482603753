"""Kafka's batch compression codecs, on top of cramjam.

A compressed batch compresses its whole records section as one unit; the codec is stored in
bits 0-2 of the batch attributes. Two codecs carry Kafka-specific framing:

* snappy: the Java client (and kafka-python) write snappy-java's "xerial" stream: a 16-byte
  header (magic, version 1, compatible version 1), then blocks of raw snappy, each preceded by
  its int32 big-endian length. librdkafka may send plain raw snappy. We write xerial framing,
  since every Kafka client reads it, and read both, telling them apart by the magic.
* lz4: the LZ4 frame format. Kafka's Java reader rejects frames whose blocks are linked, so we
  write independent blocks, no content size and no content checksum (as Java's own writer does);
  cramjam always adds per-block checksums, which every Kafka reader checks or skips.

Decompression is bounded: output past `limit_bytes` is an error, found without ever holding
more than the limit in memory, so a small hostile batch cannot exhaust memory.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable

import cramjam

from headwater import limits
from headwater._invariant import invariant
from headwater.errors import CorruptRecordError, InvalidRecordError, UnsupportedCompressionError

__all__ = ["Compression", "compress", "decompress"]


class Compression(enum.IntEnum):
    """The codec ids Kafka stores in bits 0-2 of a batch's attributes."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_HEADER_SIZE = len(_XERIAL_HEADER)
# snappy-java's default block size; each block is compressed on its own.
_XERIAL_BLOCK_BYTES = 32 * 1024
_BLOCK_LENGTH = struct.Struct(">i")

# zstd's own default level, which Kafka also uses; cramjam's default (11) is several times slower.
_ZSTD_LEVEL_DEFAULT = 3
# lz4's middle level (LZ4MID since lz4 1.10): fast-mode speed with a better ratio. cramjam's
# default is high-compression mode, ten times slower here; older lz4s treat 2 as fast mode.
_LZ4_LEVEL_DEFAULT = 2

# The first output buffer for a codec that does not state its decompressed size: a guess that
# fits typical batches, grown geometrically (and retried) when it is too small.
_INITIAL_CAPACITY_BYTES = 64 * 1024
_EXPANSION_GUESS = 8
_GROWTH_FACTOR = 4
# What cramjam says when decompressed data does not fit the output buffer we gave it.
_OUTPUT_FULL_MESSAGE = "failed to write whole buffer"


def compress(
    codec: Compression, data: bytes | bytearray | memoryview, *, level: int | None = None
) -> bytes:
    """Compress a records section with `codec` as Kafka's clients frame it.

    `level` is passed to the codec (None: gzip 6, lz4 2, zstd 3); snappy ignores it.
    """
    try:
        if codec == Compression.NONE:
            return bytes(data)
        if codec == Compression.GZIP:
            return bytes(cramjam.gzip.compress(data, level=level))
        if codec == Compression.SNAPPY:
            return _xerial_compress(data)
        if codec == Compression.LZ4:
            compressor = cramjam.lz4.Compressor(
                level=_LZ4_LEVEL_DEFAULT if level is None else level,
                content_checksum=False,
                block_linked=False,
            )
            compressor.compress(bytes(data))
            return bytes(compressor.finish())
        if codec == Compression.ZSTD:
            zstd_level = _ZSTD_LEVEL_DEFAULT if level is None else level
            return bytes(cramjam.zstd.compress(data, level=zstd_level))
    except cramjam.CompressionError as err:
        raise InvalidRecordError(f"{codec!r} compression failed: {err}") from err
    raise UnsupportedCompressionError(f"unknown compression codec {int(codec)}")


def decompress(
    codec: Compression | int,
    data: bytes | bytearray | memoryview,
    limit_bytes: int = limits.DECOMPRESSED_BATCH_BYTES_MAX,
) -> bytes:
    """Decompress a records section; any failure, or output over `limit_bytes`, is corruption."""
    invariant(limit_bytes >= 0, "limit_bytes must not be negative")
    try:
        known = Compression(codec)
    except ValueError:
        raise UnsupportedCompressionError(f"unknown compression codec {codec}") from None
    try:
        if known is Compression.NONE:
            if len(data) > limit_bytes:
                raise _over_limit(known, limit_bytes)
            return bytes(data)
        if known is Compression.SNAPPY:
            return _snappy_decompress(data, limit_bytes)
        if known is Compression.GZIP:
            return _bounded(known, cramjam.gzip.decompress_into, data, limit_bytes)
        if known is Compression.LZ4:
            return _bounded(known, cramjam.lz4.decompress_into, data, limit_bytes)
        return _bounded(known, cramjam.zstd.decompress_into, data, limit_bytes)
    except cramjam.DecompressionError as err:
        raise CorruptRecordError(f"{known.name.lower()} data is corrupt: {err}") from err


def _over_limit(codec: Compression, limit_bytes: int) -> CorruptRecordError:
    return CorruptRecordError(
        f"{codec.name.lower()} data decompresses to more than the limit of {limit_bytes} bytes"
    )


def _bounded(
    codec: Compression,
    decompress_into: Callable[[bytes | bytearray | memoryview, bytearray], int],
    data: bytes | bytearray | memoryview,
    limit_bytes: int,
) -> bytes:
    """Decompress into buffers of growing size, never larger than `limit_bytes + 1`.

    cramjam stops with an error as soon as an output buffer is full, so a buffer one byte over
    the limit tells "too large" apart from "exactly at the limit".
    """
    capacity = min(limit_bytes + 1, max(_INITIAL_CAPACITY_BYTES, len(data) * _EXPANSION_GUESS))
    while True:
        output = bytearray(capacity)
        try:
            written = decompress_into(data, output)
        except cramjam.DecompressionError as err:
            if _OUTPUT_FULL_MESSAGE not in str(err):
                raise
            if capacity > limit_bytes:
                raise _over_limit(codec, limit_bytes) from None
            capacity = min(limit_bytes + 1, capacity * _GROWTH_FACTOR)
            continue
        if written > limit_bytes:
            raise _over_limit(codec, limit_bytes)
        del output[written:]
        return bytes(output)


def _xerial_compress(data: bytes | bytearray | memoryview) -> bytes:
    view = memoryview(data)
    parts = [_XERIAL_HEADER]
    for start in range(0, len(view), _XERIAL_BLOCK_BYTES):
        block = bytes(cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK_BYTES]))
        parts.append(_BLOCK_LENGTH.pack(len(block)))
        parts.append(block)
    return b"".join(parts)


def _snappy_decompress(data: bytes | bytearray | memoryview, limit_bytes: int) -> bytes:
    view = memoryview(data)
    if view[: len(_XERIAL_MAGIC)] != _XERIAL_MAGIC:
        return _raw_snappy_blocks([view], limit_bytes)
    return _raw_snappy_blocks(_xerial_blocks(view), limit_bytes)


def _xerial_blocks(view: memoryview) -> list[memoryview]:
    """Split a xerial stream into its raw snappy blocks.

    The version fields are not checked: some producers write them little-endian, and snappy-java
    has only ever had one block format. A repeated header between blocks (concatenated streams,
    which snappy-java reads) is skipped.
    """
    blocks = []
    position = 0
    size = len(view)
    while position < size:
        if view[position : position + len(_XERIAL_MAGIC)] == _XERIAL_MAGIC:
            if position + _XERIAL_HEADER_SIZE > size:
                raise CorruptRecordError("snappy (xerial) stream header is truncated")
            position += _XERIAL_HEADER_SIZE
            continue
        if position + _BLOCK_LENGTH.size > size:
            raise CorruptRecordError("snappy (xerial) block length is truncated")
        (length,) = _BLOCK_LENGTH.unpack_from(view, position)
        position += _BLOCK_LENGTH.size
        if length < 0 or position + length > size:
            raise CorruptRecordError(f"snappy (xerial) block length {length} is out of bounds")
        blocks.append(view[position : position + length])
        position += length
    return blocks


def _raw_snappy_blocks(blocks: list[memoryview], limit_bytes: int) -> bytes:
    """Decompress raw snappy blocks, checking their stated sizes against the limit first."""
    sizes = []
    total = 0
    for block in blocks:
        stated: int = cramjam.snappy.decompress_raw_len(block)
        total += stated
        if total > limit_bytes:
            raise _over_limit(Compression.SNAPPY, limit_bytes)
        sizes.append(stated)
    output = bytearray(total)
    with memoryview(output) as target:
        position = 0
        for block, stated in zip(blocks, sizes, strict=True):
            written: int = cramjam.snappy.decompress_raw_into(
                block, target[position : position + stated]
            )
            if written != stated:
                raise CorruptRecordError(
                    f"snappy block decompressed to {written} bytes, its header says {stated}"
                )
            position += stated
    return bytes(output)
