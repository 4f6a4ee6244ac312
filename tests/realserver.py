"""Helpers for end-to-end tests with the real embedded models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from loadtest.server_process import REPO, server_process


@contextmanager
def real_server(*extra_args: str, timeout_s: float = 180.0) -> Iterator[str]:
    """A real `npcserver serve` with the embedded models; yields its ws:// URL once ready."""
    with server_process("--voices", str(REPO / "voices"), *extra_args, timeout_s=timeout_s) as server:
        yield server.url


def recorded_question(name: str = "sword_price") -> tuple[bytes, str]:
    """A fixed recording from the load tester's corpus (16 kHz PCM s16le) and its text.

    Recorded once with Piper: a fixed file keeps the ASR's input, and so the transcript, the same
    from run to run (Piper's own synthesis varies a little each time).
    """
    from loadtest.corpus import load_utterances

    utterance = next(u for u in load_utterances() if u.name == name)
    assert utterance.sample_rate == 16000
    return utterance.pcm.astype("<i2").tobytes(), utterance.text


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
