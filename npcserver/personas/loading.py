"""Loading persona files and checking several at once (`personas check`, directory loads). Blocking
file I/O: call it off the event loop."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import ValidationError

from npcserver.backends.base import VoiceSettings
from npcserver.models import EMBEDDED_VOICE, resolve_piper_voice
from npcserver.personas.explain import cross_field_problems, explain_validation_error, syntax_problem
from npcserver.personas.persona import Action, ActionArg, ContextKey, ExampleLine, Persona, PersonaTest
from npcserver.personas.problems import LoadResult, PersonaProblem
from npcserver.personas.spec import ActionSpec, PersonaSpec, VoiceResolver
from npcserver.personas.toml_lines import KeyLines


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
        return LoadResult(file, None, (syntax_problem(file, text, exc),), version)

    lines = KeyLines(text)
    problems: list[PersonaProblem] = []
    spec: PersonaSpec | None = None
    try:
        spec = PersonaSpec.model_validate(raw)
    except ValidationError as exc:
        problems.extend(explain_validation_error(file, raw, lines, exc))
    problems.extend(cross_field_problems(file, raw, lines, voices_dir, resolve_voice))
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
        actions=tuple(_to_action(action) for action in spec.actions),
        context_keys=tuple(ContextKey(k, v) for k, v in spec.context_keys.items()),
        tests=tuple(PersonaTest(t.player.strip(), tuple(t.must_say), tuple(t.must_not_say)) for t in spec.tests),
        source=file,
        version=version,
    )


def _to_action(spec: ActionSpec) -> Action:
    return Action(
        id=spec.id,
        means=spec.means.strip(),
        player_lines=tuple(line.strip() for line in spec.player_lines),
        args=tuple(
            ActionArg(name, tuple(arg.values), arg.min, arg.max, arg.default,
                      tuple((value, tuple(words)) for value, words in arg.aliases.items()))
            for name, arg in spec.args.items()
        ),
        requires_words=tuple(word.strip() for word in spec.requires_words),
        refusal=spec.refusal.strip() if spec.refusal else None,
        confirm=spec.confirm.strip() if spec.confirm else None,
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
                KeyLines(result.file.read_text(encoding="utf-8")).line_for(("id",)) if result.file.is_file() else None
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
