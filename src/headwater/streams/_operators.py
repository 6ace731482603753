"""Operators: what a task runs for each step, over micro-batches.

An operator takes a list of `(key, value, timestamp)` tuples per input and hands lists to its
outputs (`out`, and `late_out` for late records); it never mutates a list it was given, so one
list can go to several children. Consecutive stateless steps are fused into one generated loop
(`fuse`), and fixed windows (tumbling, hopping) aggregate in a generated loop specialised to
their aggregation (`FixedWindowOp`), so the common path costs a few dict operations per record.

Thread-safety: operators belong to one task and are driven by one thread at a time.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import operator
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any, NamedTuple

from headwater.streams._aggregations import Aggregation
from headwater.streams._dsl import Node
from headwater.streams._model import Record, Window, WindowResult
from headwater.streams._stores import InMemoryKeyValueStore, InMemoryWindowStore
from headwater.streams._windows import (
    CountWindow,
    Hopping,
    Session,
    Sliding,
    Tumbling,
    merge_sessions,
    sliding_windows,
)

if TYPE_CHECKING:
    from headwater.streams._topology import Task

Batch = list[tuple[Any, Any, int]]
Push = Callable[[Batch], None]

NO_TIME = -(2**62)  # an operator's stream time before its first record (ms)
END_OF_TIME = 2**62  # the stream time `finish` moves to: every window closes
_MISSING: Any = object()
_new_tuple: Any = tuple.__new__  # builds a named tuple from a tuple without a Python call
_timestamp_of = operator.itemgetter(2)

logger = logging.getLogger("headwater.streams")


class Change(NamedTuple):
    """A table update flowing to a table's children: the new value (None: deleted) and the
    value it replaced (None: there was none). Immutable."""

    new: Any
    old: Any


def _drop(records: Batch) -> None:
    """The output of a port nothing reads."""


class Operator:
    """The base: a name, input entry points, and outputs set when the task is wired.

    Thread-safety: one task, one thread at a time.
    """

    stateful = False

    def __init__(self, task: Task, node: Node) -> None:
        self.task = task
        self.node = node
        self.name = node.name
        self.out: Push = _drop
        self.late_out: Push | None = None
        self.inputs: list[Push] = [self.push]
        self.stream_time = NO_TIME
        self.late_records = 0
        self._warned = False

    def push(self, records: Batch) -> None:
        raise NotImplementedError

    def punctuate(self, wall_clock_ms: int) -> None:
        """Processing time moved on: close what is due."""

    def finish(self) -> None:
        """End of input: close every open window."""

    def restored(self) -> None:
        """The task restored this operator's stores: rebuild derived indexes."""

    def lookup(self, key: Any) -> Any:
        """A table's current value for `key` (None when absent); tables only."""
        raise NotImplementedError

    def _late(self, records: Batch) -> None:
        self.late_records += len(records)
        if self.late_out is not None:
            self.late_out(records)
        elif not self._warned:
            self._warned = True
            logger.warning(
                "%s: late records with no .late() output (counted in %s.late-records); "
                "wire .late() to keep them",
                self.name,
                self.name,
            )


# --- sources and sinks --------------------------------------------------------------------------


class SourceOp(Operator):
    """Records of one topic: event time from the extractor, task stream time moved forward."""

    def __init__(self, task: Task, node: Node) -> None:
        super().__init__(task, node)
        self._extract: Callable[[Any], int] | None = node.params.get("timestamp")

    def push(self, records: Batch) -> None:
        if not records:
            return
        extract = self._extract
        if extract is not None:
            records = [(k, v, extract(v)) for k, v, _ in records]
        latest = max(map(_timestamp_of, records))
        task = self.task
        if latest > task.stream_time:
            task.stream_time = latest
        self.out(records)


class ToOp(Operator):
    """Collects records for an output topic (a sink or a repartition topic)."""

    def __init__(self, task: Task, node: Node) -> None:
        super().__init__(task, node)
        self._topic: str = node.params["topic"]
        task.outputs.setdefault(self._topic, [])

    def push(self, records: Batch) -> None:
        # Output leaves as Records; an operator's batch is all Records or all plain tuples.
        if type(records[0]) is not Record:
            records = list(map(_new_tuple, repeat(Record), records))
        self.task.outputs[self._topic].extend(records)


class SinkOp(Operator):
    """Hands records to a user function, one by one or per batch."""

    def __init__(self, task: Task, node: Node) -> None:
        super().__init__(task, node)
        self._fn: Callable[[Any], Any] = node.params["fn"]
        self._batch: bool = node.params["batch"]

    def push(self, records: Batch) -> None:
        made = list(map(Record._make, records))
        if self._batch:
            self._fn(made)
        else:
            for record in made:
                self._fn(record)


# --- stateless ----------------------------------------------------------------------------------

FUSABLE = frozenset({"map", "map_values", "filter", "flat_map", "key_by", "peek"})


class FusedOp(Operator):
    """Consecutive stateless steps compiled into one loop over the batch."""

    def __init__(self, task: Task, chain: Sequence[Node]) -> None:
        super().__init__(task, chain[0])
        self.chain = list(chain)
        self.name = "+".join(node.name for node in chain)
        self.inputs = [fuse(chain, self)]

    def push(self, records: Batch) -> None:
        self.inputs[0](records)


def fuse(chain: Sequence[Node], op: Operator) -> Push:
    """A function running `chain`'s steps over a batch and handing the result to `op.out`."""
    env: dict[str, Any] = {"_op": op}
    lines = [
        "def push(records):",
        "    out = []",
        "    append = out.append",
        "    for k, v, t in records:",
    ]
    pad = " " * 8
    for i, node in enumerate(chain):
        fn = f"_f{i}"
        env[fn] = node.params["fn"]
        kind = node.kind
        if kind == "filter":
            lines += [f"{pad}if not {fn}(k, v):", f"{pad}    continue"]
        elif kind == "map":
            lines.append(f"{pad}k, v = {fn}(k, v)")
        elif kind == "map_values":
            lines.append(f"{pad}v = {fn}(v)")
        elif kind == "key_by":
            lines.append(f"{pad}k = {fn}(k, v)")
        elif kind == "peek":
            lines.append(f"{pad}{fn}(k, v)")
        elif kind == "flat_map":
            lines.append(f"{pad}for k, v in {fn}(k, v):")
            pad += "    "
        else:  # pragma: no cover - the topology only fuses FUSABLE kinds
            raise AssertionError(kind)
    lines += [f"{pad}append((k, v, t))", "    if out:", "        _op.out(out)"]
    exec(compile("\n".join(lines), f"<headwater.streams fused {op.name}>", "exec"), env)
    push: Push = env["push"]
    return push


class BranchOp(Operator):
    """Each record to the first branch whose predicate holds."""

    def __init__(self, task: Task, node: Node) -> None:
        super().__init__(task, node)
        self._predicates: list[Callable[[Any, Any], bool]] = node.params["predicates"]
        self.branch_outs: list[Push] = [_drop] * len(self._predicates)

    def push(self, records: Batch) -> None:
        lists: list[Batch] = [[] for _ in self._predicates]
        predicates = list(enumerate(self._predicates))
        for record in records:
            k, v, _ = record
            for i, predicate in predicates:
                if predicate(k, v):
                    lists[i].append(record)
                    break
        for i, chosen in enumerate(lists):
            if chosen:
                self.branch_outs[i](chosen)


class MergeOp(Operator):
    """Every input straight to the output."""

    def __init__(self, task: Task, node: Node) -> None:
        super().__init__(task, node)
        self.inputs = [self.push] * len(node.inputs)

    def push(self, records: Batch) -> None:
        self.out(records)


class ToStreamOp(Operator):
    """A table's updates as records of their new values."""

    def push(self, records: Batch) -> None:
        self.out([(k, change[0], t) for k, change, t in records])


# --- windows ------------------------------------------------------------------------------------


def _result_of(aggregation: Aggregation) -> Callable[[Any], Any]:
    result = aggregation.result
    return result if result is not None else _identity


def _identity(value: Any) -> Any:
    return value


def _fixed_loop(
    spec: Tumbling | Hopping, aggregation: Aggregation, update: bool, name: str
) -> Callable[..., tuple[int, Batch | None, list[Any] | None]]:
    """The per-batch loop of a fixed-window aggregation, generated for its shape:
    `run(records, st, buckets, touched, now) -> (stream time, late records, updates)`."""
    env: dict[str, Any] = dict(aggregation.env)
    env["_MISSING"] = _MISSING
    env["_of"] = aggregation.of
    size, advance = spec.size_ms, spec.advance_ms
    close = size + spec.grace_ms
    event_time = not spec.processing_time
    raw = "raw" if aggregation.of is not None else "v"
    if aggregation.zero is not None:
        accumulate = [f"a = cur.get(k, {aggregation.zero})", f"cur[k] = a = {aggregation.add}"]
    else:
        accumulate = [
            "a = cur.get(k, _MISSING)",
            f"cur[k] = a = ({aggregation.first}) if a is _MISSING else ({aggregation.add})",
        ]
    if update:
        accumulate.append("updates.append((k, ws, a, t))")
    extract = ["v = _of(raw)"] if aggregation.of is not None else []
    lines = [
        "def run(records, st, buckets, touched, now):",
        "    late = None",
        f"    updates = {'[]' if update else 'None'}",
        "    cur_ws = None",
        "    cur = None",
    ]
    if event_time:
        lines.append(f"    for k, {raw}, t in records:")
        lines += ["        if t > st:", "            st = t"]
    else:
        lines += ["    t = now", f"    for k, {raw}, _t in records:"]
    body: list[str] = []
    if spec.size_ms == advance:  # tumbling: one window per record
        body.append(f"ws = t - t % {size}")
        if event_time:
            body += [
                f"if ws + {close} <= st:",
                "    if late is None:",
                "        late = []",
                f"    late.append((k, {raw}, t))",
                "    continue",
            ]
        body += [
            "if ws != cur_ws:",
            "    cur = buckets.get(ws)",
            "    if cur is None:",
            "        cur = buckets[ws] = {}",
            "    touched.add(ws)",
            "    cur_ws = ws",
            *extract,
            *accumulate,
        ]
    else:  # hopping: every window containing t, the open ones only
        body += [
            *extract,
            f"ws = t - t % {advance}",
            "placed = False",
            f"while ws > t - {size}:",
        ]
        inner = [
            "cur = buckets.get(ws)",
            "if cur is None:",
            "    cur = buckets[ws] = {}",
            "touched.add(ws)",
            *accumulate,
            "placed = True",
        ]
        if event_time:
            body.append(f"    if ws + {close} > st:")
            body += ["        " + line for line in inner]
        else:
            body += ["    " + line for line in inner]
        body.append(f"    ws -= {advance}")
        if event_time:
            body += [
                "if not placed:",
                "    if late is None:",
                "        late = []",
                f"    late.append((k, {raw}, t))",
            ]
    lines += ["        " + line for line in body]
    lines.append("    return st, late, updates")
    exec(compile("\n".join(lines), f"<headwater.streams window {name}>", "exec"), env)
    run: Callable[..., tuple[int, Batch | None, list[Any] | None]] = env["run"]
    return run


class FixedWindowOp(Operator):
    """Tumbling and hopping windows over a window store, event or processing time.

    State: `InMemoryWindowStore` named after the step, `(key, window start) -> accumulator`.
    """

    stateful = True

    def __init__(self, task: Task, node: Node) -> None:
        super().__init__(task, node)
        spec: Tumbling | Hopping = node.params["spec"]
        aggregation: Aggregation = node.params["aggregation"]
        self._size = spec.size_ms
        self._close = spec.size_ms + spec.grace_ms
        self._event_time = not spec.processing_time
        self._final = node.params["emit"] == "final"
        self._result = _result_of(aggregation)
        self._plain_result = aggregation.result is None
        self.store = task.add_store(InMemoryWindowStore(node.name))
        self._run = _fixed_loop(spec, aggregation, not self._final, node.name)

    def push(self, records: Batch) -> None:
        store = self.store
        st, late, updates = self._run(
            records, self.stream_time, store.buckets, store.touched, self.task.wall_clock_ms()
        )
        if late:
            self._late(late)
        out: Batch = []
        if updates:
            size = self._size
            result = self._result
            out = [
                (k, _new_tuple(WindowResult, (k, Window(ws, ws + size), result(a))), t)
                for k, ws, a, t in updates
            ]
        if self._event_time and st > self.stream_time:
            self.stream_time = st
            self._close_until(st - self._close, out)
        if out:
            self.out(out)

    def _close_until(self, last_start: int, out: Batch) -> None:
        """Close (emit if final, then drop) every window starting at or before `last_start`."""
        buckets = self.store.buckets
        if not buckets:
            return
        closing = sorted(start for start in buckets if start <= last_start)
        size = self._size
        for start in closing:
            bucket = self.store.drop(start)
            if self._final and bucket:
                window = Window(start, start + size)
                keys = list(bucket)
                values: Any = bucket.values()
                if not self._plain_result:
                    values = map(self._result, values)
                results = map(_new_tuple, repeat(WindowResult), zip(keys, repeat(window), values))
                records = zip(keys, results, repeat(start + size - 1))
                out.extend(map(_new_tuple, repeat(Record), records))

    def restored(self) -> None:
        """Forget restored windows that had closed by the restored stream time (their results
        were emitted before the restart)."""
        if self._event_time and self.stream_time != NO_TIME:
            last_start = self.stream_time - self._close
            for start in [s for s in self.store.buckets if s <= last_start]:
                self.store.drop(start)

    def punctuate(self, wall_clock_ms: int) -> None:
        if not self._event_time:
            out: Batch = []
            self._close_until(wall_clock_ms - self._size, out)
            if out:
                self.out(out)

    def finish(self) -> None:
        out: Batch = []
        self._close_until(END_OF_TIME, out)
        if out:
            self.out(out)


class SessionWindowOp(Operator):
    """Session windows: per key, sessions `(first, last, accumulator)` merged as records bridge
    them; closed ones found through a heap of close times. A key's due sessions close before
    its next record is placed, so a batch gives what one record at a time would.

    State: `InMemoryKeyValueStore` named after the step,
    `key -> ((first, last, acc, sequence), ...)`; the sequence (when the session last changed,
    kept in the changelog) orders sessions closing at the same time, before and after a restore.
    """

    stateful = True

    def __init__(self, task: Task, node: Node) -> None:
        super().__init__(task, node)
        spec: Session = node.params["spec"]
        aggregation: Aggregation = node.params["aggregation"]
        self._gap = spec.gap_ms
        self._grace = spec.grace_ms
        self._final = node.params["emit"] == "final"
        self._first, self._add = aggregation.functions()
        merge = aggregation.merge
        assert merge is not None  # the DSL refuses a session fold without merge
        self._merge = merge
        self._result = _result_of(aggregation)
        self.store = task.add_store(InMemoryKeyValueStore(node.name))
        self._heap: list[tuple[int, int, Any, int, int]] = []
        self._seq = 0

    def _closes_at(self, last: int) -> int:
        return last + 1 + self._gap + self._grace

    def _schedule(self, key: Any, first: int, last: int, seq: int) -> None:
        heapq.heappush(self._heap, (self._closes_at(last), seq, key, first, last))

    def _emit_closed(self, key: Any, session: tuple[int, int, Any, int], out: Batch) -> None:
        if self._final:
            first, last, acc, _ = session
            result = WindowResult(key, Window(first, last + 1), self._result(acc))
            out.append((key, result, last))

    def push(self, records: Batch) -> None:
        data = self.store
        gap = self._gap
        out: Batch = []
        late: Batch = []
        st = self.stream_time
        for k, v, t in records:
            if t > st:
                st = t
            sessions: tuple[tuple[int, int, Any, int], ...] = data.get(k, ())
            if sessions and self._closes_at(sessions[0][1]) <= st:
                # Sessions of this key that closed earlier in the batch close now.
                still = []
                for session in sessions:
                    if self._closes_at(session[1]) <= st:
                        self._emit_closed(k, session, out)
                    else:
                        still.append(session)
                sessions = tuple(still)
                data.put(k, sessions or None)
            (first, last), absorbed = merge_sessions(((s[0], s[1]) for s in sessions), t, gap)
            if self._closes_at(last) <= st:
                late.append((k, v, t))
                continue
            kept = []
            acc = _MISSING
            for session in sessions:
                if (session[0], session[1]) in absorbed:
                    acc = session[2] if acc is _MISSING else self._merge(acc, session[2])
                    if not self._final and (session[0], session[1]) != (first, last):
                        gone = Window(session[0], session[1] + 1)
                        out.append((k, WindowResult(k, gone, None), t))
                else:
                    kept.append(session)
            acc = self._first(v) if acc is _MISSING else self._add(acc, v)
            self._seq += 1
            kept.append((first, last, acc, self._seq))
            kept.sort(key=lambda s: s[0])
            data.put(k, tuple(kept))
            self._schedule(k, first, last, self._seq)
            if not self._final:
                window = Window(first, last + 1)
                out.append((k, WindowResult(k, window, self._result(acc)), t))
        if late:
            self._late(late)
        if st > self.stream_time:
            self.stream_time = st
            self._close(st, out)
        if out:
            self.out(out)

    def _close(self, st: int, out: Batch) -> None:
        heap = self._heap
        data = self.store
        while heap and heap[0][0] <= st:
            _, seq, key, _, _ = heapq.heappop(heap)
            sessions = data.get(key, ())
            kept = [s for s in sessions if s[3] != seq]
            if len(kept) == len(sessions):
                continue  # merged away or already closed
            closed = next(s for s in sessions if s[3] == seq)
            data.put(key, tuple(kept) if kept else None)
            self._emit_closed(key, closed, out)

    def finish(self) -> None:
        out: Batch = []
        self._close(END_OF_TIME, out)
        if out:
            self.out(out)

    def restored(self) -> None:
        self._heap.clear()
        for key, sessions in self.store.items():
            for first, last, _, seq in sessions:
                self._schedule(key, first, last, seq)
                self._seq = max(self._seq, seq)


class SlidingWindowOp(Operator):
    """Sliding windows (Kafka's semantics): each key's records within reach of an open window
    are kept, and a window's aggregate is folded from them when it closes or, with
    `emit="update"`, whenever a record lands in it. A key's due windows close before its next
    record is placed, so a batch gives what one record at a time would. Cost per record is
    linear in the records a key keeps (about `max_difference_ms + grace_ms` worth).

    State: `InMemoryKeyValueStore` named after the step,
    `key -> (emitted_until, ((timestamp, value), ...), sequence)`, values already through `of`;
    windows ending at or before `emitted_until` are closed; the sequence (when the key started
    holding records) orders keys closing together, before and after a restore.
    """

    stateful = True

    def __init__(self, task: Task, node: Node) -> None:
        super().__init__(task, node)
        spec: Sliding = node.params["spec"]
        aggregation: Aggregation = node.params["aggregation"]
        self._d = spec.max_difference_ms
        self._grace = spec.grace_ms
        self._final = node.params["emit"] == "final"
        self._first, self._add = aggregation.functions(apply_of=False)
        self._of = aggregation.of or _identity
        self._result = _result_of(aggregation)
        self.store = task.add_store(InMemoryKeyValueStore(node.name))
        self._pending: dict[Any, None] = {}  # keys holding records, in sequence order
        self._seq = 0

    def _fold(self, kept: Sequence[tuple[int, Any]], window: Window) -> Any:
        timestamps = [r[0] for r in kept]
        low = bisect.bisect_left(timestamps, window.start)
        high = bisect.bisect_left(timestamps, window.end)
        acc = _MISSING
        for _, value in kept[low:high]:
            acc = self._first(value) if acc is _MISSING else self._add(acc, value)
        return self._result(acc)

    def push(self, records: Batch) -> None:
        data = self.store
        d, grace = self._d, self._grace
        out: Batch = []
        late: Batch = []
        st = self.stream_time
        for k, v, t in records:
            if t > st:
                st = t
            if t + d + 1 + grace <= st:  # every window containing t has closed
                late.append((k, v, t))
                continue
            if k in self._pending:
                self._close_key(k, st, out)
            state = data.get(k)
            if state is None:
                self._seq += 1
                emitted_until, kept, seq = NO_TIME, (), self._seq
            else:
                emitted_until, kept, seq = state
            entries: list[tuple[int, Any]] = list(kept)
            bisect.insort_right(entries, (t, self._of(v)), key=lambda r: r[0])
            # Windows ending by now are closed, existing or not: a window this record makes
            # there is never emitted.
            data.put(k, (max(emitted_until, st - grace), tuple(entries), seq))
            self._pending[k] = None
            if not self._final:
                for window in sliding_windows([r[0] for r in entries], d):
                    if window.start <= t < window.end and window.end + grace > st:
                        result = self._fold(entries, window)
                        out.append((k, WindowResult(k, window, result), t))
        if late:
            self._late(late)
        if st > self.stream_time:
            self.stream_time = st
            for key in list(self._pending):
                self._close_key(key, st, out)
        if out:
            self.out(out)

    def _close_key(self, key: Any, st: int, out: Batch) -> None:
        """Emit `key`'s windows that closed by `st`; forget records no open window needs."""
        data = self.store
        limit = st - self._grace  # windows ending at or before this have closed
        d = self._d
        emitted_until, kept, seq = data.get(key)
        for window in sliding_windows([r[0] for r in kept], d):
            if emitted_until < window.end <= limit and self._final:
                result = self._fold(kept, window)
                out.append((key, WindowResult(key, window, result), window.end - 1))
        newest = max(emitted_until, limit)
        # A record matters while a window it is in, or whose existence it decides, is open.
        left = [r for r in kept if r[0] + d + 2 > limit]
        if left:
            if newest != emitted_until or len(left) != len(kept):
                data.put(key, (newest, tuple(left), seq))
        else:
            data.delete(key)
            del self._pending[key]

    def finish(self) -> None:
        out: Batch = []
        for key in list(self._pending):
            self._close_key(key, END_OF_TIME, out)
        if out:
            self.out(out)

    def restored(self) -> None:
        held = sorted(self.store.items(), key=lambda item: item[1][2])
        self._pending = {key: None for key, _ in held}
        self._seq = max((state[2] for _, state in held), default=self._seq)


class CountWindowOp(Operator):
    """Count windows: per key, every `size` records are one window.

    State: `InMemoryKeyValueStore` named after the step, `key -> (count, acc, first ts, last ts)`.
    """

    stateful = True

    def __init__(self, task: Task, node: Node) -> None:
        super().__init__(task, node)
        spec: CountWindow = node.params["spec"]
        aggregation: Aggregation = node.params["aggregation"]
        self._size = spec.size
        self._final = node.params["emit"] == "final"
        self._first, self._add = aggregation.functions()
        self._result = _result_of(aggregation)
        self.store = task.add_store(InMemoryKeyValueStore(node.name))

    def push(self, records: Batch) -> None:
        data = self.store
        out: Batch = []
        st = self.stream_time
        for k, v, t in records:
            if t > st:
                st = t
            state = data.get(k)
            if state is None:
                n, acc, low, high = 1, self._first(v), t, t
            else:
                n, acc, low, high = state
                n, acc, low, high = n + 1, self._add(acc, v), min(low, t), max(high, t)
            full = n >= self._size
            if full or not self._final:
                result = WindowResult(k, Window(low, high + 1), self._result(acc))
                out.append((k, result, t if not self._final else high))
            data.put(k, None if full else (n, acc, low, high))
        self.stream_time = st
        if out:
            self.out(out)


# --- tables -------------------------------------------------------------------------------------


class TableSourceOp(Operator):
    """A topic as a table: the latest value per key, None deletes; updates go on as Changes.

    State: `InMemoryKeyValueStore` named after the table, `key -> value`.
    """

    stateful = True

    def __init__(self, task: Task, node: Node) -> None:
        super().__init__(task, node)
        self.store = task.add_store(InMemoryKeyValueStore(node.name))
        self.lookup = self.store.data.get  # type: ignore[method-assign]

    def push(self, records: Batch) -> None:
        if not records:
            return
        store = self.store
        data = store.data
        out: Batch = []
        task = self.task
        for k, v, t in records:
            old = data.get(k)
            if v is None and old is None:
                continue
            store.put(k, v)
            out.append((k, Change(v, old), t))
            if t > task.stream_time:
                task.stream_time = t
        if out:
            self.out(out)


class AggregateOp(Operator):
    """An aggregation per key over all time, as a table updated on every record.

    State: `InMemoryKeyValueStore` named after the step, `key -> accumulator`.
    """

    stateful = True

    def __init__(self, task: Task, node: Node) -> None:
        super().__init__(task, node)
        aggregation: Aggregation = node.params["aggregation"]
        self._first, self._add = aggregation.functions()
        self._result = _result_of(aggregation)
        self.store = task.add_store(InMemoryKeyValueStore(node.name))

    def push(self, records: Batch) -> None:
        store = self.store
        data = store.data
        dirty = store.dirty
        first, add, result = self._first, self._add, self._result
        out: Batch = []
        for k, v, t in records:
            old = data.get(k, _MISSING)
            if old is _MISSING:
                new = first(v)
                previous = None
            else:
                new = add(old, v)
                previous = result(old)
            data[k] = new
            dirty[k] = None
            out.append((k, Change(result(new), previous), t))
        if out:
            self.out(out)

    def lookup(self, key: Any) -> Any:
        acc = self.store.data.get(key, _MISSING)
        return None if acc is _MISSING else self._result(acc)


def _combine(how: str, joiner: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    """A join's value for one key from both sides' values (None: absent), or None."""
    if left is None and (right is None or how != "outer"):
        return None
    if right is None and how == "inner":
        return None
    return joiner(left, right)


class TablesJoinOp(Operator):
    """Table-table join: a change on either side recomputes the key's joined value."""

    def __init__(self, task: Task, node: Node, left: Operator, right: Operator) -> None:
        super().__init__(task, node)
        self._left = left
        self._right = right
        self._how: str = node.params["how"]
        self._joiner: Callable[[Any, Any], Any] = node.params["joiner"]
        self.inputs = [self._push_left, self._push_right]

    def lookup(self, key: Any) -> Any:
        return _combine(self._how, self._joiner, self._left.lookup(key), self._right.lookup(key))

    def _push_side(self, records: Batch, left_side: bool) -> None:
        how, joiner = self._how, self._joiner
        other = self._right if left_side else self._left
        out: Batch = []
        for k, change, t in records:
            value = other.lookup(k)
            if left_side:
                new = _combine(how, joiner, change.new, value)
                old = _combine(how, joiner, change.old, value)
            else:
                new = _combine(how, joiner, value, change.new)
                old = _combine(how, joiner, value, change.old)
            if new is not None or old is not None:
                out.append((k, Change(new, old), t))
        if out:
            self.out(out)

    def _push_left(self, records: Batch) -> None:
        self._push_side(records, True)

    def _push_right(self, records: Batch) -> None:
        self._push_side(records, False)

    def push(self, records: Batch) -> None:  # pragma: no cover - inputs are per side
        raise AssertionError("a table join is fed per side")


class StreamTableJoinOp(Operator):
    """Stream-table join: each record meets the table's current value for its key."""

    def __init__(self, task: Task, node: Node, table: Operator) -> None:
        super().__init__(task, node)
        self._table = table
        self._inner = node.params["how"] == "inner"
        self._joiner: Callable[[Any, Any], Any] = node.params["joiner"]
        self.inputs = [self.push, _drop]

    def push(self, records: Batch) -> None:
        lookup = self._table.lookup
        joiner = self._joiner
        out: Batch = []
        inner = self._inner
        for k, v, t in records:
            found = lookup(k)
            if found is None and inner:
                continue
            out.append((k, joiner(v, found), t))
        if out:
            self.out(out)


class StreamJoinOp(Operator):
    """Windowed stream-stream join: each side keeps its records for `within_ms + grace_ms` of
    stream time; a new record meets the other side's records at most `within_ms` away. A record
    more than `grace_ms` behind the join's stream time is late. A record that met no partner is
    emitted with None for the other side (left: left records; outer: both) once stream time
    passes its timestamp + `within_ms` + `grace_ms`, so no partner can still come.

    State: two `InMemoryKeyValueStore`s, `<name>-left` and `<name>-right`,
    `key -> [[timestamp, value, matched, sequence], ...]`; the sequence (arrival order, kept in
    the changelog) orders expiry, so a restored task emits exactly what the old one would have.
    """

    stateful = True

    def __init__(self, task: Task, node: Node) -> None:
        super().__init__(task, node)
        self._within: int = node.params["within_ms"]
        self._grace: int = node.params["grace_ms"]
        how = node.params["how"]
        self._joiner: Callable[[Any, Any], Any] = node.params["joiner"]
        self._unmatched = (how in ("left", "outer"), how == "outer")
        self.stores = (
            task.add_store(InMemoryKeyValueStore(f"{node.name}-left")),
            task.add_store(InMemoryKeyValueStore(f"{node.name}-right")),
        )
        self._heap: list[tuple[int, int, int, Any]] = []
        self._seq = 0
        self.inputs = [self._push_left, self._push_right]

    def push(self, records: Batch) -> None:  # pragma: no cover - inputs are per side
        raise AssertionError("a stream join is fed per side")

    def _push_left(self, records: Batch) -> None:
        self._push_side(records, 0)

    def _push_right(self, records: Batch) -> None:
        self._push_side(records, 1)

    def _schedule(self, side: int, key: Any, timestamp: int, seq: int) -> None:
        expires = timestamp + self._within + self._grace
        heapq.heappush(self._heap, (expires, seq, side, key))

    def _push_side(self, records: Batch, side: int) -> None:
        mine, theirs = self.stores[side], self.stores[1 - side]
        within, grace, joiner = self._within, self._grace, self._joiner
        out: Batch = []
        late: Batch = []
        st = self.stream_time
        for k, v, t in records:
            if t > st:
                st = t
            if t < st - grace:
                late.append((k, v, t))
                continue
            matched = False
            partners = theirs.get(k)
            if partners:
                touched = False
                for partner in partners:
                    if abs(partner[0] - t) <= within:
                        value = joiner(v, partner[1]) if side == 0 else joiner(partner[1], v)
                        out.append((k, value, max(t, partner[0])))
                        matched = True
                        if not partner[2]:
                            partner[2] = True
                            touched = True
                if touched:
                    theirs.put(k, partners)
            kept = mine.get(k)
            self._seq += 1
            entry = [t, v, matched, self._seq]
            mine.put(k, [entry] if kept is None else [*kept, entry])
            self._schedule(side, k, t, self._seq)
        if late:
            self._late(late)
        if st > self.stream_time:
            self.stream_time = st
            self._expire(st, out)
        if out:
            self.out(out)

    def _expire(self, st: int, out: Batch) -> None:
        """Drop records no partner can reach any more; emit the unmatched ones if asked."""
        heap = self._heap
        joiner = self._joiner
        while heap and heap[0][0] < st:
            _, seq, side, key = heapq.heappop(heap)
            store = self.stores[side]
            entries = store.get(key) or ()
            for index, entry in enumerate(entries):
                if entry[3] == seq:
                    if not entry[2] and self._unmatched[side]:
                        value = joiner(entry[1], None) if side == 0 else joiner(None, entry[1])
                        out.append((key, value, entry[0]))
                    rest = [*entries[:index], *entries[index + 1 :]]
                    store.put(key, rest or None)
                    break

    def finish(self) -> None:
        out: Batch = []
        self._expire(END_OF_TIME, out)
        if out:
            self.out(out)

    def restored(self) -> None:
        self._heap.clear()
        for side, store in enumerate(self.stores):
            for key, entries in store.items():
                for entry in entries:
                    self._schedule(side, key, entry[0], entry[3])
                    self._seq = max(self._seq, entry[3])


def window_operator(task: Task, node: Node) -> Operator:
    """The operator for a window step, by its spec's kind."""
    spec = node.params["spec"]
    if isinstance(spec, Tumbling | Hopping):
        return FixedWindowOp(task, node)
    if isinstance(spec, Session):
        return SessionWindowOp(task, node)
    if isinstance(spec, Sliding):
        return SlidingWindowOp(task, node)
    return CountWindowOp(task, node)


__all__ = [
    "END_OF_TIME",
    "FUSABLE",
    "NO_TIME",
    "AggregateOp",
    "Batch",
    "BranchOp",
    "Change",
    "CountWindowOp",
    "FixedWindowOp",
    "FusedOp",
    "MergeOp",
    "Operator",
    "Push",
    "SessionWindowOp",
    "SinkOp",
    "SlidingWindowOp",
    "SourceOp",
    "StreamJoinOp",
    "StreamTableJoinOp",
    "TableSourceOp",
    "TablesJoinOp",
    "ToOp",
    "ToStreamOp",
    "window_operator",
]
