"""A one-thread executor that runs the waiting call with the earliest deadline first.

Speech synthesis serves every session from one worker. In first-come order a new turn's first clause
waits behind later clauses of replies that are already playing and have seconds of audio buffered
at their client; those can wait, the first clause can't. Each call therefore carries the time its
audio is needed by (now for a first clause, the end of the audio already sent for a later one), and
the worker always takes the most urgent (earliest deadline first scheduling).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")


class DeadlineExecutor(Executor):
    """Runs submitted calls one at a time on its own thread, earliest `deadline` first (ties: first come)."""

    def __init__(self, thread_name: str = "deadline-worker") -> None:
        self._waiting: list[tuple[float, int, Future[Any], Callable[[], Any]]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._shutdown = False
        self._thread = threading.Thread(target=self._work, name=thread_name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Submit with no deadline: it goes before every call that has one (a plain executor call)."""
        return self.submit_by(float("-inf"), lambda: fn(*args, **kwargs))

    def submit_by(self, deadline: float, fn: Callable[[], T]) -> Future[T]:
        """Queue `fn`; `deadline` is any clock's time the result is needed by (smaller = sooner)."""
        future: Future[T] = Future()
        with self._changed:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            heapq.heappush(self._waiting, (deadline, next(self._order), future, fn))
            self._changed.notify()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._changed:
            self._shutdown = True
            if cancel_futures:
                for _deadline, _order, future, _fn in self._waiting:
                    future.cancel()
                self._waiting.clear()
            self._changed.notify()
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._shutdown:
                    self._changed.wait()
                if not self._waiting:
                    return  # shut down and nothing left to run
                _deadline, _order, future, fn = heapq.heappop(self._waiting)
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited (the turn was interrupted)
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 (handed to the caller through the future)
                future.set_exception(exc)
            else:
                future.set_result(result)
