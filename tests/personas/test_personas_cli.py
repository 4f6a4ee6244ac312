"""Every documented `npcserver personas ...` and `npcserver chat` command line runs, with one parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from npcserver.cli import build_parser
from tests.conftest import REPO, VOICES


def npcserver(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "npcserver", *args], check=False, cwd=REPO, input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_personas_schema_write_writes_the_schema(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    done = npcserver("personas", "schema", "--write", str(target))
    assert done.returncode == 0, done.stderr
    assert "tests" in json.loads(target.read_text())["properties"]


def test_personas_check_takes_paths_voices_and_tts_voice() -> None:
    done = npcserver("personas", "check", "--tts-voice", "en_US-joe-medium", str(VOICES / "greta_blacksmith.toml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 persona(s) OK" in done.stdout
    assert npcserver("personas", "check", "--voices", str(VOICES)).returncode == 0


def test_personas_test_runs_every_test_of_a_persona_and_reports_failures() -> None:
    # fake models: the echoing fake dialogue fails most tests, which is what the report must show
    done = npcserver("personas", "test", "rolf_guard", "--runs", "1", "--backend", "fake", "--voices", str(VOICES))
    assert done.returncode == 1, done.stderr
    assert "rolf_guard:" in done.stdout and "(9 tests)" in done.stdout
    assert "FAIL" in done.stdout and "does not say" in done.stdout


def test_personas_test_names_the_known_ids_for_an_unknown_one() -> None:
    done = npcserver("personas", "test", "nobody", "--backend", "fake")
    assert done.returncode == 2 and "known: bram_innkeeper" in done.stderr


def test_chat_preview_deflects_a_forbidden_topic_like_the_server() -> None:
    done = npcserver("chat", "bram_innkeeper", "--backend", "fake", stdin="What is down in the cellar?\n\n")
    assert done.returncode == 0, done.stderr
    assert "Nothing down there but old barrels" in done.stdout


def test_the_cli_has_one_personas_parser() -> None:
    parser = build_parser()
    args = parser.parse_args(["personas", "test", "greta_blacksmith", "--runs", "2", "--llm-precision", "int8"])
    assert (args.personas_command, args.npc, args.runs, args.llm_precision) == ("test", "greta_blacksmith", 2, "int8")
