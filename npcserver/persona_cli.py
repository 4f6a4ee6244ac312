"""The `npcserver personas ...` commands: `check [PATH...]` and `schema [--write FILE]`.

`cli.py` wires them in with `add_personas_parser(subparsers)` and dispatches to `run_personas(args)`;
`python -m npcserver.persona_cli` runs them on their own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from npcserver.personas import (
    DEFAULT_VOICE,
    SCHEMA_FILE_NAME,
    VoiceResolver,
    check_paths,
    default_voice_resolver,
    persona_json_schema,
)

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
    default_voice: str = DEFAULT_VOICE,
    resolve_voice: VoiceResolver = default_voice_resolver,
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


def add_personas_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "personas",
        help="Check persona files, or print their JSON Schema.",
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
        "--tts-voice", default=DEFAULT_VOICE, help="Voice for personas that name none (as `serve --tts-voice`)."
    )
    schema = commands.add_parser(
        "schema",
        help="Print the JSON Schema of persona files (for editor completion).",
        description="Print the JSON Schema of persona files.",
    )
    schema.add_argument(
        "--write", type=Path, metavar="FILE", help=f"Write it to FILE instead, e.g. voices/{SCHEMA_FILE_NAME}."
    )
    return parser


def run_personas(args: argparse.Namespace) -> int:
    if args.personas_command == "check":
        return check_command(args.paths, default_voice=args.tts_voice)
    return schema_command(write=args.write)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="npcserver")
    add_personas_parser(parser.add_subparsers(dest="command", required=True))
    return run_personas(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
