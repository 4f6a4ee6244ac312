"""What the server uses: a loaded persona, frozen."""

from __future__ import annotations

from collections.abc import Mapping
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
class ActionArg:
    """One argument of a declared action: one of `values`, or (integer) a whole number in [low, high]."""

    name: str
    values: tuple[str, ...] = ()  # a choice's allowed values; empty for an integer
    low: int | None = None
    high: int | None = None
    default: str | int | None = None  # None: the player must name it
    aliases: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (value, other words players use for it)

    def spoken_forms(self, value: str) -> tuple[str, ...]:
        """The value and the other words a player may name it by."""
        return (value, *next((words for named, words in self.aliases if named == value), ()))

    @property
    def is_integer(self) -> bool:
        return not self.values

    def allows(self, value: object) -> bool:
        if self.is_integer:
            return (
                isinstance(value, int) and not isinstance(value, bool)
                and (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
            )
        return value in self.values


@dataclass(frozen=True, slots=True)
class Action:
    """Something the game carries out when a turn calls for it (`[[actions]]` in the persona file)."""

    id: str
    means: str
    player_lines: tuple[str, ...]
    args: tuple[ActionArg, ...] = ()
    requires_words: tuple[str, ...] = ()
    refusal: str | None = None
    confirm: str | None = None

    def accepts(self, args: Mapping[str, object]) -> bool:
        """Whether `args` names every argument of this action, each with an allowed value, and no other."""
        return set(args) == {arg.name for arg in self.args} and all(arg.allows(args[arg.name]) for arg in self.args)

    def confirmation(self, args: Mapping[str, object]) -> str | None:
        """The confirm line with its {argument} placeholders filled."""
        if self.confirm is None:
            return None
        line = self.confirm
        for name, value in args.items():
            line = line.replace("{" + name + "}", str(value))
        return line


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
    actions: tuple[Action, ...] = ()
    context_keys: tuple[ContextKey, ...] = ()
    tests: tuple[PersonaTest, ...] = ()
    source: Path | None = field(default=None, compare=False)
    version: str = ""  # content hash of the file it came from

    def action(self, action_id: str) -> Action | None:
        return next((action for action in self.actions if action.id == action_id), None)

    def generation_options(self, seed: int | None = None) -> GenerationOptions:
        # ~1.4 tokens per English word for SmolLM2's tokenizer, plus room to finish the sentence.
        return GenerationOptions(
            max_new_tokens=int(self.max_reply_words * 1.5) + 8,
            temperature=self.temperature,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            seed=seed,
        )
