"""The queue and worker thread a batching model serves its callers from.

Callers `put` work from any thread; the first put starts the worker thread, which runs the owner's
`serve` loop over `queue` until it takes None, the mark `close()` puts after everything already queued.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, Self, TypeVar

T = TypeVar("T")


class Inbox(Generic[T]):
    def __init__(self, serve: Callable[[], None], thread_name: str, closed_message: str) -> None:
        self.queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()  # None: close()'s mark
        self._serve = serve
        self._thread_name = thread_name
        self._closed_message = closed_message
        self._lock = threading.Lock()  # starting the worker against closing
        self._worker: threading.Thread | None = None
        self._closed = False

    def put(self, item: T) -> None:
        """Queue work for the worker (started now if this is the first); RuntimeError once closed."""
        with self._lock:
            if self._closed:
                raise RuntimeError(self._closed_message)
            if self._worker is None:
                # daemon: a server that forgets close() can still exit; close() joins it.
                self._worker = threading.Thread(target=self._serve, name=self._thread_name, daemon=True)
                self._worker.start()
            self.queue.put(item)

    def close(self, wait: bool = True) -> None:
        """Let the worker finish what is queued, then stop. `wait=False` returns at once (from an
        event loop, say); the thread ends after its last piece of work."""
        with self._lock:
            worker = self._worker
            if not self._closed and worker is not None:
                self.queue.put(None)
            self._closed = True
        if wait and worker is not None and worker is not threading.current_thread():
            worker.join()


class ServedByInbox:
    """Base of a model that serves its callers from one `Inbox` worker: closing it, and `with` blocks."""

    _inbox: Inbox[Any]

    def close(self, wait: bool = True) -> None:
        """Finish the work already queued, then stop the worker thread. `wait=False` returns at once
        (from an event loop, say); the thread ends after its last piece of work."""
        self._inbox.close(wait)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
