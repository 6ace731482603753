"""Windows: assignment against brute-force models (hypothesis), lateness, emission modes."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.streams import (
    App,
    CountWindow,
    Hopping,
    Record,
    Session,
    Sliding,
    TopologyError,
    Tumbling,
    Window,
    WindowResult,
)
from headwater.streams._windows import merge_sessions, sliding_windows
from headwater.streams.testing import TestDriver

Event = tuple[str, int, int]

events_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(-50, 50), st.integers(0, 400)),
    max_size=60,
)


def run_windowed(
    spec: Any,
    events: list[Event],
    *,
    emit: str = "final",
    batch_seed: int = 0,
    finish: bool = True,
    aggregation: str = "sum",
) -> tuple[TestDriver, list[Record]]:
    """Send `events` in random-sized batches (the result must not depend on batching)."""
    app = App("w")
    windowed = app.stream("in").window(spec, name="win", emit=emit)  # type: ignore[arg-type]
    result = getattr(windowed, aggregation)()
    result.to("out")
    result.late().to("late")
    driver = TestDriver(app)
    rng = random.Random(batch_seed)
    i = 0
    while i < len(events):
        size = rng.randint(1, 7)
        driver.send_many("in", events[i : i + size])
        i += size
    if finish:
        driver.finish()
    return driver, driver.output("out")


def finals(records: list[Record]) -> Counter[tuple[Any, Window, Any]]:
    return Counter((r.value.key, r.value.window, r.value.value) for r in records)


# --- fixed windows ------------------------------------------------------------------------------


def fixed_model(
    events: list[Event], size: int, advance: int, grace: int
) -> tuple[Counter[tuple[Any, Window, Any]], int]:
    """One record at a time: a window takes a record while end + grace > stream time."""
    stream_time = -(10**9)
    sums: dict[tuple[str, Window], int] = {}
    late = 0
    for key, value, ts in events:
        stream_time = max(stream_time, ts)
        placed = False
        start = (ts // advance) * advance
        while start > ts - size:
            window = Window(start, start + size)
            if window.end + grace > stream_time:
                sums[(key, window)] = sums.get((key, window), 0) + value
                placed = True
            start -= advance
        late += not placed
    return Counter((k, w, v) for (k, w), v in sums.items()), late


@settings(max_examples=150, deadline=None)
@given(
    events=events_strategy,
    size=st.integers(1, 60),
    grace=st.integers(0, 40),
    seed=st.integers(0, 1000),
)
def test_tumbling_matches_model(events: list[Event], size: int, grace: int, seed: int) -> None:
    driver, out = run_windowed(Tumbling(size, grace_ms=grace), events, batch_seed=seed)
    expected, late = fixed_model(events, size, size, grace)
    assert finals(out) == expected
    assert driver.late_count("win") == late == len(driver.output("late"))


@settings(max_examples=150, deadline=None)
@given(
    events=events_strategy,
    size=st.integers(1, 60),
    ratio=st.integers(1, 5),
    grace=st.integers(0, 40),
    seed=st.integers(0, 1000),
)
def test_hopping_matches_model(
    events: list[Event], size: int, ratio: int, grace: int, seed: int
) -> None:
    advance = max(1, size // ratio)
    driver, out = run_windowed(Hopping(size, advance, grace_ms=grace), events, batch_seed=seed)
    expected, late = fixed_model(events, size, advance, grace)
    assert finals(out) == expected
    assert driver.late_count("win") == late


@given(ts=st.integers(-10_000, 10_000), size=st.integers(1, 100), advance=st.integers(1, 100))
def test_hopping_windows_for(ts: int, size: int, advance: int) -> None:
    if advance > size:
        return
    windows = Hopping(size, advance).windows_for(ts)
    brute = [Window(s, s + size) for s in range(ts - size - advance, ts + 1) if s % advance == 0]
    assert windows == [w for w in brute if w.start <= ts < w.end]


def test_final_emits_once_when_window_closes() -> None:
    app = App("w")
    app.stream("in").window(Tumbling(10, grace_ms=5), name="win").sum().to("out")
    driver = TestDriver(app)
    driver.send("in", "k", 1, timestamp=1)
    driver.send("in", "k", 2, timestamp=9)
    driver.send("in", "k", 4, timestamp=14)  # stream time 14 < 10 + 5: still open
    assert driver.output("out") == []
    driver.send("in", "k", 8, timestamp=3)  # in grace: counted
    driver.send("in", "k", 0, timestamp=15)  # closes [0, 10)
    assert driver.output("out") == [Record("k", WindowResult("k", Window(0, 10), 11), 9)]


def test_update_emits_on_every_record() -> None:
    _, out = run_windowed(Tumbling(10), [("k", 1, 1), ("k", 2, 5), ("k", 3, 12)], emit="update")
    assert [(r.value.window, r.value.value, r.timestamp) for r in out] == [
        (Window(0, 10), 1, 1),
        (Window(0, 10), 3, 5),
        (Window(10, 20), 3, 12),
    ]


def test_late_records_routed_and_counted_never_dropped() -> None:
    driver, out = run_windowed(
        Tumbling(10), [("k", 1, 25), ("k", 2, 3), ("k", 4, 19), ("k", 8, 20)]
    )
    assert driver.output("late") == [Record("k", 2, 3), Record("k", 4, 19)]
    assert driver.late_count("win") == 2
    assert driver.metrics() == {"win.late-records": 2}
    assert finals(out) == Counter({("k", Window(20, 30), 9): 1})


def test_late_without_output_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    app = App("w")
    app.stream("in").window(Tumbling(10), name="win").count().to("out")
    driver = TestDriver(app)
    driver.send_many("in", [("k", 1, 50), ("k", 1, 1), ("k", 1, 2)])
    assert driver.late_count("win") == 2
    assert "late records" in caplog.text


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("count", 3), ("sum", 9), ("min", 1), ("max", 5), ("mean", 3.0)],
)
def test_aggregations(aggregation: str, expected: object) -> None:
    _, out = run_windowed(
        Tumbling(10), [("k", 3, 1), ("k", 1, 2), ("k", 5, 3)], aggregation=aggregation
    )
    assert [r.value.value for r in out] == [expected]


def test_reduce_fold_and_of() -> None:
    app = App("w")
    stream = app.stream("in")
    stream.window(Tumbling(10), name="r").reduce(lambda a, v: a * v, of=lambda v: v["n"]).to("r")
    stream.window(Tumbling(10), name="f").fold(list, lambda acc, v: [*acc, v]).to("f")
    stream.window(Tumbling(10), name="s").sum(lambda v: v["n"]).to("s")
    driver = TestDriver(app)
    driver.send_many("in", [("k", {"n": 2}, 1), ("k", {"n": 3}, 2), ("k", {"n": 4}, 3)])
    driver.finish()
    assert [r.value.value for r in driver.output("r")] == [24]
    assert [r.value.value for r in driver.output("f")] == [[{"n": 2}, {"n": 3}, {"n": 4}]]
    assert [r.value.value for r in driver.output("s")] == [9]


def test_processing_time_windows_close_on_wall_clock() -> None:
    app = App("w")
    app.stream("in").window(Tumbling(100, processing_time=True), name="win").count().to("out")
    driver = TestDriver(app, wall_clock_ms=1_000)
    driver.send("in", "k", "x", timestamp=5)  # event time plays no part
    driver.send("in", "k", "y", timestamp=999_999)
    driver.advance_wall_clock(50)
    driver.send("in", "k", "z", timestamp=0)
    assert driver.output("out") == []
    driver.advance_wall_clock(50)  # wall clock 1100: [1000, 1100) closes
    assert driver.output("out") == [Record("k", WindowResult("k", Window(1000, 1100), 3), 1099)]
    assert driver.late_count("win") == 0


# --- sessions -----------------------------------------------------------------------------------


def session_model(
    events: list[Event], gap: int, grace: int
) -> tuple[Counter[tuple[Any, Window, Any]], int]:
    """One record at a time, every key's sessions checked each step."""
    stream_time = -(10**9)
    open_sessions: dict[str, list[list[int]]] = {}
    results: Counter[tuple[Any, Window, Any]] = Counter()
    late = 0

    def close_due() -> None:
        for key, sessions in open_sessions.items():
            for session in list(sessions):
                if session[1] + 1 + gap + grace <= stream_time:
                    results[(key, Window(session[0], session[1] + 1), session[2])] += 1
                    sessions.remove(session)

    for key, value, ts in events:
        stream_time = max(stream_time, ts)
        close_due()
        sessions = open_sessions.setdefault(key, [])
        touching = [s for s in sessions if s[0] - gap <= ts <= s[1] + gap]
        first = min([ts] + [s[0] for s in touching])
        last = max([ts] + [s[1] for s in touching])
        if last + 1 + gap + grace <= stream_time:
            late += 1
            continue
        total = value + sum(s[2] for s in touching)
        for s in touching:
            sessions.remove(s)
        sessions.append([first, last, total])
    for key, sessions in open_sessions.items():
        for s in sessions:
            results[(key, Window(s[0], s[1] + 1), s[2])] += 1
    return results, late


@settings(max_examples=200, deadline=None)
@given(
    events=events_strategy,
    gap=st.integers(0, 40),
    grace=st.integers(0, 40),
    seed=st.integers(0, 1000),
)
def test_sessions_match_model(events: list[Event], gap: int, grace: int, seed: int) -> None:
    driver, out = run_windowed(Session(gap, grace_ms=grace), events, batch_seed=seed)
    expected, late = session_model(events, gap, grace)
    assert finals(out) == expected
    assert driver.late_count("win") == late


def test_session_merge_bridging_record() -> None:
    assert merge_sessions([(0, 5), (20, 30)], 12, 8) == ((0, 30), [(0, 5), (20, 30)])
    assert merge_sessions([(0, 5)], 20, 8) == ((20, 20), [])


def test_session_update_mode_retracts_merged_sessions() -> None:
    _, out = run_windowed(
        Session(5, grace_ms=10),
        [("k", 1, 0), ("k", 1, 10), ("k", 1, 5)],
        emit="update",
        finish=False,
    )
    assert [(r.value.window, r.value.value) for r in out] == [
        (Window(0, 1), 1),
        (Window(10, 11), 1),
        (Window(0, 1), None),
        (Window(10, 11), None),
        (Window(0, 11), 3),
    ]


def test_session_fold_needs_merge() -> None:
    app = App("w")
    with pytest.raises(TopologyError, match="merge"):
        app.stream("in").window(Session(5)).fold(list, lambda a, v: [*a, v])


# --- sliding ------------------------------------------------------------------------------------


@given(st.lists(st.integers(0, 200), min_size=1, max_size=30), st.integers(0, 30))
def test_sliding_windows_cover_every_close_pair(timestamps: list[int], d: int) -> None:
    timestamps.sort()
    windows = sliding_windows(timestamps, d)
    assert len(windows) == len(set(windows))
    for window in windows:
        assert window.end - window.start == d + 1
        assert any(window.start <= t < window.end for t in timestamps)
    for a in timestamps:
        for b in timestamps:
            if a <= b <= a + d:
                assert any(w.start <= a and b < w.end for w in windows)
    # Every distinct set of records that fits in d has its window (Kafka's definition).
    contents = {tuple(t for t in timestamps if w.start <= t < w.end) for w in windows}
    for a in timestamps:
        left = tuple(t for t in timestamps if a - d <= t <= a)
        assert left in contents


def sliding_model(events: list[Event], d: int) -> Counter[tuple[Any, Window, Any]]:
    out: Counter[tuple[Any, Window, Any]] = Counter()
    for key in {e[0] for e in events}:
        mine = [e for e in events if e[0] == key]
        for window in sliding_windows(sorted(e[2] for e in mine), d):
            out[(key, window, sum(v for _, v, t in mine if window.start <= t < window.end))] += 1
    return out


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(-9, 9), st.integers(0, 300)),
        max_size=40,
    ),
    d=st.integers(0, 50),
    disorder=st.integers(0, 20),
    seed=st.integers(0, 1000),
)
def test_sliding_matches_model(events: list[Event], d: int, disorder: int, seed: int) -> None:
    """With disorder within grace nothing is late, so the result is the offline one."""
    rng = random.Random(seed)
    events.sort(key=lambda e: e[2] + rng.randint(0, disorder))
    driver, out = run_windowed(Sliding(d, grace_ms=disorder), events, batch_seed=seed)
    assert driver.late_count("win") == 0
    assert finals(out) == sliding_model(events, d)


def test_sliding_kafka_example() -> None:
    """Kafka's documentation example: records at 8 and 11 (d = 10) share one window."""
    _, out = run_windowed(Sliding(10), [("k", 1, 8), ("k", 1, 11)])
    assert [(r.value.window, r.value.value) for r in out] == [
        (Window(-2, 9), 1),
        (Window(1, 12), 2),
        (Window(9, 20), 1),
    ]


def test_sliding_late_record() -> None:
    driver, _ = run_windowed(Sliding(5), [("k", 1, 100), ("k", 1, 90), ("k", 1, 96)])
    assert driver.late_count("win") == 1


# --- count windows ------------------------------------------------------------------------------


def test_count_windows() -> None:
    _, out = run_windowed(CountWindow(2), [("a", 1, 5), ("b", 1, 6), ("a", 2, 3), ("a", 4, 9)])
    assert [(r.key, r.value.window, r.value.value) for r in out] == [("a", Window(3, 6), 3)]
    _, updates = run_windowed(CountWindow(2), [("a", 1, 5), ("a", 2, 6)], emit="update")
    assert [r.value.value for r in updates] == [1, 3]
