"""The three model contracts the pipeline talks to.

Every method here is *blocking* and is called from the model's own single-worker executor, never
from the event loop. Real implementations live beside this file (faster-whisper, transformers,
piper); `fake.py` holds deterministic fakes for fast tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    max_new_tokens: int = 60
    temperature: float = 0.7  # 0 means greedy decoding
    top_p: float = 0.9
    repetition_penalty: float = 1.2
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    """How one NPC sounds: which Piper voice, and how it is altered."""

    model: str = "en_US-joe-medium"  # embedded voice name, or a path to a Piper .onnx file
    speaker_id: int | None = None
    speed: float = 1.0  # 1.0 = the voice's own pace; 1.2 = 20 % faster
    pitch_semitones: float = 0.0  # +12 = one octave up


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    language: str = "en"
    audio_seconds: float = 0.0
    # The recogniser's probability of the last word it wrote (its least likely token), None when it
    # cannot tell (whisper on a GPU, or faster-whisper's own full-window transcribe). Low when it
    # guessed a word the audio cuts off: "ten of c-" written as "ten of course".
    last_word_probability: float | None = None


class Transcriber(Protocol):
    """Speech to text. `audio` is mono float32 in [-1, 1] at 16 kHz."""

    def transcribe(self, audio: np.ndarray) -> Transcript: ...


class DialogueModel(Protocol):
    """Chat messages in, the reply streamed out as text pieces (tokens or words).

    The iterator is consumed inside the model's worker thread. `should_stop` is polled between
    tokens; when it returns True the generator must end promptly (this is how interrupts cancel).
    """

    def generate(
        self,
        messages: list[ChatMessage],
        options: GenerationOptions,
        should_stop: Callable[[], bool],
    ) -> Iterator[str]: ...


@dataclass(frozen=True, slots=True, eq=False)
class Speech:
    """One clause spoken: its audio, and which phoneme sounds when (what lip-sync is made from)."""

    audio: np.ndarray  # mono int16 at the synthesizer's sample_rate
    # (espeak IPA symbol, samples) in speaking order, laid end to end over `audio`; () when the voice
    # gives no alignment
    phonemes: tuple[tuple[str, int], ...] = ()


class Synthesizer(Protocol):
    """Text to speech: one clause in, mono int16 PCM at `sample_rate` and its phoneme timing out."""

    @property
    def sample_rate(self) -> int: ...

    def synthesize(self, text: str, voice: VoiceSettings) -> Speech: ...


class SentenceEmbedder(Protocol):
    """Texts to unit vectors [len(texts), dim] float32, whose dot products say how alike they mean."""

    def embed(self, texts: list[str]) -> np.ndarray: ...


def first_encoder(embedder: SentenceEmbedder) -> SentenceEmbedder:
    """The first of a mean of encoders (`sentence_embedders.MeanOfEmbedders.members`), else the encoder itself."""
    members: tuple[SentenceEmbedder, ...] = getattr(embedder, "members", ())
    return members[0] if members else embedder


class TurnDetector(Protocol):
    """Hears from the audio alone (intonation, rhythm, the last words' sound) whether the player's turn is over."""

    def turn_complete_probability(self, audio: np.ndarray) -> float:
        """audio: 16 kHz float32, the utterance up to a pause; returns P(the turn is finished)."""
        ...


class SentenceEndModel(Protocol):
    """Reads from the words alone whether the player's sentence is over ("he might even" is not)."""

    def sentence_end_probability(self, text: str) -> float:
        """text: a transcript of the utterance up to a pause; returns P(the sentence ends here)."""
        ...


# Abilities some models have beyond their contract; the pipeline asks for them by these names.


@runtime_checkable
class ConcurrentModel(Protocol):
    """A model that batches: several callers must be able to wait on it at once."""

    @property
    def max_concurrent_calls(self) -> int: ...


@runtime_checkable
class PrefillingModel(Protocol):
    """A dialogue model that can compute a prompt start's state ahead of the turn that needs it."""

    def prefill(self, messages: list[ChatMessage]) -> None: ...


@runtime_checkable
class IdlePrefillingModel(Protocol):
    """A batching dialogue model: it prefills itself, while it writes no reply."""

    def prefill_when_idle(self, messages: list[ChatMessage]) -> None: ...


@runtime_checkable
class ModelWithWorker(Protocol):
    """A model with a worker thread of its own, stopped when the runner closes."""

    def close(self, wait: bool = True) -> None: ...
