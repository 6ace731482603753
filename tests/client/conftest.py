"""The `backend` fixture: every conformance test runs on embedded, Headwater and Kafka.

* embedded: `file://` on one data directory per test module (a data directory belongs to one
  process; connections in this process share it);
* headwater: one `headwater serve` process for the session (tests/broker/broker_process.py);
* kafka: the session's real Apache Kafka broker (`kafka_broker`, tests/conftest.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "broker"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backends import BACKENDS, Backend
from broker_process import ServedBroker, start_broker


@pytest.fixture(scope="session")
def headwater_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBroker]:
    directory = tmp_path_factory.mktemp("headwater-serve")
    broker = start_broker(directory / "data", directory / "broker.log")
    yield broker
    code = broker.stop()
    assert code == 0, f"headwater serve did not shut down cleanly ({code}): {broker.log_tail()}"


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded") / "data"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    name: str = request.param
    server: ServedBroker | None = None
    if name == "embedded":
        url = Path(request.getfixturevalue("embedded_dir")).as_uri()
    elif name == "headwater":
        server = request.getfixturevalue("headwater_server")
        url = f"kafka://{server.bootstrap}"
    else:
        url = f"kafka://{request.getfixturevalue('kafka_broker').bootstrap}"
    log_start = server.log_path.stat().st_size if server else 0
    chosen = Backend(name, url)
    try:
        yield chosen
    finally:
        chosen.close()
    if server is not None:  # the broker must survive every test and log no traceback
        assert server.process.poll() is None, f"headwater serve exited: {server.log_tail()}"
        with open(server.log_path, "rb") as log:
            log.seek(log_start)
            logged = log.read().decode(errors="replace")
        assert "Traceback" not in logged, f"headwater serve logged a traceback:\n{logged[-4000:]}"
