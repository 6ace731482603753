"""Fixtures for broker tests: a real `headwater serve` subprocess per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import ServedBroker, start_broker


@pytest.fixture
def headwater_broker(tmp_path: Path) -> Iterator[ServedBroker]:
    broker = start_broker(tmp_path / "data", tmp_path / "broker.log")
    yield broker
    code = broker.stop()
    assert code == 0, f"broker did not shut down cleanly ({code}): {broker.log_tail()}"


# --- shared fixtures for the interop, differential and restart tests ----------------------------

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kafka_fixture import KafkaBroker, KafkaNotFetchedError, KafkaStartError  # noqa: E402


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One real Kafka 4.x broker (KRaft) for the session, as in tests/interop (never skips)."""
    broker = KafkaBroker()
    try:
        broker.start()
    except KafkaNotFetchedError as error:
        pytest.fail(str(error), pytrace=False)
    except KafkaStartError as error:
        pytest.fail(f"the Kafka broker did not start: {error}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def shared_headwater(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBroker]:
    """One Headwater broker per test module, for tests that each use their own topics."""
    directory = tmp_path_factory.mktemp("headwater")
    broker = start_broker(directory / "data", directory / "broker.log")
    yield broker
    code = broker.stop()
    assert code == 0, f"broker did not shut down cleanly ({code}): {broker.log_tail()}"
