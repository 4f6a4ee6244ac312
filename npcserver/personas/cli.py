"""The `npcserver personas ...` commands: `check [PATH...]`, `schema [--write FILE]` and `test [ID] [--runs N]`.

This is their only parser: `cli.py` wires it in with `add_personas_parser(subparsers, ...)` and
dispatches to `run_personas(args, settings_for)`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from npcserver.config import ENV_PREFIX
from npcserver.models import EMBEDDED_VOICE, resolve_piper_voice
from npcserver.personas import (
    SCHEMA_FILE_NAME,
    Persona,
    VoiceResolver,
    check_paths,
    persona_json_schema,
)
from npcserver.personas.store import PersonaStore

DEFAULT_VOICES_DIR = Path("voices")


def schema_text() -> str:
    return json.dumps(persona_json_schema(), indent=2, ensure_ascii=False) + "\n"


def schema_command(out: TextIO | None = None, write: Path | None = None) -> int:
    """Print the persona JSON Schema, or write it to `write` (e.g. voices/persona.schema.json)."""
    text = schema_text()
    if write is not None:
        Path(write).write_text(text, encoding="utf-8")
        print(f"wrote {write}", file=out or sys.stdout)
    else:
        (out or sys.stdout).write(text)
    return 0


def check_command(
    paths: Sequence[Path] = (),
    voices_dir: Path = DEFAULT_VOICES_DIR,
    *,
    out: TextIO | None = None,
    default_voice: str = EMBEDDED_VOICE,
    resolve_voice: VoiceResolver = resolve_piper_voice,
) -> int:
    """Check persona files (default: the `voices_dir` folder); print every problem; 1 if any, else 0."""
    out = out or sys.stdout
    results, problems = check_paths(
        list(paths) or [Path(voices_dir)], default_voice=default_voice, resolve_voice=resolve_voice
    )
    for problem in problems:
        print(problem, file=out)
    bad_files = {p.file for p in problems}
    good = [r for r in results if r.ok and r.file not in bad_files]
    if problems:
        print(f"\n{len(problems)} problem(s) in {len(bad_files)} file(s); {len(good)} persona(s) OK.", file=out)
        return 1
    if not results:
        print("no persona files found (*.toml).", file=out)
        return 1
    print(f"{len(good)} persona(s) OK: " + ", ".join(r.persona.id for r in good if r.persona), file=out)
    return 0


def find_persona(store: PersonaStore, npc: str) -> Persona | None:
    """The persona with this id, or None after telling the user which ids there are."""
    persona = store.get(npc)
    if persona is None:
        known = ", ".join(sorted(store.ids())) or "none"
        print(f"npcserver: no persona {npc!r} in {store.voices_dir} (known: {known}); "
              "`npcserver personas check` explains broken files", file=sys.stderr)
    return persona


def test_command(settings: Any, npc: str | None, runs: int, seed: int | None, out: TextIO | None = None) -> int:
    """Run personas' [[tests]] against the real models; 0 when every persona passes >= 90 %, else 1."""
    import asyncio

    from npcserver.backends import create_backends
    from npcserver.conversation.pipeline import ModelRunner
    from npcserver.personas.designer_tests import PASSING_RATE, pass_rate, report_lines, run_persona_tests

    out = out or sys.stdout
    store = PersonaStore(settings.voices)
    personas = [find_persona(store, npc)] if npc else [store.get(i) for i in sorted(store.ids())]
    if None in personas:
        return 2
    print("loading models...", file=sys.stderr, flush=True)
    runner = ModelRunner(create_backends(settings))
    worst = 1.0
    try:
        for persona in personas:
            assert persona is not None
            if not persona.tests:
                print(f"{persona.id}: no [[tests]] (voices/README.md shows how to write them)", file=out)
                continue
            outcomes = asyncio.run(run_persona_tests(runner, persona, runs=runs, seed=seed))
            print("\n".join(report_lines(persona, outcomes)), file=out, flush=True)
            worst = min(worst, pass_rate(outcomes))
    finally:
        runner.close(wait=True)
    return 0 if worst >= PASSING_RATE else 1


def add_personas_parser(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_settings_options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "personas",
        help="Check persona files, print their JSON Schema, or run their self-tests.",
        description="Tools for the NPC persona files in voices/.",
    )
    commands = parser.add_subparsers(dest="personas_command", required=True)
    check = commands.add_parser(
        "check",
        help="Check persona files and print every problem (exit status 1 if any).",
        description="Check persona files: TOML syntax, required fields, types, ranges, unknown fields, ids, voices. Prints every problem with file, line and field.",
    )
    check.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help=f"Persona files or folders of them (default: {DEFAULT_VOICES_DIR}/).",
    )
    check.add_argument(
        "--tts-voice", default=EMBEDDED_VOICE, help="Voice for personas that name none (as `serve --tts-voice`)."
    )
    check.add_argument("--voices", type=Path, default=None,
                       help="The voices folder checked when no PATH is given (default: ./voices, env NPCSERVER_VOICES).")
    test = commands.add_parser(
        "test",
        help="Run personas' [[tests]] against the real model; print pass rates and failing replies.",
        description="Ask each [[tests]] line of a persona (or of every persona) through the server's own turn code with "
        "the real models, and check the reply. Exit status 1 when a persona passes under 90 %.",
    )
    test.add_argument("npc", nargs="?", help="Persona id (default: every persona in the voices folder).")
    test.add_argument("--runs", type=int, default=3, help="Ask every line this many times (replies are sampled; default 3).")
    test.add_argument("--seed", type=int, default=None, help="Seed the sampling, so a run repeats (default: fresh each run).")
    if add_settings_options is not None:
        add_settings_options(test)
    schema = commands.add_parser(
        "schema",
        help="Print the JSON Schema of persona files (for editor completion).",
        description="Print the JSON Schema of persona files.",
    )
    schema.add_argument(
        "--write", type=Path, metavar="FILE", help=f"Write it to FILE instead, e.g. voices/{SCHEMA_FILE_NAME}."
    )
    return parser


def run_personas(args: argparse.Namespace, settings_for: Callable[[argparse.Namespace], Any] | None = None) -> int:
    if args.personas_command == "check":
        voices = args.voices or Path(os.environ.get(ENV_PREFIX + "VOICES", str(DEFAULT_VOICES_DIR)))
        return check_command(args.paths, voices, default_voice=args.tts_voice)
    if args.personas_command == "test":
        if settings_for is None:
            raise SystemExit("personas test needs the server settings: run it as `npcserver personas test`")
        return test_command(settings_for(args), args.npc, max(1, args.runs), args.seed)
    return schema_command(write=args.write)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="npcserver")
    add_personas_parser(parser.add_subparsers(dest="command", required=True))
    return run_personas(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
