"""Shared helpers for the log engine tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.log.manager import LogManager
from headwater.log.record_batch import NewRecord


def records(count: int, *, start: int = 0, size: int = 20, key: bool = True) -> list[NewRecord]:
    """`count` deterministic records numbered from `start`, timestamps 1000 + number."""
    return [
        NewRecord(
            f"key-{number % 7}".encode() if key else None,
            (f"value-{number}-".encode() + b"x" * size)[: max(size, 12)],
            1_000 + number,
        )
        for number in range(start, start + count)
    ]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def manager(data_dir: Path) -> Iterator[LogManager]:
    log_manager = LogManager(str(data_dir))
    yield log_manager
    log_manager.close()
