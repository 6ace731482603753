"""A delivery future cheap enough to make one per record.

`send` returns a `concurrent.futures.Future` per record, and most are never waited on. The
standard Future builds a `threading.Condition` (a lock and a waiter list) when it is made and
takes it again to complete: several microseconds per record, more than librdkafka spends
queueing it. `DeliveryFuture` makes its condition only when something first needs it (a
waiter, a done-callback, any query); completing a future nobody looked at just stores the
outcome.

Its state lives in slots and class attributes, never in `__getattr__` (which would slow every
attribute access of the class), and the condition, waiter and callback lists are properties
that make them on first use. Making a future writes nothing; completing one unwatched writes two
slots (on CPython, materialising an instance dict costs more than the rest of a completion).

It stays a real `Future` subclass, so `asyncio.wrap_future`, `concurrent.futures.wait` and
`as_completed` work unchanged. The shortcut relies on the standard Future keeping its state in
`_state`, `_result`, `_exception`, `_condition`, `_waiters` and `_done_callbacks` (true of
every CPython 3.x); the tests check it against the library's own behaviour.

Thread-safety: as `Future`; the lazy condition is created and checked under one module lock,
so a completion and a first waiter never miss each other.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import FINISHED, RUNNING
from typing import TYPE_CHECKING, Any, TypeVar

T = TypeVar("T")

# Guards the moment a future gains its condition against a completion deciding whether one
# exists: held for a few instructions, never while waiting.
_CONDITION_LOCK = threading.Lock()


class DeliveryFuture(Future[T]):
    """A running future whose condition (and waiter and callback lists) are made on first use."""

    __slots__ = ("_finished", "_made_callbacks", "_made_condition", "_made_waiters", "_result")

    # Defaults read from the class until an instance writes its own (rare: a failure, a
    # watcher). `_watched` is set (under _CONDITION_LOCK) when the condition is made: from then
    # on a completion must take the standard path and notify.
    _exception: BaseException | None = None
    _watched = False

    if TYPE_CHECKING:
        _finished: str
        _result: Any
        _made_condition: threading.Condition
        _made_waiters: list[Any]
        _made_callbacks: list[Any]

        def __init__(self) -> None: ...

    else:
        # No super().__init__(): that is what makes the condition. object's own __init__
        # also spares a Python call per future.
        __init__ = object.__init__

    @property
    def _state(self) -> str:
        """RUNNING until completed: the work is already queued, so it is never cancelled."""
        try:
            return self._finished
        except AttributeError:
            return RUNNING

    @_state.setter
    def _state(self, state: str) -> None:
        self._finished = state

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        try:
            return self._made_condition
        except AttributeError:
            with _CONDITION_LOCK:
                try:
                    return self._made_condition
                except AttributeError:
                    self._made_waiters = []
                    self._made_callbacks = []
                    condition = self._made_condition = threading.Condition()
                    self._watched = True
                    return condition

    # (The base class writes these three only in its __init__, which is never called.)
    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        self._condition  # noqa: B018 - made with the condition
        return self._made_waiters

    @property
    def _done_callbacks(self) -> list[Any]:
        self._condition  # noqa: B018 - made with the condition
        return self._made_callbacks

    def _complete_quietly(self, field: str, outcome: Any) -> bool:
        """Store the outcome without a condition if nobody has made one; False if somebody
        has (then the standard path must notify them)."""
        with _CONDITION_LOCK:
            if self._watched:
                return False
            finished_before = self._state == FINISHED
            if not finished_before:
                setattr(self, field, outcome)
                self._finished = FINISHED
        if finished_before:  # raised outside the lock: the repr takes it again
            raise InvalidStateError(f"{self!r} is already finished")
        return True

    def set_result(self, result: T) -> None:
        if not self._complete_quietly("_result", result):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._complete_quietly("_exception", exception):
            super().set_exception(exception)

    def _deliver(self, result: Any) -> None:
        """`set_result` for a producer's delivery report, which comes once per future: the
        already-finished check is skipped and, unwatched, only two slots are written."""
        # `with`, not acquire() then try: a KeyboardInterrupt between those two would leave
        # this module-wide lock held, and every future of the process would hang on it.
        with _CONDITION_LOCK:
            if not self._watched:
                self._result = result
                self._finished = FINISHED
                return
        Future.set_result(self, result)

    def _report(self, error: object, message: Any) -> None:
        """A librdkafka-style delivery report, `(error, message)`, once per future: the message
        is the result (for `_deliver`'s price, in one frame), an error goes to `_failed`."""
        if error is None:
            with _CONDITION_LOCK:  # as in `_deliver`
                if not self._watched:
                    self._result = message
                    self._finished = FINISHED
                    return
            Future.set_result(self, message)
        else:
            self._failed(error, message)

    def _failed(self, error: Any, message: Any) -> None:
        """What a failed report sets: the backend's typed error."""
        self.set_exception(error if isinstance(error, BaseException) else RuntimeError(error))

    def result(self, timeout: float | None = None) -> T:
        """The standard `result`, without making a condition when already finished unwatched
        (a sender looking after `flush`)."""
        if not self._watched and self._state == FINISHED:
            exception = self._exception
            if exception is not None:
                raise exception
            return self._result  # type: ignore[no-any-return]
        return super().result(timeout)


__all__ = ["DeliveryFuture"]
