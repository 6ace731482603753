"""Shared helpers for the log engine tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.log.manager import LogManager


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def manager(data_dir: Path) -> Iterator[LogManager]:
    log_manager = LogManager(str(data_dir))
    yield log_manager
    log_manager.close()
