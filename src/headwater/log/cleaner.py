"""Key compaction (`cleanup.policy=compact`): keep only the newest record of each key.

Only inactive segments are cleaned, offsets never change (a cleaned batch keeps each retained
record's offset), and a tombstone (a null value) stays until its segment is older than
`delete.retention.ms`, so consumers catching up within that time see the delete. Each cleaned
segment replaces its original in one atomic rename, with crash-safe intermediate names that
the loader completes or discards (see `loader`).

Transactions: nothing at or past the last stable offset is cleaned (an open transaction may
still abort). Below it every transactional batch is decided: the records of aborted ones are
dropped and never enter the key map, so they cannot hide a committed value; control batches
(the markers) are kept as they are, which costs a few bytes and keeps every reader's view of
where each transaction ended.

Runs on the maintenance thread; installs cleaned segments while holding the log's lock.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

from headwater._invariant import invariant
from headwater.log._files import sync_directory
from headwater.log.loader import CLEANED_SUFFIX, SWAP_SUFFIX
from headwater.log.partition_log import PartitionLog
from headwater.log.producer_state import AbortedTxn
from headwater.log.record_batch import (
    BatchHeader,
    NewRecord,
    Record,
    decode_records,
    encode_batch,
)
from headwater.log.segment import LogSegment


@dataclass(frozen=True, slots=True)
class CleanResult:
    segments_cleaned: int
    records_removed: int
    bytes_before: int
    bytes_after: int


def _dirty_ratio(log: PartitionLog, closed: list[LogSegment]) -> float:
    total = sum(segment.size_bytes for segment in closed)
    if total == 0:
        return 0.0
    dirty = sum(
        segment.size_bytes for segment in closed if segment.next_offset > log.first_dirty_offset
    )
    return dirty / total


def clean_partition(log: PartitionLog, now: int, *, force: bool = False) -> CleanResult:
    """Compact `log`'s inactive segments if enough of them is dirty (or `force`)."""
    segments = log.segments
    last_stable = log.last_stable_offset
    horizon = now - log.config.min_compaction_lag_ms
    closed = []
    for segment in segments[:-1]:
        if segment.max_timestamp > horizon and log.config.min_compaction_lag_ms > 0:
            break  # too young to compact, and so is everything after it
        if segment.next_offset > last_stable:
            break  # holds records of a transaction still open, or not yet visible
        closed.append(segment)
    nothing = CleanResult(0, 0, 0, 0)
    if not closed or (
        not force and _dirty_ratio(log, closed) < log.config.min_cleanable_dirty_ratio
    ):
        return nothing

    # Aborted transactions with records in the cleanable range: their data goes.
    aborted = _AbortedRanges(log.aborted_transactions_in(closed[0].base_offset, last_stable))

    # Pass 1: the newest offset of every key in the cleanable range.
    latest: dict[bytes, int] = {}
    for segment in closed:
        for position, header in segment.headers_from(0, segment.size_bytes):
            if header.is_control or aborted.holds(header):
                continue
            for record in decode_records(segment.read(position, header.size_bytes)):
                if record.key is not None:
                    latest[record.key] = record.offset

    # Pass 2: rewrite each segment with only what survives.
    removed = before = after = 0
    tombstone_horizon = now - log.config.delete_retention_ms
    for segment in closed:
        drop_tombstones = segment.max_timestamp < tombstone_horizon
        output = bytearray()
        changed = False
        for position, header in segment.headers_from(0, segment.size_bytes):
            data = segment.read(position, header.size_bytes)
            if header.is_control:
                output += data
                continue
            if aborted.holds(header):
                changed = True
                removed += header.record_count
                continue
            records = decode_records(data)
            kept = [
                record
                for record in records
                if record.key is not None
                and latest.get(record.key) == record.offset
                and not (record.value is None and drop_tombstones)
            ]
            if len(kept) == len(records):
                output += data
                continue
            changed = True
            removed += len(records) - len(kept)
            if kept:
                output += _rebuild(header, kept)
        before += segment.size_bytes
        after += len(output)
        if changed:
            _install(log, segment, bytes(output))
    log.first_dirty_offset = closed[-1].next_offset
    # Every aborted batch below here is gone, so nothing there needs its aborted entry (the
    # markers stay: Kafka drops them only after delete.retention.ms, and so far we never do).
    log.forget_aborted_below(closed[-1].next_offset)
    return CleanResult(len(closed), removed, before, after)


class _AbortedRanges:
    """Answers whether a data batch belongs to an aborted transaction.

    A producer has one transaction open at a time, so its aborted ranges do not overlap and,
    in marker order, are sorted: a bisection finds the one that could hold a batch.
    """

    __slots__ = ("_by_producer",)

    def __init__(self, aborted: list[AbortedTxn]) -> None:
        # producer id -> (last offsets, first offsets), in marker order.
        self._by_producer: dict[int, tuple[list[int], list[int]]] = {}
        for txn in aborted:
            lasts, firsts = self._by_producer.setdefault(txn.producer_id, ([], []))
            lasts.append(txn.last_offset)
            firsts.append(txn.first_offset)

    def holds(self, header: BatchHeader) -> bool:
        if not header.is_transactional:
            return False
        ranges = self._by_producer.get(header.producer_id)
        if ranges is None:
            return False
        lasts, firsts = ranges
        base = header.base_offset
        index = bisect.bisect_left(lasts, base)
        return index < len(lasts) and firsts[index] <= base


def _rebuild(header: BatchHeader, kept: list[Record]) -> bytes:
    """A batch of the retained records, keeping offsets, timestamps and producer fields."""
    base = kept[0].offset
    return encode_batch(
        [NewRecord(record.key, record.value, record.timestamp, record.headers) for record in kept],
        base_offset=base,
        offset_deltas=[record.offset - base for record in kept],
        compression=header.compression,
        timestamp_type=header.timestamp_type,
        producer_id=header.producer_id,
        producer_epoch=header.producer_epoch,
        base_sequence=header.base_sequence,
        partition_leader_epoch=header.partition_leader_epoch,
        is_transactional=header.is_transactional,
    )


def _install(log: PartitionLog, old: LogSegment, data: bytes) -> None:
    """Replace `old` by a segment holding `data`, crash-safely (see the loader's pass 1)."""
    directory = log.directory
    cleaned = old.path + CLEANED_SUFFIX
    swap = old.path + SWAP_SUFFIX
    with open(cleaned, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    with log._lock:
        if old not in log.segments:
            os.unlink(cleaned)  # deleted by retention meanwhile
            return
        os.rename(cleaned, swap)
        sync_directory(directory)
        # From here a crash finishes the swap at load. Readers keep the old inode open.
        len(old.offset_index)  # load the old indexes before their files go
        len(old.time_index)
        for path in (old.offset_index.path, old.time_index.path):
            if os.path.exists(path):
                os.unlink(path)
        if not data and log.segments[0] is not old:
            # Nothing survived: drop the segment. The first one stays, even empty, so the log
            # start offset is the same after a restart as before it.
            os.unlink(swap)
            os.unlink(old.path)
            sync_directory(directory)
            log.replace_segment(old, None)
            return
        os.replace(swap, old.path)
        sync_directory(directory)
        new = LogSegment(directory, old.base_offset, log.config.index_interval_bytes, new=False)
        new.scan(verify=True, truncate=False)
        invariant(new.size_bytes == len(data), "cleaned segment written whole")
        new.seal()
        log.replace_segment(old, new)


__all__ = ["CleanResult", "clean_partition"]
