"""Aggregations: how records fold into an accumulator, as source snippets and as functions.

Each aggregation is described twice over the same expressions: as Python source the window
operator compiles into its per-batch loop (so summing costs an addition, not a call), and as
functions for the slower paths (sessions, sliding windows, tables). In the expressions `a` is
the accumulator and `v` the value after the aggregation's `of` extractor.

Thread-safety: immutable after construction; user functions must be safe to call from the
thread driving the task.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _mean_merge(left: Any, right: Any) -> Any:
    return (left[0] + right[0], left[1] + right[1])


def _mean_result(acc: Any) -> Any:
    return acc[0] / acc[1]


@dataclass(frozen=True)
class Aggregation:
    """One aggregation: `first` makes the accumulator from a first value, `add` folds one more,
    `merge` combines two accumulators (session merges), `result` turns an accumulator into the
    emitted value. `zero` is the accumulator of nothing when one exists (count, sum): the hot
    loop then uses `dict.get(key, zero)`. Immutable; shareable between tasks."""

    kind: str
    first: str
    add: str
    zero: str | None = None
    merge: Callable[[Any, Any], Any] | None = None
    result: Callable[[Any], Any] | None = None
    of: Callable[[Any], Any] | None = None
    env: dict[str, Any] = field(default_factory=dict)

    def functions(
        self, *, apply_of: bool = True
    ) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
        """`first(v)` and `add(a, v)` as functions; with `apply_of`, `of` is applied to `v`."""
        env = dict(self.env)
        env["_of"] = self.of
        value = "_of(v)" if self.of is not None and apply_of else "v"
        first = eval(f"lambda v: (lambda v: {self.first})({value})", env)
        add = eval(f"lambda a, v: (lambda a, v: {self.add})(a, {value})", env)
        return first, add


def count() -> Aggregation:
    return Aggregation("count", first="1", add="a + 1", zero="0", merge=operator.add)


def sum_of(of: Callable[[Any], Any] | None = None) -> Aggregation:
    return Aggregation("sum", first="v", add="a + v", zero="0", merge=operator.add, of=of)


def min_of(of: Callable[[Any], Any] | None = None) -> Aggregation:
    return Aggregation("min", first="v", add="v if v < a else a", merge=min, of=of)


def max_of(of: Callable[[Any], Any] | None = None) -> Aggregation:
    return Aggregation("max", first="v", add="v if v > a else a", merge=max, of=of)


def mean_of(of: Callable[[Any], Any] | None = None) -> Aggregation:
    return Aggregation(
        "mean",
        first="(v, 1)",
        add="(a[0] + v, a[1] + 1)",
        merge=_mean_merge,
        result=_mean_result,
        of=of,
    )


def reduce_with(
    reducer: Callable[[Any, Any], Any], of: Callable[[Any], Any] | None = None
) -> Aggregation:
    """`reducer(accumulated, value)`; also merges sessions (both sides are values)."""
    return Aggregation(
        "reduce", first="v", add="_reduce(a, v)", merge=reducer, of=of, env={"_reduce": reducer}
    )


def fold_with(
    init: Callable[[], Any],
    fold: Callable[[Any, Any], Any],
    merge: Callable[[Any, Any], Any] | None = None,
    result: Callable[[Any], Any] | None = None,
) -> Aggregation:
    """`fold(accumulator, value)` from `init()` (a function, so a mutable start is fresh)."""
    return Aggregation(
        "fold",
        first="_fold(_init(), v)",
        add="_fold(a, v)",
        merge=merge,
        result=result,
        env={"_fold": fold, "_init": init},
    )


__all__ = [
    "Aggregation",
    "count",
    "fold_with",
    "max_of",
    "mean_of",
    "min_of",
    "reduce_with",
    "sum_of",
]
