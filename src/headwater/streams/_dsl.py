"""The fluent DSL: `App`, `Stream`, `Table` and the window/grouping builders.

Building only records a graph of steps (`Node`s); `App.topology(partitions)` compiles it into
sub-topologies and tasks (see `_topology`). User functions take `(key, value)`, except the
`*_values` steps and `timestamp` extractors, which take the value alone.

Step names. Every step has a name; a stateful step's name keys its state across restarts and
code changes: the store `<name>` (changelog `<application_id>-<name>-changelog`; a windowed
join has two: `<name>-left` and `<name>-right`) and, for a repartition, the topic
`<application_id>-<name>-repartition`. Give stateful steps explicit names. Otherwise the name is
`<kind>-<n>`: the step's kind and its 1-based position among steps of that kind in the order the
code built them (`window-1`, `join-2`, `repartition-1`, ...), so adding or removing steps of
*other* kinds never renames state, but reordering steps of one kind does. A repartition is
named after the key-changing step it follows (`key_by(..., name="by-card")` gives the topic
`<application_id>-by-card-repartition`), else after itself (`repartition-<n>`).

Thread-safety: build a topology from one thread; once compiled, an `App` is read-only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from headwater.client._serialization import resolve_deserializer, resolve_serializer
from headwater.streams import _aggregations as aggs
from headwater.streams._errors import TopologyError
from headwater.streams._model import Record
from headwater.streams._stores import StateCodec
from headwater.streams._windows import CountWindow, Hopping, Session, Sliding, Tumbling, WindowSpec

if TYPE_CHECKING:
    import os
    import threading
    from collections.abc import Mapping

    from headwater.client._api import Client
    from headwater.streams._rocksdb import RocksDBOptions
    from headwater.streams._topology import Topology

Emit = Literal["final", "update"]
JoinKind = Literal["inner", "left", "outer"]
StoreKind = Literal["memory", "rocksdb"]
_Result = TypeVar("_Result")

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_STORE_KINDS = ("memory", "rocksdb")
# Steps that change the key: a stateful step after one needs a repartition first.
_KEY_CHANGING = frozenset({"map", "flat_map", "key_by"})


@dataclass(eq=False)
class Node:
    """One step of the dataflow graph: its kind, stable name, inputs `(node, port)` and
    parameters. Ports: "out" (records), "late" (late records), "0".."n" (branches), "view" (a
    table looked up, no records flow). Thread-safety: built by one thread, then read-only."""

    kind: str
    name: str
    index: int
    inputs: list[tuple[Node, str]]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def stores(self) -> list[str]:
        """The names of the stores this step owns."""
        if self.kind == "stream-join":
            return [f"{self.name}-left", f"{self.name}-right"]
        if self.kind in ("window", "aggregate", "table-source"):
            return [self.name]
        return []

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name!r}>"


def _check_store(store: str | None) -> None:
    if store is not None and store not in _STORE_KINDS:
        raise TopologyError(f"store must be 'memory' or 'rocksdb', not {store!r}")


class App:
    """A stream processing application: its id and the dataflow built on it.

    State stores are in memory unless `default_store="rocksdb"` or a stateful step says
    `store="rocksdb"`; RocksDB stores live under `state_dir` (see `_rocksdb`) and use `rocksdb`
    (a `RocksDBOptions`: cache and buffer sizes) or its defaults.

    Thread-safety: build from one thread; compiled topologies are independent of the App.
    """

    def __init__(
        self,
        application_id: str,
        *,
        codec: Any = None,
        state_dir: str | os.PathLike[str] | None = None,
        default_store: StoreKind = "memory",
        rocksdb: RocksDBOptions | None = None,
    ) -> None:
        if not _NAME.match(application_id):
            raise TopologyError(
                f"application id {application_id!r} must be 1-200 of [A-Za-z0-9._-] "
                "(it prefixes internal topic names)"
            )
        _check_store(default_store)
        self.application_id = application_id
        self.state_dir = state_dir
        self.default_store: StoreKind = default_store
        self.rocksdb_options = rocksdb
        # Encodes store entries and repartitioned records; see StateCodec.
        self.codec: Any = codec if codec is not None else StateCodec()
        self.nodes: list[Node] = []
        self._names: set[str] = set()
        self._kind_counts: dict[str, int] = {}
        self._source_topics: dict[str, Node] = {}
        self._repartitions: dict[tuple[int, str], Stream] = {}

    # --- building ---------------------------------------------------------------------------

    def _add(
        self,
        kind: str,
        inputs: list[tuple[Node, str]],
        name: str | None = None,
        *,
        name_kind: str | None = None,
        **params: Any,
    ) -> Node:
        counted = name_kind or kind
        number = self._kind_counts.get(counted, 0) + 1
        self._kind_counts[counted] = number
        if name is None:
            name = f"{counted}-{number}"
        elif not isinstance(name, str) or not _NAME.match(name):
            raise TopologyError(f"step name {name!r} must be 1-200 of [A-Za-z0-9._-]")
        node = Node(kind, name, len(self.nodes), inputs, params)
        for taken in (name, *node.stores):
            if taken in self._names:
                raise TopologyError(f"two steps are named {taken!r}; step names must be unique")
        self._names.update((name, *node.stores))
        self.nodes.append(node)
        return node

    def _claim_source(self, topic: str) -> None:
        if not isinstance(topic, str) or not topic:
            raise TopologyError(f"a topic name must be a non-empty string, not {topic!r}")
        if topic in self._source_topics:
            raise TopologyError(
                f"topic {topic!r} is already a source of this app; read it once and reuse "
                "the stream (or merge/branch it)"
            )

    def stream(
        self,
        topic: str,
        *,
        key: Any = None,
        value: Any = None,
        timestamp: Callable[[Any], int] | None = None,
        name: str | None = None,
    ) -> Stream:
        """Records of `topic`. `key`/`value`: deserializers ("bytes" default, "str", "json",
        "msgpack", a Struct type or a callable), applied by the runtime that reads bytes.
        `timestamp(value) -> ms`: event time from the value instead of the record's."""
        self._claim_source(topic)
        node = self._add(
            "source",
            [],
            name,
            topic=topic,
            key_deserializer=resolve_deserializer(key),
            value_deserializer=resolve_deserializer(value),
            timestamp=timestamp,
        )
        self._source_topics[topic] = node
        return Stream(self, node, "out", None)

    def table(
        self,
        topic: str,
        *,
        key: Any = None,
        value: Any = None,
        name: str | None = None,
        store: StoreKind | None = None,
    ) -> Table:
        """The latest value per key of `topic`; a None value (tombstone) deletes the key.
        Its store is named `name` (default `table-<n>`), of kind `store` (default the app's)."""
        self._claim_source(topic)
        _check_store(store)
        node = self._add(
            "table-source",
            [],
            name,
            name_kind="table",
            topic=topic,
            key_deserializer=resolve_deserializer(key),
            value_deserializer=resolve_deserializer(value),
            store=store,
        )
        self._source_topics[topic] = node
        return Table(self, node)

    def merge(self, *streams: Stream, name: str | None = None) -> Stream:
        """One stream with the records of all of `streams`."""
        if not streams:
            raise TopologyError("merge needs at least one stream")
        return streams[0].merge(*streams[1:], name=name)

    # --- compiling and running --------------------------------------------------------------

    def topology(self, partitions: Mapping[str, int] | None = None) -> Topology:
        """Compile for the given partition counts of the input topics (default 1 each)."""
        from headwater.streams._topology import compile_topology

        return compile_topology(self, dict(partitions or {}))

    def run(
        self,
        target: Client | str | os.PathLike[str],
        *,
        stop: threading.Event | None = None,
        config: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        """Process over `target` (a client, or a URL for `headwater.connect`) on this thread
        until `stop` is set; settings as `headwater.streams.Runner` takes them."""
        from headwater.streams._runtime import Runner

        Runner(self, target, config, **settings).run(stop)


class Stream:
    """A stream of records `(key, value, timestamp)`; every method adds a step.

    Thread-safety: build from one thread.
    """

    __slots__ = ("_app", "_keyed", "_node", "_port")

    def __init__(self, app: App, node: Node, port: str, keyed: Node | None) -> None:
        self._app = app
        self._node = node
        self._port = port
        self._keyed = keyed  # the key-changing step since the last repartition, if any

    @property
    def app(self) -> App:
        return self._app

    @property
    def name(self) -> str:
        """The name of the step producing this stream."""
        return self._node.name

    def _step(self, kind: str, name: str | None, **params: Any) -> Stream:
        node = self._app._add(kind, [(self._node, self._port)], name, **params)
        keyed = node if kind in _KEY_CHANGING else self._keyed
        return Stream(self._app, node, "out", keyed)

    # --- stateless --------------------------------------------------------------------------

    def map(self, fn: Callable[[Any, Any], tuple[Any, Any]], *, name: str | None = None) -> Stream:
        """`fn(key, value) -> (key, value)`; the key may change."""
        return self._step("map", name, fn=fn)

    def map_values(self, fn: Callable[[Any], Any], *, name: str | None = None) -> Stream:
        """`fn(value) -> value`; the key stays."""
        return self._step("map_values", name, fn=fn)

    def filter(self, fn: Callable[[Any, Any], bool], *, name: str | None = None) -> Stream:
        """Keep the records for which `fn(key, value)` is true."""
        return self._step("filter", name, fn=fn)

    def flat_map(
        self, fn: Callable[[Any, Any], Iterable[tuple[Any, Any]]], *, name: str | None = None
    ) -> Stream:
        """`fn(key, value) -> iterable of (key, value)`, each with the input's timestamp."""
        return self._step("flat_map", name, fn=fn)

    def key_by(
        self,
        fn: Callable[[Any, Any], Any],
        *,
        name: str | None = None,
        partitions: int | None = None,
    ) -> Stream:
        """Re-key by `fn(key, value)`. A later stateful step repartitions first, through
        `<application_id>-<name>-repartition` (`partitions`: its count; default below)."""
        if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
            raise TopologyError(f"key_by partitions must be a positive integer, not {partitions}")
        return self._step("key_by", name, fn=fn, partitions=partitions)

    def peek(self, fn: Callable[[Any, Any], Any], *, name: str | None = None) -> Stream:
        """Call `fn(key, value)` for each record (logging, metrics) and pass it on."""
        return self._step("peek", name, fn=fn)

    def branch(
        self, *predicates: Callable[[Any, Any], bool], name: str | None = None
    ) -> list[Stream]:
        """One stream per predicate: each record goes to the first whose `predicate(key,
        value)` is true; records matching none are dropped (as Kafka's split does)."""
        if not predicates:
            raise TopologyError("branch needs at least one predicate")
        node = self._app._add(
            "branch", [(self._node, self._port)], name, predicates=list(predicates)
        )
        return [Stream(self._app, node, str(i), self._keyed) for i in range(len(predicates))]

    def merge(self, *others: Stream, name: str | None = None) -> Stream:
        """The records of this stream and of `others`, interleaved as they arrive."""
        streams = (self, *others)
        for stream in streams:
            if stream._app is not self._app:
                raise TopologyError("cannot merge streams of different apps")
        node = self._app._add("merge", [(s._node, s._port) for s in streams], name)
        keyed = next((s._keyed for s in streams if s._keyed is not None), None)
        return Stream(self._app, node, "out", keyed)

    def repartition(self, *, name: str | None = None, partitions: int | None = None) -> Stream:
        """Send the records through `<application_id>-<name>-repartition` so each key's
        records meet in one task (done for you before a stateful step after a key change)."""
        if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
            raise TopologyError(f"partitions must be a positive integer, not {partitions}")
        return self._repartition(name, partitions, explicit=True)

    def _repartition(self, name: str | None, partitions: int | None, *, explicit: bool) -> Stream:
        cache_key = (self._node.index, self._port)
        cached = self._app._repartitions.get(cache_key)
        if cached is not None and not explicit:
            return cached
        app = self._app
        if name is None and not explicit and self._keyed is self._node:
            # Named after the key-changing step it follows: key_by(name="by-card") repartitions
            # through <application_id>-by-card-repartition.
            base = self._node.name
            node_name: str | None = f"{base}-repartition"
            if partitions is None:
                partitions = self._node.params.get("partitions")
        else:
            base = None
            node_name = name
        sink = app._add(
            "repartition-sink",
            [(self._node, self._port)],
            node_name,
            name_kind="repartition",
            partitions=partitions,
        )
        topic = f"{app.application_id}-{base or sink.name}-repartition"
        sink.params["topic"] = topic
        source = app._add(
            "repartition-source", [], f"{sink.name}.source", name_kind="repartition-source"
        )
        source.params.update(topic=topic, sink=sink)
        stream = Stream(app, source, "out", None)
        if not explicit:
            app._repartitions[cache_key] = stream
        return stream

    def _co_located(self) -> Stream:
        """This stream, repartitioned first if its key changed since the last repartition."""
        if self._keyed is None:
            return self
        return self._repartition(None, None, explicit=False)

    # --- sinks ------------------------------------------------------------------------------

    def to(
        self, topic: str, *, key: Any = None, value: Any = None, name: str | None = None
    ) -> None:
        """Produce to `topic`; `key`/`value` serializers as the client API names them."""
        if not isinstance(topic, str) or not topic:
            raise TopologyError(f"a topic name must be a non-empty string, not {topic!r}")
        self._app._add(
            "to",
            [(self._node, self._port)],
            name,
            topic=topic,
            key_serializer=resolve_serializer(key),
            value_serializer=resolve_serializer(value),
        )

    def sink(
        self,
        fn: Callable[[Record], Any] | Callable[[list[Record]], Any],
        *,
        batch: bool = False,
        name: str | None = None,
    ) -> None:
        """Hand records to `fn(record)`, or with `batch=True` to `fn(records)` per micro-batch
        (a database writer, a webhook). It runs on the task's thread."""
        self._app._add("sink", [(self._node, self._port)], name, fn=fn, batch=batch)

    # --- stateful ---------------------------------------------------------------------------

    def window(
        self,
        spec: WindowSpec,
        *,
        name: str | None = None,
        emit: Emit = "final",
        store: StoreKind | None = None,
    ) -> WindowedStream:
        """Aggregate per key and window. `emit="final"`: one result per window when it closes
        (Kafka's suppress untilWindowCloses); "update": a result on every change. `store`:
        "memory" or "rocksdb" (default the app's `default_store`)."""
        if not isinstance(spec, Tumbling | Hopping | Sliding | Session | CountWindow):
            raise TopologyError(f"not a window spec: {spec!r}")
        if emit not in ("final", "update"):
            raise TopologyError(f"emit must be 'final' or 'update', not {emit!r}")
        _check_store(store)
        return WindowedStream(self._co_located(), spec, name, emit, store)

    def group(self, *, name: str | None = None, store: StoreKind | None = None) -> GroupedStream:
        """Aggregate per key over all time into a `Table` (its store is `name`, of kind
        `store`, default the app's)."""
        _check_store(store)
        return GroupedStream(self._co_located(), name, store)

    def join(
        self,
        other: Stream | Table,
        joiner: Callable[[Any, Any], Any],
        *,
        within_ms: int | None = None,
        grace_ms: int = 0,
        how: JoinKind = "inner",
        name: str | None = None,
        store: StoreKind | None = None,
    ) -> AggregateStream:
        """Join by key. With a `Table`: each record meets the table's current value for its key
        (`how` "inner" or "left"; table updates do not trigger output). With a `Stream`:
        records whose timestamps differ by at most `within_ms` meet ("inner", "left", "outer";
        a record without a partner is emitted with None once `within_ms + grace_ms` has passed
        in stream time; its two stores are of kind `store`, default the app's).
        `joiner(this_value, other_value)` makes the output value."""
        _check_store(store)
        if how not in ("inner", "left", "outer"):
            raise TopologyError(f"join how must be 'inner', 'left' or 'outer', not {how!r}")
        this = self._co_located()
        if isinstance(other, Table):
            if how == "outer":
                raise TopologyError("a stream-table join is 'inner' or 'left', not 'outer'")
            if within_ms is not None:
                raise TopologyError("within_ms is for stream-stream joins; a table has no window")
            node = self._app._add(
                "table-join",
                [(this._node, this._port), (other._node, "view")],
                name,
                name_kind="join",
                joiner=joiner,
                how=how,
            )
            return AggregateStream(self._app, node, "out", None)
        if not isinstance(other, Stream):
            raise TopologyError(f"can only join a Stream or a Table, not {other!r}")
        if within_ms is None or not isinstance(within_ms, int) or within_ms < 0:
            raise TopologyError("a stream-stream join needs within_ms, an integer >= 0")
        if not isinstance(grace_ms, int) or grace_ms < 0:
            raise TopologyError("grace_ms must be an integer >= 0")
        that = other._co_located()
        node = self._app._add(
            "stream-join",
            [(this._node, this._port), (that._node, that._port)],
            name,
            name_kind="join",
            joiner=joiner,
            how=how,
            within_ms=within_ms,
            grace_ms=grace_ms,
            store=store,
        )
        return AggregateStream(self._app, node, "out", None)

    def __repr__(self) -> str:
        return f"<Stream from {self._node!r}>"


class AggregateStream(Stream):
    """The output of a stateful step, with its late records on the side."""

    __slots__ = ()

    def late(self) -> Stream:
        """The records this step found late: counted in its `late-records` metric and passed
        here instead of being dropped; `.late().to("dead-letters")` makes a dead-letter topic."""
        if self._node.kind not in ("window", "stream-join"):
            raise TopologyError(f"{self._node.name!r} never finds records late")
        return Stream(self._app, self._node, "late", None)


class _Aggregating(Generic[_Result]):
    """What `WindowedStream` and `GroupedStream` share: the aggregations."""

    def _aggregate(self, aggregation: aggs.Aggregation) -> _Result:
        raise NotImplementedError

    def count(self) -> _Result:
        return self._aggregate(aggs.count())

    def sum(self, of: Callable[[Any], Any] | None = None) -> _Result:
        """Sum of `of(value)` (default the value)."""
        return self._aggregate(aggs.sum_of(of))

    def min(self, of: Callable[[Any], Any] | None = None) -> _Result:
        return self._aggregate(aggs.min_of(of))

    def max(self, of: Callable[[Any], Any] | None = None) -> _Result:
        return self._aggregate(aggs.max_of(of))

    def mean(self, of: Callable[[Any], Any] | None = None) -> _Result:
        return self._aggregate(aggs.mean_of(of))

    def reduce(
        self, fn: Callable[[Any, Any], Any], of: Callable[[Any], Any] | None = None
    ) -> _Result:
        """`fn(accumulated, value)` over `of(value)`; the first value starts it."""
        return self._aggregate(aggs.reduce_with(fn, of))

    def fold(
        self,
        init: Callable[[], Any],
        fn: Callable[[Any, Any], Any],
        *,
        merge: Callable[[Any, Any], Any] | None = None,
        result: Callable[[Any], Any] | None = None,
    ) -> _Result:
        """`fn(accumulator, value)` starting from `init()`; `merge(a, b)` combines two
        accumulators (needed by session windows); `result(acc)` is what gets emitted."""
        return self._aggregate(aggs.fold_with(init, fn, merge, result))

    def aggregate(self, aggregation: aggs.Aggregation) -> _Result:
        """Any `Aggregation` (see `headwater.streams.aggregations`)."""
        return self._aggregate(aggregation)


class WindowedStream(_Aggregating["AggregateStream"]):
    """A stream cut into windows, waiting for an aggregation; each returns an
    `AggregateStream` of `WindowResult(key, window, value)` values keyed by the record key.

    Thread-safety: build from one thread.
    """

    def __init__(
        self,
        stream: Stream,
        spec: WindowSpec,
        name: str | None,
        emit: Emit,
        store: StoreKind | None = None,
    ) -> None:
        self._stream = stream
        self._spec = spec
        self._name = name
        self._emit = emit
        self._store = store

    def _aggregate(self, aggregation: aggs.Aggregation) -> AggregateStream:
        if isinstance(self._spec, Session) and aggregation.merge is None:
            raise TopologyError("session windows merge accumulators: give fold(..., merge=fn)")
        stream = self._stream
        node = stream._app._add(
            "window",
            [(stream._node, stream._port)],
            self._name,
            spec=self._spec,
            emit=self._emit,
            aggregation=aggregation,
            store=self._store,
        )
        return AggregateStream(stream._app, node, "out", None)


class GroupedStream(_Aggregating["Table"]):
    """A stream grouped by key over all time; each aggregation returns a `Table` whose updates
    are emitted on every record.

    Thread-safety: build from one thread.
    """

    def __init__(self, stream: Stream, name: str | None, store: StoreKind | None = None) -> None:
        self._stream = stream
        self._name = name
        self._store = store

    def _aggregate(self, aggregation: aggs.Aggregation) -> Table:
        stream = self._stream
        node = stream._app._add(
            "aggregate",
            [(stream._node, stream._port)],
            self._name,
            aggregation=aggregation,
            store=self._store,
        )
        return Table(stream._app, node)


class Table:
    """The latest value per key: from a topic, an aggregation or a join of tables.

    Thread-safety: build from one thread.
    """

    __slots__ = ("_app", "_node")

    def __init__(self, app: App, node: Node) -> None:
        self._app = app
        self._node = node

    @property
    def name(self) -> str:
        """The step's name; for a table from a topic or an aggregation, also its store's."""
        return self._node.name

    def to_stream(self, *, name: str | None = None) -> Stream:
        """Every update as a record: the new value, None when the key was deleted."""
        node = self._app._add("to-stream", [(self._node, "out")], name)
        return Stream(self._app, node, "out", None)

    def join(
        self,
        other: Table,
        joiner: Callable[[Any, Any], Any],
        *,
        how: JoinKind = "inner",
        name: str | None = None,
    ) -> Table:
        """A table of `joiner(this_value, other_value)` per key, updated when either side
        changes ("left": other may be None; "outer": either may be None); a key whose join
        no longer holds is deleted."""
        if how not in ("inner", "left", "outer"):
            raise TopologyError(f"join how must be 'inner', 'left' or 'outer', not {how!r}")
        if not isinstance(other, Table):
            raise TopologyError(f"a table joins a Table, not {other!r}")
        node = self._app._add(
            "tables-join",
            [(self._node, "out"), (other._node, "out")],
            name,
            name_kind="join",
            joiner=joiner,
            how=how,
        )
        return Table(self._app, node)

    def __repr__(self) -> str:
        return f"<Table {self._node.name!r}>"


__all__ = [
    "AggregateStream",
    "App",
    "Emit",
    "GroupedStream",
    "JoinKind",
    "Node",
    "StoreKind",
    "Stream",
    "Table",
    "WindowedStream",
]
