"""One streams worker process for the runtime's scale-out tests (and the app they share).

    python runtime_worker.py URL APP_ID INPUT OUTPUT NAME

Runs `build_app(APP_ID, INPUT, OUTPUT)` over URL with client id NAME (so a test can tell from
the group which worker owns which partition), a 6 s session and 200 ms commits, until SIGTERM;
then stops cleanly (commit, leave the group) and prints its metrics as one JSON line. A test
SIGKILLs a worker to simulate a crash. Prints "started" once the runner is up.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from typing import Any

from headwater.streams import App, Runner, Tumbling

WINDOW_MS = 1_000
WORKER_SETTINGS: dict[str, Any] = {
    "commit.interval.ms": 200,
    "poll.ms": 50,
    "session.timeout.ms": 6_000,
    "heartbeat.interval.ms": 1_000,
}


def build_app(application_id: str, source: str, sink: str) -> App:
    """Per key, the sum of the values in 1-second tumbling windows, one final result each."""
    app = App(application_id)
    (
        app.stream(source, key="str", value="json")
        .window(Tumbling(WINDOW_MS), name="sums")
        .sum()
        .to(sink, key="str", value="json")
    )
    return app


def main(argv: list[str]) -> int:
    url, application_id, source, sink, name = argv
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runner = Runner(
        build_app(application_id, source, sink), url, {**WORKER_SETTINGS, "client.id": name}
    )
    runner.start()
    print("started", flush=True)
    while not stop.wait(0.2):
        if runner.failed is not None:
            break
    runner.stop()  # raises what made the runner fail
    print(json.dumps(runner.metrics()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
