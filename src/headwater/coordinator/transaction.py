"""Kafka's transaction coordinator (transaction protocol version 1, before KIP-890) as a plain
state machine: no sockets, no asyncio, no disk.

Time comes in as `now_ms`; producer ids come from the caller's `allocate` callback, which must
never hand out the same id twice (across restarts too: the allocator keeps its own high-water
mark, this module only checks that an id is not in use by another transactional id).

States per transactional id, as Kafka names them:

    Empty -> Ongoing (first AddPartitions/AddOffsets) -> PrepareCommit | PrepareAbort (EndTxn)
          -> CompleteCommit | CompleteAbort (markers written) -> Ongoing (next transaction) ...

InitProducerId moves Empty and Complete* back to Empty with a bumped epoch (a new producer id
once the epoch is exhausted). On an Ongoing transaction it fences the producer instead: the
epoch is bumped and the transaction aborted at the bumped epoch in one step (Kafka passes
through PrepareEpochFence because its log write is asynchronous; ours is queued with the
transition, so the intermediate state is never observable) and the caller is told
CONCURRENT_TRANSACTIONS until the abort markers are written. Dead is not a state here: a
removed transactional id is simply gone.

Markers: while a transaction is in Prepare*, `pending_markers()` lists the marker it needs
(derived from the state, so it is idempotent and survives a restart). The broker writes the
marker to every partition and reports `markers_written`; only then is the transaction Complete.

Persistence: every change a client may be told about queues one record (`drain_records`) that
holds the whole state of the transactional id, so the last record per key is the truth and a
compacted topic keeps exactly what `replay` needs. The caller appends and fsyncs the records
before it answers the request, and before it writes the markers `pending_markers()` names.
Binary format, big-endian (struct):

* key, version 0: int16 version, uint16 length, UTF-8 transactional id;
* value, version 0: int16 version, int64 producer id, int16 epoch, int64 last producer id,
  int16 last epoch (the pair a retried InitProducerId may present; -1/-1 when none),
  int32 transaction timeout ms, int8 state, int64 transaction start ms (-1: none),
  int64 last update ms, int32 topic count, then per topic: uint16 length, UTF-8 name,
  int32 partition count, int32 each partition (ascending);
* a null value is a tombstone: the transactional id was removed.

Anything else is rejected by `replay` with `TransactionRecordError`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from headwater._invariant import invariant
from headwater.coordinator.store import OFFSETS_TOPIC
from headwater.errors import HeadwaterError

# --- Kafka error codes this module answers with --------------------------------------------
NONE = 0
INVALID_REQUEST = 42
POLICY_VIOLATION = 44
INVALID_PRODUCER_EPOCH = 47  # not returned: the broker maps PRODUCER_FENCED to it for old versions
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TRANSACTION_TIMEOUT = 50
CONCURRENT_TRANSACTIONS = 51
PRODUCER_FENCED = 90

# --- bounds and defaults (Kafka's names in comments) ----------------------------------------
# transaction.max.timeout.ms
TRANSACTION_MAX_TIMEOUT_MS_DEFAULT = 900_000
# transactional.id.expiration.ms: an idle transactional id (Empty or Complete*) is removed then.
TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT = 7 * 24 * 60 * 60 * 1000
# transaction.remove.expired.transaction.cleanup.interval.ms: how often `expire` looks for idle
# ids (a scan of every id); timed-out transactions are looked for at every call (cheap).
TRANSACTIONAL_ID_EXPIRATION_CHECK_INTERVAL_MS_DEFAULT = 60 * 60 * 1000
# Transactional ids kept; a new one past it is refused, so a client inventing ids cannot
# exhaust memory. Kafka has no such bound.
TRANSACTIONAL_IDS_MAX = 100_000
# Partitions and distinct topics in one transaction. Together they bound one state record
# (1,000 topics of 249 bytes plus 10,000 partitions is about 300 KB, under the 1 MiB default
# max.message.bytes) and the markers one EndTxn makes the broker write.
TRANSACTION_PARTITIONS_MAX = 10_000
TRANSACTION_TOPICS_MAX = 1_000

# Producer epochs are int16. The coordinator bumps the epoch once more than any client is given
# when it fences an ongoing transaction, so a client is never handed more than EXHAUSTED: an
# epoch at or past it gets a new producer id instead of a bump.
PRODUCER_EPOCH_MAX = 32_767
PRODUCER_EPOCH_EXHAUSTED = PRODUCER_EPOCH_MAX - 1
NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
# Markers carry the coordinator epoch; one coordinator that never moves keeps it at 0.
COORDINATOR_EPOCH = 0
# Kafka strings are int16-length-prefixed; a longer id could not have come off the wire.
TRANSACTIONAL_ID_BYTES_MAX = 32_767
TOPIC_NAME_BYTES_MAX = 65_535  # what the record's uint16 length can hold
PARTITION_MAX = 2**31 - 1


class TransactionRecordError(HeadwaterError):
    """A record of the transaction state topic does not decode: the log is corrupt or not ours.

    Replay stops on it rather than guess: a transaction silently lost could leave a partition
    with an open transaction that blocks read_committed consumers for good.
    """


class TransactionState(enum.Enum):
    """Kafka's transaction states; the values are the names DescribeTransactions reports."""

    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"


_PREPARE = (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT)
_COMPLETE = (TransactionState.COMPLETE_COMMIT, TransactionState.COMPLETE_ABORT)
# States that may start a new transaction or take a new epoch: no transaction in flight.
_IDLE = (TransactionState.EMPTY, *_COMPLETE)
# Kafka's own numbering of the states in its transaction log; any fixed table would do.
_STATE_CODES: dict[TransactionState, int] = {
    TransactionState.EMPTY: 0,
    TransactionState.ONGOING: 1,
    TransactionState.PREPARE_COMMIT: 2,
    TransactionState.PREPARE_ABORT: 3,
    TransactionState.COMPLETE_COMMIT: 4,
    TransactionState.COMPLETE_ABORT: 5,
}
_STATES_BY_CODE = {code: state for state, code in _STATE_CODES.items()}


@dataclass(frozen=True, slots=True)
class TransactionConfig:
    transaction_max_timeout_ms: int = TRANSACTION_MAX_TIMEOUT_MS_DEFAULT
    transactional_id_expiration_ms: int = TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT
    transactional_id_expiration_check_interval_ms: int = (
        TRANSACTIONAL_ID_EXPIRATION_CHECK_INTERVAL_MS_DEFAULT
    )
    transactional_ids_max: int = TRANSACTIONAL_IDS_MAX
    transaction_partitions_max: int = TRANSACTION_PARTITIONS_MAX
    transaction_topics_max: int = TRANSACTION_TOPICS_MAX


class InitProducerIdResult(NamedTuple):
    error_code: int
    producer_id: int
    producer_epoch: int


class MarkerRequest(NamedTuple):
    """The control record to write to every partition of a transaction that is ending."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    commit: bool
    coordinator_epoch: int
    partitions: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class TransactionDescription:
    """What DescribeTransactions shows of one transactional id; a copy, not a live view."""

    transactional_id: str
    state: str  # Kafka's name: "Empty", "Ongoing", "PrepareCommit", ...
    producer_id: int
    producer_epoch: int
    transaction_timeout_ms: int
    transaction_start_time_ms: int  # -1 before the first transaction
    last_update_ms: int
    partitions: tuple[tuple[str, int], ...]  # sorted


@dataclass(slots=True)
class TransactionEntry:
    """The durable state of one transactional id: exactly what one record holds."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    transaction_timeout_ms: int
    state: TransactionState = TransactionState.EMPTY
    # The (producer id, epoch) the producer held before the last bump it asked for with KIP-360,
    # so a retried InitProducerId whose answer was lost gets the same answer again.
    last_producer_id: int = NO_PRODUCER_ID
    last_producer_epoch: int = NO_PRODUCER_EPOCH
    partitions: dict[str, set[int]] = field(default_factory=dict)  # topic -> partitions
    transaction_start_time_ms: int = -1
    last_update_ms: int = 0

    def sorted_partitions(self) -> tuple[tuple[str, int], ...]:
        return tuple((t, p) for t in sorted(self.partitions) for p in sorted(self.partitions[t]))

    def partition_count(self) -> int:
        return sum(len(partitions) for partitions in self.partitions.values())

    def has_partition(self, topic: str, partition: int) -> bool:
        return partition in self.partitions.get(topic, ())


# --- records ----------------------------------------------------------------------------------

_KEY_VERSION = 0
_VALUE_VERSION = 0
_KEY_HEADER = struct.Struct(">hH")
_VALUE_HEADER = struct.Struct(">hqhqhibqqi")
_TOPIC_HEADER = struct.Struct(">H")
_COUNT = struct.Struct(">i")


def transaction_key(transactional_id: str) -> bytes:
    """The record key of a transactional id."""
    encoded = transactional_id.encode()
    invariant(0 < len(encoded) <= TRANSACTIONAL_ID_BYTES_MAX, "transactional id out of range")
    return _KEY_HEADER.pack(_KEY_VERSION, len(encoded)) + encoded


def decode_key(key: bytes) -> str:
    """The transactional id a record key names; `TransactionRecordError` if it is not one."""
    if len(key) < _KEY_HEADER.size:
        raise TransactionRecordError(f"transaction key of {len(key)} bytes is truncated")
    version, length = _KEY_HEADER.unpack_from(key, 0)
    if version != _KEY_VERSION:
        raise TransactionRecordError(f"transaction key version {version} is not known")
    if length == 0 or _KEY_HEADER.size + length != len(key):
        raise TransactionRecordError(f"transaction key length {length} does not fit the key")
    try:
        return key[_KEY_HEADER.size :].decode()
    except UnicodeDecodeError as exc:
        raise TransactionRecordError(f"transaction key is not UTF-8: {exc}") from None


def encode_value(entry: TransactionEntry) -> bytes:
    """The record value holding `entry`'s whole state."""
    parts = [
        _VALUE_HEADER.pack(
            _VALUE_VERSION,
            entry.producer_id,
            entry.producer_epoch,
            entry.last_producer_id,
            entry.last_producer_epoch,
            entry.transaction_timeout_ms,
            _STATE_CODES[entry.state],
            entry.transaction_start_time_ms,
            entry.last_update_ms,
            len(entry.partitions),
        )
    ]
    for topic in sorted(entry.partitions):
        name = topic.encode()
        partitions = sorted(entry.partitions[topic])
        parts.append(_TOPIC_HEADER.pack(len(name)))
        parts.append(name)
        parts.append(struct.pack(f">i{len(partitions)}i", len(partitions), *partitions))
    return b"".join(parts)


def decode_value(transactional_id: str, value: bytes) -> TransactionEntry:
    """The state a record value holds; `TransactionRecordError` if it is malformed."""
    try:
        return _decode_value(transactional_id, value)
    except struct.error as exc:  # a check below missed a truncation: still the caller's data
        raise TransactionRecordError(f"{transactional_id}: malformed value: {exc}") from None


def _decode_value(transactional_id: str, value: bytes) -> TransactionEntry:
    def bad(reason: str) -> TransactionRecordError:
        return TransactionRecordError(f"transaction state of {transactional_id!r}: {reason}")

    if len(value) < 2:
        raise bad(f"value of {len(value)} bytes is truncated")
    (version,) = struct.unpack_from(">h", value, 0)
    if version != _VALUE_VERSION:
        raise bad(f"value version {version} is not known")
    if len(value) < _VALUE_HEADER.size:
        raise bad(f"value of {len(value)} bytes is truncated")
    (
        _,
        producer_id,
        producer_epoch,
        last_producer_id,
        last_producer_epoch,
        timeout_ms,
        state_code,
        start_ms,
        update_ms,
        topic_count,
    ) = _VALUE_HEADER.unpack_from(value, 0)
    state = _STATES_BY_CODE.get(state_code)
    if state is None:
        raise bad(f"state {state_code} is not known")
    if producer_id < 0 or not 0 <= producer_epoch <= PRODUCER_EPOCH_MAX:
        raise bad(f"producer id {producer_id} epoch {producer_epoch} out of range")
    last_known = last_producer_id >= 0 and 0 <= last_producer_epoch <= PRODUCER_EPOCH_MAX
    last_none = last_producer_id == NO_PRODUCER_ID and last_producer_epoch == NO_PRODUCER_EPOCH
    if not (last_known or last_none):
        raise bad(f"last producer id {last_producer_id} epoch {last_producer_epoch} out of range")
    if timeout_ms <= 0 or start_ms < -1 or update_ms < 0:
        raise bad(f"timeout {timeout_ms} ms, start {start_ms}, update {update_ms} out of range")
    if topic_count < 0 or topic_count > len(value):
        raise bad(f"topic count {topic_count} out of range")
    position = _VALUE_HEADER.size
    partitions: dict[str, set[int]] = {}
    for _ in range(topic_count):
        if position + _TOPIC_HEADER.size > len(value):
            raise bad("truncated in a topic name")
        (length,) = _TOPIC_HEADER.unpack_from(value, position)
        position += _TOPIC_HEADER.size
        if length == 0 or position + length + _COUNT.size > len(value):
            raise bad(f"topic name length {length} out of range")
        try:
            topic = value[position : position + length].decode()
        except UnicodeDecodeError:
            raise bad("topic name is not UTF-8") from None
        position += length
        (count,) = _COUNT.unpack_from(value, position)
        position += _COUNT.size
        if count <= 0 or position + 4 * count > len(value):
            raise bad(f"partition count {count} of {topic!r} out of range")
        numbers = struct.unpack_from(f">{count}i", value, position)
        position += 4 * count
        if topic in partitions or min(numbers) < 0 or len(set(numbers)) != count:
            raise bad(f"partitions of {topic!r} repeat or are negative")
        partitions[topic] = set(numbers)
    if position != len(value):
        raise bad(f"{len(value) - position} bytes past the end of the value")
    if state in _PREPARE and not partitions:
        raise bad(f"{state.value} without partitions")  # we complete those at once
    if state in _IDLE and partitions:
        raise bad(f"{state.value} with partitions")
    if state is not TransactionState.EMPTY and start_ms < 0:
        raise bad(f"{state.value} without a start time")
    return TransactionEntry(
        transactional_id,
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        last_producer_id,
        last_producer_epoch,
        partitions,
        start_ms,
        update_ms,
    )


def offsets_partition(group_id: str) -> tuple[str, int]:
    """The partition of the offsets topic that holds `group_id`'s commits: one partition
    (OFFSETS_TOPIC_PARTITIONS) holds every group."""
    del group_id
    return (OFFSETS_TOPIC, 0)


# --- the coordinator ----------------------------------------------------------------------------


class TransactionCoordinator:
    """All transactional ids of one broker. Not thread-safe: one owner (the event loop) calls it.

    Every method answers at once; a method that changed something a client will be told about
    queued the record that makes it durable, and the caller must persist `drain_records()`
    before it answers (and before it acts on `pending_markers()`).
    """

    def __init__(self, config: TransactionConfig | None = None) -> None:
        self.config = config or TransactionConfig()
        self._transactions: dict[str, TransactionEntry] = {}
        # Current producer id -> its transactional id: a producer id never serves two ids.
        self._owners: dict[int, str] = {}
        # Indexes by state, kept by `_set_state`: `expire` and `pending_markers` run often.
        self._ongoing: dict[str, None] = {}
        self._preparing: dict[str, None] = {}
        self._records: list[tuple[bytes, bytes | None]] = []
        self._next_id_expiry_check_ms: int | None = None

    # --- persistence ----------------------------------------------------------------------

    def drain_records(self) -> list[tuple[bytes, bytes | None]]:
        """Records queued since the last drain, for the caller to append and fsync."""
        records, self._records = self._records, []
        return records

    def _persist(self, entry: TransactionEntry) -> None:
        self._records.append((transaction_key(entry.transactional_id), encode_value(entry)))

    def replay(self, key: bytes, value: bytes | None, now_ms: int) -> None:
        """Apply one record at startup (later records win; None removes the id).

        Times are stored, so `now_ms` changes nothing: an Ongoing transaction keeps its start
        and expires as it would have, a Prepare* one has its markers pending again.
        """
        del now_ms
        transactional_id = decode_key(key)
        if value is None:
            known = self._transactions.get(transactional_id)
            if known is not None:
                self._forget(known)
            return
        entry = decode_value(transactional_id, value)
        owner = self._owners.get(entry.producer_id)
        if owner is not None and owner != transactional_id:
            raise TransactionRecordError(
                f"producer id {entry.producer_id} of {transactional_id!r} "
                f"already belongs to {owner!r}"
            )
        known = self._transactions.get(transactional_id)
        if known is not None:
            self._forget(known)
        self._transactions[transactional_id] = entry
        self._owners[entry.producer_id] = transactional_id
        self._index(entry)

    # --- helpers --------------------------------------------------------------------------

    def _set_state(self, entry: TransactionEntry, state: TransactionState) -> None:
        self._unindex(entry)
        entry.state = state
        self._index(entry)

    def _index(self, entry: TransactionEntry) -> None:
        if entry.state is TransactionState.ONGOING:
            self._ongoing[entry.transactional_id] = None
        elif entry.state in _PREPARE:
            self._preparing[entry.transactional_id] = None

    def _unindex(self, entry: TransactionEntry) -> None:
        self._ongoing.pop(entry.transactional_id, None)
        self._preparing.pop(entry.transactional_id, None)

    def _forget(self, entry: TransactionEntry) -> None:
        self._unindex(entry)
        del self._transactions[entry.transactional_id]
        if self._owners.get(entry.producer_id) == entry.transactional_id:
            del self._owners[entry.producer_id]

    def _allocate(self, allocate: Callable[[], int], transactional_id: str) -> int:
        producer_id = allocate()
        invariant(producer_id >= 0, f"allocated producer id {producer_id} is negative")
        invariant(
            producer_id not in self._owners,
            f"allocated producer id {producer_id} already serves {self._owners.get(producer_id)!r}",
        )
        self._owners[producer_id] = transactional_id
        return producer_id

    def _move_producer_id(self, entry: TransactionEntry, producer_id: int) -> None:
        if self._owners.get(entry.producer_id) == entry.transactional_id:
            del self._owners[entry.producer_id]
        entry.producer_id = producer_id

    @staticmethod
    def _valid_transactional_id(transactional_id: str) -> bool:
        return 0 < len(transactional_id.encode()) <= TRANSACTIONAL_ID_BYTES_MAX

    def _producer_error(self, transactional_id: str, producer_id: int, producer_epoch: int) -> int:
        """Kafka's checks of a producer acting on its transaction: NONE if it is the current
        one. An epoch other than the current one is fenced; so is the maximum epoch, which
        only the coordinator's own fencing bump uses and no client is ever given."""
        if not self._valid_transactional_id(transactional_id):
            return INVALID_REQUEST
        entry = self._transactions.get(transactional_id)
        if entry is None or entry.producer_id != producer_id:
            return INVALID_PRODUCER_ID_MAPPING
        if producer_epoch != entry.producer_epoch or producer_epoch >= PRODUCER_EPOCH_MAX:
            return PRODUCER_FENCED
        return NONE

    def _fence_and_abort(self, entry: TransactionEntry, now_ms: int, *, last_epoch: int) -> None:
        """Bump the epoch of an Ongoing transaction and abort it at the bumped epoch: the
        markers carry the new epoch, so the partitions reject the old producer from then on."""
        invariant(entry.state is TransactionState.ONGOING, "only an Ongoing transaction is fenced")
        invariant(entry.producer_epoch < PRODUCER_EPOCH_MAX, "no epoch left to fence with")
        if last_epoch == NO_PRODUCER_EPOCH:
            entry.last_producer_id = NO_PRODUCER_ID
        else:
            entry.last_producer_id = entry.producer_id
        entry.last_producer_epoch = last_epoch
        entry.producer_epoch += 1
        self._end(entry, commit=False, now_ms=now_ms)

    def _end(self, entry: TransactionEntry, *, commit: bool, now_ms: int) -> None:
        """Ongoing -> Prepare*, or straight to Complete* when there is no partition to mark."""
        entry.last_update_ms = now_ms
        if entry.partitions:
            prepare = TransactionState.PREPARE_COMMIT if commit else TransactionState.PREPARE_ABORT
            self._set_state(entry, prepare)
        else:
            complete = (
                TransactionState.COMPLETE_COMMIT if commit else TransactionState.COMPLETE_ABORT
            )
            self._set_state(entry, complete)
        self._persist(entry)

    # --- InitProducerId -------------------------------------------------------------------

    def init_producer_id(
        self,
        transactional_id: str,
        transaction_timeout_ms: int,
        *,
        producer_id: int,
        producer_epoch: int,
        now_ms: int,
        allocate: Callable[[], int],
    ) -> InitProducerIdResult:
        """A producer id and epoch for `transactional_id`, fencing older producers of it.

        `producer_id`/`producer_epoch` are -1/-1, or (KIP-360) what the producer holds: then
        they must be the current pair, or the previous one when the answer to a bump was lost.
        """
        failed = InitProducerIdResult(NONE, NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
        if not self._valid_transactional_id(transactional_id):
            return failed._replace(error_code=INVALID_REQUEST)
        if not 0 < transaction_timeout_ms <= self.config.transaction_max_timeout_ms:
            return failed._replace(error_code=INVALID_TRANSACTION_TIMEOUT)
        expected: tuple[int, int] | None = None
        if producer_id >= 0 and producer_epoch >= 0:
            expected = (producer_id, producer_epoch)
        elif producer_id >= 0 or producer_epoch >= 0:
            return failed._replace(error_code=INVALID_REQUEST)  # half a pair, as Kafka says

        entry = self._transactions.get(transactional_id)
        if entry is None:
            # A KIP-360 pair for an id we do not know (it expired) is ignored, as in Kafka.
            if len(self._transactions) >= self.config.transactional_ids_max:
                return failed._replace(error_code=POLICY_VIOLATION)
            entry = TransactionEntry(
                transactional_id,
                self._allocate(allocate, transactional_id),
                0,
                transaction_timeout_ms,
                last_update_ms=now_ms,
            )
            self._transactions[transactional_id] = entry
            self._persist(entry)
            return InitProducerIdResult(NONE, entry.producer_id, entry.producer_epoch)

        current = (entry.producer_id, entry.producer_epoch)
        retried = expected is not None and expected == (
            entry.last_producer_id,
            entry.last_producer_epoch,
        )
        if expected is not None and expected != current and not retried:
            return failed._replace(error_code=PRODUCER_FENCED)
        if entry.state in _PREPARE:
            return failed._replace(error_code=CONCURRENT_TRANSACTIONS)
        if entry.state is TransactionState.ONGOING:
            if retried:
                return failed._replace(error_code=PRODUCER_FENCED)  # the current holder moved on
            # A KIP-360 producer fencing its own transaction may retry with the pair it sent.
            self._fence_and_abort(
                entry,
                now_ms,
                last_epoch=entry.producer_epoch if expected is not None else NO_PRODUCER_EPOCH,
            )
            return failed._replace(error_code=CONCURRENT_TRANSACTIONS)

        invariant(entry.state in _IDLE, f"unexpected state {entry.state}")
        if retried:
            pass  # the bump the producer asked for already happened: answer it again
        elif entry.producer_epoch >= PRODUCER_EPOCH_EXHAUSTED:
            old_id, old_epoch = current
            self._move_producer_id(entry, self._allocate(allocate, transactional_id))
            entry.producer_epoch = 0
            entry.last_producer_id = old_id if expected is not None else NO_PRODUCER_ID
            entry.last_producer_epoch = old_epoch if expected is not None else NO_PRODUCER_EPOCH
        else:
            entry.last_producer_id = entry.producer_id if expected is not None else NO_PRODUCER_ID
            entry.last_producer_epoch = (
                entry.producer_epoch if expected is not None else NO_PRODUCER_EPOCH
            )
            entry.producer_epoch += 1
        entry.transaction_timeout_ms = transaction_timeout_ms
        entry.partitions.clear()
        entry.transaction_start_time_ms = -1
        entry.last_update_ms = now_ms
        self._set_state(entry, TransactionState.EMPTY)
        self._persist(entry)
        return InitProducerIdResult(NONE, entry.producer_id, entry.producer_epoch)

    # --- AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit ------------------------------

    def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Iterable[tuple[str, int]],
        now_ms: int,
    ) -> int:
        """Add partitions to the producer's transaction, starting one if none is ongoing.

        One error code for all of them: they are added together or not at all. The caller has
        already checked that the partitions exist.
        """
        wanted = list(partitions)
        for topic, partition in wanted:
            if not 0 < len(topic.encode()) <= TOPIC_NAME_BYTES_MAX:
                return INVALID_REQUEST
            if not 0 <= partition <= PARTITION_MAX:
                return INVALID_REQUEST
        error = self._producer_error(transactional_id, producer_id, producer_epoch)
        if error != NONE:
            return error
        entry = self._transactions[transactional_id]
        if entry.state in _PREPARE:
            return CONCURRENT_TRANSACTIONS
        ongoing = entry.state is TransactionState.ONGOING
        new = {(t, p) for t, p in wanted if not (ongoing and entry.has_partition(t, p))}
        if ongoing and not new:
            return NONE  # nothing changes, nothing to persist
        if not ongoing:
            invariant(not entry.partitions, "an idle transaction holds no partitions")
        new_topics = {t for t, _ in new if t not in entry.partitions}
        if (
            entry.partition_count() + len(new) > self.config.transaction_partitions_max
            or len(entry.partitions) + len(new_topics) > self.config.transaction_topics_max
        ):
            return POLICY_VIOLATION
        for topic, partition in new:
            entry.partitions.setdefault(topic, set()).add(partition)
        if not ongoing:
            entry.transaction_start_time_ms = now_ms
            self._set_state(entry, TransactionState.ONGOING)
        entry.last_update_ms = now_ms
        self._persist(entry)
        return NONE

    def add_offsets(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        group_id: str,
        now_ms: int,
    ) -> int:
        """AddOffsetsToTxn: the group's partition of the offsets topic joins the transaction,
        so the commit or abort marker also decides the offsets committed with TxnOffsetCommit."""
        return self.add_partitions(
            transactional_id, producer_id, producer_epoch, [offsets_partition(group_id)], now_ms
        )

    def check_offset_commit(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> int:
        """For TxnOffsetCommit: NONE if the producer's Ongoing transaction holds the group's
        offsets partition (AddOffsetsToTxn came first), else the error to answer with."""
        error = self._producer_error(transactional_id, producer_id, producer_epoch)
        if error != NONE:
            return error
        entry = self._transactions[transactional_id]
        topic, partition = offsets_partition(group_id)
        if entry.state is not TransactionState.ONGOING or not entry.has_partition(topic, partition):
            return INVALID_TXN_STATE
        return NONE

    # --- EndTxn ---------------------------------------------------------------------------

    def end_transaction(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        now_ms: int,
    ) -> int:
        """Commit or abort the producer's transaction. NONE once the decision is durable; the
        markers follow (`pending_markers`), and until they are written the producer's next
        transaction waits on CONCURRENT_TRANSACTIONS."""
        error = self._producer_error(transactional_id, producer_id, producer_epoch)
        if error != NONE:
            return error
        entry = self._transactions[transactional_id]
        state = entry.state
        if state is TransactionState.ONGOING:
            self._end(entry, commit=commit, now_ms=now_ms)
            return NONE
        same_prepare = TransactionState.PREPARE_COMMIT if commit else TransactionState.PREPARE_ABORT
        same_complete = (
            TransactionState.COMPLETE_COMMIT if commit else TransactionState.COMPLETE_ABORT
        )
        if state is same_prepare:
            return CONCURRENT_TRANSACTIONS  # a retry: it answers NONE once complete
        if state is same_complete:
            return NONE  # a retry whose first answer was lost
        # Empty (nothing to end: Kafka's clients never send EndTxn then) or the other decision.
        return INVALID_TXN_STATE

    # --- markers --------------------------------------------------------------------------

    def pending_markers(self) -> list[MarkerRequest]:
        """The markers of every Prepare* transaction; the same ones until `markers_written`."""
        markers: list[MarkerRequest] = []
        for transactional_id in self._preparing:
            entry = self._transactions[transactional_id]
            markers.append(
                MarkerRequest(
                    transactional_id,
                    entry.producer_id,
                    entry.producer_epoch,
                    entry.state is TransactionState.PREPARE_COMMIT,
                    COORDINATOR_EPOCH,
                    entry.sorted_partitions(),
                )
            )
        return markers

    def markers_written(self, transactional_id: str, producer_epoch: int, now_ms: int) -> None:
        """Every partition of the transaction has its marker: Prepare* -> Complete*.

        A confirmation that matches no pending marker (a duplicate, or one from before a
        fence) changes nothing.
        """
        entry = self._transactions.get(transactional_id)
        if entry is None or entry.state not in _PREPARE or entry.producer_epoch != producer_epoch:
            return
        commit = entry.state is TransactionState.PREPARE_COMMIT
        entry.partitions.clear()
        entry.last_update_ms = now_ms
        complete = TransactionState.COMPLETE_COMMIT if commit else TransactionState.COMPLETE_ABORT
        self._set_state(entry, complete)
        self._persist(entry)

    # --- time -----------------------------------------------------------------------------

    def expire(self, now_ms: int) -> None:
        """Abort transactions Ongoing past their timeout, fencing their producer (the epoch is
        bumped, so the zombie's next request is PRODUCER_FENCED); and, every
        `transactional_id_expiration_check_interval_ms`, remove transactional ids idle (Empty or
        Complete*) for `transactional_id_expiration_ms`, with a tombstone."""
        for transactional_id in list(self._ongoing):
            entry = self._transactions[transactional_id]
            if now_ms > entry.transaction_start_time_ms + entry.transaction_timeout_ms:
                self._fence_and_abort(entry, now_ms, last_epoch=NO_PRODUCER_EPOCH)
        if self._next_id_expiry_check_ms is not None and now_ms < self._next_id_expiry_check_ms:
            return
        interval_ms = self.config.transactional_id_expiration_check_interval_ms
        self._next_id_expiry_check_ms = now_ms + interval_ms
        expiration_ms = self.config.transactional_id_expiration_ms
        for entry in list(self._transactions.values()):
            if entry.state in _IDLE and now_ms >= entry.last_update_ms + expiration_ms:
                self._forget(entry)
                self._records.append((transaction_key(entry.transactional_id), None))

    # --- DescribeTransactions, ListTransactions -------------------------------------------

    def describe(self, transactional_id: str) -> TransactionDescription | None:
        """A copy of the id's state, or None if it is not known."""
        entry = self._transactions.get(transactional_id)
        if entry is None:
            return None
        return TransactionDescription(
            entry.transactional_id,
            entry.state.value,
            entry.producer_id,
            entry.producer_epoch,
            entry.transaction_timeout_ms,
            entry.transaction_start_time_ms,
            entry.last_update_ms,
            entry.sorted_partitions(),
        )

    def transactional_ids(self) -> list[str]:
        """Every known transactional id, sorted."""
        return sorted(self._transactions)

    def entry(self, transactional_id: str) -> TransactionEntry | None:
        """The live state of an id (tests, diagnostics, the broker's produce verification,
        which runs per batch): do not mutate it."""
        return self._transactions.get(transactional_id)


__all__ = [
    "CONCURRENT_TRANSACTIONS",
    "COORDINATOR_EPOCH",
    "INVALID_PRODUCER_EPOCH",
    "INVALID_PRODUCER_ID_MAPPING",
    "INVALID_REQUEST",
    "INVALID_TRANSACTION_TIMEOUT",
    "INVALID_TXN_STATE",
    "NONE",
    "POLICY_VIOLATION",
    "PRODUCER_EPOCH_EXHAUSTED",
    "PRODUCER_EPOCH_MAX",
    "PRODUCER_FENCED",
    "TRANSACTIONAL_IDS_MAX",
    "TRANSACTION_MAX_TIMEOUT_MS_DEFAULT",
    "TRANSACTION_PARTITIONS_MAX",
    "TRANSACTION_TOPICS_MAX",
    "InitProducerIdResult",
    "MarkerRequest",
    "TransactionConfig",
    "TransactionCoordinator",
    "TransactionDescription",
    "TransactionEntry",
    "TransactionRecordError",
    "TransactionState",
    "decode_key",
    "decode_value",
    "encode_value",
    "offsets_partition",
    "transaction_key",
]
