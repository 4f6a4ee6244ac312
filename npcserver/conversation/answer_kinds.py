"""What kind of answer a player's question wants, and what kinds a fact can give. Pure text, no I/O.

A sentence embedding of "I need something to split logs with, what's that cost?" is about as near
"A new axe costs 30 silver." as it is to any other fact: the words differ. But the question asks for
a price and only a few facts hold one. Question answering has used this "expected answer type" for
decades; here it is a small bonus in the fact lookup (`knowledge`), never a filter, so a question
the rules misread still finds its fact by meaning alone.
"""

from __future__ import annotations

import re

from npcserver.conversation.claims import COINS, DIRECTIONS, claims_of, words_to_digits

PRICE, TIME, DURATION, PERSON, PLACE, AMOUNT = "price", "time", "duration", "person", "place", "amount"

_ASKS = {
    PRICE: r"how much|\bcosts?\b|\bprices?\b|\bcharge|\bfee\b|\bpay\b|\bowe\b|run me|set me back|\bworth\b|\bcheap|\bdear\b|\bafford",
    DURATION: r"how long|since when|how many (?:years|days|weeks|months|hours)|how old\b|\bbeen\b[\w\s']*\b(?:long|a while)\b",
    TIME: r"\bwhen\b|what time|how (?:late|early|soon)|\buntil\b|\btill\b|\bopens?\b|\bclose[sd]?\b|\bshut\b|\bleav(?:e|ing)\b|\bhours\b",
    PERSON: r"\bwho(?:'s|m|se)?\b|\banyone\b|\banybody\b|\bsomeone\b|\bsomebody\b|\bwhat(?:'s| is) (?:her|his|the \w+'s) name\b",
    PLACE: r"\bwhere(?:'s| is)?\b|which way|what direction|\bheaded\b|\bheading\b|\bway to\b|\bget to\b|\bfind you\b|\blive\b",
    AMOUNT: r"how many\b",
}
_ASKED = {kind: re.compile(pattern, re.IGNORECASE) for kind, pattern in _ASKS.items()}

# the words a fact uses for a time of day or a day to come
_TIME_WORDS = re.compile(
    r"\b(?:dawn|dusk|sunrise|sunset|sundown|noon|midday|midnight|morning|evening|tonight|tomorrow|"
    r"week|weekend|o'clock|every (?:day|evening|morning|night))\b|\bat \d+\b|\b\d+ ?(?:am|pm)\b",
    re.IGNORECASE,
)
_DURATION_WORDS = re.compile(r"\b\d+ (?:years?|weeks?|days?|months?|hours?)\b|\bago\b|\bsince\b", re.IGNORECASE)
_PLACE_WORDS = re.compile(
    r"\b(?:in|at|behind|by|near|beside|from|to|on|over|across|beyond|inside|outside|past) the\b|"
    r"\b(?:road|hills?|river|city|town|village|square|market|mill|inn|forest|woods|gate)\b",
    re.IGNORECASE,
)
# a capitalised name right after one of these words names a person (or an animal with a name)
_PERSON_BEFORE = re.compile(
    r"\b(?:named|called|wife|husband|mother|father|son|daughter|brother|sister|grandfather|grandmother|"
    r"apprentice|captain|mayor|lord|lady|dame|sir|master|mistress|is|by)\s*,?\s+([A-Z][a-z]+)",
)

_NAME_THE_ROLE = re.compile(r"[A-Z][a-z]+ the [a-z]+\b")  # "Greta the blacksmith drinks here"


def asked_kinds(line: str) -> frozenset[str]:
    """The kinds of answer the line asks for ("What's the toll?" -> {price}); empty for small talk."""
    return frozenset(kind for kind, pattern in _ASKED.items() if pattern.search(line))


def given_kinds(fact: str) -> frozenset[str]:
    """The kinds of answer the fact holds ("The gate closes at sundown." -> {time, place})."""
    claims = claims_of(fact)
    digits = words_to_digits(fact)
    kinds: set[str] = set()
    if claims.coins & COINS and claims.numbers:
        kinds.add(PRICE)
    if _DURATION_WORDS.search(digits):
        kinds.add(DURATION)
    if _TIME_WORDS.search(digits):
        kinds.add(TIME)
    if claims.directions or _PLACE_WORDS.search(fact) or any(word in DIRECTIONS for word in fact.lower().split()):
        kinds.add(PLACE)
    if _PERSON_BEFORE.search(fact) or _NAME_THE_ROLE.match(fact):
        kinds.add(PERSON)
    if claims.numbers and not claims.coins:
        kinds.add(AMOUNT)
    return frozenset(kinds)
