"""Producer id allocation and the InitProducerId answer (unit level, no broker process)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.broker.producer_ids import (
    BLOCK_FILE,
    BLOCK_SIZE,
    CorruptProducerIdBlockError,
    ProducerIdAllocator,
    init_producer_id,
)
from headwater.protocol import messages as m


def test_ids_are_consecutive_within_a_block(tmp_path: Path) -> None:
    allocator = ProducerIdAllocator(str(tmp_path))
    assert [allocator.allocate() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert allocator.reserved_end == BLOCK_SIZE


def test_block_is_persisted_before_ids_are_handed_out(tmp_path: Path) -> None:
    allocator = ProducerIdAllocator(str(tmp_path))
    path = tmp_path / BLOCK_FILE
    assert not path.exists()  # nothing reserved until an id is needed
    allocator.allocate()
    assert path.exists()
    assert ProducerIdAllocator(str(tmp_path)).reserved_end == BLOCK_SIZE
    assert not os.path.exists(str(path) + ".tmp")


def test_a_new_block_is_reserved_when_one_runs_out(tmp_path: Path) -> None:
    allocator = ProducerIdAllocator(str(tmp_path), block_size=3)
    assert [allocator.allocate() for _ in range(7)] == list(range(7))
    assert allocator.reserved_end == 9
    assert ProducerIdAllocator(str(tmp_path), block_size=3).allocate() == 9


def test_ids_never_repeat_across_restarts(tmp_path: Path) -> None:
    seen: set[int] = set()
    for used in (0, 1, 5, BLOCK_SIZE, BLOCK_SIZE + 1, 0, 3):
        allocator = ProducerIdAllocator(str(tmp_path))
        ids = [allocator.allocate() for _ in range(used)]
        assert not seen & set(ids)
        seen.update(ids)
    assert len(seen) == sum((0, 1, 5, BLOCK_SIZE, BLOCK_SIZE + 1, 0, 3))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 12), max_size=8), st.integers(1, 5))
def test_crash_anywhere_never_repeats_ids(
    tmp_path_factory: pytest.TempPathFactory, runs: list[int], block_size: int
) -> None:
    """Each run hands out some ids and is then abandoned without any shutdown (a crash)."""
    directory = str(tmp_path_factory.mktemp("ids"))
    seen: set[int] = set()
    for used in runs:
        allocator = ProducerIdAllocator(directory, block_size=block_size)
        for _ in range(used):
            producer_id = allocator.allocate()
            assert producer_id not in seen
            seen.add(producer_id)
        del allocator


def test_crash_during_the_block_write_keeps_the_old_block(tmp_path: Path) -> None:
    allocator = ProducerIdAllocator(str(tmp_path), block_size=10)
    allocator.allocate()
    path = tmp_path / BLOCK_FILE
    # A crash before the rename leaves a half-written temporary file and the old block file.
    Path(str(path) + ".tmp").write_bytes(b"\x00\x01garbage")
    restarted = ProducerIdAllocator(str(tmp_path), block_size=10)
    assert restarted.allocate() == 10


def test_corrupt_block_file_is_refused(tmp_path: Path) -> None:
    ProducerIdAllocator(str(tmp_path)).allocate()
    path = tmp_path / BLOCK_FILE
    data = bytearray(path.read_bytes())
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptProducerIdBlockError):
            ProducerIdAllocator(str(tmp_path))
    path.write_bytes(bytes(data[:-1]))
    with pytest.raises(CorruptProducerIdBlockError):
        ProducerIdAllocator(str(tmp_path))


# --- InitProducerId -------------------------------------------------------------------------


def test_idempotent_producer_gets_a_new_id_with_epoch_zero(tmp_path: Path) -> None:
    allocator = ProducerIdAllocator(str(tmp_path))
    for version in range(6):
        request = m.InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000)
        response = init_producer_id(allocator, request, version)
        assert response.error_code == 0
        assert response.producer_id == version
        assert response.producer_epoch == 0


def test_epoch_bump_keeps_the_id(tmp_path: Path) -> None:
    allocator = ProducerIdAllocator(str(tmp_path))
    first = init_producer_id(allocator, m.InitProducerIdRequest(transactional_id=None), 4)
    bump = m.InitProducerIdRequest(
        transactional_id=None, producer_id=first.producer_id, producer_epoch=first.producer_epoch
    )
    response = init_producer_id(allocator, bump, 4)
    assert (response.error_code, response.producer_id, response.producer_epoch) == (
        0,
        first.producer_id,
        1,
    )


def test_bump_before_v3_is_a_new_id(tmp_path: Path) -> None:
    allocator = ProducerIdAllocator(str(tmp_path))
    first = init_producer_id(allocator, m.InitProducerIdRequest(transactional_id=None), 2)
    bump = m.InitProducerIdRequest(
        transactional_id=None, producer_id=first.producer_id, producer_epoch=0
    )
    response = init_producer_id(allocator, bump, 2)
    assert response.producer_id != first.producer_id
    assert response.producer_epoch == 0


def test_exhausted_epoch_or_foreign_id_gets_a_new_id(tmp_path: Path) -> None:
    allocator = ProducerIdAllocator(str(tmp_path))
    first = init_producer_id(allocator, m.InitProducerIdRequest(transactional_id=None), 5)
    exhausted = m.InitProducerIdRequest(
        transactional_id=None, producer_id=first.producer_id, producer_epoch=2**15 - 1
    )
    response = init_producer_id(allocator, exhausted, 5)
    assert (response.producer_id, response.producer_epoch) == (first.producer_id + 1, 0)
    foreign = m.InitProducerIdRequest(transactional_id=None, producer_id=10**12, producer_epoch=3)
    response = init_producer_id(allocator, foreign, 5)
    assert (response.producer_id, response.producer_epoch) == (first.producer_id + 2, 0)


def test_bump_is_recognised_after_a_restart(tmp_path: Path) -> None:
    first = init_producer_id(
        ProducerIdAllocator(str(tmp_path)), m.InitProducerIdRequest(transactional_id=None), 4
    )
    bump = m.InitProducerIdRequest(
        transactional_id=None, producer_id=first.producer_id, producer_epoch=0
    )
    response = init_producer_id(ProducerIdAllocator(str(tmp_path)), bump, 4)
    assert (response.producer_id, response.producer_epoch) == (first.producer_id, 1)


def test_transactional_ids_are_not_answered_here(tmp_path: Path) -> None:
    allocator = ProducerIdAllocator(str(tmp_path))
    response = init_producer_id(allocator, m.InitProducerIdRequest(transactional_id="tx"), 4)
    assert (
        response.error_code == 35
    )  # UNSUPPORTED_VERSION: the transaction coordinator answers those
    assert (response.producer_id, response.producer_epoch) == (-1, -1)
    response = init_producer_id(allocator, m.InitProducerIdRequest(transactional_id=""), 4)
    assert response.error_code == 42  # INVALID_REQUEST, as in Kafka
    assert not (tmp_path / BLOCK_FILE).exists()  # no id was used up
