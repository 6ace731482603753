"""Session fixtures shared by every test package: one real Apache Kafka broker.

The broker jars are fetched by ``scripts/fetch-kafka.sh``; without them the fixture fails (it
never skips), so a missing fetch step shows up as an error, not as silently untested code.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_fixture import KafkaBroker, KafkaNotFetchedError, KafkaStartError


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One real Kafka 4.x broker (KRaft, broker+controller) shared by the whole session."""
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
