"""Persona files: loading, and the message a designer gets for each kind of mistake."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from npcserver.backends.base import GenerationOptions, VoiceSettings
from npcserver.personas import check_paths, load_persona_file, persona_files
from npcserver.personas.cli import check_command, main, schema_text

REPO = Path(__file__).resolve().parents[2]
VOICES = REPO / "voices"

VALID = """\
#:schema ./persona.schema.json
id = "greta"
name = "Greta"
role = "the blacksmith"
description = "Works the forge."
speaking_style = "Blunt."
greeting = "Mind the sparks."

[knowledge]
facts = ["Swords cost 40 silver."]
forbidden_topics = ["the old mine"]
deflection = "None of your business."

[[example_lines]]
player = "Hello!"
npc = "Make it quick."

[dialogue]
max_reply_words = 20
temperature = 0.5
history_turns = 3

[voice]
model = "en_US-joe-medium"
speed = 0.9
pitch_semitones = -2

[latency]
budget_ms = 900
fillers = ["Hmph."]

[context_keys]
time_of_day = "It is {value}."
"""


def fake_resolve_voice(name_or_path: str, voices_dir: Path) -> Path | None:
    """A stand-in for npcserver.models.resolve_piper_voice: only the embedded voice and real .onnx files exist."""
    if name_or_path == "en_US-joe-medium":
        return Path("/fake/en_US-joe-medium.onnx")
    path = voices_dir / name_or_path
    return path if path.suffix == ".onnx" and path.is_file() else None


def write(tmp_path: Path, text: str, name: str = "greta.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def messages(tmp_path: Path, text: str, name: str = "greta.toml") -> list[str]:
    result = load_persona_file(write(tmp_path, text, name), resolve_voice=fake_resolve_voice)
    assert result.persona is None
    return [str(p) for p in result.problems]


def only(found: list[str]) -> str:
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------------------------------------- valid


def test_valid_file_becomes_a_persona_with_voice_and_generation_settings(tmp_path: Path) -> None:
    result = load_persona_file(write(tmp_path, VALID), resolve_voice=fake_resolve_voice)
    assert result.problems == ()
    persona = result.persona
    assert persona is not None
    assert (persona.id, persona.name, persona.role, persona.greeting) == (
        "greta",
        "Greta",
        "the blacksmith",
        "Mind the sparks.",
    )
    assert persona.voice == VoiceSettings(model="en_US-joe-medium", speaker_id=None, speed=0.9, pitch_semitones=-2.0)
    assert persona.max_reply_words == 20 and persona.history_turns == 3
    assert persona.latency_budget_ms == 900 and persona.fillers == ("Hmph.",)
    options = persona.generation_options()
    assert isinstance(options, GenerationOptions)
    assert options.temperature == 0.5 and options.max_new_tokens >= 20
    assert [(k.key, k.phrase) for k in persona.context_keys] == [("time_of_day", "It is {value}.")]


def test_optional_tables_take_defaults_and_the_server_default_voice(tmp_path: Path) -> None:
    text = 'id = "greta"\nname = "Greta"\nrole = "r"\ndescription = "d"\nspeaking_style = "s"\n[[example_lines]]\nplayer = "a"\nnpc = "b"\n'
    result = load_persona_file(write(tmp_path, text), resolve_voice=fake_resolve_voice, default_voice="other-voice")
    assert result.persona is not None
    assert result.persona.voice.model == "other-voice"
    assert result.persona.greeting is None and result.persona.fillers == () and result.persona.context_keys == ()


def test_a_voice_file_beside_the_personas_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "deep.onnx").write_bytes(b"onnx")
    text = VALID.replace('model = "en_US-joe-medium"', 'model = "extra/deep.onnx"\nspeaker_id = 2')
    result = load_persona_file(write(tmp_path, text), resolve_voice=fake_resolve_voice)
    assert result.persona is not None
    assert result.persona.voice.model == "extra/deep.onnx" and result.persona.voice.speaker_id == 2


# ---------------------------------------------------------------------------------------------- mistakes


def test_toml_syntax_error_names_file_line_and_the_fix(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace('name = "Greta"', "name = Greta")))
    assert message.startswith(f"{tmp_path / 'greta.toml'}:3: TOML syntax error")
    assert "double quotes" in message


def test_unclosed_string_is_a_syntax_error_with_a_hint(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace('role = "the blacksmith"', 'role = "the blacksmith')))
    assert "greta.toml:4: TOML syntax error" in message
    assert "missing closing quote" in message


def test_a_table_written_twice_is_a_syntax_error(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID + "\n[voice]\nspeed = 1.0\n"))
    assert "TOML syntax error" in message and "only once" in message


def test_missing_required_field_says_what_to_add(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace('speaking_style = "Blunt."\n', "")))
    assert "greta.toml: speaking_style: is required but missing." in message
    assert "Add it, e.g. speaking_style = " in message


def test_missing_example_lines_explains_the_table_syntax(tmp_path: Path) -> None:
    text = VALID.replace('[[example_lines]]\nplayer = "Hello!"\nnpc = "Make it quick."\n', "")
    message = only(messages(tmp_path, text))
    assert "example_lines: is required but missing." in message


def test_missing_field_inside_a_table_points_at_the_table(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace('npc = "Make it quick."\n', "")))
    assert "greta.toml:14: example_lines[1].npc: is required but missing." in message
    assert "under [[example_lines]]: npc = " in message


def test_wrong_type_names_field_line_expected_and_actual(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace("speed = 0.9", 'speed = "fast"')))
    assert 'greta.toml:25: voice.speed: must be a number, but is the text "fast".' in message
    assert "e.g. under [voice]: speed = 0.9" in message


def test_decimal_where_a_whole_number_is_needed(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace("max_reply_words = 20", "max_reply_words = 20.5")))
    assert "greta.toml:19: dialogue.max_reply_words: must be a whole number, but is the number 20.5." in message


def test_text_where_a_list_is_needed(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace('fillers = ["Hmph."]', 'fillers = "Hmph."')))
    assert 'latency.fillers: must be a list in square brackets, but is the text "Hmph."' in message
    assert 'fillers = ["Hmm.", "Let me think."]' in message


def test_a_value_where_a_table_is_needed(tmp_path: Path) -> None:
    text = VALID.replace('[voice]\nmodel = "en_US-joe-medium"\nspeed = 0.9\npitch_semitones = -2\n', "").replace(
        'greeting = "Mind the sparks."', 'greeting = "Mind the sparks."\nvoice = 3'
    )
    message = only(messages(tmp_path, text))
    assert (
        "greta.toml:8: voice: must be a table, written as [voice] on its own line followed by its fields, but is the whole number 3."
        in message
    )


def test_unknown_field_suggests_the_near_miss(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace("speed = 0.9", "sped = 0.9")))
    assert 'greta.toml:25: voice.sped: is not a known field in [voice]. Did you mean "speed"?' in message


def test_unknown_top_level_field_that_belongs_in_a_table(tmp_path: Path) -> None:
    message = only(
        messages(
            tmp_path, VALID.replace('greeting = "Mind the sparks."', 'greeting = "Mind the sparks."\ntemperature = 0.4')
        )
    )
    assert "greta.toml:8: temperature: is not a known field at the top level." in message
    assert '"temperature" belongs in the [dialogue] table' in message


def test_top_level_field_written_after_a_table_header(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace('greeting = "Mind the sparks."\n', "") + 'greeting = "Hi"\n'))
    assert '"greeting" was read as a context key because it comes after the [context_keys] header.' in message
    assert "move it above the first [table] header" in message


def test_top_level_field_inside_the_voice_table_is_moved_up(tmp_path: Path) -> None:
    text = VALID.replace('greeting = "Mind the sparks."\n', "").replace("speed = 0.9", 'speed = 0.9\ngreeting = "Hi"')
    message = only(messages(tmp_path, text))
    assert "voice.greeting: is not a known field in [voice]." in message
    assert '"greeting" is a top-level field: move it above the first [table] header' in message


def test_unknown_field_without_a_near_miss_lists_the_allowed_ones(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace("speed = 0.9", "speed = 0.9\nxyz = 1")))
    assert (
        "voice.xyz: is not a known field in [voice]. Fields allowed here: model, speaker_id, speed, pitch_semitones."
        in message
    )


def test_id_must_match_the_file_name(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace('id = "greta"', 'id = "greta_smith"')))
    assert 'greta.toml:2: id: "greta_smith" does not match the file name greta.toml.' in message
    assert 'either id = "greta" or rename the file to greta_smith.toml' in message


def test_id_with_invalid_characters(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace('id = "greta"', 'id = "Greta Smith"'), name="greta.toml"))
    assert 'id: the text "Greta Smith" is not a valid id.' in message
    assert "lowercase letters, digits and _" in message


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    write(first, VALID)
    write(second, VALID)
    _, problems = check_paths([first, second], resolve_voice=fake_resolve_voice)
    message = only([str(p) for p in problems])
    assert f'{second / "greta.toml"}:2: id: "greta" is already used by {first / "greta.toml"}.' in message


def test_voice_that_does_not_exist(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace('model = "en_US-joe-medium"', 'model = "en_GB-nobody"')))
    assert 'greta.toml:24: voice.model: no Piper voice "en_GB-nobody" was found.' in message
    assert 'the embedded one is "en_US-joe-medium"' in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "speed = 0.9",
            "speed = 3",
            "greta.toml:25: voice.speed: the whole number 3 is out of range. Use a number from 0.5 to 2.0.",
        ),
        (
            "pitch_semitones = -2",
            "pitch_semitones = -20",
            "voice.pitch_semitones: the whole number -20 is out of range. Use a number from -12.0 to 12.0.",
        ),
        (
            "temperature = 0.5",
            "temperature = 2.5",
            "dialogue.temperature: the number 2.5 is out of range. Use a number from 0.0 to 1.5.",
        ),
        (
            "max_reply_words = 20",
            "max_reply_words = 500",
            "dialogue.max_reply_words: the whole number 500 is out of range. Use a whole number from 5 to 120.",
        ),
        (
            "history_turns = 3",
            "history_turns = -1",
            "dialogue.history_turns: the whole number -1 is out of range. Use a whole number from 0 to 20.",
        ),
        (
            "budget_ms = 900",
            "budget_ms = 5",
            "latency.budget_ms: the whole number 5 is out of range. Use a whole number from 100 to 10000.",
        ),
    ],
)
def test_out_of_range_numbers_give_the_allowed_range(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert expected in only(messages(tmp_path, VALID.replace(old, new)))


def test_empty_text_and_too_long_text(tmp_path: Path) -> None:
    found = messages(
        tmp_path,
        VALID.replace('role = "the blacksmith"', 'role = ""').replace('name = "Greta"', f'name = "{"G" * 70}"'),
    )
    assert any("greta.toml:3: name: is 70 characters long. Keep it under 60 characters" in m for m in found), found
    assert any("greta.toml:4: role: is empty." in m for m in found), found


def test_forbidden_topics_need_a_deflection(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace('deflection = "None of your business."\n', "")))
    assert "knowledge.deflection: is missing, but forbidden_topics are listed." in message


def test_example_reply_longer_than_the_word_cap(tmp_path: Path) -> None:
    long_reply = " ".join(["word"] * 25)
    message = only(messages(tmp_path, VALID.replace('npc = "Make it quick."', f'npc = "{long_reply}"')))
    assert "greta.toml:16: example_lines[1].npc: has 25 words, more than dialogue.max_reply_words (20)." in message


def test_context_phrase_needs_the_value_placeholder(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace('time_of_day = "It is {value}."', 'time_of_day = "It is late."')))
    assert 'greta.toml:33: context_keys.time_of_day: the text "It is late." has no {value} placeholder.' in message


def test_context_key_name_must_be_usable(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace("time_of_day =", '"time of day" =')))
    assert '"time of day" is not a usable context key name.' in message


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "greta.toml"
    path.write_bytes(VALID.encode("utf-8").replace(b"Blunt.", b"Blunt \xff."))
    message = only([str(p) for p in load_persona_file(path, resolve_voice=fake_resolve_voice).problems])
    assert "greta.toml:6: is not UTF-8 text." in message


def test_all_mistakes_of_a_file_are_reported_at_once(tmp_path: Path) -> None:
    text = (
        VALID.replace('id = "greta"', 'id = "other"')
        .replace("speed = 0.9", "sped = 0.9")
        .replace("budget_ms = 900", "budget_ms = 1")
        .replace('name = "Greta"\n', "")
    )
    found = messages(tmp_path, text)
    assert len(found) == 4, found
    fields = " ".join(found)
    for field in ("id:", "name:", "voice.sped:", "latency.budget_ms:"):
        assert field in fields


def test_field_lines_are_found_in_dotted_keys_and_after_multiline_values(tmp_path: Path) -> None:
    text = VALID.replace(
        'facts = ["Swords cost 40 silver."]', 'facts = [\n  "Swords [cost] 40 silver.",\n  """a\n[voice]\nb""",\n]'
    ).replace('greeting = "Mind the sparks."', 'greeting = "Mind the sparks."\nvoice.pitch = 1')
    text = text.replace('[voice]\nmodel = "en_US-joe-medium"\nspeed = 0.9\npitch_semitones = -2\n', "")
    message = only(messages(tmp_path, text))
    assert "greta.toml:8: voice.pitch: is not a known field in [voice]." in message


# ---------------------------------------------------------------------------------------------- check, schema


def test_every_shipped_persona_passes_check() -> None:
    out = io.StringIO()
    assert check_command([VOICES], out=out) == 0, out.getvalue()
    assert len(persona_files([VOICES])) >= 5


def test_shipped_personas_are_distinct_characters_and_voices() -> None:
    personas = [load_persona_file(f).persona for f in persona_files([VOICES])]
    assert all(p is not None for p in personas)
    voices = {(p.voice.pitch_semitones, p.voice.speed) for p in personas if p}
    assert len(voices) == len(personas)
    for persona in personas:
        assert persona is not None
        assert 3 <= len(persona.example_lines) <= 5 and persona.fillers and persona.greeting


def test_check_command_prints_problems_and_fails(tmp_path: Path) -> None:
    write(tmp_path, VALID.replace("speed = 0.9", "speed = 9"))
    out = io.StringIO()
    assert check_command([tmp_path], out=out, resolve_voice=fake_resolve_voice) == 1
    assert "voice.speed: the whole number 9 is out of range." in out.getvalue()
    assert "1 problem(s) in 1 file(s)" in out.getvalue()


def test_check_command_on_a_missing_path(tmp_path: Path) -> None:
    out = io.StringIO()
    assert check_command([tmp_path / "nope"], out=out) == 1
    assert "does not exist" in out.getvalue()


def test_committed_schema_is_up_to_date() -> None:
    committed = (VOICES / "persona.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), "run: npcserver personas schema --write voices/persona.schema.json"


def test_schema_describes_every_field_and_forbids_unknown_ones() -> None:
    schema = json.loads(schema_text())
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"id", "name", "role", "description", "speaking_style", "example_lines"}
    voice = schema["properties"]["voice"]
    assert voice["additionalProperties"] is False
    assert voice["properties"]["speed"]["minimum"] == 0.5
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name
    assert "$ref" not in schema_text()


def test_cli_main_runs_schema_and_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["personas", "schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "npcserver NPC persona"
    assert main(["personas", "check", str(VOICES)]) == 0
    assert "persona(s) OK" in capsys.readouterr().out


def test_missing_id_suggests_the_file_name(tmp_path: Path) -> None:
    message = only(messages(tmp_path, VALID.replace('id = "greta"\n', ""), name="greta.toml"))
    assert 'greta.toml: id: is required but missing. Add it, e.g. id = "greta"' in message


def test_a_malformed_tests_entry_is_an_error_naming_file_line_and_field() -> None:
    from npcserver.personas import parse_persona

    path = Path(__file__).resolve().parents[2] / "voices" / "bram_innkeeper.toml"
    text = path.read_text() + '\n[[tests]]\nplayer = "How much is a room?"\nmust_say = ["/3 (silver/"]\n\n[[tests]]\nplayer = 5\n'
    result = parse_persona(text, path)
    assert result.persona is None
    messages = [str(problem) for problem in result.problems]
    bad_regex = next(m for m in messages if "tests[10].must_say[1]" in m)
    assert "not a valid regular expression" in bad_regex and bad_regex.startswith(f"{path}:")
    assert any("tests[11].player" in m and "must be text" in m for m in messages)


def test_persona_tests_are_loaded_with_the_persona() -> None:
    persona = load_persona_file(Path(__file__).resolve().parents[2] / "voices" / "rolf_guard.toml").persona
    assert persona is not None and len(persona.tests) >= 8
    assert persona.tests[0].player and persona.tests[0].must_say
