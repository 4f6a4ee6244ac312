"""The C heap tuning of a node: real glibc calls, no models."""

from __future__ import annotations

import ctypes
import platform

import pytest

from npcserver.edge import heap
from npcserver.edge.limits import resident_memory_bytes

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and malloc_trim are glibc's")


@glibc
def test_arenas_are_capped_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert heap.limit_arenas()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not heap.limit_arenas()


@glibc
def test_freed_heap_memory_goes_back_to_the_system() -> None:
    # blocks below the mmap threshold live in the heap; with a few kept above them, freeing them
    # leaves the pages with the process until the heap is trimmed
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(32_768) for _ in range(20_000)]  # ~640 MiB
    for block in blocks:
        ctypes.memset(block, 1, 32_768)
    kept = [libc.malloc(64) for _ in range(10)]
    for block in blocks:
        libc.free(block)
    before_trim = resident_memory_bytes()
    heap.release_freed_memory()
    assert resident_memory_bytes() < before_trim - 300 * 2**20
    for block in kept:
        libc.free(block)
