"""Nucleus sampling over the likeliest tokens (`sample_nucleus`), on hand-made scores: no model."""

from __future__ import annotations

import math
from collections import Counter

import torch

from npcserver.backends.transformers_llm import SAMPLING_CANDIDATES, sample_nucleus

VOCAB = 49_152


def scores_with(shares: dict[int, float]) -> torch.Tensor:
    """Scores whose softmax gives these tokens these shares and spreads the rest over the vocabulary."""
    rest = (1.0 - sum(shares.values())) / (VOCAB - len(shares))
    scores = torch.full((VOCAB,), math.log(rest))
    for token, share in shares.items():
        scores[token] = math.log(share)
    return scores


def draws(scores: torch.Tensor, top_p: float, count: int = 3000) -> Counter[int]:
    generator = torch.Generator().manual_seed(1)
    return Counter(sample_nucleus(scores, top_p, generator) for _ in range(count))


def test_only_the_nucleus_is_drawn_in_proportion() -> None:
    scores = scores_with({7: 0.6, 300: 0.25, 9000: 0.1})  # 5 % left over the other 49k tokens
    drawn = draws(scores, top_p=0.9)
    assert set(drawn) == {7, 300, 9000}  # 0.6 + 0.25 < 0.9: the third one is needed, no fourth
    assert abs(drawn[7] / 3000 - 0.6 / 0.95) < 0.03
    assert abs(drawn[300] / 3000 - 0.25 / 0.95) < 0.03


def test_a_token_above_top_p_alone_is_always_drawn() -> None:
    assert set(draws(scores_with({42: 0.95, 43: 0.04}), top_p=0.9, count=200)) == {42}


def test_without_top_p_the_candidates_are_the_likeliest_only() -> None:
    scores = torch.linspace(0.0, 1.0, VOCAB)  # nearly flat: the nucleus would be most of the vocabulary
    drawn = draws(scores, top_p=1.0, count=500)
    assert min(drawn) >= VOCAB - SAMPLING_CANDIDATES


def test_the_same_generator_state_draws_the_same_token() -> None:
    scores = scores_with({1: 0.3, 2: 0.3, 3: 0.3})
    first = [sample_nucleus(scores, 0.9, torch.Generator().manual_seed(5)) for _ in range(3)]
    assert len(set(first)) == 1
