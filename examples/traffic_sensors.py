"""Traffic sensors: vehicles and speed per intersection over 5-minute windows every minute, live.

Topics
    readings      key: intersection id; value (JSON): {"intersection", "vehicles", "speed",
                  "ts"}: vehicles counted since the last reading, their mean speed (km/h)
    traffic-5min  key: intersection id; value (JSON): one aggregate per intersection and window

Readings are aggregated per intersection over HOPPING windows of 5 minutes starting every
minute (each reading counts in five windows): total vehicles, and their mean speed (weighted by
vehicles: a reading of 30 cars weighs more than one of 2). A window's result is emitted once,
when it closes: when event time passes its end plus GRACE_MS.

Run it (on the embedded log, in a directory of your choice; it finishes by itself):

    python examples/traffic_sensors.py --data-dir /tmp/traffic --events 2000

It creates the topics, starts the streams runtime on its own thread, produces the readings and
prints each aggregate as it is read back from `traffic-5min`. The windows of the last five
minutes are still open when the readings stop (a stream has no end), so they are not printed.
`build_app()` is the dataflow alone: the tests run it through the `TestDriver`.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _live import LivePrinter, ensure_topics, wait_until_consumed
from headwater.streams import App, Hopping, WindowResult

MINUTE_MS = 60_000
WINDOW_MS = 5 * MINUTE_MS  # each aggregate covers five minutes
ADVANCE_MS = MINUTE_MS  # a new window starts every minute
GRACE_MS = 10_000  # how late (in event time) a reading may arrive and still count
TICK_MS = 15_000  # every sensor reports every 15 s
CONGESTED_KMH = 20.0  # a window whose mean speed is below this is flagged
INTERSECTIONS = 8
PARTITIONS = 3

Reading = dict[str, Any]
Aggregate = dict[str, Any]
WINDOWS = Hopping(WINDOW_MS, ADVANCE_MS, grace_ms=GRACE_MS)

# --- the dataflow -----------------------------------------------------------------------------


def _traffic_init() -> tuple[int, int, int]:
    return (0, 0, 0)


def _traffic_add(acc: tuple[int, int, int], reading: Reading) -> tuple[int, int, int]:
    """(readings, vehicles, speed x vehicles): integers, so the mean is exact whatever the
    order readings are folded in."""
    readings, vehicles, weighted = acc
    return (
        readings + 1,
        vehicles + reading["vehicles"],
        weighted + reading["speed"] * reading["vehicles"],
    )


def aggregate_of(intersection: str, result: WindowResult) -> Aggregate:
    """A closed window's output value."""
    readings, vehicles, weighted = result.value
    mean = round(weighted / vehicles, 1) if vehicles else None
    return {
        "intersection": intersection,
        "window_start": result.window.start,
        "window_end": result.window.end,
        "readings": readings,
        "vehicles": vehicles,
        "mean_speed": mean,
        "congested": mean is not None and mean < CONGESTED_KMH,
    }


def build_app(application_id: str = "traffic-sensors", **settings: Any) -> App:
    """readings -> hopping 5 min / 1 min per intersection -> traffic-5min. `settings` go to
    `App` (where its state lives, for one)."""
    app = App(application_id, **settings)
    (
        app.stream("readings", key="str", value="json", timestamp=lambda r: r["ts"])
        .window(WINDOWS, name="five-minutes")
        .fold(_traffic_init, _traffic_add)
        .map(lambda key, result: (key, aggregate_of(key, result)), name="to-aggregate")
        .to("traffic-5min", key="str", value="json")
    )
    return app


# --- data -------------------------------------------------------------------------------------


def generate(events: int, *, seed: int = 11, start_ms: int = 1_700_000_000_000) -> list[Reading]:
    """Deterministic readings: every intersection reports every TICK_MS (so `events` is
    rounded up to whole rounds), a morning-rush-like swell of traffic, and one intersection
    jammed for a while (slow and few vehicles)."""
    rng = random.Random(seed)
    ticks = max(1, math.ceil(events / INTERSECTIONS))
    busy = [rng.randint(4, 20) for _ in range(INTERSECTIONS)]  # vehicles per reading, typical
    jammed = rng.randrange(INTERSECTIONS)
    jam_from = ticks // 3
    jam_to = jam_from + max(ticks // 6, 32)  # 8 minutes at least: whole windows jammed
    readings = []
    for tick in range(ticks):
        ts = start_ms + tick * TICK_MS
        swell = 1 + 0.6 * math.sin(math.pi * tick / max(1, ticks - 1))
        for i in range(INTERSECTIONS):
            vehicles = max(0, round(busy[i] * swell) + rng.randint(-3, 3))
            speed = rng.randint(35, 55) - vehicles // 4
            if i == jammed and jam_from <= tick < jam_to:
                vehicles, speed = rng.randint(0, 3), rng.randint(3, 12)
            readings.append(
                {"intersection": f"int-{i:02d}", "vehicles": vehicles, "speed": speed, "ts": ts}
            )
    return readings


def format_aggregate(aggregate: Aggregate) -> str:
    """One line per aggregate, the same in the demo and in its test."""

    def clock(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")

    mean = aggregate["mean_speed"]
    speed = "-" if mean is None else f"{mean:.1f} km/h"
    flag = "  CONGESTED" if aggregate["congested"] else ""
    return (
        f"{aggregate['intersection']}  {clock(aggregate['window_start'])}-"
        f"{clock(aggregate['window_end'])}  vehicles {aggregate['vehicles']:>4}  "
        f"mean speed {speed}{flag}"
    )


# --- the demo ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="the embedded log's directory (default: a temporary)")
    parser.add_argument("--events", type=int, default=400, help="readings to produce")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--rate", type=float, default=1_000, help="readings per second (0: all at once)"
    )
    parser.add_argument(
        "--start-ms",
        type=int,
        default=(time.time_ns() // 1_000_000 - 3 * 3_600_000) // MINUTE_MS * MINUTE_MS,
        help="event time of the first reading (default: three hours ago, whole minute)",
    )
    args = parser.parse_args(argv)
    readings = generate(args.events, seed=args.seed, start_ms=args.start_ms)
    if args.data_dir is None:
        with tempfile.TemporaryDirectory(prefix="headwater-traffic-") as directory:
            return _demo(Path(directory), readings, args.rate)
    return _demo(Path(args.data_dir), readings, args.rate)


def _demo(data_dir: Path, readings: list[Reading], rate: float) -> int:
    import headwater
    from headwater.streams import Runner

    client = headwater.connect(f"file://{data_dir.resolve()}")
    try:
        ensure_topics(client, {"readings": (PARTITIONS, {}), "traffic-5min": (PARTITIONS, {})})
        printer = LivePrinter(client, "traffic-5min", lambda key, value: format_aggregate(value))
        printer.start()
        runner = Runner(build_app(), client, commit_interval_ms=1_000)
        runner.start()
        producer = client.producer(key_serializer="str", value_serializer="json")
        try:
            print(f"sending {len(readings)} readings", flush=True)
            started = time.monotonic()
            for n, reading in enumerate(readings):
                if rate > 0 and n % 50 == 0:
                    time.sleep(max(0.0, started + n / rate - time.monotonic()))
                    producer.flush()
                producer.send("readings", reading, reading["intersection"], timestamp=reading["ts"])
            producer.flush()
            wait_until_consumed(runner, len(readings), timeout=300)
        finally:
            runner.stop()  # commits: every aggregate is written
        printer.finish()
        producer.close()
        print(f"{len(readings)} readings, {printer.printed} aggregates", flush=True)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
