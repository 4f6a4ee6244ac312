"""What a line of text claims: numbers, coins, compass directions and names. Pure text, no I/O.

A 135M model invents prices and names ("Three gold, I reckon."); a reply may only state claims its
sources hold. This module is the one definition of a "claim" and of how number words read
("three silver" is the claim 3 + silver), shared by the reply check (`grounding`) and the persona
tests and benchmark that score replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "dozen": 12, "thousand": 1000,
}  # fmt: skip
COINS = frozenset({"silver", "gold", "copper", "coin", "coins", "crown", "crowns", "penny", "pennies", "shilling", "shillings"})
DIRECTIONS = {"north": "north", "northern": "north", "south": "south", "southern": "south",
              "east": "east", "eastern": "east", "west": "west", "western": "west"}  # fmt: skip
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+")
_NUMBER_WORD = "|".join(sorted(NUMBER_WORDS, key=len, reverse=True))
_NUMBER_RUN = re.compile(rf"\b(?:{_NUMBER_WORD})(?:[ -](?:{_NUMBER_WORD}))*\b", re.IGNORECASE)


# "one" is a number only before a unit ("one silver", "one night"), not in "the one" or "lucky one"
_UNITS = COINS | {"night", "nights", "day", "days", "week", "weeks", "year", "years", "hour", "hours", "bowl", "mug", "pinch"}


def words_to_digits(text: str) -> str:
    """"Thirty-five silver" -> "35 silver"; "a dozen" -> "a 12". Case of other words is kept."""

    def value(match: re.Match[str]) -> str:
        if match.group(0).lower() == "one":
            following = re.match(r"\s+([a-z]+)", text[match.end() :], re.IGNORECASE)
            if following is None or following.group(1).lower() not in _UNITS:
                return match.group(0)
        total, current = 0, 0
        for word in re.split(r"[ -]", match.group(0).lower()):
            number = NUMBER_WORDS[word]
            if number in (100, 1000):
                current = max(current, 1) * number
                if number == 1000:
                    total, current = total + current, 0
            else:
                current += number
        return str(total + current)

    return _NUMBER_RUN.sub(value, text)


@dataclass(frozen=True, slots=True)
class Claims:
    numbers: frozenset[str]
    coins: frozenset[str]
    directions: frozenset[str]
    names: frozenset[str]  # capitalised words not opening a sentence, lower-cased

    def __bool__(self) -> bool:
        return bool(self.numbers or self.coins or self.directions or self.names)


def claims_of(text: str) -> Claims:
    text = words_to_digits(text)
    numbers, coins, directions, names = set(), set(), set(), set()
    sentence_start = True
    for match in _WORD.finditer(text):
        word = match.group(0)
        lower = word.lower()
        if word.isdigit():
            numbers.add(word)
        elif lower in COINS:
            coins.add(lower.rstrip("s") if lower.endswith("s") and lower not in ("pennies",) else lower)
        elif lower in DIRECTIONS:
            directions.add(DIRECTIONS[lower])
        elif word[0].isupper() and not sentence_start and word != "I" and not word.startswith("I'"):
            names.add(lower.removesuffix("'s"))
        # the next word opens a sentence when only spaces and closing quotes follow a sentence end
        between = text[match.end() : match.end() + 3]
        sentence_start = bool(re.match(r"[.!?…:]", between))
    return Claims(frozenset(numbers), frozenset(coins), frozenset(directions), frozenset(names))


def vocabulary(*texts: str) -> frozenset[str]:
    """Every word of the texts, lower-cased, with number words as digits: what a claim may come from."""
    found: set[str] = set()
    for text in texts:
        for word in _WORD.findall(words_to_digits(text)):
            lower = word.lower().removesuffix("'s")
            found.add(lower)
            found.add(DIRECTIONS.get(lower, lower))
            if lower.endswith("s"):
                found.add(lower[:-1])
    return frozenset(found)


def unsupported(claims: Claims, known: frozenset[str]) -> list[str]:
    """The claims no source word backs, in a stable order (empty: the text says nothing new)."""
    missing = [n for n in sorted(claims.numbers) if n not in known]
    missing += [c for c in sorted(claims.coins) if c not in known and not (c == "coin" and known & COINS)]
    missing += [d for d in sorted(claims.directions) if d not in known]
    missing += [n for n in sorted(claims.names) if n not in known]
    return missing


_MATCH_WORD = re.compile(r"[a-z0-9]+")


def normalise_for_matching(text: str) -> str:
    """Lower case, number words as digits, punctuation as single spaces: " three  silver! " -> "3 silver"."""
    return " ".join(_MATCH_WORD.findall(words_to_digits(text).lower()))


def says(text: str, pattern: str) -> bool:
    """Whether `text` contains `pattern`: whole words, any case, number words equal to digits, or a
    regular expression written between slashes (matched on the text as written, any case)."""
    if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
        return re.search(pattern[1:-1], text, re.IGNORECASE) is not None
    wanted = normalise_for_matching(pattern)
    if not wanted:
        return False
    return re.search(rf"(?<![a-z0-9]){re.escape(wanted)}s?(?![a-z0-9])", normalise_for_matching(text)) is not None
