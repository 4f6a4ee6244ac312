"""Every mistake in a persona file explained in a designer's words: what is wrong and what would be right."""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from npcserver.models import EMBEDDED_VOICE
from npcserver.personas.action_checks import action_problems
from npcserver.personas.problems import PersonaProblem
from npcserver.personas.spec import ID_PATTERN, TABLES, DialogueSpec, PersonaSpec, SpecTable, VoiceResolver
from npcserver.personas.toml_lines import KeyLines

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


def _model_for(loc: Sequence[Any]) -> type[SpecTable]:
    """The table class that owns the last key of `loc`, following nested tables ("actions", 0,
    "args", "item", "values" -> the action argument's table)."""
    model: type[SpecTable] = PersonaSpec
    keys = [part for part in loc[:-1] if isinstance(part, str)]
    position = 0
    while position < len(keys):
        info = model.model_fields.get(keys[position])
        inner = _table_in(info.annotation) if info is not None else None
        if inner is None:
            break
        model, by_name = inner
        position += 2 if by_name else 1  # a table of tables by name: the next key is a name, not a field
    return model


def _table_in(annotation: Any) -> tuple[type[SpecTable], bool] | None:
    """The table class an annotation holds (itself, in a list, or as a dict's values: True)."""
    if isinstance(annotation, type) and issubclass(annotation, SpecTable):
        return annotation, False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list and args and isinstance(args[0], type) and issubclass(args[0], SpecTable):
        return args[0], False
    if typing.get_origin(annotation) is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], SpecTable):
        return args[1], True
    return None


_ARRAY_TABLES = ("example_lines", "tests", "actions")


def _where(loc: Sequence[Any]) -> str:
    """Where a key sits, as the file writes it: "in [voice]", "in [[actions]]", "in actions.args.item"."""
    keys = [part for part in loc[:-1] if isinstance(part, str)]
    if not keys:
        return "at the top level"
    if len(keys) > 1:
        return "in " + ".".join(keys)
    return f"in [[{keys[0]}]]" if keys[0] in _ARRAY_TABLES else f"in [{keys[0]}]"


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
    if keys[0] in TABLES and len(keys) > 1:
        return f"{_where(loc).replace('in ', 'under ', 1)}: {snippet}"
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


def explain_validation_error(
    file: Path, raw: Mapping[str, Any], lines: KeyLines, exc: ValidationError
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
            if kind in ("model_type", "model_attributes_type", "dict_type") and loc and loc[0] in TABLES:
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
        elif kind == "literal_error":
            problems.append(
                PersonaProblem(file, name, line, f"{_describe_value(value)} is not allowed.", f"Use {ctx.get('expected', 'one of the listed words')}.")
            )
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
    if loc and loc[0] == "actions":
        return PersonaProblem(
            file,
            name,
            line,
            f"{_describe_value(value)} has the wrong form.",
            "Action ids and argument names: lowercase letters, digits and _, starting with a letter (sell_item). "
            "Argument values and required words: lowercase words as a player says them (\"lucky charm\").",
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
    where = _where(loc)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    elsewhere = {f: t for t, m in TABLES.items() for f in m.model_fields} if len(loc) == 1 else {}
    close_elsewhere = difflib.get_close_matches(key, list(elsewhere), n=1, cutoff=0.75) if not close else []
    if close:
        fix = f'Did you mean "{close[0]}"?'
    elif close_elsewhere and close_elsewhere[0] != key:
        fix = f'Did you mean "{close_elsewhere[0]}"? It belongs in the [{elsewhere[close_elsewhere[0]]}] table.'
    elif len(loc) > 1 and key in PersonaSpec.model_fields:
        fix = f'"{key}" is a top-level field: move it above the first [table] header in the file.'
    elif len(loc) == 1 and (home := next((t for t, m in TABLES.items() if key in m.model_fields), None)):
        fix = (
            f'"{key}" belongs in the [{home}] table: move it below a [{home}] line.'
            if home != "example_lines"
            else f'"{key}" belongs in an [[example_lines]] entry.'
        )
    else:
        fix = "Fields allowed here: " + ", ".join(known) + "."
    return PersonaProblem(file, _field_name(loc), line, f"is not a known field {where}.", fix)


def _test_pattern_problems(file: Path, raw: Mapping[str, Any], lines: KeyLines) -> list[PersonaProblem]:
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


def cross_field_problems(
    file: Path, raw: Mapping[str, Any], lines: KeyLines, voices_dir: Path, resolve_voice: VoiceResolver
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
    problems.extend(action_problems(file, raw, lines))

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


def syntax_problem(file: Path, text: str, exc: tomllib.TOMLDecodeError) -> PersonaProblem:
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
