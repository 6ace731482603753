"""A 1-second tumbling event-time window summing values per key, through the streams engine.

Not a test: it prints numbers. In the same run, on the same input (default 1,000,000 events,
1,000 keys, timestamps 1 ms apart): the topology run in memory through the `TestDriver`
(micro-batches of `--batch` records, each followed by reading the output topic into a dict; then
end of input so every window closes), beside a plain Python dict loop building the same dict of
sums per (key, window start); the results must be equal. Timed twice: with Python's default
garbage collector, and with it paused as `timeit` does. The gap is the collector re-walking the
big live containers (the result dict; the input list is frozen out of its sight for both) each
time the engine's output records (named tuples, which the collector never untracks) reach its
oldest generation; a runtime that hands records to a producer and drops them pays less of it.

    python benchmarks/streams_window.py [--events 1000000] [--keys 1000] [--batch 1000]

`RUNTIME_ROWS` is where rows for the same topology run topic to topic on the embedded and
broker backends go (the client-API runtime adds them): each takes the events and the expected
result and returns (label, seconds).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headwater.streams import App, Tumbling
from headwater.streams.testing import TestDriver

WINDOW_MS = 1_000
Event = tuple[str, int, int]
Result = dict[tuple[str, int], int]

# Rows for other runtimes (topic to topic on embedded and broker backends): each is
# (label, run(events, expected) -> seconds), asserting its own result equals `expected`.
RUNTIME_ROWS: list[tuple[str, Callable[[list[Event], Result], float]]] = []


def make_events(count: int, keys: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    names = [f"key-{i}" for i in range(keys)]
    return [(names[rng.randrange(keys)], rng.randrange(100), ts) for ts in range(count)]


def plain_loop(events: list[Event]) -> Result:
    """What a hand-written script would do: one dict keyed by (key, window start)."""
    sums: Result = {}
    get = sums.get
    for key, value, ts in events:
        slot = (key, ts - ts % WINDOW_MS)
        sums[slot] = get(slot, 0) + value
    return sums


def build_app() -> App:
    app = App("bench-window")
    (
        app.stream("events", key="str", value="json")
        .window(Tumbling(WINDOW_MS), name="sums")
        .sum()
        .to("sums", key="str", value="json")
    )
    return app


def streams_run(events: list[Event], batch: int) -> tuple[float, Result]:
    """Send the events in batches and read the results as they come, into the same dict the
    plain loop builds (as a consumer of the output topic would)."""
    driver = TestDriver(build_app(), {"events": 1})
    result: Result = {}

    def collect() -> None:
        for key, value, _ in driver.take_output("sums"):
            result[(key, value.window.start)] = value.value

    started = time.perf_counter()
    for offset in range(0, len(events), batch):
        driver.send_many("events", events[offset : offset + batch])
        collect()
    driver.finish()
    collect()
    return time.perf_counter() - started, result


def best(runs: int, measure: Callable[[], float]) -> float:
    """The shortest of `runs` timings: the least disturbed on a shared machine."""
    return min(measure() for _ in range(runs))


def collector_paused(measure: Callable[[], float]) -> Callable[[], float]:
    """`measure` with the cyclic garbage collector paused, as `timeit` times by default."""

    def paused() -> float:
        gc.collect()
        gc.disable()
        try:
            return measure()
        finally:
            gc.enable()

    return paused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    events = make_events(args.events, args.keys)
    # The input stands for a topic, not for heap the program works on: keep the collector from
    # re-walking it (for both contenders).
    gc.collect()
    gc.freeze()

    expected = plain_loop(events)
    _, result = streams_run(events, args.batch)
    assert result == expected, "the streams result differs from the plain loop's"

    def time_plain() -> float:
        started = time.perf_counter()
        plain_loop(events)
        return time.perf_counter() - started

    def time_streams() -> float:
        return streams_run(events, args.batch)[0]

    n = len(events)
    print(
        f"{n:,} events, {args.keys:,} keys, 1 ms apart, {WINDOW_MS} ms tumbling sum, "
        f"batches of {args.batch:,} (best of {args.runs})"
    )
    for label, wrap in (
        ("Python's default garbage collector", lambda m: m),
        ("garbage collector paused while timing (as timeit does)", collector_paused),
    ):
        plain = best(args.runs, wrap(time_plain))
        streams = best(args.runs, wrap(time_streams))
        print(f" {label}:")
        print(f"  {'plain Python dict loop':<44} {n / plain:>13,.0f} events/s")
        print(
            f"  {'streams, in memory (TestDriver)':<44} {n / streams:>13,.0f} events/s"
            f"  {100 * plain / streams:6.1f}% of the plain loop"
        )
        for row_label, run in RUNTIME_ROWS:
            seconds = best(args.runs, wrap(lambda run=run: run(events, expected)))
            print(
                f"  {row_label:<44} {n / seconds:>13,.0f} events/s"
                f"  {100 * plain / seconds:6.1f}% of the plain loop"
            )


# --- RUNTIME_ROWS: the same topology run by the client-API runtime, topic to topic -------------
#
# Each backend gets its input topic once (producing is not timed); every timed run is a new
# application (its own group, changelog and output topic) reading that input from the start,
# until every window's final result has been read back from its output topic. Event times are
# moved to an hour ago (a broker deletes records past their retention, so 1970 would not do) and
# one end marker after the events closes the last real window (a runtime never sees "end of
# input"); results are moved back before comparing with `expected`.

RUNTIME_SETTLE_S = 600.0  # seconds a run may take before it is declared stuck
_RUNTIME_BASE_MS = (time.time_ns() // 1_000_000 - 3_600_000) // 60_000 * 60_000
_END_KEY = "__end__"


class _RuntimeBackend:
    """One backend for the runtime rows: its URL, input produced once, a counter of runs.
    Owns the `headwater serve` process when it started one. Thread-safety: one thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.url = ""
        self.runs = 0
        self.produced: int | None = None  # id() of the event list the input topic holds
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._broker: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.url:
            return
        self._directory = tempfile.TemporaryDirectory(prefix="headwater-bench-")
        data = Path(self._directory.name) / "data"
        if self.name == "embedded":
            self.url = f"file://{data}"
            return
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = open(Path(self._directory.name) / "broker.log", "wb")  # noqa: SIM115 - the broker's
        self._broker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "headwater",
                "serve",
                "--data-dir",
                str(data),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or self._broker.poll() is not None:
                    raise RuntimeError("headwater serve did not start") from None
                time.sleep(0.05)
        self.url = f"kafka://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._broker is not None and self._broker.poll() is None:
            self._broker.send_signal(signal.SIGTERM)
            self._broker.wait(timeout=60)
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None


_BACKENDS = {name: _RuntimeBackend(name) for name in ("embedded", "broker")}


def _produce_input(client: Any, events: list[Event]) -> None:
    admin = client.admin()
    if "events" in admin.list_topics():
        admin.delete_topics(["events"])
        while "events" in admin.list_topics():
            time.sleep(0.1)
    admin.create_topic("events", 1)
    admin.close()
    producer = client.producer(key_serializer="str", value_serializer="json")
    chunk = 10_000
    for start in range(0, len(events), chunk):
        for key, value, ts in events[start : start + chunk]:
            producer.send("events", value, key, timestamp=_RUNTIME_BASE_MS + ts)
        producer.flush()
    last = events[-1][2] if events else 0
    producer.send("events", 0, _END_KEY, timestamp=_RUNTIME_BASE_MS + last + 2 * WINDOW_MS)
    producer.close()


def _runtime_run(backend: _RuntimeBackend, events: list[Event], expected: Result) -> float:
    """Seconds from starting a runner to having read every window's result back."""
    from headwater import connect
    from headwater.client import OFFSET_BEGINNING, TopicPartition
    from headwater.streams import Runner

    backend.start()
    client = connect(backend.url)
    try:
        if backend.produced != id(events):
            _produce_input(client, events)
            backend.produced = id(events)
        backend.runs += 1
        app_id, sink = f"bench-{backend.runs}", f"sums-{backend.runs}"
        client.admin().create_topic(sink, 1)
        app = App(app_id)
        (
            app.stream("events", key="str", value="json")
            .window(Tumbling(WINDOW_MS), name="sums")
            .sum()
            .to(sink, key="str", value="json")
        )
        reader = client.consumer(key_deserializer="str", value_deserializer="json")
        reader.assign({TopicPartition(sink, 0): OFFSET_BEGINNING})
        result: Result = {}
        runner = Runner(app, client, commit_interval_ms=1_000)
        started = time.perf_counter()
        runner.start()
        deadline = time.monotonic() + RUNTIME_SETTLE_S
        while len(result) < len(expected):
            if runner.failed is not None or time.monotonic() > deadline:
                runner.stop()
                raise RuntimeError(f"the {backend.name} run did not finish")
            for record in reader.poll_batch(timeout=0.1):
                key, (start, _), total = record.value
                result[(key, start - _RUNTIME_BASE_MS)] = total
        seconds = time.perf_counter() - started
        runner.stop()
        reader.close()
        assert result == expected, f"the {backend.name} runtime's result differs"
        return seconds
    finally:
        client.close()


RUNTIME_ROWS.extend(
    [
        (
            "streams runtime, embedded (file://)",
            lambda events, expected: _runtime_run(_BACKENDS["embedded"], events, expected),
        ),
        (
            "streams runtime, headwater serve (kafka://)",
            lambda events, expected: _runtime_run(_BACKENDS["broker"], events, expected),
        ),
    ]
)


if __name__ == "__main__":
    main()
