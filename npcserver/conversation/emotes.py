"""Which of a persona's declared emotes a reply's stage directions name. Pure text, no I/O.

"*smiles warmly*" names "smile", "(shakes her head)" names "shake_head": every word of the emote's
name appears in one direction, in any form (smile, smiles, smiling, smiled).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from npcserver.conversation.text import stage_directions, word_stem

_WORD = re.compile(r"[a-z]+")


def emotes_named(text: str, declared: Sequence[str]) -> list[str]:
    """The declared emotes that the stage directions in `text` name, in order, each once."""
    found: list[str] = []
    for direction in stage_directions(text):
        stems = {word_stem(word) for word in _WORD.findall(direction.lower())}
        for emote in declared:
            if emote not in found and all(word_stem(part) in stems for part in emote.split("_")):
                found.append(emote)
    return found
