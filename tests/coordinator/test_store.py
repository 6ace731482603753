"""The internal-topic stores: what a coordinator queues is appended in bounded batches, made
durable before anyone is answered, and replayed at the next open."""

from __future__ import annotations

from pathlib import Path

from headwater.coordinator.store import APPEND_BATCH_BYTES, GroupStore
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
