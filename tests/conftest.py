"""Session fixtures shared by every test package: one real Apache Kafka broker.

The broker jars are fetched by ``scripts/fetch-kafka.sh``; without them the fixture fails (it
never skips), so a missing fetch step shows up as an error, not as silently untested code.
"""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TextIO

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_fixture import KafkaBroker, KafkaNotFetchedError, KafkaStartError

# pytest-timeout (300 s, in pyproject) fails a slow test through SIGALRM, which only Python code
# hears: a test stuck inside C (a lock acquired for good, a native client's wait) never sees it
# and would hold the whole run until CI's own limit. Past this bound the process dumps every
# thread's stack to the real stderr and exits, so a hang costs minutes and names its culprit.
_HARD_TIMEOUT_S = 420
_real_stderr: list[TextIO] = []


def pytest_configure(config: pytest.Config) -> None:
    # Output capture is suspended while plugins configure: fd 2 is still the terminal or log.
    _real_stderr.append(os.fdopen(os.dup(2), "w"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    faulthandler.dump_traceback_later(_HARD_TIMEOUT_S, exit=True, file=_real_stderr[0])
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


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
