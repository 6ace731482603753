"""A compiled topology and its tasks: the seam between the engine and whatever feeds it.

`App.topology(partitions)` cuts the dataflow into sub-topologies (steps connected without a
repartition in between), checks co-partitioning and fixes every topic's partition count. A
runtime (the in-memory `TestDriver`, or the client-API runtime over brokers) then drives one
`Task` per (sub-topology, partition). What a runtime needs:

Topics
    `topology.source_topics` / `sink_topics`: the app's external topics.
    `topology.repartition_topics`: `{topic: partitions}`, named
    `<application_id>-<step name>-repartition`; create them, write and read them like any topic.
    `topology.changelog_topics`: `{topic: partitions}`, `<application_id>-<store>-changelog`, one
    partition per task of the store's sub-topology (compacted, in Kafka).
    `topology.sources[topic]` has the deserializers for a topic read, `topology.sinks[topic]`
    the serializers for a topic written; repartition topics use `topology.codec` both ways.
    `topology.stores[name]`: each store's changelog topic and sub-topology, and its kind
    ("memory" or "rocksdb": files under `topology.state_dir`, see `_rocksdb`).

Tasks
    `topology.task_ids()` lists `TaskId(subtopology, partition)`; `topology.subtopology_for
    (topic)` says which sub-topology reads a topic. `task = topology.create_task(task_id)`.
    Feed it: `task.process(topic, partition, records)` with records `(key, value, timestamp)`
    already deserialized, in offset order, in batches as large as the poll gave. Call
    `task.punctuate(wall_clock_ms)` regularly (processing-time windows close there, and it is
    the clock processing-time windows read). After processing, `task.drain_output()` gives
    `{topic: [(key, value, timestamp), ...]}` to produce: sinks with their serializers,
    repartition topics with the codec, keyed with Kafka's default partitioner.

State
    On commit: `task.changelog()` gives `{changelog topic: [(key, value), ...]}` (None value:
    a tombstone; encode both with `topology.codec`); produce them, then `task.mark_committed()`.
    Also put `task.checkpoint()` (each stateful step's stream time) in the offset commit's
    metadata. On assignment, before processing: `task.restore(store, entries)` with the
    changelog's decoded entries in offset order, then `task.restore_checkpoint(metadata)`.
    A RocksDB store reopened on its state directory already holds the state as of its last
    commit (`store.changelog_offset`: where its changelog's tail starts, None: from 0);
    replaying the whole changelog over it is harmless. `task.close()` when the task is revoked
    or the runtime stops: it closes the stores (RocksDB: files and its lock; changes not
    committed are dropped, as they are not in the changelog either).

Order across topics within a task is the caller's: the test driver processes in send order; a
broker runtime should pick the partition whose next record has the lowest timestamp (Kafka's
rule) when several have data.

Thread-safety: a `Topology` is immutable after compiling and may be shared; each `Task` is
driven by one thread at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from headwater.client._serialization import Deserializer, Serializer
from headwater.streams._dsl import App, Node
from headwater.streams._errors import CoPartitioningError, TopologyError, UnknownStoreError
from headwater.streams._model import KeyValueStore, Record
from headwater.streams._operators import (
    FUSABLE,
    NO_TIME,
    AggregateOp,
    Batch,
    BranchOp,
    FusedOp,
    MergeOp,
    Operator,
    Push,
    SinkOp,
    SourceOp,
    StreamJoinOp,
    StreamTableJoinOp,
    TablesJoinOp,
    TableSourceOp,
    ToOp,
    ToStreamOp,
    window_operator,
)
from headwater.streams._stores import ChangeloggedStore

_SOURCE_KINDS = frozenset({"source", "table-source", "repartition-source"})
_JOIN_KINDS = frozenset({"table-join", "stream-join", "tables-join"})


class TaskId(NamedTuple):
    """A task: one partition of one sub-topology. Immutable."""

    subtopology: int
    partition: int

    def __str__(self) -> str:
        return f"{self.subtopology}_{self.partition}"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A topic the app reads and how its bytes become objects. Immutable."""

    topic: str
    partitions: int
    subtopology: int
    key_deserializer: Deserializer | None  # None: an internal topic, use the codec
    value_deserializer: Deserializer | None
    internal: bool


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """A topic the app writes and how its objects become bytes. Immutable."""

    topic: str
    key_serializer: Serializer | None  # None: an internal topic, use the codec
    value_serializer: Serializer | None
    internal: bool


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """A state store: its stable name, changelog topic and owner. Immutable."""

    name: str
    changelog_topic: str
    subtopology: int
    partitions: int
    step: str  # the name of the step owning it
    # Window stores: how long (ms of event time past a window's start) entries matter; create
    # the changelog `cleanup.policy=compact,delete` with at least this retention. None: compact.
    retention_ms: int | None = None
    kind: str = "memory"  # or "rocksdb"


@dataclass(frozen=True, slots=True)
class SubTopology:
    """Steps connected without a repartition between them; one task per partition.
    Immutable."""

    id: int
    nodes: tuple[Node, ...]
    source_topics: tuple[str, ...]
    sink_topics: tuple[str, ...]
    stores: tuple[str, ...]
    partitions: int


class Topology:
    """A compiled dataflow: topics, stores, sub-topologies; makes tasks.

    Thread-safety: immutable after compiling; share freely.
    """

    def __init__(
        self,
        app: App,
        subtopologies: list[SubTopology],
        sources: dict[str, SourceSpec],
        sinks: dict[str, SinkSpec],
        stores: dict[str, StoreSpec],
    ) -> None:
        self.application_id = app.application_id
        self.codec: Any = app.codec
        self.state_dir = app.state_dir
        self._rocksdb_options: Any = app.rocksdb_options
        self.subtopologies = subtopologies
        self.sources = sources
        self.sinks = sinks
        self.stores = stores
        self._by_topic = {topic: spec.subtopology for topic, spec in sources.items()}

    @property
    def source_topics(self) -> list[str]:
        """The external topics read, sorted."""
        return sorted(t for t, spec in self.sources.items() if not spec.internal)

    @property
    def sink_topics(self) -> list[str]:
        """The external topics written, sorted."""
        return sorted(t for t, spec in self.sinks.items() if not spec.internal)

    @property
    def repartition_topics(self) -> dict[str, int]:
        """`{topic: partitions}` of the internal repartition topics."""
        return {t: spec.partitions for t, spec in sorted(self.sources.items()) if spec.internal}

    @property
    def changelog_topics(self) -> dict[str, int]:
        """`{topic: partitions}` of the stores' changelog topics."""
        return {spec.changelog_topic: spec.partitions for spec in self.stores.values()}

    def subtopology_for(self, topic: str) -> SubTopology:
        """The sub-topology that reads `topic`."""
        found = self._by_topic.get(topic)
        if found is None:
            raise TopologyError(f"topic {topic!r} is not read by {self.application_id!r}")
        return self.subtopologies[found]

    def task_ids(self) -> list[TaskId]:
        return [TaskId(sub.id, p) for sub in self.subtopologies for p in range(sub.partitions)]

    def create_task(self, task_id: TaskId | tuple[int, int], *, wall_clock_ms: int = 0) -> Task:
        """A fresh task (empty stores): restore it before processing if state exists."""
        subtopology, partition = task_id
        if not 0 <= subtopology < len(self.subtopologies):
            raise TopologyError(f"no sub-topology {subtopology}")
        sub = self.subtopologies[subtopology]
        if not 0 <= partition < sub.partitions:
            raise TopologyError(
                f"sub-topology {subtopology} has {sub.partitions} partitions, not {partition + 1}"
            )
        return Task(self, sub, partition, wall_clock_ms)

    @property
    def rocksdb_options(self) -> Any:
        """The `RocksDBOptions` every RocksDB store of this topology shares (one block cache)."""
        if self._rocksdb_options is None:
            from headwater.streams._rocksdb import RocksDBOptions

            self._rocksdb_options = RocksDBOptions()
        return self._rocksdb_options

    def describe(self) -> str:
        """A human-readable outline: sub-topologies, their steps, topics and stores."""
        lines = [f"Topology {self.application_id!r}"]
        for sub in self.subtopologies:
            lines.append(
                f"  sub-topology {sub.id} ({sub.partitions} partitions) "
                f"reads {', '.join(sub.source_topics)}"
            )
            for node in sub.nodes:
                inputs = ", ".join(parent.name for parent, _ in node.inputs)
                extra = f" <- {inputs}" if inputs else ""
                lines.append(f"    {node.kind} {node.name!r}{extra}")
            for store in sub.stores:
                spec = self.stores[store]
                lines.append(f"    store {store!r} ({spec.kind}) -> {spec.changelog_topic}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Topology {self.application_id!r} subtopologies={len(self.subtopologies)}>"


class Task:
    """One partition of one sub-topology: its operators, stores, output and metrics.

    Implements `TaskContext`. Thread-safety: driven by one thread at a time.
    """

    def __init__(
        self, topology: Topology, sub: SubTopology, partition: int, wall_clock_ms: int
    ) -> None:
        self.topology = topology
        self.id = TaskId(sub.id, partition)
        self.subtopology = sub
        self.stream_time = -1
        self._wall_clock_ms = wall_clock_ms
        self.stores: dict[str, ChangeloggedStore] = {}
        self.outputs: dict[str, Batch] = {}
        self.operators: list[Operator] = []
        self._owners: dict[str, Operator] = {}
        self._sources: dict[str, Push] = {}
        _wire(self, sub)

    # --- TaskContext ------------------------------------------------------------------------

    @property
    def application_id(self) -> str:
        return self.topology.application_id

    @property
    def partition(self) -> int:
        return self.id.partition

    def wall_clock_ms(self) -> int:
        return self._wall_clock_ms

    def store(self, name: str) -> KeyValueStore:
        found = self.stores.get(name)
        if found is None:
            raise UnknownStoreError(f"task {self.id} has no store {name!r}")
        return found

    def late(self, operator: str, record: Record) -> None:
        owner = next((op for op in self.operators if op.name == operator), None)
        if owner is None:
            raise TopologyError(f"task {self.id} has no step {operator!r}")
        owner._late([(record[0], record[1], record[2])])

    # --- driving ----------------------------------------------------------------------------

    def add_store(self, store: Any) -> Any:
        """Register an operator's store (called while wiring); a RocksDB store stands in for
        the in-memory one the operator made when the store's kind says so."""
        topology = self.topology
        spec = topology.stores[store.name]
        if spec.kind == "rocksdb":
            from headwater.streams._rocksdb import open_rocksdb_store, state_directory

            assert topology.state_dir is not None  # compile_topology checks
            directory = state_directory(
                topology.state_dir, topology.application_id, self.id, store.name
            )
            store = open_rocksdb_store(
                store, directory, codec=topology.codec, options=topology.rocksdb_options
            )
        store.changelog_topic = spec.changelog_topic
        self.stores[store.name] = store
        return store

    def close(self) -> None:
        """Close the task's stores (RocksDB: files and locks). Idempotent."""
        for store in self.stores.values():
            store.close()

    def process(self, topic: str, partition: int, records: Sequence[tuple[Any, Any, int]]) -> None:
        """Run a batch of `topic`'s records (in offset order) through the task."""
        if partition != self.id.partition:
            raise TopologyError(f"task {self.id} got records of {topic}/{partition}")
        source = self._sources.get(topic)
        if source is None:
            raise TopologyError(f"task {self.id} does not read topic {topic!r}")
        if records:
            source(records if isinstance(records, list) else list(records))

    def punctuate(self, wall_clock_ms: int) -> None:
        """The wall clock is now `wall_clock_ms`: processing-time windows close up to it."""
        if wall_clock_ms > self._wall_clock_ms:
            self._wall_clock_ms = wall_clock_ms
        for op in self.operators:
            op.punctuate(self._wall_clock_ms)

    def finish(self) -> None:
        """End of input (a bounded run): every open event-time window closes and emits, and
        unmatched join records are emitted, as if stream time jumped to the end of time."""
        for op in self.operators:
            op.finish()

    def drain_output(self) -> dict[str, Batch]:
        """`{topic: records}` produced since the last drain; sinks and repartition topics."""
        outputs = self.outputs
        drained: dict[str, Batch] = {}
        for topic, records in outputs.items():
            if records:
                drained[topic] = records
                outputs[topic] = []
        return drained

    # --- state ------------------------------------------------------------------------------

    def changelog(self) -> dict[str, list[tuple[Any, Any]]]:
        """`{changelog topic: [(key, value), ...]}` changed since the last commit."""
        out: dict[str, list[tuple[Any, Any]]] = {}
        for store in self.stores.values():
            changes = store.changes()
            if changes:
                out[store.changelog_topic] = changes
        return out

    def mark_committed(self) -> None:
        """The changelog entries were written: forget them."""
        for store in self.stores.values():
            store.mark_committed()

    def restore(self, store: str, entries: Iterable[tuple[Any, Any]]) -> None:
        """Rebuild `store` from its changelog entries (in offset order)."""
        found = self.stores.get(store)
        if found is None:
            raise UnknownStoreError(f"task {self.id} has no store {store!r}")
        found.restore(entries)
        self._owners[store].restored()

    def checkpoint(self) -> dict[str, int]:
        """Each stateful step's stream time, for the offset commit's metadata."""
        out = {op.name: op.stream_time for op in self.operators if op.stream_time != NO_TIME}
        out["__task__"] = self.stream_time
        return out

    def restore_checkpoint(self, checkpoint: Mapping[str, int]) -> None:
        """Stream times from the last commit's metadata; call after restoring the stores."""
        for op in self.operators:
            if op.name in checkpoint:
                op.stream_time = checkpoint[op.name]
            op.restored()
        if "__task__" in checkpoint:
            self.stream_time = checkpoint["__task__"]

    def metrics(self) -> dict[str, int]:
        """`{"<step>.late-records": count}` for every step that can find records late."""
        return {
            f"{op.name}.late-records": op.late_records
            for op in self.operators
            if op.node.kind in ("window", "stream-join")
        }

    def __repr__(self) -> str:
        return f"<Task {self.id} of {self.topology.application_id!r}>"


# --- wiring -----------------------------------------------------------------------------------


def _wire(task: Task, sub: SubTopology) -> None:
    """Create the operators of `sub` for `task` and connect their outputs to their children,
    fusing chains of stateless steps."""
    nodes = sub.nodes
    members = set(id(node) for node in nodes)
    children: dict[tuple[int, str], list[tuple[Node, int]]] = {}
    for node in nodes:
        for index, (parent, port) in enumerate(node.inputs):
            if port != "view" and id(parent) in members:
                children.setdefault((id(parent), port), []).append((node, index))

    def fusable_next(node: Node) -> Node | None:
        following = children.get((id(node), "out"), [])
        if len(following) == 1:
            child, _ = following[0]
            if child.kind in FUSABLE and len(child.inputs) == 1:
                return child
        return None

    ops: dict[int, Operator] = {}  # node id -> operator whose inputs are its entry points
    exits: list[tuple[Operator, Node]] = []  # operator, the node whose outputs it feeds
    fused_members: set[int] = set()

    def build(node: Node) -> Operator:
        op = ops.get(id(node))
        if op is not None:
            return op
        kind = node.kind
        if kind in FUSABLE:
            chain = [node]
            while (following := fusable_next(chain[-1])) is not None:
                chain.append(following)
            op = FusedOp(task, chain)
            fused_members.update(id(member) for member in chain[1:])
            exits.append((op, chain[-1]))
        else:
            op = _make(task, node, build)
            exits.append((op, node))
        ops[id(node)] = op
        task.operators.append(op)
        for store in node.stores:
            task._owners[store] = op
        return op

    for node in nodes:
        if id(node) not in fused_members and id(node) not in ops:
            # A node reached only through a fused parent is part of that chain.
            parents_fuse = (
                len(node.inputs) == 1
                and node.kind in FUSABLE
                and node.inputs[0][0].kind in FUSABLE
                and fusable_next(node.inputs[0][0]) is node
            )
            if not parents_fuse:
                build(node)
    for op, last in exits:
        for port in _ports(last):
            targets = [
                build(child).inputs[index] for child, index in children.get((id(last), port), [])
            ]
            push = _fan(targets)
            if port == "out":
                op.out = push if push is not None else op.out
            elif port == "late":
                op.late_out = push
            else:
                assert isinstance(op, BranchOp)
                if push is not None:
                    op.branch_outs[int(port)] = push
    for node in nodes:
        if node.kind in _SOURCE_KINDS:
            task._sources[node.params["topic"]] = ops[id(node)].inputs[0]


def _ports(node: Node) -> list[str]:
    if node.kind == "branch":
        return [str(i) for i in range(len(node.params["predicates"]))]
    if node.kind in ("window", "stream-join"):
        return ["out", "late"]
    return ["out"]


def _fan(targets: list[Push]) -> Push | None:
    if not targets:
        return None
    if len(targets) == 1:
        return targets[0]

    def fan(records: Batch) -> None:
        for target in targets:
            target(records)

    return fan


def _make(task: Task, node: Node, build: Callable[[Node], Operator]) -> Operator:
    kind = node.kind
    if kind in ("source", "repartition-source"):
        return SourceOp(task, node)
    if kind in ("to", "repartition-sink"):
        return ToOp(task, node)
    if kind == "sink":
        return SinkOp(task, node)
    if kind == "branch":
        return BranchOp(task, node)
    if kind == "merge":
        return MergeOp(task, node)
    if kind == "window":
        return window_operator(task, node)
    if kind == "table-source":
        return TableSourceOp(task, node)
    if kind == "aggregate":
        return AggregateOp(task, node)
    if kind == "to-stream":
        return ToStreamOp(task, node)
    if kind == "table-join":
        return StreamTableJoinOp(task, node, build(node.inputs[1][0]))
    if kind == "tables-join":
        return TablesJoinOp(task, node, build(node.inputs[0][0]), build(node.inputs[1][0]))
    if kind == "stream-join":
        return StreamJoinOp(task, node)
    raise TopologyError(f"unknown step kind {kind!r}")  # pragma: no cover


# --- compiling --------------------------------------------------------------------------------


def compile_topology(app: App, partitions: dict[str, int]) -> Topology:
    """Cut `app`'s dataflow into sub-topologies and fix every topic's partition count."""
    for topic, count in partitions.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise TopologyError(f"topic {topic!r}: partition count must be >= 1, not {count!r}")
    nodes = list(app.nodes)
    if not any(node.kind in _SOURCE_KINDS for node in nodes):
        raise TopologyError(f"app {app.application_id!r} reads no topic")

    # Sub-topologies: connected components, edges cut only at repartitions.
    parent = list(range(len(nodes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for node in nodes:
        for source, _ in node.inputs:
            a, b = find(node.index), find(source.index)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[Node]] = {}
    for node in nodes:
        groups.setdefault(find(node.index), []).append(node)
    ordered = [groups[root] for root in sorted(groups)]
    sub_of = {node.index: i for i, group in enumerate(ordered) for node in group}

    # Partition counts: external topics as declared (default 1); a repartition topic as given,
    # else like the external topics its readers' sub-topology reads, else like its writers'.
    counts: dict[str, int] = {}
    for node in nodes:
        if node.kind in ("source", "table-source"):
            counts[node.params["topic"]] = partitions.get(node.params["topic"], 1)

    def external_max(group: list[Node]) -> int | None:
        found = [counts[n.params["topic"]] for n in group if n.kind in ("source", "table-source")]
        return max(found) if found else None

    resolving: set[str] = set()

    def repartition_count(source: Node) -> int:
        topic = source.params["topic"]
        if topic in counts:
            return counts[topic]
        sink: Node = source.params["sink"]
        count = sink.params.get("partitions") or external_max(ordered[sub_of[source.index]])
        if count is None:
            if topic in resolving:
                count = 1
            else:
                resolving.add(topic)
                upstream = ordered[sub_of[sink.index]]
                found = [
                    counts[n.params["topic"]]
                    if n.kind != "repartition-source"
                    else repartition_count(n)
                    for n in upstream
                    if n.kind in _SOURCE_KINDS
                ]
                count = max(found) if found else 1
        counts[topic] = count
        return count

    for node in nodes:
        if node.kind == "repartition-source":
            repartition_count(node)

    for node in nodes:
        if node.kind in _JOIN_KINDS:
            _check_co_partitioned(node, counts)

    sources: dict[str, SourceSpec] = {}
    sinks: dict[str, SinkSpec] = {}
    stores: dict[str, StoreSpec] = {}
    subtopologies: list[SubTopology] = []
    for sub_id, group in enumerate(ordered):
        read = [n.params["topic"] for n in group if n.kind in _SOURCE_KINDS]
        sub_partitions = max(counts[topic] for topic in read) if read else 1
        written: list[str] = []
        for node in group:
            kind = node.kind
            if kind in _SOURCE_KINDS:
                internal = kind == "repartition-source"
                sources[node.params["topic"]] = SourceSpec(
                    node.params["topic"],
                    counts[node.params["topic"]],
                    sub_id,
                    None if internal else node.params["key_deserializer"],
                    None if internal else node.params["value_deserializer"],
                    internal,
                )
            elif kind in ("to", "repartition-sink"):
                topic = node.params["topic"]
                internal = kind == "repartition-sink"
                spec = SinkSpec(
                    topic,
                    None if internal else node.params["key_serializer"],
                    None if internal else node.params["value_serializer"],
                    internal,
                )
                previous = sinks.get(topic)
                if previous is not None and previous != spec:
                    raise TopologyError(
                        f"topic {topic!r} is written with different serializers by two steps"
                    )
                sinks[topic] = spec
                if topic not in written:
                    written.append(topic)
            retention = None
            if kind == "window" and hasattr(node.params["spec"], "size_ms"):
                spec_ = node.params["spec"]
                retention = spec_.size_ms + spec_.grace_ms
            store_kind = node.params.get("store") or app.default_store
            if node.stores and store_kind == "rocksdb" and app.state_dir is None:
                raise TopologyError(
                    f"step {node.name!r} keeps its state in RocksDB: give App(state_dir=...)"
                )
            for store in node.stores:
                stores[store] = StoreSpec(
                    store,
                    f"{app.application_id}-{store}-changelog",
                    sub_id,
                    sub_partitions,
                    node.name,
                    retention,
                    store_kind,
                )
        if not read:
            names = ", ".join(repr(n.name) for n in group)
            raise TopologyError(f"steps {names} are not connected to any topic")
        subtopologies.append(
            SubTopology(
                sub_id,
                tuple(group),
                tuple(read),
                tuple(written),
                tuple(s for n in group for s in n.stores),
                sub_partitions,
            )
        )
    return Topology(app, subtopologies, sources, sinks, stores)


def _check_co_partitioned(join: Node, counts: dict[str, int]) -> None:
    """A join's inputs must come from topics with one partition count (same key, same
    partition); raise naming every topic otherwise."""
    topics: dict[str, int] = {}
    stack = [parent for parent, _ in join.inputs]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if node.index in seen:
            continue
        seen.add(node.index)
        if node.kind in _SOURCE_KINDS:
            topics[node.params["topic"]] = counts[node.params["topic"]]
        else:
            stack.extend(parent for parent, _ in node.inputs)
    if len(set(topics.values())) > 1:
        listed = ", ".join(f"{topic!r} has {count}" for topic, count in sorted(topics.items()))
        raise CoPartitioningError(
            f"join {join.name!r} needs co-partitioned inputs (the same partition count): "
            f"{listed}; repartition one side (stream.repartition(partitions=N)) or give the "
            "topics the same count"
        )


__all__ = [
    "SinkSpec",
    "SourceSpec",
    "StoreSpec",
    "SubTopology",
    "Task",
    "TaskId",
    "Topology",
    "compile_topology",
]
