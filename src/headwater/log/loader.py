"""Opening a partition directory, with crash recovery.

Recovery runs in numbered passes:
  1. Finish or undo interrupted file operations: delete `.cleaned` and `.tmp` files (a
     compaction that did not complete), rename a `.swap` file over its `.log` (a compaction that
     completed but did not install), delete index files without a `.log`.
  2. Open segments in base-offset order. After a clean shutdown every index is trusted (after a
     sanity check); otherwise segments below the recovery point are trusted the same way.
  3. Re-validate every segment from the one holding the recovery point: walk every batch, check
     its CRC and offsets, rebuild both indexes, and cut the log at the first invalid batch (a
     torn or garbage tail). Segments after a cut are deleted: they follow a hole.
  4. fsync what was recovered, so the new recovery point is the log end offset.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from headwater._invariant import invariant
from headwater.errors import CorruptRecordError
from headwater.log._files import sync_directory
from headwater.log.config import TopicConfig
from headwater.log.partition_log import (
    PartitionLog,
    producer_snapshot_offsets,
    producer_snapshot_path,
)
from headwater.log.producer_state import CorruptProducerSnapshotError, ProducerStateManager
from headwater.log.record_batch import control_type_of
from headwater.log.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, LogSegment

_log = logging.getLogger(__name__)

CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
TEMPORARY_SUFFIX = ".tmp"


@dataclass(slots=True)
class RecoveryReport:
    """What loading a partition found and did."""

    segments: int = 0
    segments_validated: int = 0
    truncated_bytes: int = 0
    segments_deleted: int = 0
    problems: list[str] = field(default_factory=list)


def _base_offset(file_name: str) -> int | None:
    stem = file_name.split(".", 1)[0]
    return int(stem) if len(stem) == 20 and stem.isdigit() else None


def load_partition_log(
    directory: str,
    topic: str,
    partition: int,
    config: TopicConfig,
    *,
    recovery_point: int,
    log_start_offset: int,
    clean_shutdown: bool,
) -> tuple[PartitionLog, RecoveryReport]:
    """Open (creating if needed) and, unless shut down cleanly, recover one partition."""
    report = RecoveryReport()
    os.makedirs(directory, exist_ok=True)

    # Pass 1: interrupted compactions and orphans.
    names = sorted(os.listdir(directory))
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith((CLEANED_SUFFIX, TEMPORARY_SUFFIX)):
            os.unlink(path)
        elif name.endswith(LOG_SUFFIX + SWAP_SUFFIX):
            target = path[: -len(SWAP_SUFFIX)]
            os.replace(path, target)
            for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                stale = target[: -len(LOG_SUFFIX)] + suffix
                if os.path.exists(stale):
                    os.unlink(stale)
            clean_shutdown = False  # the swapped-in segment's indexes must be rebuilt
    names = sorted(os.listdir(directory))
    log_bases = sorted(
        base
        for name in names
        if name.endswith(LOG_SUFFIX) and (base := _base_offset(name)) is not None
    )
    for name in names:
        if name.endswith((INDEX_SUFFIX, TIME_INDEX_SUFFIX)) and _base_offset(name) not in log_bases:
            os.unlink(os.path.join(directory, name))

    # Pass 2 and 3: open, and re-validate from the recovery point on.
    interval = config.index_interval_bytes
    segments: list[LogSegment] = []
    cut = False
    for position, base in enumerate(log_bases):
        if cut:
            stray = LogSegment(directory, base, interval, new=False)
            stray.delete_files()
            stray.close()
            report.segments_deleted += 1
            continue
        next_base = log_bases[position + 1] if position + 1 < len(log_bases) else None
        trusted = clean_shutdown or (next_base is not None and next_base <= recovery_point)
        if trusted:
            segment = LogSegment.open_existing(directory, base, interval)
        else:
            segment = LogSegment(directory, base, interval, new=False)
            expected = segments[-1].next_offset if segments else None
            result = segment.scan(verify=True, truncate=True, min_offset=expected)
            report.segments_validated += 1
            if result.error is not None:
                report.truncated_bytes += result.truncated_bytes
                report.problems.append(f"{topic}-{partition} segment {base}: {result.error}")
                _log.warning(
                    "recovery cut %s-%d at offset %d: %s",
                    topic,
                    partition,
                    result.next_offset,
                    result.error,
                )
                cut = True
        if segments and segment.base_offset < segments[-1].next_offset and not segment.is_empty():
            report.problems.append(f"{topic}-{partition} segment {base} overlaps the one before it")
            segment.delete_files()
            segment.close()
            report.segments_deleted += 1
            cut = True
            continue
        if cut and segment.is_empty() and segments:
            segment.delete_files()
            segment.close()
            report.segments_deleted += 1
            continue
        segments.append(segment)
    report.segments = len(segments)

    log_end = segments[-1].next_offset if segments else 0
    if not segments or (log_start_offset > log_end):
        # An empty partition, or one whose records were all deleted before the crash.
        for segment in segments:
            segment.delete_files()
            segment.close()
        start = max(log_start_offset, log_end)
        segments = [LogSegment.create(directory, start, interval)]
        log_end = start
    log_start = max(log_start_offset, segments[0].base_offset)
    invariant(log_start <= log_end, "log start offset within the log")

    # Pass 4: everything recovered is made durable before it counts as such.
    if not clean_shutdown:
        for segment in segments:
            if segment.next_offset > recovery_point or segment is segments[-1]:
                segment.flush(indexes=True)
        sync_directory(directory)
    producers = _load_producers(directory, segments, log_end)
    log = PartitionLog(
        directory,
        topic,
        partition,
        config,
        segments,
        log_start_offset=log_start,
        recovery_point=log_end,
        producers=producers,
    )
    return log, report


def _load_producers(
    directory: str, segments: list[LogSegment], log_end: int
) -> ProducerStateManager:
    """Idempotent producers' state: the newest snapshot the recovered log still covers, then
    the producer fields of the batch headers after it (a pass over headers, not records, but for
    the one record of each transaction marker, whose type ends its transaction one way or the
    other). A snapshot of an older version is skipped, as a damaged one is.

    Snapshots past the log end saw records that recovery removed: they are deleted, so no later
    open can mistake them for the state of records appended since.
    """
    producers: ProducerStateManager | None = None
    for offset in reversed(producer_snapshot_offsets(directory)):
        path = producer_snapshot_path(directory, offset)
        if offset > log_end:
            os.unlink(path)
            continue
        try:
            with open(path, "rb") as file:
                restored = ProducerStateManager.restore(file.read())
        except CorruptProducerSnapshotError as error:
            _log.warning("skipping producer snapshot %s: %s", path, error)
            continue
        if restored.end_offset <= offset:
            producers = restored
            break
        _log.warning("skipping producer snapshot %s: it ends past its name", path)
    if producers is None:
        producers = ProducerStateManager()
    start = producers.end_offset
    for segment in segments:
        if segment.next_offset <= start:
            continue
        try:
            for position, header in segment.headers_from(0, segment.size_bytes):
                if header.base_offset < start:
                    continue
                control_type = None
                if header.is_control and header.producer_id >= 0:
                    control_type = control_type_of(segment.read(position, header.size_bytes))
                producers.replay(header, header.base_offset, control_type)
        except CorruptRecordError as error:
            # A damaged trusted segment is reported when read; its producers are forgotten
            # (their next batch gets UNKNOWN_PRODUCER_ID and the client starts a new epoch).
            _log.warning("producer state of %s skips a damaged segment: %s", directory, error)
    return producers


__all__ = ["RecoveryReport", "load_partition_log"]
