"""The internal-topic stores: what a coordinator queues is appended in bounded batches, made
durable before anyone is answered, and replayed at the next open."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from headwater.coordinator.store import APPEND_BATCH_BYTES, GroupStore
from headwater.errors import RecordBatchTooLargeError
from headwater.log.manager import LogManager


def test_a_large_drain_is_split_into_batches_and_replays_whole(tmp_path: Path) -> None:
    manager = LogManager(str(tmp_path))
    try:
        store = GroupStore(manager, now_ms=0)
        metadata = "m" * 4000  # offset.metadata.max.bytes allows 4096
        entries = [(f"topic-{i}", 0, i, -1, metadata) for i in range(300)]  # ~1.2 MB queued
        errors = store.coordinator.commit_offsets(
            0,
            group_id="g",
            generation_id=-1,
            member_id="",
            group_instance_id=None,
            offsets=entries,
        )
        assert set(errors) == {0}
        end = store.append()
        assert end == 300
        sizes = [
            header.size_bytes
            for segment in store.log.segments
            for _, header in segment.headers_from(0, segment.size_bytes)
        ]
        assert len(sizes) >= 4  # ~1.2 MB could not be one batch under the 1 MiB limit
        assert max(sizes) <= APPEND_BATCH_BYTES + 8 * 1024  # a batch closes past the bound
        store.flush(end)
        assert store.unflushed_end() is None
    finally:
        manager.close()
    manager = LogManager(str(tmp_path))
    try:
        again = GroupStore(manager, now_ms=0)
        assert again.records_replayed == 300
        fetched = again.coordinator.fetch_offsets("g", None)
        assert [entry.offset for _, _, entry in fetched if entry is not None] == sorted(
            range(300), key=lambda i: f"topic-{i}"
        )
    finally:
        manager.close()


def test_records_an_append_could_not_write_are_written_by_the_next_one(tmp_path: Path) -> None:
    """The coordinator's memory has moved on when an append fails: the records must not be
    lost, or a retry that changes nothing would answer success for a change no log holds."""
    manager = LogManager(str(tmp_path))
    try:
        store = GroupStore(manager, now_ms=0)
        normal = store.log.config
        store.log.set_config(dataclasses.replace(normal, max_message_bytes=64))  # a batch fails
        store.coordinator.commit_offsets(
            0,
            group_id="g",
            generation_id=-1,
            member_id="",
            group_instance_id=None,
            offsets=[("t", 0, 42, -1, "x" * 100)],
        )
        with pytest.raises(RecordBatchTooLargeError):
            store.append()
        assert store.log.log_end_offset == 0
        assert store.coordinator.drain_records() == []  # drained: only the store holds them
        store.log.set_config(normal)
        store.persist()  # nothing new was queued; the unwritten record goes now
        assert store.log.log_end_offset == 1
    finally:
        manager.close()
    manager = LogManager(str(tmp_path))
    try:
        (entry,) = [
            e for _, _, e in GroupStore(manager, now_ms=0).coordinator.fetch_offsets("g", None)
        ]
        assert entry is not None and entry.offset == 42
    finally:
        manager.close()
