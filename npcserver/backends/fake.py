"""Deterministic fake models, for fast tests and for measuring the server's own overhead.

They implement the same contracts as the real backends and do a predictable amount of work:
no weights, no randomness. Every call is recorded so tests can inspect what reached a model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from npcserver.backends.base import ChatMessage, GenerationOptions, Speech, Transcript, VoiceSettings

FAKE_SAMPLE_RATE = 22050


class FakeTranscriber:
    """Says how much audio it heard, unless a test scripted the next transcripts."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.scripted: list[str] = []
        self.calls: list[float] = []  # seconds of audio per call
        self.fail_next = False
        self.last_word_probability: float | None = None  # what every transcript says of its last word

    def transcribe(self, audio: np.ndarray) -> Transcript:
        seconds = len(audio) / 16000
        self.calls.append(seconds)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("fake transcriber failure (scripted by a test)")
        time.sleep(self.delay_s)
        text = self.scripted.pop(0) if self.scripted else f"fake transcript of {seconds:.1f} seconds"
        return Transcript(text=text, audio_seconds=seconds, last_word_probability=self.last_word_probability)


class FakeDialogue:
    """Streams a fixed reply word by word; echoes the player's last line so tests can follow turns."""

    def __init__(self, token_delay_s: float = 0.0, reply: str | None = None) -> None:
        self.token_delay_s = token_delay_s
        self.reply = reply
        self.prompts: list[list[ChatMessage]] = []
        self.options: list[GenerationOptions] = []
        self.fail_next = False
        self._lock = threading.Lock()

    def generate(
        self, messages: list[ChatMessage], options: GenerationOptions, should_stop: Callable[[], bool]
    ) -> Iterator[str]:
        with self._lock:
            self.prompts.append(list(messages))
            self.options.append(options)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("fake dialogue failure (scripted by a test)")
        heard = messages[-1].content if messages else ""
        reply = self.reply or f"You said {heard[:60]}. Well met, traveller, the forge is hot today."
        for index, word in enumerate(reply.split(" ")):
            if should_stop() or index >= options.max_new_tokens:
                return
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
            yield word if index == 0 else " " + word


class FakeSynthesizer:
    """A 220 Hz tone, 50 ms per character: audible, non-silent, and proportional to the text.

    Its alignment makes each character a "phoneme" of equal length: letters are IPA symbols too, so
    "Bob" gives the visemes PP, oh, PP, as real speech would.
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[tuple[str, VoiceSettings]] = []
        self.fail_next = False

    @property
    def sample_rate(self) -> int:
        return FAKE_SAMPLE_RATE

    def synthesize(self, text: str, voice: VoiceSettings) -> Speech:
        self.calls.append((text, voice))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("fake synthesizer failure (scripted by a test)")
        time.sleep(self.delay_s)
        n = int(0.05 * len(text) * FAKE_SAMPLE_RATE)
        t = np.arange(n) / FAKE_SAMPLE_RATE
        audio = (0.3 * np.sin(2 * np.pi * 220.0 * t) * 32767).astype(np.int16)
        ends = [n * (index + 1) // len(text) for index in range(len(text))]
        starts = [0, *ends[:-1]]
        phonemes = tuple((ch.lower(), end - start) for ch, start, end in zip(text, starts, ends, strict=True))
        return Speech(audio, phonemes)


class FakeEmbedder:
    """Bag-of-words vectors (hashed, unit length): lines sharing words are alike. No weights."""

    DIMENSIONS = 256

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        import re
        import zlib

        self.calls.append(list(texts))
        vectors = np.zeros((len(texts), self.DIMENSIONS), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                if len(word) > 2:
                    vectors[row, zlib.crc32(word.rstrip("s").encode()) % self.DIMENSIONS] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-9)


class FakeSentenceEnd:
    """A sentence is over unless its last word is one no sentence ends on ("the", "a", "for"...). No weights."""

    DANGLING = frozenset({"a", "an", "the", "and", "or", "but", "to", "of", "for", "with", "in", "on", "my", "your"})

    def __init__(self) -> None:
        self.calls: list[str] = []

    def sentence_end_probability(self, text: str) -> float:
        self.calls.append(text)
        words = text.lower().strip(" .?!,").split()
        return 0.001 if words and words[-1] in self.DANGLING else 0.5
