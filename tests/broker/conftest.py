"""Fixtures for broker tests: a real `headwater serve` subprocess per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


@pytest.fixture(scope="module")
def shared_headwater(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBroker]:
    """One Headwater broker per test module, for tests that each use their own topics."""
    directory = tmp_path_factory.mktemp("headwater")
    broker = start_broker(directory / "data", directory / "broker.log")
    yield broker
    code = broker.stop()
    assert code == 0, f"broker did not shut down cleanly ({code}): {broker.log_tail()}"


@pytest.fixture
def launch_broker() -> Iterator[Callable[..., ServedBroker]]:
    """`start_broker` for tests that stop and restart brokers; leftovers are killed at teardown."""
    launched: list[ServedBroker] = []

    def launch(
        data_dir: Path, log_path: Path, *extra: str, port: int | None = None
    ) -> ServedBroker:
        broker = start_broker(data_dir, log_path, *extra, port=port)
        launched.append(broker)
        return broker

    yield launch
    for broker in launched:
        if broker.process.poll() is None:
            broker.process.kill()
            broker.process.wait(timeout=30)


BACKENDS = ["headwater", "kafka"]


@pytest.fixture(params=BACKENDS)
def bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """The bootstrap address of the backend under test, for differential tests that assert the
    same outcome on Headwater (this module's broker) and on the session's Apache Kafka; the
    Headwater broker must still run and have logged no traceback afterwards."""
    if request.param == "kafka":
        yield request.getfixturevalue("kafka_broker").bootstrap
        return
    served: ServedBroker = request.getfixturevalue("shared_headwater")
    yield served.bootstrap
    assert served.process.poll() is None, f"the broker exited: {served.log_tail()}"
    assert "Traceback" not in served.log_path.read_text(errors="replace"), served.log_tail()
