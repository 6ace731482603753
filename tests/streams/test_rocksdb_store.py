"""RocksDB stores: the in-memory stores' behaviour (the same tests over both), the cache bound,
reopening (committed state kept, unclean state wiped), large state outside Python memory, and
apps running on RocksDB through the test driver."""

from __future__ import annotations

import inspect
import logging
import random
import shutil
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.streams import (
    App,
    ChangeloggedStore,
    Hopping,
    InMemoryKeyValueStore,
    InMemoryWindowStore,
    Record,
    Session,
    Sliding,
    StreamsError,
    TopologyError,
    Tumbling,
    Window,
    WindowResult,
)
from headwater.streams._rocksdb import (
    RocksDBKeyValueStore,
    RocksDBOptions,
    RocksDBWindowStore,
    open_rocksdb_store,
    state_directory,
)
from headwater.streams.testing import TestDriver

KINDS = ["memory", "rocksdb"]


@pytest.fixture
def opened() -> Iterator[list[ChangeloggedStore]]:
    """Stores a test opened, closed at its end whatever happens."""
    stores: list[ChangeloggedStore] = []
    yield stores
    for store in stores:
        store.close()


def kv_store(
    kind: str, directory: Path, opened: list[ChangeloggedStore], **options: Any
) -> InMemoryKeyValueStore:
    store = (
        InMemoryKeyValueStore("s")
        if kind == "memory"
        else RocksDBKeyValueStore("s", directory, options=RocksDBOptions(**options))
    )
    opened.append(store)
    return store


def window_store(
    kind: str, directory: Path, opened: list[ChangeloggedStore]
) -> InMemoryWindowStore:
    store = InMemoryWindowStore("w") if kind == "memory" else RocksDBWindowStore("w", directory)
    opened.append(store)
    return store


# --- the in-memory stores' behaviour ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_key_value_store_tracks_changes_in_order(
    kind: str, tmp_path: Path, opened: list[ChangeloggedStore]
) -> None:
    store = kv_store(kind, tmp_path / "a", opened)
    store.put("b", 1)
    store.put("a", 2)
    store.put("b", 3)
    store.delete("a")
    store.put("c", None)  # a None value deletes
    assert store.changes() == [("b", 3), ("a", None), ("c", None)]
    assert list(store.items()) == [("b", 3)] and len(store) == 1
    store.mark_committed()
    assert store.changes() == []
    fresh = kv_store(kind, tmp_path / "b", opened)
    fresh.restore([("b", 1), ("a", 2), ("b", 3), ("a", None)])
    assert dict(fresh.items()) == {"b": 3} and fresh.changes() == []


@pytest.mark.parametrize("kind", KINDS)
def test_window_store_changes_and_restore(
    kind: str, tmp_path: Path, opened: list[ChangeloggedStore]
) -> None:
    store = window_store(kind, tmp_path / "a", opened)
    store.put(("k", 0), 1)
    store.put(("j", 10), 2)
    assert store.get(("k", 0)) == 1 and store.get(("k", 10)) is None
    assert store.changes() == [(("k", 0), 1), (("j", 10), 2)]
    store.mark_committed()
    store.delete(("k", 0))
    assert store.changes() == [(("k", 0), None)]
    assert store.drop(10) == {"j": 2}
    assert len(store) == 0
    fresh = window_store(kind, tmp_path / "b", opened)
    fresh.restore([(("k", 0), 1), (("j", 10), 2), (("k", 0), None)])
    assert list(fresh.items()) == [(("j", 10), 2)]


@pytest.mark.parametrize("kind", KINDS)
def test_operator_fast_path_attributes(
    kind: str, tmp_path: Path, opened: list[ChangeloggedStore]
) -> None:
    """Operators read `data` with get and write `data[k] = v; dirty[k] = None` directly."""
    store = kv_store(kind, tmp_path, opened, cache_entries=2)
    missing = object()
    for i in range(10):
        store.data[i] = store.data.get(i, 0) + 1
        store.dirty[i] = None
    assert store.data.get(3, missing) == 1 and store.data.get(99, missing) is missing
    assert 3 in store.data and 99 not in store.data and store.data[4] == 1
    assert store.changes() == [(i, 1) for i in range(10)]
    assert sorted(store.items()) == [(i, 1) for i in range(10)] and len(store) == 10


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "put", "delete", "get", "commit", "reopen"]),
            st.sampled_from(["a", "b", ("t", 1), ("t", 2), 7, b"x"]),
            st.integers(0, 3) | st.tuples(st.integers(0, 3), st.text(max_size=2)),
        ),
        max_size=40,
    )
)
def test_store_matches_a_dict_model(kind: str, ops: list[tuple[str, Any, Any]]) -> None:
    """Any sequence of changes, commits and reopens (a restart on the same directory) against
    a dict: reads, changes(), items(), len(); a reopened RocksDB store holds the last commit,
    or nothing if uncommitted entries had reached its disk (the changelog restores it then)."""
    with tempfile.TemporaryDirectory() as directory:
        opened: list[ChangeloggedStore] = []

        def new() -> InMemoryKeyValueStore:
            return kv_store(kind, Path(directory), opened, cache_entries=2)

        store = new()
        model: dict[Any, Any] = {}
        committed: dict[Any, Any] = {}
        dirty: dict[Any, None] = {}
        for op, key, value in ops:
            if op == "put":
                store.put(key, value)
                model[key] = value
                dirty[key] = None
            elif op == "delete":
                store.delete(key)
                model.pop(key, None)
                dirty[key] = None
            elif op == "get":
                assert store.get(key) == model.get(key)
            elif op == "commit":
                assert store.changes() == [(k, model.get(k)) for k in dirty]
                store.mark_committed()
                committed, dirty = dict(model), {}
            else:
                clean = isinstance(store, RocksDBKeyValueStore) and store._local.clean
                store.close()
                store = new()
                if clean:  # the disk held the last commit
                    assert dict(store.items()) == committed
                else:  # a fresh store, or a RocksDB store wiped at reopen
                    assert len(store) == 0
                    store.restore(committed.items())  # what a runtime does from the changelog
                model, dirty = dict(committed), {}
            assert dict(store.items()) == model and len(store) == len(model)
        for opened_store in opened:
            opened_store.close()


# --- RocksDB specifics --------------------------------------------------------------------------


def test_codec_keeps_tuples_through_the_disk(tmp_path: Path) -> None:
    with RocksDBKeyValueStore("s", tmp_path, options=RocksDBOptions(cache_entries=2)) as store:
        key = ("card", 1)
        value = [Record("k", (1, 2), 3), WindowResult("k", Window(0, 10), (2.5, "x"))]
        store.put(key, value)
        for i in range(10):  # evict it
            store.put(i, i)
        assert key not in dict.keys(store.data)
        found = store.get(("card", 1))
        assert found == value and type(found[0]) is Record and type(found[1].window) is Window
        assert [k for k, _ in store.items() if isinstance(k, tuple)] == [key]


def test_cache_is_bounded_and_evictions_keep_every_change(tmp_path: Path) -> None:
    with RocksDBKeyValueStore("s", tmp_path, options=RocksDBOptions(cache_entries=10)) as store:
        for i in range(100):
            store.put(i, i * i)
            assert dict.__len__(store.data) <= 10
        for i in range(0, 100, 3):
            store.delete(i)
        expected = {i: i * i for i in range(100) if i % 3}
        assert store.get(3) is None and store.get(4) == 16
        assert len(store) == len(expected) and dict(store.items()) == expected
        assert store.changes() == [(i, expected.get(i)) for i in range(100)]
        assert dict.__len__(store.data) <= 10


def test_items_is_lazy_and_safe_to_change_under(tmp_path: Path) -> None:
    with RocksDBKeyValueStore("s", tmp_path, options=RocksDBOptions(cache_entries=4)) as store:
        for i in range(20):
            store.put(i, i)
        seen = []
        for key, value in store.items():
            store.put(key, value + 100)  # evicts and writes while iterating
            store.put(1000 + key, 0)
            seen.append(key)
        assert sorted(seen) == list(range(20))
        assert store.get(5) == 105 and len(store) == 40


def test_the_data_cache_refuses_changes_that_bypass_tracking(tmp_path: Path) -> None:
    with RocksDBKeyValueStore("s", tmp_path) as store:
        store.put("a", 1)
        with pytest.raises(TypeError):
            store.data.pop("a")
        with pytest.raises(TypeError):
            del store.data["a"]
        with pytest.raises(TypeError):
            store.data.update({"b": 2})


def test_reopen_keeps_the_committed_state_and_drops_the_rest(tmp_path: Path) -> None:
    with RocksDBKeyValueStore("s", tmp_path) as store:
        assert store.changelog_offset is None
        store.put("a", 1)
        store.put("b", (2, "two"))
        store.mark_committed(changelog_offset=2)
        store.put("a", 10)  # never committed: not in the changelog, so not on disk either
        store.delete("b")
    with RocksDBKeyValueStore("s", tmp_path) as store:
        assert dict(store.items()) == {"a": 1, "b": (2, "two")}
        assert store.changelog_offset == 2 and store.changes() == []
        store.restore([("a", 1), ("b", (2, "two")), ("c", 3)])  # the changelog, again: harmless
        assert dict(store.items()) == {"a": 1, "b": (2, "two"), "c": 3}
        store.mark_committed()  # no offset given: the last one stays
    with RocksDBKeyValueStore("s", tmp_path) as store:
        assert store.changelog_offset == 2 and len(store) == 3


def test_uncommitted_entries_on_disk_wipe_the_store_at_reopen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = RocksDBOptions(cache_entries=4)
    with RocksDBKeyValueStore("s", tmp_path, options=options) as store:
        store.put("kept", 1)
        store.mark_committed(changelog_offset=1)
        for i in range(10):  # evictions write uncommitted entries, then the process "dies"
            store.put(i, i)
        assert not (tmp_path / "checkpoint.json").exists()
    with (
        caplog.at_level(logging.WARNING, "headwater.streams"),
        RocksDBKeyValueStore("s", tmp_path, options=options) as store,
    ):
        assert len(store) == 0 and store.changelog_offset is None
        assert "not committed cleanly" in caplog.text
        store.restore([("kept", 1)])
        assert dict(store.items()) == {"kept": 1}


def test_a_checkpoint_without_its_database_covers_nothing(tmp_path: Path) -> None:
    with RocksDBKeyValueStore("s", tmp_path) as store:
        store.put("a", 1)
        store.mark_committed(changelog_offset=1)
    shutil.rmtree(tmp_path / "rocksdb")  # someone cleaned up the wrong half
    with RocksDBKeyValueStore("s", tmp_path) as store:
        assert store.changelog_offset is None and len(store) == 0  # restore from 0, then
    (tmp_path / "checkpoint.json").write_text("[1, 2")
    with RocksDBKeyValueStore("s", tmp_path) as store:
        assert store.changelog_offset is None and len(store) == 0


def test_a_directory_is_owned_by_one_open_store(tmp_path: Path) -> None:
    with (
        RocksDBKeyValueStore("s", tmp_path),
        pytest.raises(StreamsError, match="another instance"),
    ):
        RocksDBKeyValueStore("s", tmp_path)
    with RocksDBKeyValueStore("s", tmp_path) as store:  # closed: free again
        store.close()
        store.close()  # idempotent


def test_window_store_persists_open_windows_and_range_deletes_closed_ones(tmp_path: Path) -> None:
    with RocksDBWindowStore("w", tmp_path) as store:
        store.put(("k", -20), 1)  # negative starts sort before positive ones
        store.put(("k", 0), 2)
        store.put((("t", 1), 10), 3)
        store.mark_committed(changelog_offset=3)
        store.drop(0)
        store.put(("j", 10), 4)
        store.put(("k", 30), 5)
        store.mark_committed()
        store.put(("k", 40), 6)  # not committed
    with RocksDBWindowStore("w", tmp_path) as store:
        items = list(store.items())
        assert items[0] == (("k", -20), 1) and items[-1] == (("k", 30), 5)
        assert dict(items) == {("k", -20): 1, (("t", 1), 10): 3, ("j", 10): 4, ("k", 30): 5}
        assert store.changelog_offset == 3 and store.changes() == []
        assert store.get((("t", 1), 10)) == 3


def test_open_rocksdb_store_stands_in_by_kind(tmp_path: Path) -> None:
    window = open_rocksdb_store(InMemoryWindowStore("w"), tmp_path / "w")
    kv = open_rocksdb_store(InMemoryKeyValueStore("s"), tmp_path / "s")
    try:
        assert isinstance(window, RocksDBWindowStore) and isinstance(kv, RocksDBKeyValueStore)
    finally:
        window.close()
        kv.close()
    assert state_directory(tmp_path, "app", "1_3", "counts") == tmp_path / "app" / "1_3" / "counts"
    with pytest.raises(ValueError, match="cache_entries"):
        RocksDBOptions(cache_entries=0)
    with pytest.raises(ValueError, match="write_buffer_bytes"):
        RocksDBOptions(write_buffer_bytes=10)


def test_large_state_stays_out_of_python_memory(tmp_path: Path) -> None:
    """200k keys through a 2,000-entry cache: Python memory stays near the cache's, everything
    is readable after a reopen."""
    keys = 200_000
    options = RocksDBOptions(cache_entries=2_000, sync_commits=False)
    tracemalloc.start()
    try:
        with RocksDBKeyValueStore("big", tmp_path, options=options) as store:
            for i in range(keys):
                store.put(f"key-{i:07d}", (i, "payload-" * 4))
                if i % 20_000 == 19_999:
                    store.mark_committed()  # a runtime commits every interval
            store.mark_committed(changelog_offset=keys)
            _, peak = tracemalloc.get_traced_memory()
            assert dict.__len__(store.data) <= 2_000
    finally:
        tracemalloc.stop()
    # A dict of them all would take well over 40 MB (see the comparison below).
    assert peak < 12 * 1024 * 1024, f"peak Python memory {peak / 2**20:.1f} MiB"
    with RocksDBKeyValueStore("big", tmp_path, options=options) as store:
        assert store.changelog_offset == keys
        assert len(store) == keys
        rng = random.Random(1)
        for i in rng.sample(range(keys), 500):
            assert store.get(f"key-{i:07d}") == (i, "payload-" * 4)
        assert sum(1 for _ in store.items()) == keys


def test_a_dict_of_the_large_state_would_not_fit_the_bound() -> None:
    """The yardstick of the test above: the same entries in a dict."""
    tracemalloc.start()
    try:
        held = {f"key-{i:07d}": (i, "payload-" * 4) for i in range(200_000)}
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(held) == 200_000 and peak > 24 * 1024 * 1024


# --- apps on RocksDB ----------------------------------------------------------------------------

wired = pytest.mark.skipif(
    "state_dir" not in inspect.signature(App).parameters,
    reason="App(state_dir=..., default_store=...) is not wired yet",
)


def rocks_app(
    state_dir: Path | None, default_store: Literal["memory", "rocksdb"] = "rocksdb"
) -> App:
    """The restart test's app, every store in RocksDB with a tiny cache (evictions galore)."""
    app = App(
        "restart",
        state_dir=state_dir,
        default_store=default_store,
        rocksdb=RocksDBOptions(cache_entries=3, sync_commits=False),
    )
    payments = app.stream("payments")
    payments.window(Tumbling(10, grace_ms=3), name="tumbling").sum().to("tumbling")
    payments.window(Hopping(10, 5), name="hopping", emit="update").count().to("hopping")
    payments.window(Session(4, grace_ms=2), name="sessions").sum().to("sessions")
    payments.window(Sliding(6, grace_ms=2), name="sliding").max().to("sliding")
    payments.group(name="totals").sum().to_stream().to("totals")
    payments.join(
        app.stream("refunds"), lambda p, r: (p, r), within_ms=5, grace_ms=2, how="outer", name="j"
    ).to("joined")
    payments.join(app.table("limits"), lambda p, lim: lim is not None and p > lim, how="left").to(
        "over"
    )
    return app


def events(seed: int) -> list[tuple[str, str, int, int]]:
    rng = random.Random(seed)
    out = []
    for ts in range(0, 400, 3):
        topic = rng.choice(["payments", "payments", "refunds", "limits"])
        out.append((topic, rng.choice("abcd"), rng.randint(0, 20), ts + rng.randint(-4, 4)))
    return out


def run_app(
    app: App, inputs: list[tuple[str, str, int, int]], restart_every: int | None
) -> dict[str, Any]:
    with TestDriver(app, {"payments": 2, "refunds": 2, "limits": 2}) as driver:
        for i, (topic, key, value, ts) in enumerate(inputs):
            driver.send(topic, key, value, timestamp=ts)
            if restart_every and i % restart_every == restart_every - 1:
                driver.restart()
        driver.finish()
        return {topic: driver.output(topic) for topic in driver.topology.sink_topics}


@wired
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), every=st.integers(10, 60))
def test_rocksdb_app_with_restarts_matches_memory(seed: int, every: int) -> None:
    """Restarts reopen every store on its files (a RocksDB open costs ~15 ms: few of them)."""
    inputs = events(seed)
    expected = run_app(rocks_app(None, "memory"), inputs, None)
    with tempfile.TemporaryDirectory() as state_dir:
        assert run_app(rocks_app(Path(state_dir)), inputs, every) == expected


@wired
def test_store_kind_per_step_and_directories(tmp_path: Path) -> None:
    app = App("kinds", state_dir=tmp_path)
    stream = app.stream("in")
    stream.window(Tumbling(10), name="w", store="rocksdb").count().to("w")
    stream.group(name="g").count()
    with TestDriver(app, {"in": 2}) as driver:
        driver.send_many("in", [("a", 1, 1), ("a", 1, 2), ("a", 1, 12)])
        assert all(isinstance(driver.store("w", p), RocksDBWindowStore) for p in range(2))
        assert type(driver.store("g", 0)) is InMemoryKeyValueStore
        assert [r.value for r in driver.output("w")] == [WindowResult("a", Window(0, 10), 2)]
        driver.commit()
    assert sorted(p.name for p in (tmp_path / "kinds").iterdir()) == ["0_0", "0_1"]
    assert (tmp_path / "kinds" / "0_0" / "w" / "checkpoint.json").exists()
    with TestDriver(app, {"in": 2}) as again:  # the first driver closed its stores
        stored = [item for p in range(2) for item in again.store("w", p).items()]
        assert stored == [(("a", 10), 1)]  # the closed window went, the open one stayed


@wired
def test_rocksdb_without_a_state_dir_is_a_topology_error() -> None:
    app = App("x", default_store="rocksdb")
    app.stream("in").group(name="g").count()
    with pytest.raises(TopologyError, match="state_dir"):
        app.topology()
    with pytest.raises(TopologyError, match="store"):
        App("y", default_store="disk")  # type: ignore[arg-type]
