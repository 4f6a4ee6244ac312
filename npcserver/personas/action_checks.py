"""The rules of `[[actions]]` that span fields (types and ranges are the spec's): one id per action,
arguments that can be bound, defaults that are allowed values, placeholders that name arguments."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from npcserver.personas.problems import PersonaProblem
from npcserver.personas.toml_lines import KeyLines

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
MAX_CONFIRM_SENTENCES = 2  # a fact asked for may follow, and a reply holds at most three


def action_problems(file: Path, raw: Mapping[str, Any], lines: KeyLines) -> list[PersonaProblem]:
    """Every cross-field problem of the file's [[actions]] (each rule runs only where its types are right)."""
    actions = raw.get("actions")
    if not isinstance(actions, list):
        return []
    problems: list[PersonaProblem] = []

    def problem(loc: tuple[Any, ...], what: str, fix: str) -> None:
        name = f"actions[{loc[1] + 1}]" + "".join(f".{part}" for part in loc[2:])
        problems.append(PersonaProblem(file, name, lines.line_for(loc), what, fix))

    seen: set[str] = set()
    for index, action in enumerate(actions):
        if not isinstance(action, dict):
            continue
        action_id = action.get("id")
        if isinstance(action_id, str):
            if action_id in seen:
                problem(("actions", index, "id"), f'"{action_id}" is declared twice.', "Give each action its own id.")
            seen.add(action_id)
        found_args = action.get("args")
        args: dict[str, Any] = found_args if isinstance(found_args, dict) else {}
        for name, arg in args.items():
            if isinstance(arg, dict):
                problems_of_arg = _arg_problems(arg)
                for what, fix in problems_of_arg:
                    problem(("actions", index, "args", name), what, fix)
        for key in ("confirm", "refusal"):
            text = action.get(key)
            if not isinstance(text, str):
                continue
            for placeholder in _PLACEHOLDER.findall(text):
                if placeholder not in args:
                    known = ", ".join("{" + arg + "}" for arg in args) or "none (this action has no args)"
                    problem(("actions", index, key), f"names {{{placeholder}}}, which is not one of the action's args.",
                            f"Use one of: {known}.")
        confirm = action.get("confirm")
        if isinstance(confirm, str) and len(re.findall(r"[.!?]+(?:\s|$)", confirm.strip() + " ")) > MAX_CONFIRM_SENTENCES:
            problem(("actions", index, "confirm"), f"has more than {MAX_CONFIRM_SENTENCES} sentences.",
                    "Shorten it: the fact the player asked for may follow it, and a reply has at most 3 sentences.")
        if action.get("refusal") is not None and not action.get("requires_words"):
            problem(("actions", index, "refusal"), "is only said when requires_words are missing, but none are listed.",
                    'Add requires_words = ["..."], or remove the refusal.')
    return problems


def _arg_problems(arg: Mapping[str, Any]) -> list[tuple[str, str]]:
    kind = arg.get("type", "choice")
    values = arg.get("values", [])
    low, high, default = arg.get("min"), arg.get("max"), arg.get("default")
    found: list[tuple[str, str]] = []
    if kind == "choice":
        if not values:
            found.append(("has no values.", 'List what the player may choose: values = ["rope", "lantern"], or type = "integer".'))
        if low is not None or high is not None:
            found.append(("has min/max but is a choice.", 'Add type = "integer", or remove min and max.'))
        if isinstance(values, list):
            doubles = sorted({value for position, value in enumerate(values) if value in values[:position]})
            if doubles:
                found.append((f"lists {', '.join(map(repr, doubles))} twice.", "List each value once."))
            aliases = arg.get("aliases", {})
            if isinstance(aliases, dict):
                unknown = sorted(name for name in aliases if name not in values)
                if unknown:
                    found.append((f"has aliases for {', '.join(map(repr, unknown))}, which are not among its values.",
                                  "Key each alias list by one of the values."))
            if default is not None and default not in values:
                found.append((f"default {default!r} is not one of its values.", "Use one of the values, or remove the default."))
    elif kind == "integer":
        if values:
            found.append(("has values but is an integer.", "Remove values, or remove type = \"integer\"."))
        if isinstance(low, int) and isinstance(high, int) and low > high:
            found.append((f"min ({low}) is above max ({high}).", "Swap them."))
        if default is not None:
            if not isinstance(default, int) or isinstance(default, bool):
                found.append((f"default {default!r} is not a whole number.", "Use a whole number, e.g. default = 1."))
            elif (isinstance(low, int) and default < low) or (isinstance(high, int) and default > high):
                found.append((f"default {default} is outside min..max.", "Use a default within the range."))
    return found
