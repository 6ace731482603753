"""Idempotent-producer state of one partition: Kafka's `ProducerStateManager`, synchronous.

For every producer id that wrote to the partition it keeps the producer epoch and the metadata
of its last five batches (`BATCHES_PER_PRODUCER`, the most a Kafka producer has in flight per
partition). A batch from an idempotent producer is checked against that state before it is
appended (`check`) and recorded after the append succeeded (`update`):

* a batch with an older epoch than the partition has seen is rejected (INVALID_PRODUCER_EPOCH);
* a retry of one of the last five batches (same epoch, same first and last sequence) is a
  duplicate: the broker does not append it again and answers with the original offsets;
* otherwise the sequence must continue the producer's last one (wrapping at 2**31 - 1 to 0), or
  start at 0 for a new epoch, else OUT_OF_ORDER_SEQUENCE_NUMBER;
* a producer id without state is accepted only from sequence 0, else UNKNOWN_PRODUCER_ID. (Kafka
  2.5+ accepts any sequence there, to survive state lost to retention; answering 59 instead makes
  librdkafka and the Java client bump the epoch and start again at sequence 0, which is safe.)

Transactions: a producer's first transactional data batch opens its transaction here, at that
batch's base offset; its next transaction marker (a control batch) closes it. A marker from an
older epoch is rejected (INVALID_PRODUCER_EPOCH); one from a newer epoch (the coordinator fencing
the producer) moves the epoch up, so the new epoch starts at sequence 0. An ABORT marker that
closes a transaction records it as aborted, (producer, first offset, marker offset), until the
log start passes the marker (`prune_aborted`). The first offset of the oldest open transaction
is where the last stable offset stops. A producer with an open transaction is never evicted:
forgetting it would expose uncommitted records.

The state is bounded: at most `max_producer_ids` producers are kept, the least recently written
one is evicted first (Kafka expires idle producers after `producer.id.expiration.ms`).

It survives restarts as a snapshot (`snapshot`/`restore`, versioned and CRC-32C checked) plus
the batch headers appended after it (`rebuild`). `end_offset` is the offset after the last
batch applied; recovery replays the log's headers from there.

Not thread-safe: the partition log calls it under its own lock.
"""

from __future__ import annotations

import bisect
import itertools
import struct
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import NamedTuple

import crc32c

from headwater._invariant import invariant
from headwater.errors import HeadwaterError, InvalidRecordError
from headwater.log.record_batch import (
    TRANSACTION_FLAGS,
    BatchHeader,
    ControlType,
    TimestampType,
)

__all__ = [
    "BATCHES_PER_PRODUCER",
    "MAX_PRODUCER_IDS",
    "SEQUENCE_MAX",
    "SNAPSHOT_VERSION",
    "AbortedTxn",
    "BatchMetadata",
    "CorruptProducerSnapshotError",
    "DuplicateOf",
    "InvalidProducerEpochError",
    "InvalidTxnStateError",
    "OutOfOrderSequenceError",
    "ProducerEntry",
    "ProducerStateError",
    "ProducerStateManager",
    "UnknownProducerIdError",
    "last_sequence",
]

BATCHES_PER_PRODUCER = 5
"""Batches remembered per producer for duplicate detection (Kafka's NUM_BATCHES_TO_RETAIN)."""

MAX_PRODUCER_IDS = 10_000
"""Producer ids kept per partition by default; the least recently written is evicted first."""

SEQUENCE_MAX = 2**31 - 1
"""The largest sequence number; the one after it is 0."""

SNAPSHOT_VERSION = 2
"""2 added open transactions and aborted ones; a snapshot of another version is rebuilt."""


# --- errors ---------------------------------------------------------------------------------


class ProducerStateError(HeadwaterError):
    """A base for the produce errors of idempotent producers."""


class OutOfOrderSequenceError(ProducerStateError):
    """The batch's sequence does not continue the producer's (a gap, or a stale retry)."""

    error_code = 45  # OUT_OF_ORDER_SEQUENCE_NUMBER


class InvalidProducerEpochError(ProducerStateError):
    """The batch comes from an older epoch than the partition has seen: a fenced producer."""

    error_code = 47  # INVALID_PRODUCER_EPOCH


class UnknownProducerIdError(ProducerStateError):
    """The partition has no state for the producer id and the batch does not start at 0."""

    error_code = 59  # UNKNOWN_PRODUCER_ID


class InvalidTxnStateError(ProducerStateError):
    """A non-transactional batch from a producer with a transaction open on the partition."""

    error_code = 48  # INVALID_TXN_STATE


class CorruptProducerSnapshotError(HeadwaterError):
    """A snapshot failed its CRC or structural checks; rebuild the state from the log."""


# --- state ----------------------------------------------------------------------------------


class DuplicateOf(NamedTuple):
    """The batch is a retry of one already in the log, at these offsets."""

    base_offset: int
    last_offset: int
    log_append_time: int


class BatchMetadata(NamedTuple):
    """One appended batch of a producer."""

    base_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int
    log_append_time: int


class ProducerEntry(NamedTuple):
    """A read-only view of one producer's state, oldest batch first."""

    epoch: int
    batches: tuple[BatchMetadata, ...]


class AbortedTxn(NamedTuple):
    """An aborted transaction: its producer's records in [first_offset, last_offset] are void.

    `last_offset` is the ABORT marker's offset. `last_stable_offset` is the partition's first
    unstable offset right after the marker (Kafka's txn index keeps the same): it never
    decreases along the list, and no later entry starts below it, so a search can stop there.
    """

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


class _Entry:
    __slots__ = ("batches", "epoch")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches: deque[BatchMetadata] = deque(maxlen=BATCHES_PER_PRODUCER)


def last_sequence(base_sequence: int, last_offset_delta: int) -> int:
    """The sequence of a batch's last record: Kafka's `incrementSequence`, wrapping to 0."""
    if base_sequence > SEQUENCE_MAX - last_offset_delta:
        return last_offset_delta - (SEQUENCE_MAX - base_sequence) - 1
    return base_sequence + last_offset_delta


def _in_sequence(last: int, following: int) -> bool:
    return following == last + 1 or (following == 0 and last == SEQUENCE_MAX)


# --- snapshot format ------------------------------------------------------------------------
#
#   header   version int16, crc uint32 (CRC-32C of everything after it)
#   body     end_offset int64, producer count int32,
#            then per producer (least recently written first):
#              producer_id int64, epoch int16, open transaction's first offset int64 (-1: none),
#              batch count int8 (0 when only a marker was seen),
#              then per batch: base_sequence int32, last_sequence int32,
#                              base_offset int64, last_offset int64, log_append_time int64
#            aborted count int32, then per aborted transaction (by marker offset):
#              producer_id int64, first_offset int64, last_offset int64, last_stable_offset int64

_SNAPSHOT_HEADER = struct.Struct(">hI")
_BODY_HEADER = struct.Struct(">qi")
_PRODUCER = struct.Struct(">qhqb")
_BATCH = struct.Struct(">iiqqq")
_COUNT = struct.Struct(">i")
_ABORTED = struct.Struct(">qqqq")
_NO_TRANSACTION = -1


class ProducerStateManager:
    """The idempotent-producer state of one partition; see the module docstring."""

    __slots__ = (
        "_aborted",
        "_end_offset",
        "_first_unstable_offset",
        "_max_producer_ids",
        "_ongoing",
        "_producers",
    )

    def __init__(self, *, max_producer_ids: int = MAX_PRODUCER_IDS) -> None:
        if max_producer_ids < 1:
            raise ValueError(f"max_producer_ids must be positive, not {max_producer_ids}")
        self._max_producer_ids = max_producer_ids
        self._producers: OrderedDict[int, _Entry] = OrderedDict()  # least recently written first
        self._end_offset = 0
        # Producer id -> first offset of its open transaction here; oldest opened first.
        self._ongoing: dict[int, int] = {}
        # min(self._ongoing.values()), kept so the last stable offset costs nothing to read.
        self._first_unstable_offset: int | None = None
        self._aborted: list[AbortedTxn] = []  # by marker offset

    # --- queries -----------------------------------------------------------------------------

    @property
    def end_offset(self) -> int:
        """The offset after the last batch applied (0 when none was)."""
        return self._end_offset

    @property
    def max_producer_ids(self) -> int:
        return self._max_producer_ids

    @property
    def first_unstable_offset(self) -> int | None:
        """The first offset of the oldest open transaction; None when none is open."""
        return self._first_unstable_offset

    def __len__(self) -> int:
        return len(self._producers)

    def __contains__(self, producer_id: object) -> bool:
        return producer_id in self._producers

    def entry(self, producer_id: int) -> ProducerEntry | None:
        found = self._producers.get(producer_id)
        if found is None:
            return None
        return ProducerEntry(found.epoch, tuple(found.batches))

    def producer_ids(self) -> list[int]:
        """The producer ids kept, least recently written first (the eviction order)."""
        return list(self._producers)

    def has_open_transaction(self, producer_id: int) -> bool:
        return producer_id in self._ongoing

    def ongoing_transactions(self) -> dict[int, int]:
        """Producer id -> first offset of its open transaction, a copy."""
        return dict(self._ongoing)

    def aborted_transactions(self) -> list[AbortedTxn]:
        """Every aborted transaction kept, by marker offset, a copy."""
        return list(self._aborted)

    def aborted_overlapping(self, first_offset: int, end_offset: int) -> list[AbortedTxn]:
        """The aborted transactions with records in [first_offset, end_offset)."""
        aborted = self._aborted
        found: list[AbortedTxn] = []
        start = bisect.bisect_left(aborted, first_offset, key=_last_offset_of)
        for index in range(start, len(aborted)):
            txn = aborted[index]
            if txn.first_offset < end_offset:
                found.append(txn)
            if txn.last_stable_offset >= end_offset:
                break  # every later one starts at or after end_offset
        return found

    # --- append path -------------------------------------------------------------------------

    def check(self, header: BatchHeader) -> DuplicateOf | None:
        """Validate an idempotent batch before it is appended; the state does not change.

        Returns None when the batch should be appended, `DuplicateOf` when it is a retry of one
        of the producer's last five batches (do not append; answer with those offsets). Raises
        `InvalidProducerEpochError`, `OutOfOrderSequenceError`, `UnknownProducerIdError`, or
        `InvalidRecordError` for a producer id with a negative epoch or sequence. Batches
        without a producer id are not checked; of a control batch (a transaction marker), only
        the epoch is.
        """
        producer_id = header.producer_id
        if producer_id < 0:
            return None
        epoch = header.producer_epoch
        if header.is_control:
            self._check_marker_epoch(producer_id, epoch)
            return None
        if not header.is_transactional and producer_id in self._ongoing:
            raise InvalidTxnStateError(
                f"producer {producer_id} has a transaction open here: its batch must be "
                f"transactional until the transaction ends"
            )
        base_sequence = header.base_sequence
        if base_sequence < 0 or epoch < 0:
            raise InvalidRecordError(
                f"batch of producer {producer_id} has epoch {epoch} and sequence {base_sequence}"
            )
        entry = self._producers.get(producer_id)
        if entry is None:
            if base_sequence != 0:
                raise UnknownProducerIdError(
                    f"no state for producer {producer_id}; its batch starts at sequence "
                    f"{base_sequence}, not 0"
                )
            return None
        if epoch < entry.epoch:
            raise InvalidProducerEpochError(
                f"producer {producer_id} sent epoch {epoch}, the partition has seen {entry.epoch}"
            )
        if epoch > entry.epoch or not entry.batches:
            # A new epoch, or one a marker started (a fencing coordinator bumped it): from 0.
            if base_sequence != 0:
                raise OutOfOrderSequenceError(
                    f"producer {producer_id} starts epoch {epoch} at sequence {base_sequence}, "
                    f"not 0"
                )
            return None
        last = last_sequence(base_sequence, header.last_offset_delta)
        for batch in entry.batches:
            if batch.base_sequence == base_sequence and batch.last_sequence == last:
                return DuplicateOf(batch.base_offset, batch.last_offset, batch.log_append_time)
        expected_after = entry.batches[-1].last_sequence
        if not _in_sequence(expected_after, base_sequence):
            raise OutOfOrderSequenceError(
                f"producer {producer_id} epoch {epoch} sent sequence {base_sequence}, "
                f"expected {0 if expected_after == SEQUENCE_MAX else expected_after + 1}"
            )
        return None

    def _check_marker_epoch(self, producer_id: int, epoch: int) -> None:
        if epoch < 0:
            raise InvalidRecordError(
                f"transaction marker of producer {producer_id} has epoch {epoch}"
            )
        entry = self._producers.get(producer_id)
        if entry is not None and epoch < entry.epoch:
            raise InvalidProducerEpochError(
                f"transaction marker of producer {producer_id} has epoch {epoch}, "
                f"the partition has seen {entry.epoch}"
            )

    def update(
        self,
        header: BatchHeader,
        base_offset: int,
        log_append_time: int,
        control_type: ControlType | None = None,
    ) -> None:
        """Record a batch after it was appended at `base_offset`.

        `log_append_time` is what the produce response reports: the stamped time for a
        LogAppendTime topic, -1 otherwise (what `rebuild` derives from a stored header). Never
        validates: recovery applies whatever the log holds. Batches without a producer id only
        move `end_offset`. A transaction marker (a control batch with a producer id) needs its
        `control_type`, read from its control record.
        """
        last_offset = base_offset + header.last_offset_delta
        invariant(
            base_offset >= self._end_offset,
            f"batch at offset {base_offset} is below the producer state's end {self._end_offset}",
        )
        self._end_offset = last_offset + 1
        producer_id = header.producer_id
        if producer_id < 0:
            return
        if header.attributes & TRANSACTION_FLAGS:
            if header.is_control:
                self._end_transaction(header, base_offset, control_type)
                return
            if producer_id not in self._ongoing:
                self._ongoing[producer_id] = base_offset
                if self._first_unstable_offset is None:
                    self._first_unstable_offset = base_offset
        entry = self._touch(producer_id, header.producer_epoch)
        base_sequence = header.base_sequence
        entry.batches.append(
            BatchMetadata(
                base_sequence,
                last_sequence(base_sequence, header.last_offset_delta),
                base_offset,
                last_offset,
                log_append_time,
            )
        )

    def _touch(self, producer_id: int, epoch: int) -> _Entry:
        """The producer's entry, made most recently written; a new epoch forgets the batches."""
        producers = self._producers
        entry = producers.get(producer_id)
        if entry is None:
            entry = producers[producer_id] = _Entry(epoch)
            if len(producers) > self._max_producer_ids:
                self._trim()
        else:
            producers.move_to_end(producer_id)
            if entry.epoch != epoch:
                entry.epoch = epoch
                entry.batches.clear()
        return entry

    def _trim(self) -> None:
        """Evict the least recently written producers down to `max_producer_ids`, sparing any
        with an open transaction and the one written last.

        Runs when a producer is added and when a transaction ends: the state may then stay over
        the bound only while transactions are open (Kafka never expires those producers), and
        with none open the bound always holds.
        """
        producers = self._producers
        excess = len(producers) - self._max_producer_ids
        if excess <= 0:
            return
        ongoing = self._ongoing
        if not ongoing:
            for _ in range(excess):
                producers.popitem(last=False)
            return
        newest = next(reversed(producers))
        evictable = (key for key in producers if key not in ongoing and key != newest)
        for producer_id in list(itertools.islice(evictable, excess)):
            del producers[producer_id]

    def _end_transaction(
        self, header: BatchHeader, offset: int, control_type: ControlType | None
    ) -> None:
        invariant(control_type is not None, f"the marker at {offset} is applied with its type")
        producer_id = header.producer_id
        self._touch(producer_id, header.producer_epoch)
        first_offset = self._ongoing.pop(producer_id, None)
        if first_offset is None:
            return  # a marker with nothing open here (a retry, or a transaction elsewhere)
        self._trim()  # producers kept over the bound for this transaction may go now
        if first_offset == self._first_unstable_offset:
            self._first_unstable_offset = min(self._ongoing.values(), default=None)
        if control_type == ControlType.ABORT:
            first_unstable = self._first_unstable_offset
            self._aborted.append(
                AbortedTxn(
                    producer_id,
                    first_offset,
                    offset,
                    offset + 1 if first_unstable is None else first_unstable,
                )
            )

    def prune_aborted(self, log_start_offset: int) -> None:
        """Forget the aborted transactions whose marker lies below the log start."""
        aborted = self._aborted
        below = bisect.bisect_left(aborted, log_start_offset, key=_last_offset_of)
        if below:
            del aborted[:below]

    def replay(
        self, header: BatchHeader, base_offset: int, control_type: ControlType | None = None
    ) -> None:
        """Apply one stored batch as recovery does; one below `end_offset` is skipped."""
        if base_offset < self._end_offset:
            return
        append_time = (
            header.max_timestamp if header.timestamp_type == TimestampType.LOG_APPEND_TIME else -1
        )
        self.update(header, base_offset, append_time, control_type)

    def rebuild(self, headers: Iterable[tuple[BatchHeader, int]]) -> None:
        """Apply the log's batches `(header, base_offset)` in offset order, as recovery does.

        Batches below `end_offset` (already in a restored snapshot) are skipped, so replaying
        from a segment start before the snapshot's offset is harmless. Transaction markers need
        their type: pass those to `replay`.
        """
        for header, base_offset in headers:
            self.replay(header, base_offset)

    # --- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The state as bytes for `restore`: versioned, CRC-32C checked, eviction order kept."""
        parts = [_BODY_HEADER.pack(self._end_offset, len(self._producers))]
        ongoing = self._ongoing
        for producer_id, entry in self._producers.items():
            first_offset = ongoing.get(producer_id, _NO_TRANSACTION)
            parts.append(_PRODUCER.pack(producer_id, entry.epoch, first_offset, len(entry.batches)))
            parts.extend(_BATCH.pack(*batch) for batch in entry.batches)
        parts.append(_COUNT.pack(len(self._aborted)))
        parts.extend(_ABORTED.pack(*txn) for txn in self._aborted)
        body = b"".join(parts)
        return _SNAPSHOT_HEADER.pack(SNAPSHOT_VERSION, crc32c.crc32c(body)) + body

    @classmethod
    def restore(
        cls, data: bytes | bytearray | memoryview, *, max_producer_ids: int = MAX_PRODUCER_IDS
    ) -> ProducerStateManager:
        """Load a `snapshot`; raises `CorruptProducerSnapshotError` if it is damaged.

        With a smaller `max_producer_ids` than the snapshot holds, the most recently written
        producers are kept (with a transaction open: all of them, until the next write trims).
        """
        view = memoryview(data).cast("B")
        if len(view) < _SNAPSHOT_HEADER.size + _BODY_HEADER.size:
            raise CorruptProducerSnapshotError(f"producer snapshot of {len(view)} bytes is short")
        version, crc = _SNAPSHOT_HEADER.unpack_from(view, 0)
        if version != SNAPSHOT_VERSION:
            raise CorruptProducerSnapshotError(f"producer snapshot version {version} is unknown")
        body = view[_SNAPSHOT_HEADER.size :]
        if crc32c.crc32c(body) != crc:
            raise CorruptProducerSnapshotError("producer snapshot fails its CRC")
        state = cls(max_producer_ids=max_producer_ids)
        try:
            end_offset, count = _BODY_HEADER.unpack_from(body, 0)
            position = _BODY_HEADER.size
            if count < 0 or end_offset < 0:
                raise CorruptProducerSnapshotError("producer snapshot has a negative count")
            producers = state._producers
            ongoing: list[tuple[int, int]] = []
            for _ in range(count):
                producer_id, epoch, first_offset, batch_count = _PRODUCER.unpack_from(
                    body, position
                )
                position += _PRODUCER.size
                if (
                    producer_id < 0
                    or epoch < 0
                    or not 0 <= batch_count <= BATCHES_PER_PRODUCER
                    or not _NO_TRANSACTION <= first_offset < end_offset
                    or producer_id in producers
                ):
                    raise CorruptProducerSnapshotError(
                        f"producer snapshot has an impossible entry for producer {producer_id}"
                    )
                entry = _Entry(epoch)
                for _ in range(batch_count):
                    entry.batches.append(BatchMetadata(*_BATCH.unpack_from(body, position)))
                    position += _BATCH.size
                producers[producer_id] = entry
                if first_offset != _NO_TRANSACTION:
                    ongoing.append((first_offset, producer_id))
            (aborted_count,) = _COUNT.unpack_from(body, position)
            position += _COUNT.size
            if aborted_count < 0:
                raise CorruptProducerSnapshotError("producer snapshot has a negative count")
            previous = AbortedTxn(-1, -1, -1, -1)
            for _ in range(aborted_count):
                txn = AbortedTxn(*_ABORTED.unpack_from(body, position))
                position += _ABORTED.size
                if not (
                    txn.producer_id >= 0
                    and 0 <= txn.first_offset <= txn.last_offset < end_offset
                    and txn.last_offset > previous.last_offset
                    and txn.last_stable_offset >= previous.last_stable_offset
                ):
                    raise CorruptProducerSnapshotError(
                        f"producer snapshot has an impossible aborted transaction {txn}"
                    )
                state._aborted.append(txn)
                previous = txn
        except struct.error as error:
            raise CorruptProducerSnapshotError(f"producer snapshot is truncated: {error}") from None
        if position != len(body):
            raise CorruptProducerSnapshotError(
                f"producer snapshot has {len(body) - position} bytes after its last entry"
            )
        state._end_offset = end_offset
        for first_offset, producer_id in sorted(ongoing):
            state._ongoing[producer_id] = first_offset
        state._first_unstable_offset = min(state._ongoing.values(), default=None)
        if not state._ongoing:
            # The live state keeps its bound whenever no transaction is open; with one open it
            # may be over (see `_trim`), and restores as it was: the next write trims it.
            state._trim()
        return state


def _last_offset_of(txn: AbortedTxn) -> int:
    return txn.last_offset
