"""`headwater topic produce`: stdin lines to records, batched per partition.

Lines are read in binary and only the trailing newline is removed, so any bytes survive. Lines
are taken in chunks of `_BATCH_RECORDS_MAX`; records that share a partition rule (no key, or one
key for all) become one batch per chunk, and records keyed line by line are buffered per
partition until a batch is full (or at EOF). Batching is what makes large inputs fast: the cost
of a batch (encoding, CRC, a write) is shared by up to `_BATCH_RECORDS_MAX` records, and no
batch outgrows the topic's `max.message.bytes`.

Durability: batches are appended without waiting for fsync, and every partition that needs a
sync (per its `flush.messages`) is synced at least every `_SYNC_INTERVAL_S` and always before the
summary is printed. The summary is the acknowledgement: what it counts is on disk.
"""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Annotated

import typer
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.text import Text

from headwater.cli._common import (
    BrokersOption,
    DataDirOption,
    error_line,
    open_data_dir,
    parse_key_values,
    reporting_errors,
    resolve_brokers,
    stderr_console,
)
from headwater.errors import HeadwaterError
from headwater.log.compression import Compression
from headwater.log.partition_log import PartitionLog
from headwater.log.partitioner import StickyPartitioner, partition_for_key
from headwater.log.record_batch import BATCH_HEADER_SIZE, NewRecord

_BATCH_RECORDS_MAX = 1000
_BATCH_BYTES_MAX = 512 * 1024
# A generous bound on one record's framing (length, attributes, deltas, key and value lengths,
# header count) so an estimated batch size never falls short of the encoded one.
_RECORD_OVERHEAD_BYTES = 32
_HEADER_OVERHEAD_BYTES = 10
_SYNC_INTERVAL_S = 1.0
# Distinct keys whose partition is remembered; beyond this, keys are hashed every time.
_KEY_CACHE_SIZE = 100_000
# A progress display for a run shorter than this would only flicker.
_PROGRESS_DELAY_S = 0.5
_PROGRESS_INTERVAL_S = 0.1


class CompressionChoice(enum.StrEnum):
    """The `-z` codecs; without `-z` the topic's `compression.type` decides."""

    NONE = "none"
    GZIP = "gzip"
    SNAPPY = "snappy"
    LZ4 = "lz4"
    ZSTD = "zstd"


_CODECS = {
    CompressionChoice.NONE: Compression.NONE,
    CompressionChoice.GZIP: Compression.GZIP,
    CompressionChoice.SNAPPY: Compression.SNAPPY,
    CompressionChoice.LZ4: Compression.LZ4,
    CompressionChoice.ZSTD: Compression.ZSTD,
}


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} records/s" if speed else "")


class _Ticker:
    """A records counter on stderr: only on a terminal, and only once the run is not short."""

    def __init__(self, topic: str) -> None:
        self._topic = topic
        self._enabled = sys.stderr.isatty()
        self._started = time.monotonic()
        self._last_update = 0.0
        self._progress: Progress | None = None

    def update(self, produced: int) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if (
            now - self._last_update < _PROGRESS_INTERVAL_S
            or now - self._started < _PROGRESS_DELAY_S
        ):
            return
        self._last_update = now
        if self._progress is None:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn(f"producing to {self._topic}"),
                TextColumn("{task.completed:,.0f} records"),
                _RateColumn(),
                console=stderr_console(),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("produce", total=None)
        self._progress.update(self._task, completed=produced)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class _Batcher:
    """Appends batches, and per-partition buffers for records that arrive mixed."""

    def __init__(
        self,
        logs: Sequence[PartitionLog],
        compression: Compression | None,
        ticker: _Ticker,
    ) -> None:
        self.logs = logs
        self.pending: list[list[NewRecord]] = [[] for _ in logs]
        self.pending_bytes = [0] * len(logs)
        self.produced = 0
        self._compression = compression
        self._ticker = ticker
        self._needs_sync: set[int] = set()
        self._last_sync = time.monotonic()

    def append(self, partition: int, records: list[NewRecord]) -> None:
        """Append `records` to the partition as one batch."""
        result = self.logs[partition].append_records(
            records, compression=self._compression, wait_for_flush=False
        )
        self.produced += len(records)
        if result.flush_due:
            self._needs_sync.add(partition)
        if time.monotonic() - self._last_sync >= _SYNC_INTERVAL_S:
            self.sync()
        self._ticker.update(self.produced)

    def send(self, partition: int) -> None:
        """Append the partition's buffered records, if any, as one batch."""
        records = self.pending[partition]
        if records:
            self.pending[partition] = []
            self.pending_bytes[partition] = 0
            self.append(partition, records)

    def send_all(self) -> None:
        for partition in range(len(self.logs)):
            self.send(partition)

    def sync(self) -> None:
        """fsync every partition whose flush policy asked for it."""
        for partition in sorted(self._needs_sync):
            self.logs[partition].flush()
        self._needs_sync.clear()
        self._last_sync = time.monotonic()


@dataclass(frozen=True, slots=True)
class _Routing:
    """How lines become records: the key rule, a fixed partition, and the batch limits."""

    key: bytes | None
    separator: bytes | None
    partition: int | None
    headers: tuple[tuple[str, bytes | None], ...]
    batch_bytes_max: int
    chunk_records: int

    @property
    def record_overhead(self) -> int:
        return _RECORD_OVERHEAD_BYTES + sum(
            len(name) + len(value or b"") + _HEADER_OVERHEAD_BYTES for name, value in self.headers
        )


def _chunks(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    """Lists of up to `size` record values: lines without their trailing newline."""
    iterator = iter(lines)
    while chunk := list(islice(iterator, size)):
        values = [line[:-1] for line in chunk]
        if chunk[-1][-1:] != b"\n":
            values[-1] = chunk[-1]  # the input's last line had no newline
        yield values


def _produce_uniform(
    chunks: Iterable[list[bytes]], batcher: _Batcher, routing: _Routing, count: int
) -> None:
    """Every record has the same key (or none) and so the same partition rule: a chunk of
    lines is a batch, split only when it would outgrow the byte limit.
    """
    key = routing.key
    headers = routing.headers
    sticky = StickyPartitioner(count)
    if routing.partition is not None:
        fixed: int | None = routing.partition
    elif key is not None:
        fixed = partition_for_key(key, count)
    else:
        fixed = None
    overhead = routing.record_overhead + (len(key) if key is not None else 0)
    limit = routing.batch_bytes_max
    for values in chunks:
        if sum(map(len, values)) + overhead * len(values) <= limit:
            groups = [values]
        else:
            groups = []
            group: list[bytes] = []
            size = 0
            for value in values:
                if group and size + len(value) + overhead > limit:
                    groups.append(group)
                    group, size = [], 0
                group.append(value)
                size += len(value) + overhead
            groups.append(group)
        for group in groups:
            target = sticky.partition() if fixed is None else fixed
            batcher.append(target, [NewRecord(key, value, None, headers) for value in group])
            if fixed is None:
                sticky.next_batch()  # the batch was sent: stick to another partition


def _produce_split(
    chunks: Iterable[list[bytes]], batcher: _Batcher, routing: _Routing, count: int
) -> None:
    """Each line carries its own key: route record by record into per-partition buffers."""
    separator = routing.separator
    assert separator is not None
    partition = routing.partition
    headers = routing.headers
    limit = routing.batch_bytes_max
    send_every_chunk = routing.chunk_records == 1
    sticky = StickyPartitioner(count)
    pending = batcher.pending
    sizes = batcher.pending_bytes
    send = batcher.send
    overhead = routing.record_overhead
    # Keys repeat; hashing each once saves most of the partitioner's cost on large inputs.
    targets: dict[bytes, int] = {}
    for values in chunks:
        for line in values:
            head, found, tail = line.partition(separator)
            key, value = (head, tail) if found else (None, line)
            if partition is not None:
                target = partition
            elif key is None:
                target = sticky.partition()
            else:
                cached = targets.get(key)
                if cached is None:
                    cached = partition_for_key(key, count)
                    if len(targets) < _KEY_CACHE_SIZE:
                        targets[key] = cached
                target = cached
            size = len(line) + overhead
            while pending[target] and sizes[target] + size > limit:
                # Full by bytes: send first, so no batch outgrows `max.message.bytes`.
                send(target)
                if target == sticky.partition() and partition is None:
                    sticky.next_batch()
                    if key is None:
                        target = sticky.partition()
            bucket = pending[target]
            bucket.append(NewRecord(key, value, None, headers))
            sizes[target] += size
            if len(bucket) >= _BATCH_RECORDS_MAX:
                send(target)
                if target == sticky.partition() and partition is None:
                    sticky.next_batch()
        if send_every_chunk:
            batcher.send_all()
    batcher.send_all()


def produce(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(metavar="TOPIC", help="Topic to produce to.")],
    key: Annotated[
        str | None, typer.Option("--key", "-k", help="Give every record this key.")
    ] = None,
    key_separator: Annotated[
        str | None,
        typer.Option(
            "--key-separator",
            metavar="SEP",
            help="Split each line at the first SEP into key and value (no SEP: no key).",
        ),
    ] = None,
    partition: Annotated[
        int | None,
        typer.Option("--partition", "-p", min=0, help="Send every record to this partition."),
    ] = None,
    compression: Annotated[
        CompressionChoice | None,
        typer.Option(
            "--compression",
            "-z",
            case_sensitive=False,
            help="Batch compression (default: the topic's compression.type).",
        ),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header", "-H", metavar="KEY=VALUE", help="Add a header to every record (repeatable)."
        ),
    ] = None,
    data_dir: DataDirOption = None,
    brokers: BrokersOption = None,
) -> None:
    """Produce one record per stdin line (only the trailing newline is removed).

    Keyed records go where Kafka's default partitioner would put them; keyless ones stick to
    one partition per batch. The summary on stderr is printed once every record is on disk (with
    --brokers: once every record is acknowledged by all in-sync replicas; exit 1 if any failed).
    """
    if key is not None and key_separator is not None:
        raise typer.BadParameter("use --key or --key-separator, not both")
    if key_separator == "":
        raise typer.BadParameter("the key separator must not be empty")
    with reporting_errors():
        headers = tuple(
            (name, value.encode()) for name, value in parse_key_values(header, "header").items()
        )
    remote = resolve_brokers(ctx, brokers)
    if remote is not None:
        from headwater.cli import _remote

        _remote.produce(
            remote,
            topic,
            key=None if key is None else key.encode(),
            separator=None if key_separator is None else key_separator.encode(),
            partition=partition,
            compression=None if compression is None else compression.value,
            headers=headers,
        )
        return
    started = time.monotonic()
    ticker = _Ticker(topic)
    with open_data_dir(ctx, data_dir, "headwater topic produce") as manager:
        logs = manager.partitions(topic)
        if partition is not None:
            manager.partition(topic, partition)  # raises for a partition the topic lacks
        config = manager.topic(topic).config
        codec = None if compression is None else _CODECS[compression]
        batcher = _Batcher(logs, codec, ticker)
        stdin = sys.stdin.buffer
        interrupted = False
        routing = _Routing(
            key=None if key is None else key.encode(),
            separator=None if key_separator is None else key_separator.encode(),
            partition=partition,
            headers=headers,
            batch_bytes_max=max(
                1, min(_BATCH_BYTES_MAX, config.max_message_bytes - 2 * BATCH_HEADER_SIZE)
            ),
            # At a terminal each line is a record at once, not when 1,000 have been typed.
            chunk_records=1 if stdin.isatty() else _BATCH_RECORDS_MAX,
        )
        run = _produce_uniform if routing.separator is None else _produce_split
        try:
            run(_chunks(stdin, routing.chunk_records), batcher, routing, len(logs))
        except KeyboardInterrupt:
            # Records already buffered are kept: send them, then report how far we got.
            interrupted = True
            batcher.send_all()
        except HeadwaterError as error:
            ticker.stop()
            batcher.sync()
            error_line(f"{error} ({batcher.produced} records were produced before it)")
            raise typer.Exit(1) from None
        finally:
            ticker.stop()
        batcher.sync()
    elapsed = time.monotonic() - started
    plural = "record" if batcher.produced == 1 else "records"
    typer.echo(f"produced {batcher.produced} {plural} to {topic} in {elapsed:.2f}s", err=True)
    if interrupted:
        raise typer.Exit(130)


__all__ = ["CompressionChoice", "produce"]
