"""Kafka wire primitives: a bounds-checked `Reader` and an appending `Writer`.

The generated message code (`headwater.protocol._messages`) is straight-line calls into these two
classes. Everything a hostile peer controls is checked here: every length is validated against
the bytes that are actually left in the frame before anything is allocated, so a frame can never
make us allocate more than its own size. Any malformed input raises `MalformedFrameError` and
nothing else.

Encoding is trusted (the data comes from our own code): out-of-range integers surface as
`struct.error`, a `None` where the version does not allow null raises `ValueError`.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Iterable
from typing import Any, ClassVar, Final, Self, TypeVar

from headwater.errors import HeadwaterError

__all__ = [
    "MISSING",
    "ZERO_UUID",
    "ApiMessage",
    "MalformedFrameError",
    "Missing",
    "Reader",
    "Struct",
    "UnsupportedVersionError",
    "Writer",
    "version_entry",
]


class MalformedFrameError(HeadwaterError):
    """A request or response frame could not be decoded (truncated, bad length, bad UTF-8, ...)."""

    error_code = 42  # INVALID_REQUEST


class UnsupportedVersionError(HeadwaterError):
    """A message version is outside the generated range, or a value cannot be sent in it."""

    error_code = 35  # UNSUPPORTED_VERSION


class Missing(enum.Enum):
    """The type of `MISSING`, the "argument not given" marker for list and struct fields."""

    MISSING = 0


MISSING: Final = Missing.MISSING
ZERO_UUID: Final = uuid.UUID(int=0)

_T = TypeVar("_T")

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_F64 = struct.Struct(">d")

_i8_unpack = _I8.unpack_from
_i16_unpack = _I16.unpack_from
_i32_unpack = _I32.unpack_from
_i64_unpack = _I64.unpack_from
_u16_unpack = _U16.unpack_from
_u32_unpack = _U32.unpack_from
_f64_unpack = _F64.unpack_from

_i8_pack = _I8.pack
_i16_pack = _I16.pack
_i32_pack = _I32.pack
_i64_pack = _I64.pack
_u16_pack = _U16.pack
_u32_pack = _U32.pack
_f64_pack = _F64.pack

_ZERO_BYTE: Final = b"\x00"
# Chunks at least this large are kept by reference in `Writer` instead of being copied.
_ZERO_COPY_THRESHOLD: Final = 4096


class Struct:
    """Base of every generated message and nested struct: field-wise `==` and a readable repr."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        names: tuple[str, ...] = self.__slots__
        return all(getattr(self, name) == getattr(other, name) for name in names)

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({body})"


class ApiMessage(Struct):
    """Base of the generated request and response classes (the registry's value type)."""

    __slots__ = ()

    API_KEY: ClassVar[int]
    MIN_VERSION: ClassVar[int]
    MAX_VERSION: ClassVar[int]

    def encode(self, w: Writer, version: int) -> None:
        raise NotImplementedError

    @classmethod
    def decode(cls, r: Reader, version: int) -> Self:
        raise NotImplementedError


def version_entry(table: dict[int, _T], version: int, name: str) -> _T:
    """The per-version encoder/decoder for `name`, or UnsupportedVersionError."""
    try:
        return table[version]
    except KeyError:
        raise UnsupportedVersionError(f"{name} version {version} is not supported") from None


def _truncated(what: str) -> MalformedFrameError:
    return MalformedFrameError(f"frame truncated while reading {what}")


class Reader:
    """Reads Kafka primitives from a buffer, advancing `pos`.

    `records` fields come back as `memoryview` slices of the input (no copy); keep the input
    alive, and do not mutate it, for as long as those slices are used.
    """

    __slots__ = ("buf", "end", "pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        self.buf: memoryview = view
        self.pos: int = pos
        self.end: int = len(view)

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self.end

    def expect_end(self) -> None:
        """Raise unless every byte has been consumed (trailing garbage is malformed)."""
        if self.pos != self.end:
            raise MalformedFrameError(f"{self.end - self.pos} unexpected trailing bytes")

    def skip(self, n: int) -> None:
        if n < 0 or n > self.end - self.pos:
            raise _truncated("skipped bytes")
        self.pos += n

    # --- fixed width ------------------------------------------------------------------------

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        """Read several consecutive fixed-width fields with one precompiled `struct.Struct`."""
        pos = self.pos
        npos = pos + st.size
        if npos > self.end:
            raise _truncated("fixed-width fields")
        self.pos = npos
        return st.unpack_from(self.buf, pos)

    def int8(self) -> int:
        pos = self.pos
        if pos + 1 > self.end:
            raise _truncated("int8")
        self.pos = pos + 1
        v: int = _i8_unpack(self.buf, pos)[0]
        return v

    def int16(self) -> int:
        pos = self.pos
        if pos + 2 > self.end:
            raise _truncated("int16")
        self.pos = pos + 2
        v: int = _i16_unpack(self.buf, pos)[0]
        return v

    def int32(self) -> int:
        pos = self.pos
        if pos + 4 > self.end:
            raise _truncated("int32")
        self.pos = pos + 4
        v: int = _i32_unpack(self.buf, pos)[0]
        return v

    def int64(self) -> int:
        pos = self.pos
        if pos + 8 > self.end:
            raise _truncated("int64")
        self.pos = pos + 8
        v: int = _i64_unpack(self.buf, pos)[0]
        return v

    def uint16(self) -> int:
        pos = self.pos
        if pos + 2 > self.end:
            raise _truncated("uint16")
        self.pos = pos + 2
        v: int = _u16_unpack(self.buf, pos)[0]
        return v

    def uint32(self) -> int:
        pos = self.pos
        if pos + 4 > self.end:
            raise _truncated("uint32")
        self.pos = pos + 4
        v: int = _u32_unpack(self.buf, pos)[0]
        return v

    def float64(self) -> float:
        pos = self.pos
        if pos + 8 > self.end:
            raise _truncated("float64")
        self.pos = pos + 8
        v: float = _f64_unpack(self.buf, pos)[0]
        return v

    def boolean(self) -> bool:
        pos = self.pos
        if pos >= self.end:
            raise _truncated("bool")
        self.pos = pos + 1
        return self.buf[pos] != 0

    def uuid(self) -> uuid.UUID:
        pos = self.pos
        if pos + 16 > self.end:
            raise _truncated("uuid")
        self.pos = pos + 16
        return uuid.UUID(bytes=bytes(self.buf[pos : pos + 16]))

    # --- varints ----------------------------------------------------------------------------

    def uvarint(self) -> int:
        """An unsigned varint of at most 32 bits (5 bytes), as Kafka's readUnsignedVarint."""
        buf = self.buf
        pos = self.pos
        end = self.end
        if pos >= end:
            raise _truncated("varint")
        b = buf[pos]
        if b < 0x80:
            self.pos = pos + 1
            return b
        value = b & 0x7F
        shift = 7
        pos += 1
        while True:
            if pos >= end:
                raise _truncated("varint")
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 28:
                raise MalformedFrameError("varint is longer than 5 bytes")
        if value > 0xFFFFFFFF:
            raise MalformedFrameError("varint does not fit in 32 bits")
        self.pos = pos
        return value

    def _uvarlong(self, max_bytes: int) -> int:
        buf = self.buf
        pos = self.pos
        end = self.end
        value = 0
        shift = 0
        for _ in range(max_bytes):
            if pos >= end:
                raise _truncated("varint")
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return value
            shift += 7
        raise MalformedFrameError(f"varint is longer than {max_bytes} bytes")

    def varint(self) -> int:
        """A zigzag-encoded signed 32-bit varint."""
        raw = self._uvarlong(5)
        if raw > 0xFFFFFFFF:
            raise MalformedFrameError("varint does not fit in 32 bits")
        return (raw >> 1) ^ -(raw & 1)

    def varlong(self) -> int:
        """A zigzag-encoded signed 64-bit varint."""
        raw = self._uvarlong(10)
        if raw > 0xFFFFFFFFFFFFFFFF:
            raise MalformedFrameError("varlong does not fit in 64 bits")
        return (raw >> 1) ^ -(raw & 1)

    # --- lengths ----------------------------------------------------------------------------

    def _checked_length(self, n: int, what: str) -> int:
        """`n` (-1 meaning null) after checking it is -1 or fits in what is left."""
        if n < 0:
            if n == -1:
                return -1
            raise MalformedFrameError(f"negative {what} length {n}")
        if n > self.end - self.pos:
            raise MalformedFrameError(
                f"{what} length {n} exceeds the {self.end - self.pos} bytes left"
            )
        return n

    def array_len(self) -> int:
        """An int32 array length, bounded by the bytes left; null is malformed."""
        n = self._checked_length(self.int32(), "array")
        if n < 0:
            raise MalformedFrameError("null array in a non-nullable field")
        return n

    def nullable_array_len(self) -> int:
        """An int32 array length, bounded by the bytes left; -1 means null."""
        return self._checked_length(self.int32(), "array")

    def compact_array_len(self) -> int:
        """An unsigned-varint (length + 1) array length; null is malformed."""
        n = self._checked_length(self.uvarint() - 1, "array")
        if n < 0:
            raise MalformedFrameError("null array in a non-nullable field")
        return n

    def compact_nullable_array_len(self) -> int:
        """An unsigned-varint (length + 1) array length; -1 means null."""
        return self._checked_length(self.uvarint() - 1, "array")

    # --- strings ----------------------------------------------------------------------------

    def _text(self, n: int) -> str:
        pos = self.pos
        self.pos = pos + n
        try:
            return str(self.buf[pos : pos + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedFrameError("string is not valid UTF-8") from exc

    def string(self) -> str:
        n = self._checked_length(self.int16(), "string")
        if n < 0:
            raise MalformedFrameError("null string in a non-nullable field")
        return self._text(n)

    def nullable_string(self) -> str | None:
        n = self._checked_length(self.int16(), "string")
        return None if n < 0 else self._text(n)

    def compact_string(self) -> str:
        n = self._checked_length(self.uvarint() - 1, "string")
        if n < 0:
            raise MalformedFrameError("null string in a non-nullable field")
        return self._text(n)

    def compact_nullable_string(self) -> str | None:
        n = self._checked_length(self.uvarint() - 1, "string")
        return None if n < 0 else self._text(n)

    # --- bytes and records ------------------------------------------------------------------

    def _view(self, n: int) -> memoryview:
        pos = self.pos
        self.pos = pos + n
        return self.buf[pos : pos + n]

    def bytes_(self) -> bytes:
        n = self._checked_length(self.int32(), "bytes")
        if n < 0:
            raise MalformedFrameError("null bytes in a non-nullable field")
        return bytes(self._view(n))

    def nullable_bytes(self) -> bytes | None:
        n = self._checked_length(self.int32(), "bytes")
        return None if n < 0 else bytes(self._view(n))

    def compact_bytes(self) -> bytes:
        n = self._checked_length(self.uvarint() - 1, "bytes")
        if n < 0:
            raise MalformedFrameError("null bytes in a non-nullable field")
        return bytes(self._view(n))

    def compact_nullable_bytes(self) -> bytes | None:
        n = self._checked_length(self.uvarint() - 1, "bytes")
        return None if n < 0 else bytes(self._view(n))

    def records(self) -> memoryview | None:
        """An int32-length record set, as a zero-copy slice (None when null)."""
        n = self._checked_length(self.int32(), "records")
        return None if n < 0 else self._view(n)

    def compact_records(self) -> memoryview | None:
        n = self._checked_length(self.uvarint() - 1, "records")
        return None if n < 0 else self._view(n)

    # --- arrays of primitives ---------------------------------------------------------------

    def int32_list(self, n: int) -> list[int]:
        size = 4 * n
        pos = self.pos
        if pos + size > self.end:
            raise _truncated("int32 array")
        self.pos = pos + size
        return list(struct.unpack_from(f">{n}i", self.buf, pos))

    def int64_list(self, n: int) -> list[int]:
        size = 8 * n
        pos = self.pos
        if pos + size > self.end:
            raise _truncated("int64 array")
        self.pos = pos + size
        return list(struct.unpack_from(f">{n}q", self.buf, pos))

    # --- tagged fields ----------------------------------------------------------------------

    def tagged_field(self) -> tuple[int, int]:
        """One tagged field header: returns `(tag, end)`, `end` the offset after its value."""
        tag = self.uvarint()
        size = self._checked_length(self.uvarint(), "tagged field")
        return tag, self.pos + size

    def tagged_field_end(self, end: int) -> None:
        """Check a known tagged field's value used exactly its declared size."""
        if self.pos != end:
            raise MalformedFrameError("tagged field size does not match its contents")

    def skip_tagged_fields(self) -> None:
        """Read a tagged-field section whose tags are all unknown, skipping every value."""
        count = self.uvarint()
        if count > self.end - self.pos:
            raise MalformedFrameError("tagged field count exceeds the frame")
        for _ in range(count):
            self.uvarint()
            size = self._checked_length(self.uvarint(), "tagged field")
            self.pos += size

    def tagged_field_count(self) -> int:
        count = self.uvarint()
        if count > self.end - self.pos:
            raise MalformedFrameError("tagged field count exceeds the frame")
        return count


def _uvarint_bytes(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Lengths below 128 are by far the most common; precompute their encodings.
_SMALL_UVARINTS: Final = tuple(bytes((i,)) for i in range(128))


class Writer:
    """Appends Kafka primitives to a bytearray.

    Large `records` values are kept by reference as separate chunks, so a fetch response is not
    copied before it reaches the socket: use `chunks()` with `socket.sendmsg` / `writelines`, or
    `getvalue()` for one contiguous `bytes`.
    """

    __slots__ = ("_buf", "_chunks", "_flushed")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._chunks: list[bytes | bytearray | memoryview] = []
        self._flushed = 0

    def __len__(self) -> int:
        return self._flushed + len(self._buf)

    @property
    def size(self) -> int:
        return self._flushed + len(self._buf)

    def chunks(self) -> list[bytes | bytearray | memoryview]:
        """Everything written so far, as a list of buffers to send in order."""
        if self._buf:
            return [*self._chunks, self._buf]
        return list(self._chunks)

    def getvalue(self) -> bytes:
        if not self._chunks:
            return bytes(self._buf)
        return b"".join([*self._chunks, self._buf])

    def raw(self, data: bytes | bytearray | memoryview) -> None:
        """Append raw bytes; large buffers are kept by reference rather than copied."""
        if len(data) >= _ZERO_COPY_THRESHOLD:
            if self._buf:
                self._chunks.append(self._buf)
                self._flushed += len(self._buf)
                self._buf = bytearray()
            self._chunks.append(data)
            self._flushed += len(data)
        else:
            self._buf += data

    def extend(self, other: Writer) -> None:
        """Append everything another writer holds."""
        for chunk in other.chunks():
            self.raw(chunk)

    # --- fixed width ------------------------------------------------------------------------

    def pack(self, st: struct.Struct, *values: Any) -> None:
        self._buf += st.pack(*values)

    def int8(self, v: int) -> None:
        self._buf += _i8_pack(v)

    def int16(self, v: int) -> None:
        self._buf += _i16_pack(v)

    def int32(self, v: int) -> None:
        self._buf += _i32_pack(v)

    def int64(self, v: int) -> None:
        self._buf += _i64_pack(v)

    def uint16(self, v: int) -> None:
        self._buf += _u16_pack(v)

    def uint32(self, v: int) -> None:
        self._buf += _u32_pack(v)

    def float64(self, v: float) -> None:
        self._buf += _f64_pack(v)

    def boolean(self, v: bool) -> None:
        self._buf.append(1 if v else 0)

    def uuid(self, v: uuid.UUID) -> None:
        self._buf += v.bytes

    # --- varints ----------------------------------------------------------------------------

    def uvarint(self, v: int) -> None:
        if 0 <= v < 0x80:
            self._buf.append(v)
        else:
            if v < 0 or v > 0xFFFFFFFF:
                raise ValueError(f"unsigned varint out of range: {v}")
            self._buf += _uvarint_bytes(v)

    def varint(self, v: int) -> None:
        if not -(2**31) <= v < 2**31:
            raise ValueError(f"varint out of range: {v}")
        self._buf += _uvarint_bytes(((v << 1) ^ (v >> 31)) & 0xFFFFFFFF)

    def varlong(self, v: int) -> None:
        if not -(2**63) <= v < 2**63:
            raise ValueError(f"varlong out of range: {v}")
        self._buf += _uvarint_bytes(((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)

    def empty_tagged_fields(self) -> None:
        self._buf += _ZERO_BYTE

    # --- lengths ----------------------------------------------------------------------------

    def array_len(self, items: list[Any] | None) -> None:
        if items is None:
            raise ValueError("null array in a non-nullable field")
        self._buf += _i32_pack(len(items))

    def nullable_array_len(self, items: list[Any] | None) -> None:
        self._buf += _i32_pack(-1 if items is None else len(items))

    def compact_array_len(self, items: list[Any] | None) -> None:
        if items is None:
            raise ValueError("null array in a non-nullable field")
        n = len(items) + 1
        self._buf += _SMALL_UVARINTS[n] if n < 0x80 else _uvarint_bytes(n)

    def compact_nullable_array_len(self, items: list[Any] | None) -> None:
        if items is None:
            self._buf += _ZERO_BYTE
        else:
            n = len(items) + 1
            self._buf += _SMALL_UVARINTS[n] if n < 0x80 else _uvarint_bytes(n)

    # --- strings ----------------------------------------------------------------------------

    def string(self, v: str | None) -> None:
        if v is None:
            raise ValueError("null string in a non-nullable field")
        data = v.encode()
        self._buf += _i16_pack(len(data))
        self._buf += data

    def nullable_string(self, v: str | None) -> None:
        if v is None:
            self._buf += _i16_pack(-1)
        else:
            data = v.encode()
            self._buf += _i16_pack(len(data))
            self._buf += data

    def compact_string(self, v: str | None) -> None:
        if v is None:
            raise ValueError("null string in a non-nullable field")
        data = v.encode()
        n = len(data) + 1
        self._buf += _SMALL_UVARINTS[n] if n < 0x80 else _uvarint_bytes(n)
        self._buf += data

    def compact_nullable_string(self, v: str | None) -> None:
        if v is None:
            self._buf += _ZERO_BYTE
        else:
            data = v.encode()
            n = len(data) + 1
            self._buf += _SMALL_UVARINTS[n] if n < 0x80 else _uvarint_bytes(n)
            self._buf += data

    # --- bytes and records ------------------------------------------------------------------

    def bytes_(self, v: bytes | bytearray | memoryview | None) -> None:
        if v is None:
            raise ValueError("null bytes in a non-nullable field")
        self._buf += _i32_pack(len(v))
        self.raw(v)

    def nullable_bytes(self, v: bytes | bytearray | memoryview | None) -> None:
        if v is None:
            self._buf += _i32_pack(-1)
        else:
            self._buf += _i32_pack(len(v))
            self.raw(v)

    def compact_bytes(self, v: bytes | bytearray | memoryview | None) -> None:
        if v is None:
            raise ValueError("null bytes in a non-nullable field")
        self.uvarint(len(v) + 1)
        self.raw(v)

    def compact_nullable_bytes(self, v: bytes | bytearray | memoryview | None) -> None:
        if v is None:
            self._buf += _ZERO_BYTE
        else:
            self.uvarint(len(v) + 1)
            self.raw(v)

    def records(self, v: bytes | bytearray | memoryview | None) -> None:
        self.nullable_bytes(v)

    def compact_records(self, v: bytes | bytearray | memoryview | None) -> None:
        self.compact_nullable_bytes(v)

    # --- arrays of primitives ---------------------------------------------------------------

    def int32_list(self, items: Iterable[int]) -> None:
        values = list(items)
        self._buf += struct.pack(f">{len(values)}i", *values)

    def int64_list(self, items: Iterable[int]) -> None:
        values = list(items)
        self._buf += struct.pack(f">{len(values)}q", *values)
