"""`DeliveryFuture` behaves as a standard Future whoever looks at it, whenever."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
import time

import pytest

from headwater.client._futures import _CONDITION_LOCK, DeliveryFuture


def test_outcomes_read_after_completion() -> None:
    ok: DeliveryFuture[int] = DeliveryFuture()
    ok.set_result(5)
    assert ok.done() and not ok.cancelled() and ok.result() == 5 and ok.exception() is None
    failed: DeliveryFuture[int] = DeliveryFuture()
    failed.set_exception(ValueError("bad"))
    with pytest.raises(ValueError, match="bad"):
        failed.result()
    assert isinstance(failed.exception(), ValueError)


def test_it_is_running_and_cannot_be_cancelled() -> None:
    future: DeliveryFuture[int] = DeliveryFuture()
    assert future.running() and not future.done()
    assert future.cancel() is False
    future.set_result(1)
    assert future.result() == 1


def test_completing_twice_is_refused_on_both_paths() -> None:
    quiet: DeliveryFuture[int] = DeliveryFuture()
    quiet.set_result(1)
    with pytest.raises(concurrent.futures.InvalidStateError):
        quiet.set_result(2)
    watched: DeliveryFuture[int] = DeliveryFuture()
    assert not watched.done()  # makes the condition
    watched.set_result(1)
    with pytest.raises(concurrent.futures.InvalidStateError):
        watched.set_exception(ValueError())
    assert watched.result() == 1


def test_done_callbacks_before_and_after() -> None:
    seen: list[int] = []
    future: DeliveryFuture[int] = DeliveryFuture()
    future.add_done_callback(lambda f: seen.append(f.result()))
    future.set_result(3)
    future.add_done_callback(lambda f: seen.append(f.result() + 1))
    assert seen == [3, 4]


@pytest.mark.parametrize("complete", ["set_result", "_deliver"])
def test_a_waiter_is_never_missed(complete: str) -> None:
    """A waiter arriving as the future completes (the lazy condition's race) always wakes,
    whether the future is completed as any Future or by a producer's delivery report."""
    for _ in range(2_000):
        future: DeliveryFuture[int] = DeliveryFuture()
        started = threading.Event()
        results: list[int] = []

        def wait(
            f: DeliveryFuture[int] = future,
            s: threading.Event = started,
            out: list[int] = results,
        ) -> None:
            s.set()
            out.append(f.result(timeout=5))

        thread = threading.Thread(target=wait)
        thread.start()
        started.wait()
        getattr(future, complete)(7)
        thread.join(timeout=10)
        assert results == [7]


def test_library_helpers_accept_it() -> None:
    futures = [DeliveryFuture[int]() for _ in range(3)]
    for index, future in enumerate(futures):
        threading.Timer(0.01 * index, future.set_result, (index,)).start()
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=5)) == [
        0,
        1,
        2,
    ]
    done, pending = concurrent.futures.wait(futures, timeout=5)
    assert len(done) == 3 and not pending

    async def bridged() -> int:
        future: DeliveryFuture[int] = DeliveryFuture()
        threading.Timer(0.01, future.set_result, (9,)).start()
        return await asyncio.wrap_future(future)

    assert asyncio.run(bridged()) == 9


def test_an_unwatched_future_stores_its_outcome_in_slots_only() -> None:
    """The cheap path writes no instance dict; a watcher afterwards still sees the outcome."""
    plain: DeliveryFuture[bytes] = DeliveryFuture()
    plain._deliver(b"m")
    assert vars(plain) == {}
    assert plain.result() == b"m" and vars(plain) == {}  # read without making a condition
    assert plain.done() and plain.exception() is None  # now watched, same outcome
    seen: list[bytes] = []
    plain.add_done_callback(lambda f: seen.append(f.result()))
    assert seen == [b"m"]


class _Interrupted(Exception):
    pass


class _OneShotAlarm:
    """A SIGALRM handler that raises once, then stays quiet until re-armed: the test's own
    bookkeeping (counting, probing the lock) must not be interrupted, or the test itself
    could leave the lock held and hang every later test."""

    def __init__(self) -> None:
        self.armed = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.armed:
            self.armed = False
            raise _Interrupted


@pytest.mark.parametrize("complete", ["deliver", "report"])
def test_an_interrupt_never_leaves_the_completion_lock_held(complete: str) -> None:
    """A signal handler raising mid-completion (Ctrl-C in a `flush`, which serves reports on
    the main thread) must not leave the module-wide lock held: every future would hang."""
    interrupts = 0
    alarm = _OneShotAlarm()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                alarm.armed = True  # an interrupt from here on lands in the except below
                if interrupts >= 300 or time.monotonic() >= deadline:
                    alarm.armed = False
                    break
                for _ in range(1_000):
                    future: DeliveryFuture[object] = DeliveryFuture()
                    if complete == "deliver":
                        future._deliver(1)
                    else:
                        future._report(None, 1)
            except _Interrupted:
                # Disarmed by the handler: nothing below is interrupted.
                interrupts += 1
                # Held for good only if this thread kept it (others hold it for microseconds).
                held = not _CONDITION_LOCK.acquire(timeout=1)
                if not held:
                    _CONDITION_LOCK.release()
                assert not held, f"held after interrupt {interrupts}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    assert interrupts >= 50  # enough interrupts landed to make the check mean something
