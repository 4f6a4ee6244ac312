"""Which declared action, if any, a player's line calls for, and with which arguments.

A 135M model cannot be trusted to call functions, and the game must never get an action nobody
asked for, so the model does not choose. A line that asks for something now (`requests`: "how much
is the lantern?" is no purchase) is compared, by meaning, with each action's own `player_lines`.
The ware is not part of the comparison: every declared value in a line is replaced by one word
first, so "I'll take the saffron" is as near "I'll buy a lantern" as "I'll take the lantern" is.
The arguments are then read from the words themselves (a declared value, or a number just before
it), never guessed: a line that names no value, or two, sends nothing.

Built once per persona version; a decision embeds the line and its request parts (~10 ms), and
only when the line asks for something. Of the lookup's two encoders only MiniLM is used here: the
mean with MPNet changed no decision over the three action sets and costs ~6 times as long a text,
and a long spoken line can have four texts to embed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from npcserver.backends.base import SentenceEmbedder
from npcserver.conversation.claims import words_to_digits
from npcserver.conversation.requests import not_supposed, opening_verbs, request_parts
from npcserver.conversation.text import word_stem
from npcserver.personas import Action, ActionArg, Persona

# A line that asks for something (requests.py) must be this near one of the action's own lines.
# With the request grammar as the gate the bar can be low: on the first action set 0.25-0.3 keep
# precision at 100 % and recall at 96 %, 0.35 loses long lines and bare passwords (89 %).
# `python -m loadtest.actions --detect-only` gives the figures in seconds.
ACTION_BAR = 0.3
# two actions that could both take the line must be this far apart, or neither is sent
ACTIONS_APART = 0.05
REFUSAL_BAR = 0.5  # "mind if I keep my sword out?" is no request to pass the gate
SHORT_REPLY_WORDS = 5  # a line this short may only answer the NPC ("yes, do it"): it is read with the line before
WARE = "thing"  # what every declared value becomes before lines are compared

_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True, slots=True)
class ActionCall:
    """A declared action with allowed arguments: what the game is sent."""

    action: Action
    args: dict[str, str | int]

    @property
    def id(self) -> str:
        return self.action.id


@dataclass(frozen=True, slots=True)
class ActionDecision:
    call: ActionCall | None = None
    refusal: str | None = None  # the line asks for an action whose required words it lacks: say this
    score: float = 0.0  # the nearest action line's similarity (for logs and the benchmark)
    nearest: str | None = None  # that action's id, called or not


NO_ACTION = ActionDecision()


def _stems(text: str) -> list[str]:
    return [word_stem(word) for word in _WORD.findall(text.lower())]


def _value_spans(value: str, stems: Sequence[str]) -> list[tuple[int, int]]:
    """Where the text (as stems) names a value: all its words in order, or a multi-word value's last
    word alone ("a salve" names "healing salve")."""
    words = _stems(value)
    spans = [(i, i + len(words)) for i in range(len(stems) - len(words) + 1) if list(stems[i : i + len(words)]) == words]
    if not spans and len(words) > 1:
        spans = [(i, i + 1) for i, stem in enumerate(stems) if stem == words[-1]]
    return spans


def values_named(arg: ActionArg, text: str) -> list[str]:
    """The argument's declared values the text names, in the order declared."""
    stems = _stems(text)
    return [value for value in arg.values if any(_value_spans(form, stems) for form in arg.spoken_forms(value))]


NUMBER_REACH = 3  # "five pinches of saffron", "three of them spices": the count is a few words before


def _number_before(text: str, forms: Sequence[str], arg: ActionArg) -> int | None:
    """The number said a few words before a value, in any of its `forms` ("two lanterns", "3 maps"),
    if `arg` allows it."""
    stems = _stems(words_to_digits(text))
    for start, _ in (span for form in forms for span in _value_spans(form, stems)):
        for before in reversed(stems[max(0, start - NUMBER_REACH) : start]):
            if before.isdigit():
                return int(before) if arg.allows(int(before)) else None
    return None


def bind_args(action: Action, line: str, recent: str = "") -> dict[str, str | int] | None:
    """The action's arguments read from the line (a value it does not name: from the exchange just
    before, `recent`), or None when one cannot be read for sure (none named and no default, or two)."""
    args: dict[str, str | int] = {}
    named_forms: tuple[str, ...] = ()  # how the line itself names its value (a count stands before it)
    for arg in action.args:
        if arg.is_integer:
            continue
        in_line = values_named(arg, line)
        found = in_line or values_named(arg, recent)
        if len(found) > 1:
            return None  # "a lantern and a map": which one?
        if found:
            args[arg.name] = found[0]
            named_forms = arg.spoken_forms(found[0]) if in_line else ()
        elif arg.default is not None:
            args[arg.name] = arg.default
        elif len(arg.values) == 1:
            args[arg.name] = arg.values[0]
        else:
            return None
    for arg in action.args:
        if not arg.is_integer:
            continue
        number = _number_before(line, named_forms, arg) if named_forms else _first_number(line, arg)
        if number is not None:
            args[arg.name] = number
        elif arg.default is not None:
            args[arg.name] = arg.default
        else:
            return None
    return args if action.accepts(dict(args)) else None


def _first_number(text: str, arg: ActionArg) -> int | None:
    for word in _stems(words_to_digits(text)):
        if word.isdigit() and arg.allows(int(word)):
            return int(word)
    return None


def has_words(line: str, words: Sequence[str]) -> bool:
    stems = _stems(line)
    return all(_value_spans(word, stems) for word in words)


@dataclass(frozen=True, slots=True)
class LineReading:
    """A line as the detector reads it before anything is embedded."""

    line: str
    previous: tuple[str, str] | None  # the exchange just before (player, NPC)
    parts: tuple[str, ...]  # the clauses that ask for something, from where they ask
    with_password: tuple[Action, ...]  # the actions whose required words the line says
    texts: tuple[str, ...]  # what to embed, masked; empty when the line asks for nothing


class ActionIndex:
    """A persona's actions and their lines, embedded, for one persona version."""

    def __init__(self, persona: Persona, embedder: SentenceEmbedder) -> None:
        self.persona = persona
        self._embedder = embedder
        self._by_id = {action.id: action for action in persona.actions}
        forms = {form for action in persona.actions for arg in action.args for value in arg.values for form in arg.spoken_forms(value)}
        self._masks = [_mask_patterns(form) for form in sorted(forms, key=len, reverse=True)]  # longest first
        lines = [(action, line) for action in persona.actions for line in action.player_lines]
        self._verbs = opening_verbs([line for _, line in lines])  # "Teach me a spell": teach is a request
        self._owners = [action for action, _ in lines]
        self._vectors = embedder.embed([self._masked(line) for _, line in lines]) if lines else np.zeros((0, 1), np.float32)

    def _masked(self, line: str) -> str:
        """The line with each declared value said as one neutral word, so wares do not sway the match."""
        for patterns in self._masks:
            for pattern in patterns:
                line = pattern.sub(WARE, line)
        return line

    def _read(self, line: str, previous: tuple[str, str] | None = None) -> LineReading:
        """What the line asks for and what `_decide_reading` compares with the action lines (no model)."""
        if not self.persona.actions or not line.strip():
            return LineReading(line, previous, (), (), ())
        parts = tuple(request_parts(line, self._verbs))
        said = tuple(a for a in self.persona.actions if a.requires_words and has_words(line, a.requires_words))
        if not parts and not said:
            return LineReading(line, previous, parts, said, ())
        texts = [line, *parts]
        if previous is not None and len(line.split()) <= SHORT_REPLY_WORDS:
            texts.append(f"{previous[0]} {line}")  # "do it" after "can you fix my sword?"
        return LineReading(line, previous, parts, said, tuple(self._masked(text) for text in texts))

    def decide(self, line: str, previous: tuple[str, str] | None = None) -> ActionDecision:
        """Which action the line calls for (blocking: one batch of embeddings). `previous` is the
        exchange just before (player, NPC), where "I'll take it" finds what "it" is."""
        reading = self._read(line, previous)
        vectors = self._embedder.embed(list(reading.texts)) if reading.texts else None
        return self._decide_reading(reading, vectors)

    def _decide_reading(self, reading: LineReading, vectors: np.ndarray | None) -> ActionDecision:
        """The decision for a line read by `_read`, given the embeddings of its `texts`."""
        if not reading.texts or vectors is None:
            return NO_ACTION
        line = reading.line
        scores = (vectors @ self._vectors.T).max(axis=0)
        best: dict[str, float] = {}
        for owner, score in zip(self._owners, scores, strict=True):
            best[owner.id] = max(best.get(owner.id, -1.0), float(score))
        ranked = sorted(best.items(), key=lambda item: -item[1])
        recent = " ".join(reading.previous) if reading.previous is not None else ""
        said = not_supposed(line)  # "if I bought two maps, ..." names no map to sell
        named = {a.id: {v for arg in a.args for v in values_named(arg, line)} for a in self.persona.actions}

        def names_only_others(action_id: str) -> bool:  # "sell me some rope": rope is what Pip sells, not buys
            return any(named.values()) and not named[action_id]

        for action_id, score in ranked:
            if score < ACTION_BAR:
                break
            action = self._by_id[action_id]
            said_words = action in reading.with_password
            if not reading.parts and not said_words:
                continue  # "Hawthorn." alone asks for nothing but the gate
            if names_only_others(action_id):
                continue
            if action.requires_words and not said_words:  # the refusal replaces the whole answer: be sure
                return ActionDecision(None, action.refusal if score >= REFUSAL_BAR else None, score, action_id)
            args = bind_args(action, said, recent)
            if args is None:  # asked for, but for what? The model answers (and may ask which).
                return ActionDecision(None, None, score, action_id)
            if any(other_score > score - ACTIONS_APART and not names_only_others(other_id)
                   and bind_args(self._by_id[other_id], said, recent) is not None
                   for other_id, other_score in ranked if other_id != action_id):
                return ActionDecision(None, None, score, action_id)  # "mend this axe": sell it or mend it?
            return ActionDecision(ActionCall(action, args), None, score, action_id)
        top_id, top = ranked[0]
        return ActionDecision(None, None, top, top_id)


def _mask_patterns(form: str) -> tuple[re.Pattern[str], ...]:
    """How a value is found to be masked: its words in order (plural allowed), and for a multi-word
    value its last word alone ("a salve" for "healing salve")."""
    words = [re.escape(word) for word in form.split()]
    whole = re.compile(r"\b" + r"\s+".join(words) + r"(?:e?s)?\b", re.IGNORECASE)
    if len(words) == 1:
        return (whole,)
    return whole, re.compile(r"\b" + words[-1] + r"(?:e?s)?\b", re.IGNORECASE)


class NotDeclared(ValueError):
    """An action the persona does not declare, or arguments outside its declared values."""


def declared_call(persona: Persona, action_id: str, args: dict[str, object]) -> ActionCall:
    """A game's own action (a `say` that carries one) checked against the persona's declarations."""
    action = persona.action(action_id)
    if action is None:
        known = ", ".join(a.id for a in persona.actions) or "none"
        raise NotDeclared(f"{persona.id} declares no action {action_id!r} (declared: {known})")
    given = dict(args)
    for arg in action.args:
        if arg.name not in given and arg.default is not None:
            given[arg.name] = arg.default
    if not action.accepts(given):
        wanted = ", ".join(
            f"{arg.name}: " + (f"one of {list(arg.values)}" if arg.values else f"a whole number {arg.low}..{arg.high}")
            for arg in action.args
        ) or "no arguments"
        raise NotDeclared(f"{action_id}: arguments {args} are not allowed; it takes {wanted}")
    return ActionCall(action, {name: value for name, value in given.items() if isinstance(value, str | int)})
