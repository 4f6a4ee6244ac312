"""The prefix cache's longest-shared-prefix search, against a plain loop (no model)."""

from __future__ import annotations

import random

from npcserver.backends.transformers_llm import _common_prefix_length


def shared_prefix_by_loop(a: tuple[int, ...], b: list[int], limit: int) -> int:
    shared = 0
    for x, y in zip(a[:limit], b[:limit], strict=False):
        if x != y:
            break
        shared += 1
    return shared


def test_the_binary_search_agrees_with_a_loop() -> None:
    rng = random.Random(4)
    for _ in range(3000):
        a = tuple(rng.randint(0, 2) for _ in range(rng.randint(0, 40)))
        b = list(a[: rng.randint(0, len(a))]) + [rng.randint(0, 2) for _ in range(rng.randint(0, 10))]
        limit = rng.randint(0, 45)
        assert _common_prefix_length(a, b, limit) == shared_prefix_by_loop(a, b, limit), (a, b, limit)
