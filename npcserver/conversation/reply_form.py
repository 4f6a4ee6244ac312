"""Is a reply in form for a spoken NPC line? The one definition that `personas test` and the dialogue
benchmark score by: 1-3 sentences, within the persona's word cap, no stage directions, speaker
labels, emoji, markup or loops, not parroting the player, never stepping out of character."""

from __future__ import annotations

import functools
import re

from npcserver.conversation.claims import normalise_for_matching
from npcserver.personas import Persona

_SENTENCE = re.compile(r"[^.!?…]+[.!?…]*")
_STAGE = re.compile(r"\*[^*]*\*|\([^)]*\)|\[[^\]]*\]")
_LABEL = re.compile(r"(?:^|[.!?]\s+)([A-Z][\w' ]{0,30}):\s")
_MARKUP = re.compile(r"[#*_`<>{}|~]|https?://")
_EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")
_OUT_OF_CHARACTER = re.compile(
    r"\b(?:as an ai|language model|assistant|chatbot|i am an ai|i'm an ai|openai|prompt|roleplay|role-play|in character)\b",
    re.IGNORECASE,
)


def form_problems(persona: Persona, player_line: str, reply: str) -> list[str]:
    """What is wrong with the reply's form (empty: in form)."""
    problems = []
    text = reply.strip()
    if not text:
        return ["empty reply"]
    sentences = [s for s in _SENTENCE.findall(text) if re.search(r"\w", s)]
    if len(sentences) > 3:
        problems.append(f"{len(sentences)} sentences (at most 3)")
    words = len(text.split())
    if words > persona.max_reply_words:
        problems.append(f"{words} words (cap {persona.max_reply_words})")
    if _STAGE.search(text):
        problems.append("stage direction")
    if _LABEL.search(text):
        problems.append("speaker label")
    if _EMOJI.search(text):
        problems.append("emoji")
    if _MARKUP.search(text):
        problems.append("markup")
    if _OUT_OF_CHARACTER.search(text):
        problems.append("out of character")
    normal = normalise_for_matching(text).split()
    trigrams = [tuple(normal[i : i + 3]) for i in range(len(normal) - 2)]
    if len(trigrams) - len(set(trigrams)) >= 2 or len({s.strip().lower() for s in sentences}) < len(sentences):
        problems.append("loop")
    if echoes(text, player_line, persona.facts):
        problems.append("parrots the player")
    return problems


def echoes(reply: str, player_line: str, facts: tuple[str, ...] = ()) -> bool:
    """The reply says the player's words back: four in a row of the line, or opens with three of them
    ("Riding out north," to "I'm riding out north tomorrow"). Words a fact has too are an answer, not
    an echo ("Who is the captain of the guard?" -> "The captain of the guard is Dame Elsbeth.")."""
    said = normalise_for_matching(player_line).split()
    mine = normalise_for_matching(reply).split()
    known = _normalised_facts(facts)

    def copied(gram: tuple[str, ...]) -> bool:
        return f" {' '.join(gram)} " not in known

    fours = {tuple(said[i : i + 4]) for i in range(len(said) - 3)}
    threes = {tuple(said[i : i + 3]) for i in range(len(said) - 2)}
    if any((gram := tuple(mine[i : i + 4])) in fours and copied(gram) for i in range(len(mine) - 3)):
        return True
    return len(mine) >= 3 and tuple(mine[:3]) in threes and copied(tuple(mine[:3]))


@functools.lru_cache(maxsize=64)
def _normalised_facts(facts: tuple[str, ...]) -> str:
    # once per persona version, not once per clause checked
    return " " + " ".join(normalise_for_matching(fact) for fact in facts) + " "
