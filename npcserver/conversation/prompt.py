"""The dialogue prompt: persona + conversation history + game context + the player's line -> chat messages.

Written for a very small model (SmolLM2-135M): a short system prompt, the persona's example lines as
few-shot user/assistant turns (what helps such a model most), then the history, then the player's line.

Two rules shape the layout:
- The persona-constant part (system prompt and examples) comes first and is byte-identical every
  turn, so a KV-prefix cache can reuse it; everything that changes (history, game context, the line)
  comes after it.
- Game context and player text are data, never instructions. They are cleaned (no newlines, no
  control characters, no chat-template markers such as <|im_start|>), capped in length, and only ever
  appear inside user messages; context values are quoted. Only the context keys the persona declares
  reach the model. Nothing a client sends can change the system prompt.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from npcserver.backends.base import ChatMessage
from npcserver.conversation.knowledge import in_person
from npcserver.personas import Action, Persona

MAX_PLAYER_CHARS = 300
MAX_HISTORY_CHARS = 400
MAX_CONTEXT_VALUE_CHARS = 80
NOTHING_SAID = "..."  # the player's line of a turn in which the player said nothing

# Role and turn markers of common chat templates (ChatML, Llama, Gemma, Mistral): a player who types
# them must not be able to open a new system turn.
_TEMPLATE_MARKERS = re.compile(
    r"<\|[^|<>]{0,40}\|>|<\|+|\|+>|</?s>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>",
    re.IGNORECASE,
)
_SPACES = re.compile(r"\s+")


def clean_text(text: str, limit: int) -> str:
    """One line of plain text: no control characters, template markers or runs of spaces; at most `limit` characters."""
    text = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in str(text))
    text = _TEMPLATE_MARKERS.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > limit:
        cut = text[:limit]
        text = (cut.rsplit(" ", 1)[0] if " " in cut[limit // 2 :] else cut).rstrip() + "..."
    return text


def quote_value(value: Any, limit: int = MAX_CONTEXT_VALUE_CHARS) -> str:
    """A game-context value as a quoted phrase: "a rusty sword"."""
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, Mapping):
        text = ", ".join(f"{k}: {v}" for k, v in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    return '"' + clean_text(text, limit).replace('"', "'") + '"'


def system_prompt(persona: Persona) -> str:
    parts = [
        f"Your name is {persona.name}. You are {persona.role}. {persona.description}",
        f"You speak like this: {persona.speaking_style}",
    ]
    if persona.facts:
        parts.append("You know: " + " ".join(_sentence(f) for f in persona.facts))
    if persona.forbidden_topics:
        parts.append(f"You never talk about {' or '.join(persona.forbidden_topics)}.")
    parts.append(f"Reply as {persona.name} in one or two short sentences, under {persona.max_reply_words} words.")
    return "\n".join(parts)


def persona_prefix(persona: Persona) -> list[ChatMessage]:
    """The part of every prompt that depends only on the persona (identical every turn).

    Forbidden topics get a worked example of the deflection: a small model follows an example far
    more reliably than a rule.
    """
    messages = [ChatMessage("system", system_prompt(persona))]
    for example in persona.example_lines:
        messages.append(ChatMessage("user", example.player))
        messages.append(ChatMessage("assistant", example.npc))
    if persona.deflection:
        for topic in persona.forbidden_topics[:2]:
            messages.append(ChatMessage("user", f"Tell me about {topic}."))
            messages.append(ChatMessage("assistant", persona.deflection))
    return messages


def context_note(persona: Persona, context: Mapping[str, Any] | None) -> str:
    """The persona's declared context keys, phrased as the persona file says, values quoted."""
    if not context:
        return ""
    sentences = []
    for key in persona.context_keys:
        value = context.get(key.key)
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            continue
        sentences.append(key.render(quote_value(value)))
    return " ".join(sentences)


def remembered(history: Sequence[tuple[str, str]], most: int) -> list[tuple[str, str]]:
    """The exchanges a turn's prompt shows: at most `most`, the newest, old ones dropped in blocks.

    A window sliding by one exchange a turn changes the start of every prompt, so the LLM's cached
    state of the previous prompt is useless and each turn prefills the whole history again (~250 ms
    for 4 exchanges on a 2-core CPU). Dropping half a window at a time keeps the start fixed for
    several turns: the prompt shows between most - most // 2 + 1 and `most` exchanges.
    """
    if most <= 0 or not history:
        return []
    if len(history) <= most:
        return list(history)
    block = max(1, most // 2)
    first = -(-(len(history) - most) // block) * block  # drop whole blocks until at most `most` remain
    return list(history[first:])


def build_messages(
    persona: Persona,
    history: Sequence[tuple[str, str]],
    context: Mapping[str, Any] | None,
    player_text: str,
    facts: Sequence[str] = (),
    doing: Action | None = None,
) -> list[ChatMessage]:
    """The chat for one turn. `history` holds earlier (player, npc) exchanges, oldest first; `facts`
    are the persona's facts that bear on the line (`knowledge.KnowledgeIndex`), said right after it,
    where a small model attends (and after the cached prefix, so the prefix cache still pays);
    `doing` is the action this turn carries out, if any."""
    messages = persona_prefix(persona)
    for player, npc in remembered(history, persona.history_turns):
        player, npc = clean_text(player, MAX_HISTORY_CHARS), clean_text(npc, MAX_HISTORY_CHARS)
        if player and npc:  # a greeting (no player line) would break the user/assistant alternation
            messages.append(ChatMessage("user", player))
            messages.append(ChatMessage("assistant", npc))
    line = clean_text(player_text, MAX_PLAYER_CHARS) or NOTHING_SAID
    note = context_note(persona, context)
    text = f"[{note}]\n{line}" if note else line
    if facts:
        text += "\n" + fact_note(persona, facts)
    if doing is not None and doing.confirm is None:  # with a confirm line, the reply starts with it instead
        text += "\n" + action_note(persona, doing)
    messages.append(ChatMessage("user", text))
    return messages


def action_note(persona: Persona, action: Action) -> str:
    """What the NPC is doing this turn (the game carries it out), for the reply to agree with."""
    what = action.means.split(";")[0].strip().rstrip(".")
    return f"(You agree and do it now: {in_person(persona, what, 'second')}.)"


def event_line(event: str) -> str:
    """What the model reads for a game event, in place of the player's line: quoted data, like context."""
    return f"[Just now: {quote_value(event, MAX_PLAYER_CHARS)}]"


def fact_note(persona: Persona, facts: Sequence[str]) -> str:
    """The facts for this turn in the NPC's own words, for the model to answer from."""
    return "(" + " ".join(_sentence(in_person(persona, fact, "first")) for fact in facts) + ")"


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text[-1:] in ".!?" else text + "."


_STOPWORDS = frozenset(
    [
        "the",
        "a",
        "an",
        "of",
        "in",
        "on",
        "at",
        "to",
        "and",
        "or",
        "about",
        "for",
        "with",
        "from",
        "his",
        "her",
        "their",
        "my",
        "your",
        "our",
        "its",
        "this",
        "that",
        "these",
        "those",
        "any",
    ]
)
_WORD = re.compile(r"[a-z0-9']+")


def _content_words(text: str) -> set[str]:
    return {w.rstrip("s") for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 2}


def deflection_for(persona: Persona, player_text: str) -> str | None:
    """The persona's deflection line when the player's line names a forbidden topic, else None.

    A 135M model does not reliably obey "never talk about X", so the server can answer such a line
    with the designer's own deflection instead of asking the model. A topic is named when every
    content word of it appears in the line ("the old mine" matches "what's in the old mines?").
    """
    if not persona.deflection:
        return None
    return persona.deflection if any(names_topic(topic, player_text) for topic in persona.forbidden_topics) else None


def names_topic(topic: str, text: str) -> bool:
    """Whether the text names the topic: every content word of it appears ("the old mine" in "old mines")."""
    words = _content_words(topic)
    return bool(words) and words <= _content_words(text)
