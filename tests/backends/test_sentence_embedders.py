"""The mean of several sentence encoders, with fake encoders (no weights)."""

from __future__ import annotations

import numpy as np
import pytest

from npcserver.backends.base import first_encoder
from npcserver.backends.fake import FakeEmbedder
from npcserver.backends.sentence_embedders import MeanOfEmbedders


class _FixedEmbedder:
    """Fake: the same unit vector for every text but one, which gets another."""

    def __init__(self, odd_text: str, dimensions: int) -> None:
        self.odd_text, self.dimensions = odd_text, dimensions

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            vectors[row, 1 if text == self.odd_text else 0] = 1.0
        return vectors


def test_a_dot_product_of_the_mean_is_the_mean_of_the_members_cosines() -> None:
    words, fixed = FakeEmbedder(), _FixedEmbedder("a horse for sale", dimensions=3)
    texts = ["a horse for sale", "horse for sale here", "the gate closes at dusk"]
    mean = MeanOfEmbedders([words, fixed]).embed(texts)
    assert mean.shape == (3, FakeEmbedder.DIMENSIONS + 3) and mean.dtype == np.float32
    assert np.allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-6)
    word_cosines, fixed_cosines = words.embed(texts) @ words.embed(texts).T, fixed.embed(texts) @ fixed.embed(texts).T
    assert np.allclose(mean @ mean.T, (word_cosines + fixed_cosines) / 2, atol=1e-6)


def test_a_mean_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MeanOfEmbedders([])


def test_the_action_detector_uses_only_the_first_encoder_of_a_mean() -> None:
    words, fixed = FakeEmbedder(), _FixedEmbedder("a horse for sale", dimensions=3)
    assert first_encoder(MeanOfEmbedders([words, fixed])) is words
    assert first_encoder(fixed) is fixed  # one encoder is its own first
