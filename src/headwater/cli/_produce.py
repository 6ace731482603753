"""`headwater topic produce`: stdin lines to records, batched per partition.

Lines are read in binary and only the trailing newline is removed, so any bytes survive. Records
are buffered per partition and appended as one batch when a batch is full (or at EOF), which is
what makes large inputs fast: the cost of a batch (encoding, CRC, a write) is shared by up to
`_BATCH_RECORDS_MAX` records.

Durability: batches are appended without waiting for fsync, and every partition that needs a
sync (per its `flush.messages`) is synced at least every `_SYNC_INTERVAL_S` and always before the
summary is printed. The summary is the acknowledgement: what it counts is on disk.
"""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Annotated

import typer
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.text import Text

from headwater.cli._common import (
    DataDirOption,
    error_line,
    open_data_dir,
    parse_key_values,
    reporting_errors,
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
    """Per-partition buffers of records, appended as one batch each when full."""

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

    def send(self, partition: int) -> None:
        """Append the partition's buffered records as one batch."""
        records = self.pending[partition]
        if not records:
            return
        result = self.logs[partition].append_records(
            records, compression=self._compression, wait_for_flush=False
        )
        self.pending[partition] = []
        self.pending_bytes[partition] = 0
        self.produced += len(records)
        if result.flush_due:
            self._needs_sync.add(partition)
        if time.monotonic() - self._last_sync >= _SYNC_INTERVAL_S:
            self.sync()
        self._ticker.update(self.produced)

    def send_all(self) -> None:
        for partition in range(len(self.logs)):
            self.send(partition)

    def sync(self) -> None:
        """fsync every partition whose flush policy asked for it."""
        for partition in sorted(self._needs_sync):
            self.logs[partition].flush()
        self._needs_sync.clear()
        self._last_sync = time.monotonic()


def _produce_lines(
    lines: Iterable[bytes],
    batcher: _Batcher,
    *,
    key: bytes | None,
    separator: bytes | None,
    partition: int | None,
    headers: tuple[tuple[str, bytes | None], ...],
    batch_bytes_max: int,
    send_every_line: bool,
) -> None:
    """The hot loop: one record per line, routed and buffered."""
    count = len(batcher.logs)
    sticky = StickyPartitioner(count)
    pending = batcher.pending
    sizes = batcher.pending_bytes
    send = batcher.send
    overhead = _RECORD_OVERHEAD_BYTES + sum(
        len(name) + len(value or b"") + _HEADER_OVERHEAD_BYTES for name, value in headers
    )
    record_key = key
    for line in lines:
        if line[-1:] == b"\n":
            line = line[:-1]
        value = line
        if separator is not None:
            head, found, tail = line.partition(separator)
            record_key, value = (head, tail) if found else (None, line)
        if partition is not None:
            target = partition
        elif record_key is not None:
            target = partition_for_key(record_key, count)
        else:
            target = sticky.partition()
        size = len(value) + overhead + (len(record_key) if record_key is not None else 0)
        while pending[target] and sizes[target] + size > batch_bytes_max:
            # Full by bytes: send first, so no batch outgrows `max.message.bytes`.
            send(target)
            if target == sticky.partition() and partition is None:
                sticky.next_batch()
                if record_key is None:
                    target = sticky.partition()
        bucket = pending[target]
        bucket.append(NewRecord(record_key, value, None, headers))
        sizes[target] += size
        if len(bucket) >= _BATCH_RECORDS_MAX or send_every_line:
            send(target)
            if target == sticky.partition() and partition is None:
                sticky.next_batch()
    batcher.send_all()


def produce(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic to produce to.")],
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
) -> None:
    """Produce one record per stdin line (only the trailing newline is removed).

    Keyed records go where Kafka's default partitioner would put them; keyless ones stick to
    one partition per batch. The summary on stderr is printed once every record is on disk.
    """
    if key is not None and key_separator is not None:
        raise typer.BadParameter("use --key or --key-separator, not both")
    if key_separator == "":
        raise typer.BadParameter("the key separator must not be empty")
    with reporting_errors():
        headers = tuple(
            (name, value.encode()) for name, value in parse_key_values(header, "header").items()
        )
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
        try:
            _produce_lines(
                stdin,
                batcher,
                key=None if key is None else key.encode(),
                separator=None if key_separator is None else key_separator.encode(),
                partition=partition,
                headers=headers,
                batch_bytes_max=max(
                    1, min(_BATCH_BYTES_MAX, config.max_message_bytes - 2 * BATCH_HEADER_SIZE)
                ),
                send_every_line=stdin.isatty(),
            )
        except KeyboardInterrupt:
            # Lines already read are kept: send them, then report how far we got.
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
