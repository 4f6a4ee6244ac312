"""Model backends: the contracts (`base`), real implementations and deterministic fakes."""

from __future__ import annotations

from dataclasses import dataclass

from npcserver.backends.base import (
    DialogueModel,
    SentenceEmbedder,
    SentenceEndModel,
    Synthesizer,
    Transcriber,
    TurnDetector,
)
from npcserver.config import Settings


@dataclass(frozen=True, slots=True)
class Backends:
    transcriber: Transcriber
    dialogue: DialogueModel
    synthesizer: Synthesizer
    embedder: SentenceEmbedder | None = None  # finds the persona facts a line asks about; None: no lookup
    turn_detector: TurnDetector | None = None  # hears whether a pause ends the turn; None: pause length alone
    sentence_end: SentenceEndModel | None = None  # reads whether the transcript of a pause is a whole sentence
    action_embedder: SentenceEmbedder | None = None  # matches lines to declared actions; None: the embedder's first encoder


def create_backends(settings: Settings) -> Backends:
    """Load the models the settings name (blocking: seconds for real models)."""
    if settings.backend == "fake":
        from npcserver.backends.fake import FakeDialogue, FakeEmbedder, FakeSynthesizer, FakeTranscriber

        return Backends(FakeTranscriber(), FakeDialogue(), FakeSynthesizer(), FakeEmbedder())
    from npcserver.backends.loading import load_real_backends

    return load_real_backends(settings)
