"""Where coordinators live on disk: compacted internal topics of a data directory.

Groups and committed offsets live in `__consumer_offsets`, transactions in
`__transaction_state`. The broker, the embedded client backend and the `headwater group`
commands on a data directory all keep their coordinators in the same places, so one data
directory has one truth whichever of them opened it last. Records are the coordinator's own
(`drain_records`); this module only replays them at open and appends what the machine queued
since.

A store owns one partition log and the coordinator it feeds. Not thread-safe: its owner calls
it from one thread (the broker's event loop; `flush` may run in an executor).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from headwater._invariant import invariant
from headwater.coordinator.group import CoordinatorConfig, GroupCoordinator
from headwater.log.manager import LogManager
from headwater.log.partition_log import PartitionLog
from headwater.log.record_batch import NewRecord

if TYPE_CHECKING:
    from headwater.coordinator.transaction import TransactionConfig, TransactionCoordinator

_log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
# One partition: a single coordinator owns every group, so there is nothing to spread out.
OFFSETS_TOPIC_PARTITIONS = 1
OFFSETS_TOPIC_CONFIG = {"cleanup.policy": "compact"}
TRANSACTION_TOPIC = "__transaction_state"
TRANSACTION_TOPIC_PARTITIONS = 1
TRANSACTION_TOPIC_CONFIG = {"cleanup.policy": "compact"}
# Written by coordinators only: clients may read them, never produce to them (as in Kafka).
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, TRANSACTION_TOPIC})
# Replay reads this much at a time: large enough to be quick, small enough to bound memory.
REPLAY_READ_BYTES = 1024 * 1024
# Records queued at once are appended in batches of about this many bytes: well under the
# internal topics' max.message.bytes (Kafka's 1 MiB default), however much one call queued.
APPEND_BATCH_BYTES = 256 * 1024


class _RecordStore:
    """One internal compacted partition: replayed into a coordinator at open, appended to
    with what it queues since."""

    def __init__(
        self, manager: LogManager, topic: str, partitions: int, config: dict[str, str]
    ) -> None:
        if not manager.has_topic(topic):
            manager.create_topic(topic, partitions, config)
        self.log: PartitionLog = manager.partition(topic, 0)
        # Drained records an append failed to write (a full disk): the coordinator's memory has
        # moved on, so they go first next time; dropping them would let a retry find "nothing
        # new" and answer success for a change no log holds.
        self._unwritten: list[tuple[bytes, bytes | None]] = []

    def _drain(self) -> list[tuple[bytes, bytes | None]]:
        raise NotImplementedError

    def _replay_into(self, replay: Callable[[bytes, bytes | None], None]) -> int:
        """Feed every keyed record to `replay` in offset order; how many there were."""
        offset = self.log.log_start_offset
        end = self.log.log_end_offset
        count = 0
        while offset < end:
            result = self.log.read_records(offset, REPLAY_READ_BYTES)
            for record in result.records:
                if record.key is not None:
                    replay(record.key, record.value)
                    count += 1
            if result.next_offset <= offset:
                break  # nothing readable past here (a truncated tail was recovered away)
            offset = result.next_offset
        invariant(not self._drain(), "replay must not queue records of its own")
        return count

    def append(self) -> int | None:
        """Append what the coordinator queued, without waiting for disk.

        Returns the offset to pass to `flush` before anyone is told the change happened, or
        None when nothing was queued.
        """
        records = self._unwritten + self._drain()
        self._unwritten = []
        if not records:
            return None
        written = 0  # records already in an appended batch
        batch: list[NewRecord] = []
        batch_bytes = 0
        try:
            for index, (key, value) in enumerate(records):
                size = len(key) + (len(value) if value is not None else 0)
                if batch and batch_bytes + size > APPEND_BATCH_BYTES:
                    self.log.append_records(batch, wait_for_flush=False)
                    written, batch, batch_bytes = index, [], 0
                batch.append(NewRecord(key, value))
                batch_bytes += size
            end = self.log.append_records(batch, wait_for_flush=False).last_offset + 1
        except BaseException:
            self._unwritten = records[written:]
            raise
        return end

    def unflushed_end(self) -> int | None:
        """The log's end if some of it is not durable yet, else None: an answer that queued
        nothing may still rest on another request's records, still on their way to disk."""
        end = self.log.log_end_offset
        return end if self.log.recovery_point < end else None

    def flush(self, up_to_offset: int) -> None:
        """Make everything before `up_to_offset` durable (the log's flush is group committed)."""
        self.log.flush(up_to_offset)

    def append_or_unflushed_end(self) -> int | None:
        """`append`, or when nothing was queued `unflushed_end`: where to flush to before
        answering, None when nothing needs to be."""
        end = self.append()
        return end if end is not None else self.unflushed_end()

    def persist(self) -> None:
        """Append and flush: the synchronous path for callers without an event loop."""
        end = self.append_or_unflushed_end()
        if end is not None:
            self.flush(end)


class GroupStore(_RecordStore):
    """A group coordinator and the `__consumer_offsets` log that makes its decisions durable."""

    def __init__(
        self,
        manager: LogManager,
        coordinator_config: CoordinatorConfig | None = None,
        *,
        now_ms: int,
    ) -> None:
        super().__init__(manager, OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS, OFFSETS_TOPIC_CONFIG)
        self.coordinator = GroupCoordinator(coordinator_config)
        # Later records win, as compaction keeps them.
        self.records_replayed = self._replay_into(
            lambda key, value: self.coordinator.replay(key, value, now_ms)
        )
        _log.info(
            "rebuilt %d groups from %d records",
            len(self.coordinator.groups),
            self.records_replayed,
        )

    def _drain(self) -> list[tuple[bytes, bytes | None]]:
        return self.coordinator.drain_records()


class TransactionStore(_RecordStore):
    """A transaction coordinator and the `__transaction_state` log behind it."""

    def __init__(
        self,
        manager: LogManager,
        config: TransactionConfig | None = None,
        *,
        now_ms: int,
    ) -> None:
        from headwater.coordinator.transaction import TransactionCoordinator

        super().__init__(
            manager, TRANSACTION_TOPIC, TRANSACTION_TOPIC_PARTITIONS, TRANSACTION_TOPIC_CONFIG
        )
        self.coordinator: TransactionCoordinator = TransactionCoordinator(config)
        self.records_replayed = self._replay_into(
            lambda key, value: self.coordinator.replay(key, value, now_ms)
        )
        _log.info(
            "rebuilt %d transactional ids from %d records",
            len(self.coordinator.transactional_ids()),
            self.records_replayed,
        )

    def _drain(self) -> list[tuple[bytes, bytes | None]]:
        return self.coordinator.drain_records()


__all__ = [
    "INTERNAL_TOPICS",
    "OFFSETS_TOPIC",
    "OFFSETS_TOPIC_CONFIG",
    "OFFSETS_TOPIC_PARTITIONS",
    "TRANSACTION_TOPIC",
    "TRANSACTION_TOPIC_CONFIG",
    "TRANSACTION_TOPIC_PARTITIONS",
    "GroupStore",
    "TransactionStore",
]
