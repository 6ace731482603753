"""A delivery future cheap enough to make one per record.

`send` returns a `concurrent.futures.Future` per record, and most are never waited on. The
standard Future builds a `threading.Condition` (a lock and a waiter list) when it is made and
takes it again to complete: several microseconds per record, more than librdkafka spends
queueing it. `DeliveryFuture` makes its condition only when something first needs it (a
waiter, a done-callback, any query); completing a future nobody looked at just stores the
outcome.

It stays a real `Future` subclass, so `asyncio.wrap_future`, `concurrent.futures.wait` and
`as_completed` work unchanged. The shortcut relies on the standard Future keeping its state in
`_state`, `_result`, `_exception` and `_condition` (true of every CPython 3.x); the tests check
it against the library's own behaviour.

Thread-safety: as `Future`; the lazy condition is created and checked under one module lock,
so a completion and a first waiter never miss each other.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import FINISHED, RUNNING
from typing import Any, TypeVar

T = TypeVar("T")

# Guards the moment a future gains its condition against a completion deciding whether one
# exists: held for a few instructions, never while waiting.
_CONDITION_LOCK = threading.Lock()
_LAZY = frozenset({"_condition", "_waiters", "_done_callbacks"})


class DeliveryFuture(Future[T]):
    """A running future whose condition (and waiter and callback lists) are made on first use.

    Its state starts as class attributes, so making one writes nothing: an instance gains its
    own `_state`, `_result` or `_exception` only when completed.
    """

    _state = RUNNING  # the work is already queued: it cannot be cancelled
    _result: Any = None
    _exception: BaseException | None = None

    def __init__(self) -> None:  # no super().__init__(): that is what makes the condition
        pass

    def __getattr__(self, name: str) -> Any:
        """Called only for attributes not yet set: the condition and its lists, on first use."""
        if name not in _LAZY:
            raise AttributeError(name)
        with _CONDITION_LOCK:
            attributes = vars(self)
            if "_condition" not in attributes:
                attributes["_waiters"] = []
                attributes["_done_callbacks"] = []
                attributes["_condition"] = threading.Condition()
            return attributes[name]

    def _complete_quietly(self, field: str, outcome: Any) -> bool:
        """Store the outcome without a condition if nobody has made one; False if somebody
        has (then the standard path must notify them)."""
        with _CONDITION_LOCK:
            attributes = vars(self)
            if "_condition" in attributes:
                return False
            finished_before = self._state == FINISHED
            if not finished_before:
                attributes[field] = outcome
                attributes["_state"] = FINISHED
        if finished_before:  # raised outside the lock: the repr takes it again
            raise InvalidStateError(f"{self!r} is already finished")
        return True

    def set_result(self, result: T) -> None:
        if not self._complete_quietly("_result", result):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._complete_quietly("_exception", exception):
            super().set_exception(exception)


__all__ = ["DeliveryFuture"]
