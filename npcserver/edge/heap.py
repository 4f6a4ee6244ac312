"""Keeping the C heap from holding memory the node no longer uses (glibc; a no-op elsewhere).

A node's model calls run on several worker threads, and glibc gives each thread that contends for
the heap its own arena (up to 8 per core) and keeps what was freed in them for reuse. Under 16
players and a burst of hostile clients that freed memory is never handed back: a soak rose from 1.2
to 3.8 GiB in 11 minutes and never fell (docs/operations.md, "Memory"). Two arenas are enough for
two cores' worth of threads, and `malloc_trim` hands freed pages back to the system.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2  # MALLOC_ARENA_MAX in the environment wins
TRIM_EVERY_S = 10.0  # every 30 s, a soak's memory still swung by ~700 MiB between trims


def _libc() -> ctypes.CDLL | None:
    """The C library this process already runs on (not ctypes.util.find_library: that runs ldconfig)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's heap arenas (call before the worker threads start). False where it can't."""
    if _LIBC is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(_LIBC.mallopt(_M_ARENA_MAX, arenas))


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (blocking: a few ms; run it off the event loop)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
