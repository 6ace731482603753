"""Joins (stream-table, stream-stream, table-table) against brute-force models; co-partitioning."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.streams import App, CoPartitioningError, Record, TopologyError
from headwater.streams.testing import TestDriver

# --- stream-table -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["inner", "left"])
def test_stream_table_join(how: str) -> None:
    app = App("j")
    accounts = app.table("accounts")
    (
        app.stream("payments")
        .join(accounts, lambda p, a: (p, a), how=how)  # type: ignore[arg-type]
        .to("enriched")
    )
    driver = TestDriver(app, {"payments": 2, "accounts": 2})
    driver.send("payments", "alice", 1, timestamp=1)
    driver.send("accounts", "alice", "gold", timestamp=2)
    driver.send("payments", "alice", 2, timestamp=3)
    driver.send("accounts", "alice", None, timestamp=4)  # tombstone
    driver.send("payments", "alice", 3, timestamp=5)
    got = [(r.value, r.timestamp) for r in driver.output("enriched")]
    if how == "inner":
        assert got == [((2, "gold"), 3)]
    else:
        assert got == [((1, None), 1), ((2, "gold"), 3), ((3, None), 5)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"]), st.none() | st.integers(0, 9)),
        max_size=40,
    )
)
def test_stream_table_join_matches_model(ops: list[tuple[bool, str, int | None]]) -> None:
    app = App("j")
    app.stream("s").join(app.table("t"), lambda s, t: (s, t), how="left").to("out")
    driver = TestDriver(app, {"s": 3, "t": 3})
    table: dict[str, int] = {}
    expected = []
    for i, (is_table, key, value) in enumerate(ops):
        if is_table:
            driver.send("t", key, value, timestamp=i)
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        else:
            driver.send("s", key, value, timestamp=i)
            expected.append(Record(key, (value, table.get(key)), i))
    assert driver.output("out") == expected


# --- stream-stream ------------------------------------------------------------------------------

Side = list[tuple[str, int, int]]


def join_model(left: Side, right: Side, within: int, how: str) -> Counter[Any]:
    out: Counter[Any] = Counter()
    matched_left = [False] * len(left)
    matched_right = [False] * len(right)
    for i, (lk, lv, lt) in enumerate(left):
        for j, (rk, rv, rt) in enumerate(right):
            if lk == rk and abs(lt - rt) <= within:
                out[(lk, (lv, rv), max(lt, rt))] += 1
                matched_left[i] = matched_right[j] = True
    if how in ("left", "outer"):
        for (k, v, t), hit in zip(left, matched_left, strict=True):
            if not hit:
                out[(k, (v, None), t)] += 1
    if how == "outer":
        for (k, v, t), hit in zip(right, matched_right, strict=True):
            if not hit:
                out[(k, (None, v), t)] += 1
    return out


side_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 99), st.integers(0, 200)), max_size=25
)


@settings(max_examples=150, deadline=None)
@given(
    left=side_strategy,
    right=side_strategy,
    within=st.integers(0, 30),
    disorder=st.integers(0, 15),
    how=st.sampled_from(["inner", "left", "outer"]),
    seed=st.integers(0, 10_000),
)
def test_stream_stream_join_matches_model(
    left: Side, right: Side, within: int, disorder: int, how: str, seed: int
) -> None:
    """Arrival order is time order shuffled within `disorder` <= grace: nothing is late, so
    every pair within `within` meets and every partnerless record comes out once."""
    app = App("j")
    (
        app.stream("l")
        .join(
            app.stream("r"),
            lambda a, b: (a, b),
            within_ms=within,
            grace_ms=disorder,
            how=how,  # type: ignore[arg-type]
            name="pairs",
        )
        .to("out")
    )
    driver = TestDriver(app, {"l": 2, "r": 2})
    rng = random.Random(seed)
    arrivals = [("l", e) for e in left] + [("r", e) for e in right]
    arrivals.sort(key=lambda a: a[1][2] + rng.randint(0, disorder))
    for topic, (key, value, ts) in arrivals:
        driver.send(topic, key, value, timestamp=ts)
    driver.finish()
    got = Counter((r.key, r.value, r.timestamp) for r in driver.output("out"))
    assert got == join_model(left, right, within, how)
    assert driver.late_count("pairs") == 0


def test_stream_stream_left_join_waits_for_the_window() -> None:
    app = App("j")
    joined = app.stream("l").join(
        app.stream("r"), lambda a, b: (a, b), within_ms=10, grace_ms=5, how="left", name="x"
    )
    joined.to("out")
    joined.late().to("late")
    driver = TestDriver(app)
    driver.send("l", "k", "L1", timestamp=100)
    driver.send("r", "k", "R0", timestamp=140)  # stream time 140 > 100 + 10 + 5: L1 alone
    assert driver.output("out") == [Record("k", ("L1", None), 100)]
    driver.send("r", "k", "R-late", timestamp=120)  # more than grace behind
    assert driver.output("late") == [Record("k", "R-late", 120)]
    assert driver.late_count("x") == 1


def test_stream_stream_join_needs_within() -> None:
    app = App("j")
    with pytest.raises(TopologyError, match="within_ms"):
        app.stream("l").join(app.stream("r"), lambda a, b: a)


# --- table-table --------------------------------------------------------------------------------


def combine(how: str, left: Any, right: Any) -> Any:
    if how == "inner":
        return (left, right) if left is not None and right is not None else None
    if how == "left":
        return (left, right) if left is not None else None
    return (left, right) if left is not None or right is not None else None


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"]), st.none() | st.integers(0, 9)),
        max_size=40,
    ),
    how=st.sampled_from(["inner", "left", "outer"]),
)
def test_table_table_join_matches_model(ops: list[tuple[bool, str, int | None]], how: str) -> None:
    app = App("j")
    joined = app.table("l").join(app.table("r"), lambda a, b: (a, b), how=how)  # type: ignore[arg-type]
    joined.to_stream().to("out")
    driver = TestDriver(app, {"l": 2, "r": 2})
    left: dict[str, int] = {}
    right: dict[str, int] = {}
    for i, (is_left, key, value) in enumerate(ops):
        driver.send("l" if is_left else "r", key, value, timestamp=i)
        side = left if is_left else right
        if value is None:
            side.pop(key, None)
        else:
            side[key] = value
    latest: dict[str, Any] = {}
    for record in driver.output("out"):
        latest[record.key] = record.value
    for key in ["a", "b", "c"]:
        assert latest.get(key) == combine(how, left.get(key), right.get(key))


def test_table_from_aggregation_joined_by_a_stream() -> None:
    app = App("j")
    totals = app.stream("payments").group(name="totals").sum()
    app.stream("queries").join(totals, lambda q, total: total).to("answers")
    driver = TestDriver(app, {"payments": 2, "queries": 2})
    driver.send_many("payments", [("a", 5, 1), ("a", 7, 2), ("b", 1, 3)])
    driver.send_many("queries", [("a", None, 4), ("b", None, 5), ("z", None, 6)])
    assert [(r.key, r.value) for r in driver.output("answers")] == [("a", 12), ("b", 1)]


# --- co-partitioning ----------------------------------------------------------------------------


def test_co_partitioning_checked_with_topic_names() -> None:
    app = App("j")
    app.stream("payments").join(app.table("accounts"), lambda p, a: a).to("out")
    with pytest.raises(CoPartitioningError) as caught:
        TestDriver(app, {"payments": 4, "accounts": 2})
    message = str(caught.value)
    assert "'payments' has 4" in message and "'accounts' has 2" in message


def test_repartitioned_side_takes_the_other_sides_count() -> None:
    app = App("j")
    (
        app.stream("clicks")
        .key_by(lambda k, v: v["user"], name="by-user")
        .join(app.table("users"), lambda c, u: (c["page"], u))
        .to("out")
    )
    topology = app.topology({"clicks": 1, "users": 3})
    assert topology.repartition_topics == {"j-by-user-repartition": 3}
    driver = TestDriver(app, {"clicks": 1, "users": 3})
    driver.send_many("users", [("u1", "Ann", 1), ("u2", "Bob", 2)])
    driver.send_many("clicks", [(None, {"user": "u1", "page": "/"}, 3)])
    driver.send_many("clicks", [(None, {"user": "u2", "page": "/x"}, 4)])
    assert [r.value for r in driver.output("out")] == [("/", "Ann"), ("/x", "Bob")]
