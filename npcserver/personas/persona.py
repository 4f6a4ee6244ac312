"""What the server uses: a loaded persona, frozen."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from npcserver.backends.base import GenerationOptions, VoiceSettings
from npcserver.personas.spec import VALUE_PLACEHOLDER


@dataclass(frozen=True, slots=True)
class ExampleLine:
    player: str
    npc: str


@dataclass(frozen=True, slots=True)
class PersonaTest:
    player: str
    must_say: tuple[str, ...] = ()
    must_not_say: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContextKey:
    key: str
    phrase: str  # contains "{value}" once or more

    def render(self, quoted_value: str) -> str:
        return self.phrase.replace(VALUE_PLACEHOLDER, quoted_value)


@dataclass(frozen=True, slots=True)
class Persona:
    id: str
    name: str
    role: str
    description: str
    speaking_style: str
    greeting: str | None
    facts: tuple[str, ...]
    forbidden_topics: tuple[str, ...]
    deflection: str | None
    example_lines: tuple[ExampleLine, ...]
    max_reply_words: int
    temperature: float
    top_p: float
    repetition_penalty: float
    history_turns: int
    voice: VoiceSettings
    latency_budget_ms: int
    fillers: tuple[str, ...]
    emotes: tuple[str, ...] = ()
    context_keys: tuple[ContextKey, ...] = ()
    tests: tuple[PersonaTest, ...] = ()
    source: Path | None = field(default=None, compare=False)
    version: str = ""  # content hash of the file it came from

    def generation_options(self, seed: int | None = None) -> GenerationOptions:
        # ~1.4 tokens per English word for SmolLM2's tokenizer, plus room to finish the sentence.
        return GenerationOptions(
            max_new_tokens=int(self.max_reply_words * 1.5) + 8,
            temperature=self.temperature,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            seed=seed,
        )
