"""Where groups live on disk: the compacted internal topic `__consumer_offsets` of a data directory.

The broker, the embedded client backend and the `headwater group` commands on a data directory
all keep a `GroupCoordinator` in the same place, so one data directory has one truth about its
groups whichever of them opened it last. Records are the coordinator's own (`drain_records`);
this module only replays them at open and appends what the machine queued since.

`GroupStore` owns one partition log and the coordinator it feeds. Not thread-safe: its owner
calls it from one thread (the broker's event loop; `flush` may run in an executor).
"""

from __future__ import annotations

import logging

from headwater._invariant import invariant
from headwater.coordinator.group import CoordinatorConfig, GroupCoordinator
from headwater.log.manager import LogManager
from headwater.log.partition_log import PartitionLog
from headwater.log.record_batch import NewRecord

_log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
# One partition: a single coordinator owns every group, so there is nothing to spread out.
OFFSETS_TOPIC_PARTITIONS = 1
OFFSETS_TOPIC_CONFIG = {"cleanup.policy": "compact"}
# Replay reads this much at a time: large enough to be quick, small enough to bound memory.
REPLAY_READ_BYTES = 1024 * 1024


class GroupStore:
    """A coordinator and the `__consumer_offsets` log that makes its decisions durable."""

    def __init__(
        self,
        manager: LogManager,
        coordinator_config: CoordinatorConfig | None = None,
        *,
        now_ms: int,
    ) -> None:
        if not manager.has_topic(OFFSETS_TOPIC):
            manager.create_topic(OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS, OFFSETS_TOPIC_CONFIG)
        self.log: PartitionLog = manager.partition(OFFSETS_TOPIC, 0)
        self.coordinator = GroupCoordinator(coordinator_config)
        self.records_replayed = self._replay(now_ms)

    def _replay(self, now_ms: int) -> int:
        """Rebuild groups and committed offsets; later records win, as compaction keeps them."""
        offset = self.log.log_start_offset
        end = self.log.log_end_offset
        count = 0
        while offset < end:
            result = self.log.read_records(offset, REPLAY_READ_BYTES)
            for record in result.records:
                if record.key is not None:
                    self.coordinator.replay(record.key, record.value, now_ms)
                    count += 1
            if result.next_offset <= offset:
                break  # nothing readable past here (a truncated tail was recovered away)
            offset = result.next_offset
        invariant(not self.coordinator.drain_records(), "replay must not queue records of its own")
        _log.info("rebuilt %d groups from %d records", len(self.coordinator.groups), count)
        return count

    def append(self) -> int | None:
        """Append what the coordinator queued, without waiting for disk.

        Returns the offset to pass to `flush` before anyone is told the change happened, or
        None when nothing was queued.
        """
        records = self.coordinator.drain_records()
        if not records:
            return None
        outcome = self.log.append_records(
            [NewRecord(key, value) for key, value in records], wait_for_flush=False
        )
        return outcome.last_offset + 1

    def flush(self, up_to_offset: int) -> None:
        """Make everything before `up_to_offset` durable (the log's flush is group committed)."""
        self.log.flush(up_to_offset)

    def persist(self) -> None:
        """Append and flush: the synchronous path for callers without an event loop."""
        end = self.append()
        if end is not None:
            self.flush(end)


__all__ = [
    "OFFSETS_TOPIC",
    "OFFSETS_TOPIC_CONFIG",
    "OFFSETS_TOPIC_PARTITIONS",
    "GroupStore",
]
