"""Where a player's line asks the NPC to do something now ("Sell me a lantern", "could u fix it",
"One ale, please", "Here's the toll") rather than asking about it ("How much is a lantern?", "Do
you sell maps?"), telling of the past ("I stayed here last summer"), supposing ("If I get bitten...")
or declining ("No thanks"). Pure text, no I/O.

A sentence encoder hears what a line is about far better than what it does: "How much is the toll?"
and "Here's the toll" are near neighbours to it. So which action a line is about is left to the
encoder (`actions`), and whether it asks for one at all is read here, from the grammar of English
requests, clause by clause: one clause that asks is enough ("The edge is notched, can you fix it?").
Lines come typed or from speech recognition, so chat and spoken forms ("gimme", "ill take", "u",
"pls") are read as their written words first, and run-on lines without punctuation are searched
for a request anywhere, unless a question word, "if" or a negation comes before it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from npcserver.conversation.text import NEGATION

_SPOKEN = [
    (r"\bgimme\b", "give me"), (r"\blemme\b", "let me"), (r"\bwanna\b", "want to"), (r"\bgonna\b", "going to"),
    (r"\bgotta\b", "got to"), (r"\bkinda\b", "kind of"), (r"\b(?:pls|plz|pleas)\b", "please"),
    (r"\bu\b", "you"), (r"\bya\b", "you"), (r"\bur\b", "your"), (r"\bcuz\b", "because"),
    (r"\bim\b", "i'm"), (r"\bid\b(?=\s+(?:like|love|want|prefer|rather))", "i'd"),
    (r"\bill\b(?=\s+(?:take|have|buy|pay|get|give|need|want|trade|sell|swap|go|just))", "i'll"),
    (r"\b(?:cant)\b", "can't"), (r"\b(?:dont)\b", "don't"), (r"\b(?:wont)\b", "won't"),
]  # fmt: skip
_NUMBER = r"(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|a\s+couple\s+of|a\s+few|some|another|a|an)"
_FILLERS = re.compile(
    r"^(?:(?:um+|uh+|er+|erm|hmm+|well|so|okay|ok|alright|all right|right|fine|yes|yeah|yep|aye|oh|look|listen|"
    r"hey|hi|hello|please|then|now|just|actually|and|but|great|good|deal|sure|perfect|excellent|honestly)\b[\s,.!-]*)+"
)
# verbs of service a request opens with ("Fix my sword", "Pour me an ale", "Let me through")
_SERVICE_VERBS = (
    r"give|sell|buy|purchase|order|bring|pour|serve|fetch|get|grab|hand|pass|open|unbar|unlock|let|allow|lift|raise|"
    r"fix|mend|repair|patch|sharpen|straighten|heal|tend|treat|bandage|help|cure|stitch|clean|look\s+at|see\s+to|"
    r"take|stable|keep|watch|feed|put|book|rent|make|forge|pack|wrap|find|pay|settle|trade|swap|save|do\s+it|"
    r"go\s+ahead|ring\s+me\s+up|set\s+me\s+up|part\s+with|sort\s+me\s+out"
)
_IMPERATIVE = rf"(?:(?:please\s+)?(?:{_SERVICE_VERBS})\b)"
# what a player asks to do themselves: "I'll take", "could I get", "mind if I buy"
_TRANSACTION = r"take|have|buy|purchase|order|get|grab|rent|book|pay|settle|trade|swap|sell|hire"
_NOUN_NEXT = r"(?!to\b|know\b|it\b|that\b|this\b|you\b)(?=[a-z0-9])"  # "I'd like a room", not "I'd like to know"
_WANTING = (
    rf"(?:(?:i|we)\s*(?:'ll|will|shall)\s+(?:just\s+|gladly\s+)?(?:{_TRANSACTION}|need|want)\b"  # "I'll take it"
    rf"|(?:i|we)\s*(?:'d|would|should)\s+(?:like|love|want|prefer)\s+(?:to\s+(?:{_SERVICE_VERBS}|{_TRANSACTION})\b|{_NOUN_NEXT})"
    rf"|(?:i|we)\s+(?:want|need|'m\s+after|am\s+after)\s+(?:to\s+(?:{_SERVICE_VERBS}|{_TRANSACTION})\b|{_NOUN_NEXT})"
    rf"|(?:i'?m|i\s+am)\s+going\s+to\s+(?:{_TRANSACTION})\b"
    r"|all\s+(?:i|we)\s+(?:want|need|ask\s+for)\b(?:\s+now)?(?:\s+is)?\s+(?=[a-z]))"
)
_ASKING_FOR = (
    r"(?:(?:can|could|would|will|may|might)\s+(?:you|someone|somebody|your\s+[a-z]+(?:\s+[a-z]+)?|the\s+[a-z]+)\s+"
    rf"(?:please\s+|just\s+|kindly\s+)?(?:{_SERVICE_VERBS})"  # "could you mend it", "can your boy take her"
    rf"|(?:can|could|may|might)\s+(?:i|we)\s+(?:please\s+|just\s+)?(?:{_TRANSACTION}|come|go\s+in|pass|enter|stay|sleep|borrow)"
    rf"|mind\s+if\s+(?:i|we)\s+(?:take|buy|pay|rent|book|order)"
    r"|(?:do\s+)?(?:you\s+)?want\s+to\s+(?:buy|take|have)"
    rf"|(?:grateful|obliged|thankful|appreciate\s+it)\s+if\s+you\s+(?:could|would|can|will)\s+(?:{_SERVICE_VERBS}))\b"  # "most grateful if you could mend it"
)
_HANDING = r"let\s+me\s+(?:get|have|buy|take|pay|grab|rent|order)\b|(?:trouble|bother)\s+you\s+for\b|(?:here'?s|here\s+is|here\s+are|here\s+you\s+go|there\s+you\s+go|take\s+(?:it|this|these|my))\b|(?:i'?ll|i\s+will)\s+(?:pay|give|trade|swap)\b"
_HURT = r"(?:i'?m|i\s+am|i've\s+been|i\s+got|got)\s+(?:hurt|injured|wounded|bleeding|sick|bit|bitten|cut|stabbed|poisoned|dying)\b"
_ORDER = rf"{_NUMBER}\s+(?:[a-z']+\s+){{0,3}}?[a-z']+(?:\s+(?:please|then|thanks))?$"  # "two ales", "three of them spices then"
# may open a clause only; what may come anywhere in a run-on line ("my axe is chipped could you mend it")
_AT_START = re.compile(rf"^(?:{_IMPERATIVE}|{_ORDER}|(?:want|need)\s+to\s+(?:{_TRANSACTION}|{_SERVICE_VERBS})\b)")  # "wanna sell u this"
_ANYWHERE = re.compile(rf"(?<![a-z'])(?:{_WANTING}|{_ASKING_FOR}|{_HANDING}|{_HURT})")
_QUESTION = re.compile(
    r"(?<![a-z'])(?:what|what's|whats|how|how's|when|where|where's|why|who|who's|which|whose|if|unless|whether)(?![a-z'])"
)
_QUESTION_START = re.compile(r"^(?:is|are|was|were|do|does|did|have|has)\b(?!\s+(?:you\s+)?want\s+to|\s+it\b)")
_NOT_NOW = re.compile(r"^(?:if|when|once|after|before|last|yesterday|no\b|not\b|nah|never)")
# asking to be told is a question, not a request: "could you tell me...", "I'd like to know"
_INFORMATION_WORDS = frozenset({"tell", "say", "explain", "describe", "know", "ask", "remember", "recommend", "think", "guess", "wonder"})
_INFORMATION_VERBS = re.compile(rf"^(?:{'|'.join(sorted(_INFORMATION_WORDS))})")


def written(line: str) -> str:
    """The line lowercased, with chat and spoken forms as their written words."""
    text = line.lower().replace("\u2019", "'")
    for pattern, words in _SPOKEN:
        text = re.sub(pattern, words, text)
    return text


def clauses(line: str) -> list[str]:
    """The line cut at sentence and clause marks (and at "and", "but", "so", "then"), without leading fillers."""
    parts = re.split(r"[.?!;:,\u2026]+|\s+-+\s+|\s+(?:and|but|so|then)\s+", written(line))
    return [text for part in parts if (text := _FILLERS.sub("", part.strip()).strip())]


_NOT_A_VERB = re.compile(
    r"^(?:i|i'?ll|i'?d|i'?m|i've|we|you|he|she|it|they|my|your|our|the|a|an|this|that|these|those|some|any|"
    r"can|could|would|will|may|might|shall|should|must|do|does|did|is|are|was|were|have|has|here'?s|there'?s|"
    r"what|how|when|where|why|who|which|if|no|not|one|two|three|after|before|then|here|\d+)$"
)


def opening_verbs(lines: Sequence[str]) -> frozenset[str]:
    """The words the clauses of a persona's own request lines open with ("Teach me a spell" ->
    teach): a line opening with one is an imperative too, whatever verbs the list here knows."""
    found = set()
    for line in lines:
        for clause in clauses(line):
            first = clause.split()[0] if clause.split() else ""
            if re.fullmatch(r"[a-z]{3,}", first) and not _NOT_A_VERB.match(first):
                found.add(first)
    return frozenset(found)


def _asks(clause: str, verbs: frozenset[str] = frozenset()) -> str | None:
    """The part of a clause from where it asks for something, or None."""
    if _NOT_NOW.match(clause) or _QUESTION_START.match(clause):
        return None
    first = clause.split()[0]
    if _AT_START.match(clause) or (first in verbs and first not in _INFORMATION_WORDS):
        return clause
    for match in _ANYWHERE.finditer(clause):
        before, rest = clause[: match.start()], clause[match.end() - 1 :]
        just_before = " ".join(before.split()[-2:])  # "I won't need", not "I can't sleep, let me get"
        if _QUESTION.search(before) or NEGATION.search(f"{just_before} {match.group(0)}") or _INFORMATION_VERBS.match(rest):
            continue  # "how much would you charge to...", "I won't need...", "could you tell me..."
        return clause[match.start() :]
    return None


def request_parts(line: str, verbs: frozenset[str] = frozenset()) -> list[str]:
    """Each clause of the line that asks for something, from where it asks ("could you mend it");
    empty when the line asks for nothing. "Please" with no question in the line asks too ("One ale,
    please"). `verbs`: more imperatives, as `opening_verbs` finds them in a persona's action lines."""
    parts = clauses(line)
    asking = [found for clause in parts if (found := _asks(clause, verbs)) is not None]
    if not asking and re.search(r"\bplease\b", written(line)) and parts and not any(
        _QUESTION.search(part) or _QUESTION_START.match(part) or _INFORMATION_VERBS.match(part) or _NOT_NOW.match(part)
        for part in parts
    ):
        asking = parts
    return asking


def not_supposed(line: str) -> str:
    """The line without its clauses that suppose, recall or decline ("If I bought two maps, would you
    ..." names no map to sell): where an action's arguments may be read."""
    return " ".join(clause for clause in clauses(line) if not _NOT_NOW.match(clause))


def asks_for_something(line: str, verbs: frozenset[str] = frozenset()) -> bool:
    return bool(request_parts(line, verbs))
