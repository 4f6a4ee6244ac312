"""Which of a persona's declared emotes a reply's stage directions name. Pure text, no I/O.

"*smiles warmly*" names "smile", "(shakes her head)" names "shake_head": every word of the emote's
name appears in one direction, in any form (smile, smiles, smiling, smiled).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from npcserver.conversation.text import stage_directions

_WORD = re.compile(r"[a-z]+")
_MIN_STEM = 3  # "sing" is not "s" + "ing"


def _stem(word: str) -> str:
    """A crude English stem, enough for gesture verbs: nods/nodding/nodded -> nod, smiles/smiling -> smil."""
    if word.endswith("ies") and len(word) > _MIN_STEM + 1:
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > _MIN_STEM:
        word = word[:-1]
    if len(word) > _MIN_STEM and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]  # nodd -> nod
    return word


def emotes_named(text: str, declared: Sequence[str]) -> list[str]:
    """The declared emotes that the stage directions in `text` name, in order, each once."""
    found: list[str] = []
    for direction in stage_directions(text):
        stems = {_stem(word) for word in _WORD.findall(direction.lower())}
        for emote in declared:
            if emote not in found and all(_stem(part) in stems for part in emote.split("_")):
                found.append(emote)
    return found
