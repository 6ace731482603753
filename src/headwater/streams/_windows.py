"""Window specifications and the pure rules that place records in windows.

Conventions, the same for every kind (all times in milliseconds):

- A window is `Window(start, end)`: start inclusive, end exclusive.
- Event-time windows close when the operator's stream time (the largest timestamp it has seen)
  reaches `end + grace_ms`; their final result is emitted then. A record is late when every
  window it belongs to has closed: it is counted and sent to the operator's `.late()` output.
- Processing-time windows (`processing_time=True`) place a record by the task's wall clock when
  it is processed and close when the wall clock reaches their end (`Task.punctuate`); nothing
  is late there.

Kinds, with Kafka Streams' meaning:

- `Tumbling(size_ms)`: fixed, non-overlapping, aligned to the epoch.
- `Hopping(size_ms, advance_ms)`: fixed size, a new window every `advance_ms`, aligned to the
  epoch; a record is in `size_ms / advance_ms` windows (rounded up).
- `Sliding(max_difference_ms)`: windows defined by the records: two records share a window when
  their timestamps differ by at most `max_difference_ms`. Each record at t has the window
  [t - d, t] (inclusive, so `Window(t - d, t + 1)`), and, when some record falls in
  (t, t + d + 1], the window [t + 1, t + d + 1] right after it; an aggregate is emitted per
  distinct window (as Kafka's SlidingWindows). Kafka closes a sliding window 1 ms earlier than
  this rule (its end is inclusive); ours closes at exclusive end + grace like every other kind.
- `Session(gap_ms)`: per key, records closer than `gap_ms` (inclusive) belong to one session;
  a record that bridges two sessions merges them. A session [first, last] is
  `Window(first, last + 1)`; it closes when stream time reaches `last + 1 + gap_ms + grace_ms`.
- `CountWindow(size)`: per key, every `size` records form a window (start: the earliest
  record's timestamp, end: the latest's + 1); event time plays no part, nothing is late, and a
  window not yet full is never emitted in "final" mode (not even by `finish`).

Thread-safety: specs are immutable values; the functions here are pure.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from headwater.streams._errors import TopologyError
from headwater.streams._model import Window


def _check_ms(what: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TopologyError(f"{what} must be an integer >= {minimum} (milliseconds), not {value!r}")


@dataclass(frozen=True, slots=True)
class Tumbling:
    """Fixed windows of `size_ms`, back to back, aligned to the epoch. Immutable."""

    size_ms: int
    grace_ms: int = 0
    processing_time: bool = False

    def __post_init__(self) -> None:
        _check_ms("Tumbling size_ms", self.size_ms, 1)
        _check_ms("Tumbling grace_ms", self.grace_ms, 0)

    @property
    def advance_ms(self) -> int:
        return self.size_ms

    def windows_for(self, timestamp: int) -> list[Window]:
        start = timestamp - timestamp % self.size_ms
        return [Window(start, start + self.size_ms)]


@dataclass(frozen=True, slots=True)
class Hopping:
    """Windows of `size_ms` starting every `advance_ms` (<= size), aligned to the epoch.
    Immutable."""

    size_ms: int
    advance_ms: int
    grace_ms: int = 0
    processing_time: bool = False

    def __post_init__(self) -> None:
        _check_ms("Hopping size_ms", self.size_ms, 1)
        _check_ms("Hopping advance_ms", self.advance_ms, 1)
        _check_ms("Hopping grace_ms", self.grace_ms, 0)
        if self.advance_ms > self.size_ms:
            raise TopologyError(
                f"Hopping advance_ms ({self.advance_ms}) must not exceed size_ms ({self.size_ms})"
            )

    def windows_for(self, timestamp: int) -> list[Window]:
        """Every window containing `timestamp`, oldest first."""
        size, advance = self.size_ms, self.advance_ms
        start = timestamp - timestamp % advance
        out: list[Window] = []
        while start > timestamp - size:
            out.append(Window(start, start + size))
            start -= advance
        out.reverse()
        return out


@dataclass(frozen=True, slots=True)
class Sliding:
    """Windows defined by record timestamps at most `max_difference_ms` apart. Immutable."""

    max_difference_ms: int
    grace_ms: int = 0

    def __post_init__(self) -> None:
        _check_ms("Sliding max_difference_ms", self.max_difference_ms, 0)
        _check_ms("Sliding grace_ms", self.grace_ms, 0)


@dataclass(frozen=True, slots=True)
class Session:
    """Per-key activity sessions split by `gap_ms` of inactivity. Immutable."""

    gap_ms: int
    grace_ms: int = 0

    def __post_init__(self) -> None:
        _check_ms("Session gap_ms", self.gap_ms, 0)
        _check_ms("Session grace_ms", self.grace_ms, 0)


@dataclass(frozen=True, slots=True)
class CountWindow:
    """Per key, every `size` records form one window. Immutable."""

    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise TopologyError(f"CountWindow size must be an integer >= 1, not {self.size!r}")


WindowSpec = Tumbling | Hopping | Sliding | Session | CountWindow


def sliding_windows(timestamps: Sequence[int], max_difference_ms: int) -> list[Window]:
    """The distinct sliding windows that `timestamps` (sorted ascending) define, ordered by
    (end, start). Pure: the operator and the tests share it."""
    d = max_difference_ms
    found: set[Window] = set()
    count = len(timestamps)
    for index, t in enumerate(timestamps):
        found.add(Window(t - d, t + 1))
        # The window right after t exists when a later record falls in (t, t + d + 1].
        after = bisect.bisect_right(timestamps, t, index)
        if after < count and timestamps[after] <= t + d + 1:
            found.add(Window(t + 1, t + d + 2))
    return sorted(found, key=lambda w: (w.end, w.start))


def merge_sessions(
    sessions: Iterable[tuple[int, int]], timestamp: int, gap_ms: int
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Where a record at `timestamp` lands among a key's sessions `(first, last)`: the merged
    session, and the existing sessions it absorbs (those within `gap_ms` of it, inclusive)."""
    first = last = timestamp
    absorbed: list[tuple[int, int]] = []
    for session in sessions:
        start, end = session
        if start - gap_ms <= timestamp <= end + gap_ms:
            absorbed.append(session)
            first = min(first, start)
            last = max(last, end)
    return (first, last), absorbed


__all__ = [
    "CountWindow",
    "Hopping",
    "Session",
    "Sliding",
    "Tumbling",
    "WindowSpec",
    "merge_sessions",
    "sliding_windows",
]
