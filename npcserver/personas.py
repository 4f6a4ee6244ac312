"""Persona files: load `voices/*.toml` into frozen dataclasses, and explain every mistake in them.

Designers, not programmers, write these files, so validation is the feature: each problem names the
file, the field, the line (where it can be found), what is wrong and what would be right, and all the
problems of a file are reported at once. Everything here is pure (no models, no network); the one
outside lookup, "does this Piper voice exist", goes through an injectable resolver.

The file format itself is the pydantic model `PersonaSpec` below (types, defaults, ranges, help
text); it is also the source of the published JSON Schema. `Persona` is what the rest of the server
uses.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from npcserver.backends.base import GenerationOptions, VoiceSettings
from npcserver.models import EMBEDDED_VOICE, resolve_piper_voice

SCHEMA_FILE_NAME = "persona.schema.json"
ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
CONTEXT_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
EMOTE_PATTERN = r"^[a-z]+(?:_[a-z]+){0,3}$"  # words joined by _, as the game's animation is named
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


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class KnowledgeSpec(_Table):
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


class ExampleLineSpec(_Table):
    """One player line and the NPC's in-character reply; shown to the model as a worked example."""

    player: Line = Field(description="What the player says.", examples=["Can you fix my sword?"])
    npc: Line = Field(
        description="How this NPC answers, exactly in its voice and within `max_reply_words`.",
        examples=["Leave it on the anvil. Back by sundown."],
    )


Expectation = Annotated[str, Field(min_length=1, max_length=200)]


class PersonaTestSpec(_Table):
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


class DialogueSpec(_Table):
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


class VoiceSpec(_Table):
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


class LatencySpec(_Table):
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


class PersonaSpec(_Table):
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


_TABLES: dict[str, type[_Table]] = {
    "knowledge": KnowledgeSpec,
    "example_lines": ExampleLineSpec,
    "dialogue": DialogueSpec,
    "voice": VoiceSpec,
    "latency": LatencySpec,
    "tests": PersonaTestSpec,
}


# --------------------------------------------------------------------------------------------------
# What the server uses.


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


# --------------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True, slots=True)
class PersonaProblem:
    """One mistake in one file: where it is, what is wrong, what would be right."""

    file: Path
    field: str | None  # dotted, list entries counted from 1: "example_lines[2].npc"
    line: int | None
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        what = f"{self.field}: {self.problem}" if self.field else self.problem
        return f"{where}: {what}" + (f" {self.fix}" if self.fix else "")


@dataclass(frozen=True, slots=True)
class LoadResult:
    file: Path
    persona: Persona | None
    problems: tuple[PersonaProblem, ...]
    version: str | None = None  # content hash, also when the content is broken

    @property
    def ok(self) -> bool:
        return self.persona is not None and not self.problems


class PersonaFileError(ValueError):
    def __init__(self, problems: Sequence[PersonaProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --------------------------------------------------------------------------------------------------
# Loading


def content_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def load_persona_file(
    path: Path,
    *,
    voices_dir: Path | None = None,
    default_voice: str = EMBEDDED_VOICE,
    resolve_voice: VoiceResolver = resolve_piper_voice,
) -> LoadResult:
    """Read and check one file (blocking file I/O: call it off the event loop)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return LoadResult(
            path,
            None,
            (
                PersonaProblem(
                    path,
                    None,
                    None,
                    f"cannot be read: {exc.strerror or exc}.",
                    "Check that the file exists and is readable.",
                ),
            ),
        )
    return parse_persona(data, path, voices_dir=voices_dir, default_voice=default_voice, resolve_voice=resolve_voice)


def parse_persona(
    data: bytes | str,
    file: Path,
    *,
    voices_dir: Path | None = None,
    default_voice: str = EMBEDDED_VOICE,
    resolve_voice: VoiceResolver = resolve_piper_voice,
) -> LoadResult:
    """Check one persona file's content; pure except for the voice resolver."""
    file = Path(file)
    raw_bytes = data.encode("utf-8") if isinstance(data, str) else data
    version = content_version(raw_bytes)
    voices_dir = Path(voices_dir) if voices_dir is not None else file.parent

    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw_bytes[: exc.start].count(b"\n") + 1
        return LoadResult(
            file,
            None,
            (
                PersonaProblem(
                    file, None, line, "is not UTF-8 text.", "Save the file as UTF-8 (every modern editor can)."
                ),
            ),
            version,
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return LoadResult(file, None, (_syntax_problem(file, text, exc),), version)

    lines = _KeyLines(text)
    problems: list[PersonaProblem] = []
    spec: PersonaSpec | None = None
    try:
        spec = PersonaSpec.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_explain_validation_error(file, raw, lines, exc))
    problems.extend(_cross_field_problems(file, raw, lines, voices_dir, resolve_voice))
    problems.sort(key=lambda p: p.line or 0)
    if problems or spec is None:
        return LoadResult(file, None, tuple(problems), version)
    return LoadResult(file, _to_persona(spec, file, version, default_voice), (), version)


def _to_persona(spec: PersonaSpec, file: Path, version: str, default_voice: str) -> Persona:
    voice_model = spec.voice.model if "model" in spec.voice.model_fields_set else default_voice
    return Persona(
        id=spec.id,
        name=spec.name.strip(),
        role=spec.role.strip(),
        description=spec.description.strip(),
        speaking_style=spec.speaking_style.strip(),
        greeting=spec.greeting.strip() if spec.greeting else None,
        facts=tuple(f.strip() for f in spec.knowledge.facts),
        forbidden_topics=tuple(t.strip() for t in spec.knowledge.forbidden_topics),
        deflection=spec.knowledge.deflection.strip() if spec.knowledge.deflection else None,
        example_lines=tuple(ExampleLine(e.player.strip(), e.npc.strip()) for e in spec.example_lines),
        max_reply_words=spec.dialogue.max_reply_words,
        temperature=spec.dialogue.temperature,
        top_p=spec.dialogue.top_p,
        repetition_penalty=spec.dialogue.repetition_penalty,
        history_turns=spec.dialogue.history_turns,
        voice=VoiceSettings(
            model=voice_model,
            speaker_id=spec.voice.speaker_id,
            speed=spec.voice.speed,
            pitch_semitones=spec.voice.pitch_semitones,
        ),
        latency_budget_ms=spec.latency.budget_ms,
        fillers=tuple(f.strip() for f in spec.latency.fillers),
        emotes=tuple(spec.emotes),
        context_keys=tuple(ContextKey(k, v) for k, v in spec.context_keys.items()),
        tests=tuple(PersonaTest(t.player.strip(), tuple(t.must_say), tuple(t.must_not_say)) for t in spec.tests),
        source=file,
        version=version,
    )


# --------------------------------------------------------------------------------------------------
# Checking several files (the `personas check` command, and directory loads)


def persona_files(paths: Iterable[Path]) -> list[Path]:
    """Expand folders to their *.toml files (sorted); files are taken as given."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        # Dot files are editor lock and backup files (.#greta.toml), not personas.
        found.extend(sorted(f for f in path.glob("*.toml") if not f.name.startswith(".")) if path.is_dir() else [path])
    return found


def duplicate_id_problems(results: Sequence[LoadResult]) -> list[PersonaProblem]:
    first_file: dict[str, Path] = {}
    problems: list[PersonaProblem] = []
    for result in results:
        if result.persona is None:
            continue
        pid = result.persona.id
        if pid in first_file:
            line = (
                _KeyLines(result.file.read_text(encoding="utf-8")).line_for(("id",)) if result.file.is_file() else None
            )
            problems.append(
                PersonaProblem(
                    result.file,
                    "id",
                    line,
                    f'"{pid}" is already used by {first_file[pid]}.',
                    "Every persona needs its own id: rename one of the files and its id.",
                )
            )
        else:
            first_file[pid] = result.file
    return problems


def check_paths(
    paths: Iterable[Path],
    *,
    default_voice: str = EMBEDDED_VOICE,
    resolve_voice: VoiceResolver = resolve_piper_voice,
) -> tuple[list[LoadResult], list[PersonaProblem]]:
    """Load every file under `paths`; returns the per-file results and all problems (duplicates included)."""
    results: list[LoadResult] = []
    problems: list[PersonaProblem] = []
    for path in [Path(p) for p in paths]:
        if not path.exists():
            problems.append(
                PersonaProblem(
                    path, None, None, "does not exist.", "Give a persona file or a folder of them (default: voices/)."
                )
            )
            continue
        if path.is_file() and path.suffix != ".toml":
            problems.append(
                PersonaProblem(path, None, None, "is not a .toml file.", "Persona files are named <id>.toml.")
            )
            continue
        for file in persona_files([path]):
            result = load_persona_file(
                file, voices_dir=file.parent, default_voice=default_voice, resolve_voice=resolve_voice
            )
            results.append(result)
            problems.extend(result.problems)
    problems.extend(duplicate_id_problems(results))
    return results, problems


# --------------------------------------------------------------------------------------------------
# JSON Schema


def persona_json_schema() -> dict[str, Any]:
    """The format as a self-contained JSON Schema (draft-07 style, no $refs) for editors such as taplo."""
    schema = PersonaSpec.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
                merged = {**inline(target), **{k: inline(v) for k, v in node.items() if k != "$ref"}}
                return merged
            node = {k: inline(v) for k, v in node.items() if k != "title"}
            # TOML has no null: "X or null" is just an optional X.
            any_of = node.get("anyOf")
            if isinstance(any_of, list) and len(any_of) == 2 and {"type": "null"} in any_of:
                other = next(a for a in any_of if a != {"type": "null"})
                node = {**{k: v for k, v in node.items() if k != "anyOf"}, **other}
                if node.get("default") is None:
                    node.pop("default", None)
            return node
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    result = inline(schema)
    result["properties"]["context_keys"]["additionalProperties"] = False  # key names must match the pattern
    for table in ("knowledge", "dialogue", "voice", "latency"):
        result["properties"][table].pop("default", None)  # pydantic renders default_factory tables as {}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "npcserver NPC persona",
        **result,
    }


# --------------------------------------------------------------------------------------------------
# Explaining problems


_TYPE_WORDS = {
    "string_type": "text in double quotes",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list in square brackets",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def _describe_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"the whole number {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'the text "{shown}"'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime, date, time)):
        return "a date/time"
    return type(value).__name__


def _field_name(loc: Sequence[Any]) -> str:
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part + 1}]"
        else:
            name += ("." if name else "") + str(part)
    return name


def _model_for(loc: Sequence[Any]) -> type[_Table]:
    """The table class that owns the last key of `loc`."""
    if len(loc) <= 1:
        return PersonaSpec
    return _TABLES.get(str(loc[0]), PersonaSpec)


def _field_info(loc: Sequence[Any]) -> Any:
    keys = [p for p in loc if isinstance(p, str)]
    if not keys:
        return None
    model = _model_for([p for p in loc if isinstance(p, str)])
    return model.model_fields.get(keys[-1])


def _example_snippet(loc: Sequence[Any]) -> str:
    keys = [p for p in loc if isinstance(p, str)]
    info = _field_info(loc)
    if info is None or not keys:
        return ""
    if info.examples:
        example = info.examples[0]
    elif info.default is not None and not callable(info.default_factory):
        example = info.default
    else:
        return ""
    rendered = _toml_value(example)
    if rendered is None:
        return ""
    snippet = f"{keys[-1]} = {rendered}"
    if keys[0] in _TABLES and len(keys) > 1:
        table = f"[[{keys[0]}]]" if keys[0] == "example_lines" else f"[{keys[0]}]"
        return f"under {table}: {snippet}"
    return snippet


def _toml_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        items = [_toml_value(v) for v in value]
        return None if None in items else "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
    return None


def _range_words(info: Any) -> str:
    low = high = None
    low_strict = high_strict = False
    for meta in info.metadata if info is not None else ():
        for attr, strict, is_low in (
            ("ge", False, True),
            ("gt", True, True),
            ("le", False, False),
            ("lt", True, False),
        ):
            bound = getattr(meta, attr, None)
            if bound is not None:
                if is_low:
                    low, low_strict = bound, strict
                else:
                    high, high_strict = bound, strict
    noun = "a whole number" if info is not None and info.annotation in (int, int | None) else "a number"
    if low is not None and high is not None and not (low_strict or high_strict):
        return f"use {noun} from {low} to {high}"
    parts = []
    if low is not None:
        parts.append(f"{'above' if low_strict else 'at least'} {low}")
    if high is not None:
        parts.append(f"{'below' if high_strict else 'at most'} {high}")
    return f"use {noun} " + " and ".join(parts) if parts else ""


def _explain_validation_error(
    file: Path, raw: Mapping[str, Any], lines: _KeyLines, exc: ValidationError
) -> list[PersonaProblem]:
    problems: list[PersonaProblem] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        kind = error["type"]
        value = error.get("input")
        ctx = error.get("ctx") or {}
        # A bad context key name: pydantic appends "[key]" to the location.
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
            problems.append(
                PersonaProblem(
                    file,
                    _field_name(loc),
                    lines.line_for(loc),
                    f'"{loc[-1]}" is not a usable context key name.',
                    "Use letters, digits and _ only, starting with a letter, as the game sends it (e.g. time_of_day).",
                )
            )
            continue
        name = _field_name(loc)
        line = lines.line_for(loc)
        info = _field_info(loc)
        if kind == "missing":
            snippet = f'id = "{file.stem}"' if loc == ("id",) else _example_snippet(loc)
            problems.append(
                PersonaProblem(
                    file, name, line, "is required but missing.", f"Add it, e.g. {snippet}" if snippet else "Add it."
                )
            )
        elif kind == "extra_forbidden":
            problems.append(_unknown_field_problem(file, loc, line))
        elif kind in _TYPE_WORDS:
            expected = _TYPE_WORDS[kind]
            if kind in ("model_type", "model_attributes_type", "dict_type") and loc and loc[0] in _TABLES:
                expected = (
                    f"a table, written as [{loc[0]}] on its own line followed by its fields"
                    if loc[0] != "example_lines"
                    else "a table, written as [[example_lines]] followed by player = ... and npc = ..."
                )
            if kind == "list_type" and loc and loc[0] == "example_lines":
                expected = (
                    "a list of examples, each written as [[example_lines]] followed by player = ... and npc = ..."
                )
            snippet = _example_snippet(loc)
            fix = f"Write it as {expected}" + (f", e.g. {snippet}." if snippet and kind != "model_type" else ".")
            problems.append(
                PersonaProblem(file, name, line, f"must be {expected}, but is {_describe_value(value)}.", fix)
            )
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            problems.append(
                PersonaProblem(
                    file,
                    name,
                    line,
                    f"{_describe_value(value)} is out of range.",
                    _range_words(info).capitalize() + "." if info is not None else str(error["msg"]),
                )
            )
        elif kind == "string_too_short":
            problems.append(
                PersonaProblem(
                    file, name, line, "is empty.", "Write some text, or remove the line if the field is optional."
                )
            )
        elif kind == "string_too_long":
            limit = ctx.get("max_length")
            problems.append(
                PersonaProblem(
                    file,
                    name,
                    line,
                    f"is {len(str(value))} characters long.",
                    f"Keep it under {limit} characters: the small model loses the thread in long text.",
                )
            )
        elif kind == "too_short":
            problems.append(
                PersonaProblem(
                    file,
                    name,
                    line,
                    f"has {ctx.get('actual_length', 0)} entries.",
                    f"Give at least {ctx.get('min_length')}.",
                )
            )
        elif kind == "too_long":
            problems.append(
                PersonaProblem(
                    file,
                    name,
                    line,
                    f"has {ctx.get('actual_length', '?')} entries.",
                    f"Give at most {ctx.get('max_length')}: more only slows the model and confuses it.",
                )
            )
        elif kind == "string_pattern_mismatch":
            problems.append(_pattern_problem(file, loc, line, value))
        else:  # pragma: no cover - a kind the format does not produce today
            problems.append(PersonaProblem(file, name, line, str(error["msg"]) + "."))
    return problems


def _pattern_problem(file: Path, loc: tuple[Any, ...], line: int | None, value: Any) -> PersonaProblem:
    name = _field_name(loc)
    if loc == ("id",):
        return PersonaProblem(
            file,
            name,
            line,
            f"{_describe_value(value)} is not a valid id.",
            f'Use lowercase letters, digits and _ only, starting with a letter, e.g. id = "{file.stem.lower()}".',
        )
    if loc and loc[0] == "context_keys" and loc[-1] in PersonaSpec.model_fields:
        return PersonaProblem(
            file,
            name,
            line,
            f'"{loc[-1]}" was read as a context key because it comes after the [context_keys] header.',
            "It is a top-level field: move it above the first [table] header in the file.",
        )
    if loc and loc[0] == "emotes":
        return PersonaProblem(
            file,
            name,
            line,
            f"{_describe_value(value)} is not an emote name.",
            'Use lowercase words joined by _ (at most four), as the game names the animation, e.g. "smile" or "shake_head".',
        )
    if loc and loc[0] == "context_keys":
        return PersonaProblem(
            file,
            name,
            line,
            f"{_describe_value(value)} has no {{value}} placeholder.",
            f'Write where the game\'s value goes, e.g. {loc[-1]} = "It is {{value}}."',
        )
    return PersonaProblem(file, name, line, f"{_describe_value(value)} has the wrong form.")  # pragma: no cover


def _unknown_field_problem(file: Path, loc: tuple[Any, ...], line: int | None) -> PersonaProblem:
    key = str(loc[-1])
    owner = _model_for(loc)
    known = list(owner.model_fields)
    where = (
        ("in [[example_lines]]" if loc[0] == "example_lines" else f"in [{loc[0]}]")
        if len(loc) > 1
        else "at the top level"
    )
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    elsewhere = {f: t for t, m in _TABLES.items() for f in m.model_fields} if len(loc) == 1 else {}
    close_elsewhere = difflib.get_close_matches(key, list(elsewhere), n=1, cutoff=0.75) if not close else []
    if close:
        fix = f'Did you mean "{close[0]}"?'
    elif close_elsewhere and close_elsewhere[0] != key:
        fix = f'Did you mean "{close_elsewhere[0]}"? It belongs in the [{elsewhere[close_elsewhere[0]]}] table.'
    elif len(loc) > 1 and key in PersonaSpec.model_fields:
        fix = f'"{key}" is a top-level field: move it above the first [table] header in the file.'
    elif len(loc) == 1 and (home := next((t for t, m in _TABLES.items() if key in m.model_fields), None)):
        fix = (
            f'"{key}" belongs in the [{home}] table: move it below a [{home}] line.'
            if home != "example_lines"
            else f'"{key}" belongs in an [[example_lines]] entry.'
        )
    else:
        fix = "Fields allowed here: " + ", ".join(known) + "."
    return PersonaProblem(file, _field_name(loc), line, f"is not a known field {where}.", fix)


def _test_pattern_problems(file: Path, raw: Mapping[str, Any], lines: _KeyLines) -> list[PersonaProblem]:
    """A [[tests]] expectation written /like this/ must be a regular expression Python can read."""
    problems: list[PersonaProblem] = []
    tests = raw.get("tests")
    for number, test in enumerate(tests if isinstance(tests, list) else [], start=1):
        for key in ("must_say", "must_not_say"):
            entries = test.get(key) if isinstance(test, dict) else None
            for position, entry in enumerate(entries if isinstance(entries, list) else [], start=1):
                if isinstance(entry, str) and len(entry) >= 2 and entry.startswith("/") and entry.endswith("/"):
                    try:
                        re.compile(entry[1:-1])
                    except re.error as exc:
                        problems.append(
                            PersonaProblem(
                                file,
                                f"tests[{number}].{key}[{position}]",
                                lines.line_for(("tests", number - 1, key)),
                                f"{entry} is not a valid regular expression ({exc}).",
                                'Fix the pattern, or write plain words without the slashes (e.g. "3 silver").',
                            )
                        )
    return problems


def _cross_field_problems(
    file: Path, raw: Mapping[str, Any], lines: _KeyLines, voices_dir: Path, resolve_voice: VoiceResolver
) -> list[PersonaProblem]:
    """Rules that span fields or the outside world; each runs only where the types it needs are right."""
    problems: list[PersonaProblem] = []
    pid = raw.get("id")
    if isinstance(pid, str) and re.match(ID_PATTERN, pid) and pid != file.stem:
        problems.append(
            PersonaProblem(
                file,
                "id",
                lines.line_for(("id",)),
                f'"{pid}" does not match the file name {file.name}.',
                f'Make them equal: either id = "{file.stem}" or rename the file to {pid}.toml.',
            )
        )

    voice = raw.get("voice")
    model = voice.get("model") if isinstance(voice, dict) else None
    if isinstance(model, str) and model.strip():
        try:
            found = resolve_voice(model, voices_dir)
        except (OSError, ValueError) as exc:  # an unreadable voice file is a voice that isn't there
            found = None
            detail = f" ({exc})"
        else:
            detail = ""
        if found is None:
            problems.append(
                PersonaProblem(
                    file,
                    "voice.model",
                    lines.line_for(("voice", "model")),
                    f'no Piper voice "{model}" was found{detail}.',
                    f'Use an installed voice name (the embedded one is "{EMBEDDED_VOICE}") or the path of a .onnx voice file relative to {voices_dir}; its .onnx.json must sit beside it.',
                )
            )

    problems.extend(_test_pattern_problems(file, raw, lines))

    emotes = raw.get("emotes")
    if isinstance(emotes, list):
        for index, emote in enumerate(emotes):
            if isinstance(emote, str) and emote in emotes[:index]:
                problems.append(
                    PersonaProblem(
                        file,
                        _field_name(("emotes", index)),
                        lines.line_for(("emotes", index)),
                        f'"{emote}" is listed twice.',
                        "List each emote once.",
                    )
                )

    knowledge = raw.get("knowledge")
    if (
        isinstance(knowledge, dict)
        and isinstance(knowledge.get("forbidden_topics"), list)
        and knowledge["forbidden_topics"]
        and "deflection" not in knowledge
    ):
        problems.append(
            PersonaProblem(
                file,
                "knowledge.deflection",
                lines.line_for(("knowledge", "forbidden_topics")),
                "is missing, but forbidden_topics are listed.",
                'Add what the NPC says instead, e.g. under [knowledge]: deflection = "I don\'t talk about that."',
            )
        )

    dialogue = raw.get("dialogue")
    cap = (
        dialogue.get("max_reply_words", DialogueSpec.model_fields["max_reply_words"].default)
        if isinstance(dialogue, dict)
        else DialogueSpec.model_fields["max_reply_words"].default
    )
    examples = raw.get("example_lines")
    if isinstance(cap, int) and not isinstance(cap, bool) and isinstance(examples, list):
        for index, example in enumerate(examples):
            npc = example.get("npc") if isinstance(example, dict) else None
            if isinstance(npc, str) and len(npc.split()) > cap:
                loc = ("example_lines", index, "npc")
                problems.append(
                    PersonaProblem(
                        file,
                        _field_name(loc),
                        lines.line_for(loc),
                        f"has {len(npc.split())} words, more than dialogue.max_reply_words ({cap}).",
                        "Shorten it: the model copies the length of its examples, and longer replies get cut.",
                    )
                )
    return problems


_SYNTAX_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_SYNTAX_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


def _syntax_problem(file: Path, text: str, exc: tomllib.TOMLDecodeError) -> PersonaProblem:
    message = str(exc)
    line: int | None = None
    column: int | None = None
    if match := _SYNTAX_AT.search(message):
        line, column = int(match.group(1)), int(match.group(2))
        message = message[: match.start()]
    elif match := _SYNTAX_AT_END.search(message):
        line = text.count("\n") + 1
        message = message[: match.start()] + " at the end of the file"
    lower = message.lower()
    if "invalid value" in lower:
        fix = 'Text must be in double quotes (name = "Greta"), numbers bare (speed = 0.9), lists in brackets (fillers = ["Hmm."]).'
    elif "cannot overwrite a value" in lower or "cannot declare" in lower:
        fix = "Each field and each [table] may appear only once (use [[example_lines]] for repeated entries)."
    elif "expected '=' after a key" in lower or "invalid statement" in lower:
        fix = 'Each line must look like key = value; text values need "quotes".'
    elif "unclosed" in lower or "illegal character" in lower or "end of the file" in lower:
        fix = 'Check for a missing closing quote or bracket; long text can use triple quotes: """..."""'
    else:
        fix = "See https://toml.io for the TOML syntax."
    where = f" (column {column})" if column else ""
    return PersonaProblem(file, None, line, f"TOML syntax error: {message}{where}.", fix)


# --------------------------------------------------------------------------------------------------
# Line numbers: tomllib gives none for fields, so a small scanner maps key paths to the line that
# defines them. It understands [tables], [[arrays of tables]], dotted keys, and skips the insides of
# multi-line strings and arrays; for keys inside inline tables it points at the enclosing key's line.


_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_KEY_RE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]\]?")
_PART_RE = re.compile(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)')


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(next(g for g in m.groups() if g is not None) for m in _PART_RE.finditer(key))


class _KeyLines:
    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[Any, ...], int] = {}
        table: tuple[Any, ...] = ()
        array_counts: dict[tuple[Any, ...], int] = {}
        depth = 0
        open_multiline: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if open_multiline is not None:
                end = line.find(open_multiline)
                if end < 0:
                    continue
                line, open_multiline = line[end + 3 :], None
                depth, open_multiline = _scan_value(line, depth)
                continue
            if depth == 0:
                if header := _HEADER_RE.match(line):
                    path = _split_key(header.group(2))
                    if header.group(1) == "[[":
                        index = array_counts[path] = array_counts.get(path, -1) + 1
                        table = (*path, index)
                    else:
                        table = path
                    self._lines.setdefault(table, number)
                    continue
                if key := _KEY_RE.match(line):
                    self._lines.setdefault((*table, *_split_key(key.group(1))), number)
                    line = line[key.end() :]
            depth, open_multiline = _scan_value(line, depth)

    def line_for(self, loc: Sequence[Any]) -> int | None:
        path = tuple(loc)
        for size in range(len(path), 0, -1):
            if path[:size] in self._lines:
                return self._lines[path[:size]]
        return None


def _scan_value(text: str, depth: int) -> tuple[int, str | None]:
    """Bracket depth after `text`, and the multi-line string delimiter left open, if any."""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "#":
            break
        if text.startswith('"""', i) or text.startswith("'''", i):
            delim = text[i : i + 3]
            end = text.find(delim, i + 3)
            if end < 0:
                return depth, delim
            i = end + 3
            continue
        if ch in "\"'":
            i += 1
            while i < len(text) and text[i] != ch:
                i += 2 if ch == '"' and text[i] == "\\" else 1
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, None
