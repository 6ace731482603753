r"""`headwater topic consume`: print records, partition by partition, in offset order.

With no server there is nothing to wait on: a run reads every selected partition up to its high
watermark as it was when the run began, then exits (with --brokers too, for the same output). Values are bytes and are written as bytes.

Format strings follow rpk and kcat where they agree: `%t` topic, `%k` key, `%v` value,
`%p` partition, `%o` offset, `%h` headers (`k=v,k=v`), `%H` header count, `%K`/`%V` key and
value lengths, `%d` timestamp in milliseconds (rpk; `%T` too, as in kcat), `%%` a percent sign,
and the escapes `\n` `\t` `\r` `\\` `\xNN`.

`-f json` prints one object per line. Keys, values and header values are JSON strings when they
are valid UTF-8; otherwise they are base64 and a sibling field (`key_encoding`,
`value_encoding`, or a header's `value_encoding`) says "base64". Nothing is ever lost or
replaced, and text stays readable.
"""

from __future__ import annotations

import base64
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

import msgspec
import typer

from headwater.cli._common import BrokersOption, DataDirOption, open_data_dir, resolve_brokers
from headwater.log.partition_log import PartitionLog
from headwater.log.record_batch import Record

# Bytes per read; large enough that a read's fixed cost is small next to formatting.
_READ_BYTES = 4 * 1024 * 1024

DEFAULT_FORMAT = r"%v\n"
JSON_FORMAT = "json"

# --- formatting --------------------------------------------------------------------------------

_Field = Callable[[Record], bytes]
_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\"}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _value(record: Record) -> bytes:
    return record.value or b""


def _key(record: Record) -> bytes:
    return record.key or b""


def _value_length(record: Record) -> bytes:
    return str(len(record.value or b"")).encode()


def _key_length(record: Record) -> bytes:
    return str(len(record.key or b"")).encode()


def _offset(record: Record) -> bytes:
    return str(record.offset).encode()


def _timestamp(record: Record) -> bytes:
    return str(record.timestamp).encode()


def _headers(record: Record) -> bytes:
    return b",".join(name.encode() + b"=" + (value or b"") for name, value in record.headers)


def _header_count(record: Record) -> bytes:
    return str(len(record.headers)).encode()


# Fields that depend on the record; `t` (topic) and `p` (partition) are per partition.
_RECORD_FIELDS: dict[str, _Field] = {
    "v": _value,
    "k": _key,
    "V": _value_length,
    "K": _key_length,
    "o": _offset,
    "d": _timestamp,
    "T": _timestamp,
    "h": _headers,
    "H": _header_count,
}
_PARTITION_FIELDS = frozenset("tp")


def _parse_format(text: str) -> list[bytes | str]:
    """Split a format into literal bytes and one-letter field codes; raise on a bad escape."""
    parts: list[bytes | str] = []
    literal = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        if char == "%":
            code = text[index + 1 : index + 2]
            if code == "%":
                literal += b"%"
            elif code in _RECORD_FIELDS or (code and code in _PARTITION_FIELDS):
                if literal:
                    parts.append(bytes(literal))
                    literal.clear()
                parts.append(code)
            else:
                shown = f"%{code}" if code else "a trailing %"
                raise typer.BadParameter(f"unknown format field {shown}", param_hint="'--format'")
            index += 2
        elif char == "\\" and index + 1 < len(text):
            code = text[index + 1]
            if code in _ESCAPES:
                literal += _ESCAPES[code]
                index += 2
            elif code == "x":
                digits = text[index + 2 : index + 4]
                if len(digits) != 2 or not all(digit in _HEX_DIGITS for digit in digits):
                    raise typer.BadParameter(
                        f"\\x needs two hex digits, not {digits!r}", param_hint="'--format'"
                    )
                literal.append(int(digits, 16))
                index += 4
            else:
                literal += char.encode()
                index += 1
        else:
            literal += char.encode()
            index += 1
    if literal:
        parts.append(bytes(literal))
    return parts


class _JsonHeader(msgspec.Struct, omit_defaults=True):
    key: str
    value: str | None
    value_encoding: str | None = None


class _JsonRecord(msgspec.Struct, omit_defaults=True):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: str | None
    value: str | None
    headers: list[_JsonHeader]
    key_encoding: str | None = None
    value_encoding: str | None = None


def _text(data: bytes | None) -> tuple[str | None, str | None]:
    """(text, encoding): UTF-8 as is, anything else base64 with encoding "base64"."""
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def _json_record(topic: str, partition: int, record: Record) -> _JsonRecord:
    key, key_encoding = _text(record.key)
    value, value_encoding = _text(record.value)
    headers = []
    for name, raw in record.headers:
        text, encoding = _text(raw)
        headers.append(_JsonHeader(name, text, encoding))
    return _JsonRecord(
        topic,
        partition,
        record.offset,
        record.timestamp,
        key,
        value,
        headers,
        key_encoding,
        value_encoding,
    )


@dataclass(frozen=True, slots=True)
class RecordFormat:
    """A compiled `--format`: renders a partition's records to the bytes to print."""

    parts: tuple[bytes | str, ...]
    json: bool = False

    @classmethod
    def parse(cls, text: str) -> RecordFormat:
        if text == JSON_FORMAT:
            return cls((), json=True)
        return cls(tuple(_parse_format(text)))

    def render(self, topic: str, partition: int, records: Sequence[Record]) -> bytes:
        if self.json:
            return _JSON_ENCODER.encode_lines([_json_record(topic, partition, r) for r in records])
        if self.parts == ("v", b"\n"):
            # The default format, by far the most common: one join, no per-field calls.
            return b"".join([(record.value or b"") + b"\n" for record in records])
        # Literals, topic and partition are the same for every record here: bytes, not calls.
        constants = {"t": topic.encode(), "p": str(partition).encode()}
        fields: list[_Field | bytes] = []
        for part in self.parts:
            if isinstance(part, bytes):
                fields.append(part)
            else:
                fields.append(constants.get(part) or _RECORD_FIELDS[part])
        out: list[bytes] = []
        append = out.append
        for record in records:
            for item in fields:
                append(item if isinstance(item, bytes) else item(record))
        return b"".join(out)


_JSON_ENCODER = msgspec.json.Encoder()

# --- offsets -----------------------------------------------------------------------------------


def _start_offset(spec: str, log: PartitionLog) -> int:
    """Where to start in `log`: start, end, N, +N (after the start), -N (before the end), @MS.

    Out-of-range offsets are clamped to the log, as a consumer resetting its position would.
    """
    start = log.log_start_offset
    end = log.high_watermark
    if spec in ("start", "oldest", "beginning"):
        return start
    if spec in ("end", "newest"):
        return end
    if spec.startswith("@"):
        found = log.offset_for_timestamp(int(spec[1:]))
        return end if found is None else max(start, min(found[0], end))
    if spec.startswith("+"):
        wanted = start + int(spec[1:])
    elif spec.startswith("-"):
        wanted = end - int(spec[1:])
    else:
        wanted = int(spec)
    return max(start, min(wanted, end))


def _check_offset_spec(spec: str) -> str:
    if spec in ("start", "oldest", "beginning", "end", "newest"):
        return spec
    digits = spec[1:] if spec[:1] in ("+", "-", "@") else spec
    if not digits.isdigit():
        raise typer.BadParameter(
            f"{spec!r} is not start, end, N, +N, -N or @TIMESTAMP_MS", param_hint="'--offset'"
        )
    return spec


# --- the command -------------------------------------------------------------------------------


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit-time flush cannot complain."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def consume(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(metavar="TOPIC", help="Topic to consume from.")],
    offset: Annotated[
        str | None,
        typer.Option(
            "--offset",
            "-o",
            metavar="OFFSET",
            help="Where to start in each partition: start (default), end, N, +N (N after the "
            "start), -N (N before the end) or @TIMESTAMP_MS.",
        ),
    ] = None,
    from_beginning: Annotated[
        bool,
        typer.Option("--from-beginning", help="Same as --offset start (for kcat and Kafka users)."),
    ] = False,
    partitions: Annotated[
        list[int] | None,
        typer.Option(
            "--partition", "-p", min=0, help="Read only this partition (repeatable; default all)."
        ),
    ] = None,
    num: Annotated[
        int | None,
        typer.Option("--num", "-n", min=0, help="Stop after this many records in total."),
    ] = None,
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="'json', or a format string: %t topic, %p partition, %o offset, %k key, "
            "%v value, %d (or %T) timestamp ms, %h headers, %K/%V key/value length, %H header "
            "count, escapes \\n \\t \\xNN.",
        ),
    ] = DEFAULT_FORMAT,
    data_dir: DataDirOption = None,
    brokers: BrokersOption = None,
) -> None:
    """Print a topic's records, each partition in offset order, up to the current end."""
    if from_beginning and offset is not None:
        raise typer.BadParameter("use --from-beginning or --offset, not both")
    spec = _check_offset_spec(offset or "start")
    record_format = RecordFormat.parse(format_)
    remote = resolve_brokers(ctx, brokers)
    if remote is not None:
        from headwater.cli import _remote

        _remote.consume(
            remote,
            topic,
            spec=spec,
            partitions=partitions,
            num=num,
            record_format=record_format,
        )
        return
    remaining = num
    broken_pipe = False
    with open_data_dir(ctx, data_dir, "headwater topic consume") as manager:
        if partitions:
            logs = [manager.partition(topic, partition) for partition in dict.fromkeys(partitions)]
        else:
            logs = manager.partitions(topic)
        sys.stdout.flush()  # anything written as text goes before our bytes
        out = sys.stdout.buffer
        try:
            for log in logs:
                if remaining == 0:
                    break
                position = _start_offset(spec, log)
                end = log.high_watermark
                while position < end and remaining != 0:
                    result = log.read_records(position, _READ_BYTES)
                    records = result.records
                    if records and records[-1].offset >= end:
                        records = [record for record in records if record.offset < end]
                    if remaining is not None and len(records) > remaining:
                        records = records[:remaining]
                    if records:
                        out.write(record_format.render(log.topic, log.partition, records))
                        if remaining is not None:
                            remaining -= len(records)
                    if result.next_offset <= position:
                        break  # nothing more below the end (never expected; never loop on it)
                    position = result.next_offset
            out.flush()
        except BrokenPipeError:
            broken_pipe = True  # the reader has gone (`| head`): stop quietly
    if broken_pipe:
        _silence_stdout()


__all__ = ["DEFAULT_FORMAT", "JSON_FORMAT", "RecordFormat", "consume"]
