"""The persona file format: the pydantic model `PersonaSpec` (types, defaults, ranges, help text),
also the source of the published JSON Schema. Strict: TOML types must match, unknown keys are errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from npcserver.models import EMBEDDED_VOICE

ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
CONTEXT_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
EMOTE_PATTERN = r"^[a-z]+(?:_[a-z]+){0,3}$"  # words joined by _, as the game's animation is named
ACTION_ID_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"  # as the game names the function it runs
ARG_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
ARG_VALUE_PATTERN = r"^[a-z0-9][a-z0-9' -]{0,39}$"  # words a player says: "lantern", "healing salve"
VALUE_PLACEHOLDER = "{value}"

VoiceResolver = Callable[[str, Path], "Path | None"]


# --------------------------------------------------------------------------------------------------
# The file format (also the JSON Schema). Strict: TOML types must match, unknown keys are errors.


def _text(max_length: int, description: str, *examples: str) -> Any:
    return Field(min_length=1, max_length=max_length, description=description, examples=list(examples) or None)


Line = Annotated[str, Field(min_length=1, max_length=300)]
Filler = Annotated[str, Field(min_length=1, max_length=60)]
ContextKeyName = Annotated[str, Field(pattern=CONTEXT_KEY_PATTERN)]
EmoteName = Annotated[str, Field(max_length=40, pattern=EMOTE_PATTERN)]
ContextPhrase = Annotated[str, Field(min_length=1, max_length=120, pattern=r"\{value\}")]


class SpecTable(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class KnowledgeSpec(SpecTable):
    """What the NPC knows, and what it must not talk about."""

    facts: list[Line] = Field(
        default_factory=list,
        max_length=12,
        description="Facts the NPC knows and may mention, one short sentence each. Keep them few and concrete: a small model uses 3-6 well.",
        examples=[["The forge has been in my family for three generations.", "A good sword costs 40 silver."]],
    )
    forbidden_topics: list[Line] = Field(
        default_factory=list,
        max_length=12,
        description="Topics the NPC must not talk about. Requires `deflection`.",
        examples=[["the old mine", "the mayor's debts"]],
    )
    deflection: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="What the NPC says instead when asked about a forbidden topic, in its own voice.",
        examples=["That's not something I talk about. Need anything forged?"],
    )


class ExampleLineSpec(SpecTable):
    """One player line and the NPC's in-character reply; shown to the model as a worked example."""

    player: Line = Field(description="What the player says.", examples=["Can you fix my sword?"])
    npc: Line = Field(
        description="How this NPC answers, exactly in its voice and within `max_reply_words`.",
        examples=["Leave it on the anvil. Back by sundown."],
    )


Expectation = Annotated[str, Field(min_length=1, max_length=200)]


class PersonaTestSpec(SpecTable):
    """A self-test: a player line, and what the NPC's reply must or must not say. Run with
    `npcserver personas test`, and by the server after each hot reload. Failing tests never stop the
    persona from loading: they report."""

    player: Line = Field(description="What the player says.", examples=["How much is a room?"])
    must_say: list[Expectation] = Field(
        default_factory=list,
        max_length=10,
        description='Each must appear in the reply: words (any case, whole words; "3 silver" also matches "three silver"), or a regular expression between slashes ("/sundown|dusk/").',
        examples=[["3 silver"]],
    )
    must_not_say: list[Expectation] = Field(
        default_factory=list,
        max_length=10,
        description="None may appear in the reply; written like must_say.",
        examples=[["gold"]],
    )


class DialogueSpec(SpecTable):
    """How replies are generated."""

    max_reply_words: int = Field(
        default=30,
        ge=5,
        le=120,
        description="Reply length cap in words; the reply stops at the sentence end before it.",
        examples=[25],
    )
    temperature: float = Field(
        default=0.7,
        ge=0.0,
        le=1.5,
        description="Randomness: 0 always picks the likeliest word (repeats itself), 0.5-0.8 is lively but coherent.",
        examples=[0.6],
    )
    top_p: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Nucleus sampling: only the likeliest words that together make up this share are considered.",
        examples=[0.9],
    )
    repetition_penalty: float = Field(
        default=1.1,
        ge=1.0,
        le=2.0,
        description="Above 1.0 discourages repeating words (it also penalizes words of the prompt, so keep it low: 1.05-1.2).",
        examples=[1.1],
    )
    history_turns: int = Field(
        default=4,
        ge=0,
        le=20,
        description="How many earlier player/NPC exchanges the model sees at most. The oldest are dropped half of them at a time (with 4 it sees 3 or 4), so the prompt's start, and its cached state, stays the same for several turns. More is slower; small models get confused past ~6.",
        examples=[4],
    )


class VoiceSpec(SpecTable):
    """How the NPC sounds."""

    model: str = Field(
        default=EMBEDDED_VOICE,
        min_length=1,
        description="A Piper voice: the name of an installed voice (the embedded one is en_US-joe-medium) or a path to a .onnx voice file, relative to the voices folder.",
        examples=[EMBEDDED_VOICE, "extra/en_GB-alan-low.onnx"],
    )
    speaker_id: int | None = Field(
        default=None,
        ge=0,
        le=10000,
        description="Speaker number, only for Piper voices that contain several speakers.",
        examples=[0],
    )
    speed: float = Field(
        default=1.0,
        ge=0.5,
        le=2.0,
        description="Speaking pace: 1.0 is the voice's own pace, 1.2 is 20 % faster, 0.85 slower.",
        examples=[0.9],
    )
    pitch_semitones: float = Field(
        default=0.0,
        ge=-12.0,
        le=12.0,
        description="Pitch shift in semitones: +12 is one octave up, -3 a little deeper.",
        examples=[-3.0],
    )


class LatencySpec(SpecTable):
    """How long the player may wait, and what the NPC says when the reply is late."""

    budget_ms: int = Field(
        default=1200,
        ge=100,
        le=10000,
        description="If the reply's first audio would come later than this (milliseconds after the player stops), the server may speak a filler first.",
        examples=[900],
    )
    fillers: list[Filler] = Field(
        default_factory=list,
        max_length=10,
        description="Short lines the NPC may say while thinking, in its own voice.",
        examples=[["Hmm.", "Let me think."]],
    )


ArgValue = Annotated[str, Field(pattern=ARG_VALUE_PATTERN)]
ArgName = Annotated[str, Field(pattern=ARG_NAME_PATTERN)]
RequiredWord = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9' -]+$")]


class ActionArgSpec(SpecTable):
    """One argument of an action: a word from a list (`values`) or a whole number (`type = "integer"`)."""

    type: Literal["choice", "integer"] = Field(
        default="choice",
        description='"choice": one of `values`, as the player names it; "integer": a whole number from `min` to `max` ("two lanterns" gives 2).',
        examples=["integer"],
    )
    values: list[ArgValue] = Field(
        default_factory=list,
        max_length=30,
        description="For a choice: the allowed values, lowercase, as a player says them (plurals are matched too). The game receives the value as written here.",
        examples=[["rope", "lantern", "lucky charm"]],
    )
    aliases: dict[ArgValue, list[ArgValue]] = Field(
        default_factory=dict,
        max_length=30,
        description="For a choice: other words players use for a value; the game still receives the value. E.g. aliases = { \"healing salve\" = [\"ointment\", \"balm\"] }.",
        examples=[{"healing salve": ["ointment", "balm"]}],
    )
    min: int | None = Field(default=None, ge=-1_000_000, le=1_000_000, description="For an integer: the smallest value.", examples=[1])
    max: int | None = Field(default=None, ge=-1_000_000, le=1_000_000, description="For an integer: the largest value.", examples=[10])
    default: str | int | None = Field(
        default=None,
        description="Used when the player does not say the argument. Without one the argument is required: the action is not sent unless the player names it.",
        examples=[1],
    )


class ActionSpec(SpecTable):
    """Something the game carries out when a turn calls for it (sell an item, open a gate). The
    server sends `{"type":"action","id":...,"args":{...}}` to the game; only declared actions with
    declared argument values are ever sent."""

    id: str = Field(pattern=ACTION_ID_PATTERN, description="The action's name, as the game's code knows it.", examples=["sell_item"])
    means: str = _text(200, "What happens in the game when it is sent; the model is told it while it replies.", "Pip sells the player an item; the game takes the price.")
    player_lines: list[Line] = Field(
        min_length=2,
        max_length=12,
        description="Things a player says that call for the action (requests, not questions about it): the server compares each player line with these. 3-5 different phrasings work best.",
        examples=[["I'll buy a lantern.", "Sell me some rope."]],
    )
    args: dict[ArgName, ActionArgSpec] = Field(
        default_factory=dict,
        max_length=4,
        description="The action's arguments by name, e.g. args.item = { values = [\"rope\", \"lantern\"] }.",
    )
    requires_words: list[RequiredWord] = Field(
        default_factory=list,
        max_length=5,
        description="Words the player's line must contain for the action (a password). A line with all of them and a request calls for it; a request without them gets `refusal`.",
        examples=[["hawthorn"]],
    )
    refusal: Line | None = Field(
        default=None,
        description="What the NPC says when the player asks for the action without `requires_words`. Without it the model answers.",
        examples=["No password, no entry."],
    )
    confirm: Line | None = Field(
        default=None,
        description="Said first when the action is sent, so the reply agrees with it; {name} is replaced by an argument's value. Without it the model is only told what it is doing.",
        examples=["Sold! The {item} is yours."],
    )


class PersonaSpec(SpecTable):
    """An NPC persona: one TOML file in voices/, named after its id."""

    id: str = Field(
        pattern=ID_PATTERN,
        description="Unique id; must equal the file name without .toml. Lowercase letters, digits and _ only.",
        examples=["greta_blacksmith"],
    )
    name: str = _text(60, "Name shown to players and used by the NPC for itself.", "Greta")
    role: str = _text(120, "What the NPC is, in a few words.", "the blacksmith of Millbrook village")
    description: str = _text(
        800,
        "Backstory and personality, two or three sentences. The model sees it every turn: keep it short.",
        "A broad, soot-streaked woman who has worked the forge for thirty years.",
    )
    speaking_style: str = _text(
        300,
        "How the NPC talks: tone, sentence length, pet words.",
        "Blunt and short. Uses forge words. Never says please.",
    )
    greeting: str | None = Field(
        default=None,
        min_length=1,
        max_length=300,
        description="Spoken when a session starts. Leave out for none.",
        examples=["Mind the sparks. What do you need?"],
    )
    emotes: list[EmoteName] = Field(
        default_factory=list,
        max_length=20,
        description="Gestures and moods the NPC's rig can play. A stage direction in a reply that names one (*smiles*, (bows), [shakes head] for shake_head) is sent to the game as an emote and never spoken; other stage directions are dropped.",
        examples=[["smile", "bow", "nod", "shake_head"]],
    )
    knowledge: KnowledgeSpec = Field(default_factory=KnowledgeSpec, description=KnowledgeSpec.__doc__)
    example_lines: list[ExampleLineSpec] = Field(
        min_length=1,
        max_length=8,
        description="Worked examples, written as [[example_lines]] tables. 3-5 good examples teach a small model the voice better than anything else.",
    )
    dialogue: DialogueSpec = Field(default_factory=DialogueSpec, description=DialogueSpec.__doc__)
    voice: VoiceSpec = Field(default_factory=VoiceSpec, description=VoiceSpec.__doc__)
    latency: LatencySpec = Field(default_factory=LatencySpec, description=LatencySpec.__doc__)
    actions: list[ActionSpec] = Field(
        default_factory=list,
        max_length=12,
        description="Actions the game carries out, written as [[actions]] tables: when a player's line calls for one, the game gets an `action` message.",
    )
    tests: list[PersonaTestSpec] = Field(
        default_factory=list,
        max_length=50,
        description="Self-tests, written as [[tests]] tables: a player line and what the reply must (not) say. `npcserver personas test` runs them against the real model.",
    )
    context_keys: dict[ContextKeyName, ContextPhrase] = Field(
        default_factory=dict,
        description="Game-context keys this NPC uses, each with the sentence that tells the model about it; {value} is replaced by the game's value (quoted). Keys not listed here never reach the model.",
        examples=[
            {"time_of_day": "It is {value}.", "player_reputation": "The player's standing in the village is {value}."}
        ],
    )


TABLES: dict[str, type[SpecTable]] = {
    "knowledge": KnowledgeSpec,
    "example_lines": ExampleLineSpec,
    "dialogue": DialogueSpec,
    "voice": VoiceSpec,
    "latency": LatencySpec,
    "tests": PersonaTestSpec,
    "actions": ActionSpec,
}
