"""Read and write 16-bit PCM WAV files (the standard library's `wave`, plus mono mixing)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def read_wav_mono16(path: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV -> (mono int16 samples, sample rate); channels are averaged."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(
                f"{path}: only 16-bit PCM WAV is supported (this one has {8 * wav.getsampwidth()}-bit samples)"
            )
        channels, rate = wav.getnchannels(), wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        samples = samples[: samples.size - samples.size % channels].reshape(-1, channels).mean(axis=1)
    return samples.astype(np.int16), rate


def write_wav_mono16(path: Path, pcm: bytes | np.ndarray, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pcm if isinstance(pcm, bytes) else np.asarray(pcm, dtype="<i2").tobytes()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(data)
