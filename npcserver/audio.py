"""PCM helpers: int16 <-> float32, resampling, framing. No I/O."""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly

ASR_SAMPLE_RATE = 16_000


def pcm16_to_float(pcm: bytes | np.ndarray) -> np.ndarray:
    samples = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, (bytes, bytearray, memoryview)) else pcm
    return samples.astype(np.float32) / 32768.0


def float_to_pcm16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased); float32 in, float32 out."""
    if from_rate == to_rate or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    g = gcd(from_rate, to_rate)
    return resample_poly(samples, to_rate // g, from_rate // g).astype(np.float32)


def rms_dbfs(samples: np.ndarray) -> float:
    """Loudness of float samples in dB relative to full scale (-inf for digital silence)."""
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")
