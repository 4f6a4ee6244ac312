"""Which of a persona's facts bear on the player's line, and how the NPC says a fact itself.

A 135M model does not find the one fact that answers a question in a system prompt of ten; it
uses a fact put next to the question far more often (see README, "Grounded replies"). So each
turn looks up the facts nearest the player's line with a sentence-embedding model and puts them
into the turn, after the cached persona prompt. Facts are indexed clause by clause ("A room costs
3 silver; a bowl of stew costs 1 silver." answers two questions) and in the second person ("Your
late husband Ulf built the forge"), the way a player asks ("Did you build this forge?").

The index is built once per persona version; a lookup costs one embedding of the line (for the
default, MiniLM-L6 and MPNet averaged, ~50 ms on one AVX-512 CPU thread, ~90 ms on AVX2) and runs
on the embedder's own worker, never on the event loop.
Forbidden topics are indexed too, so "what's in your basement?" can get the cellar's deflection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from npcserver.backends.base import SentenceEmbedder
from npcserver.conversation.answer_kinds import asked_kinds, given_kinds
from npcserver.conversation.claims import claims_of
from npcserver.conversation.text import NEGATION
from npcserver.conversation.wordnet import NounBridges
from npcserver.personas import Persona

# Measured on loadtest/dialogue_questions.toml (75 fact questions, 20 small-talk lines) with MiniLM-L6
# alone; the mean of MiniLM's and MPNet's cosines sits on the same scale, and these bars were kept for it:
# a fact question's best fact scores 0.23 at p10 and 0.38 at p50; small talk reaches 0.3-0.5 when
# it names something a fact mentions ("Quiet day at the gate?" -> when the gate closes). Saying a
# near fact to small talk costs little; missing the fact a question asked for is the failure, so the
# bar is low: from FACT_CONFIDENT (FACT_QUESTION for a question) a reply must state the best fact.
FACT_SHOWN = 0.2
FACT_CONFIDENT = 0.3
FACT_QUESTION = 0.25
FACTS_IN_PROMPT = 2
WHOLE_FACT_SHARE = 0.85  # a whole fact of several parts scoring this share of its best part is said whole
# A line nearer a forbidden topic than this, and nearer it than any fact, gets the deflection. Being
# nearer the topic than every fact is the strong test; this bar only keeps out lines near nothing. On
# both question sets, 0.25 finds 22 of 35 forbidden-topic lines (0.33: 16) and deflects 4 of 195 others
# (0.33: 3).
TOPIC_FORBIDDEN = 0.25
# The fact asked for and the runner-up within this of it: the encoder cannot tell them apart ("what do
# you buy?" is as near "Pip sells rope..." as "Pip buys old coins..."), so the NPC says both, when
# the runner-up holds no number (a price or count is another question's answer) and both fit the cap.
NEAR_TIE = 0.08
# added to a fact's score when it holds the kind of answer the line asks for (a price, a time, a
# name...): enough to lift the one fact that answers "what's that cost?" over the bar when the
# words alone leave it at 0.2, too little to beat a fact that matches by meaning
ANSWER_KIND_BONUS = 0.06

_QUESTION_OPENERS = re.compile(
    r"^(?:\W*)(?:what|what's|whats|who|who's|whom|whose|where|where's|when|why|how|how's|which|is|are|was|were|"
    r"do|does|did|can|could|will|would|should|shall|may|have|has|any|got|tell|know)\b",
    re.IGNORECASE,
)


def is_question(line: str) -> bool:
    """A question or a request for information ("Tell me about...", "I need rope, how much?")."""
    return "?" in line or _QUESTION_OPENERS.match(line.strip()) is not None or " how much" in line.lower()


@dataclass(frozen=True, slots=True)
class FactMatch:
    fact: int  # index into persona.facts
    clause: str  # the clause of that fact nearest the line, as written
    score: float


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the knowledge index found for one player line."""

    matches: tuple[FactMatch, ...]  # best first, at most FACTS_IN_PROMPT, each scoring >= FACT_SHOWN
    must_state: FactMatch | None  # the fact the reply has to state (the line clearly asks for it)
    forbidden_topic: str | None  # a forbidden topic the line is about
    also_state: FactMatch | None = None  # a near tie with must_state, said after it (see NEAR_TIE)

    @property
    def facts(self) -> tuple[str, ...]:
        return tuple(match.clause for match in self.matches)

    @property
    def to_state(self) -> tuple[FactMatch, ...]:
        """The facts the reply has to state, in the order they are said."""
        return tuple(match for match in (self.must_state, self.also_state) if match is not None)


NOTHING_FOUND = Lookup((), None, None)


def clauses_of(fact: str) -> list[str]:
    """'A costs 3; b costs 1.' -> ['A costs 3.', 'b costs 1.']: each part of a fact joined by ';'."""
    parts = [part.strip().rstrip(".") for part in fact.split(";") if part.strip()]
    return [part[0].upper() + part[1:] + "." for part in parts] if parts else [fact]


# how a player calls an NPC: "Healer, ...", "..., innkeeper, what's the word?", "Been here long, Sergeant?"
_VOCATIVE = re.compile(r"^\W*(?P<first>[A-Za-z]+)\s*,\s*|,\s*(?P<inner>[A-Za-z]+)\s*(?P<end>[,.!?])")
_ADDRESS_WORDS = frozenset({"sir", "madam", "maam", "ma'am", "friend", "mate", "lad", "lass", "miss", "mister", "master",
                            "mistress", "sergeant", "captain", "boss", "granny", "grandma", "old-timer", "love", "dear"})
_NOT_ADDRESS = frozenset({"the", "a", "an", "of", "in", "at", "with", "and", "old", "village", "market", "square", "stall", "gate"})


def _name_forms(persona: Persona) -> list[str]:
    forms = {persona.name, *persona.name.split()}
    return sorted((form for form in forms if len(form) > 1), key=len, reverse=True)


def _base_verb(verb: str) -> str:
    """Third person singular -> the form after "I": forges -> forge, carries -> carry, is -> am."""
    lower = verb.lower()
    irregular = {"is": "am", "has": "have", "does": "do", "was": "was", "goes": "go"}
    if lower in irregular:
        return irregular[lower]
    if lower.endswith("ies") and len(lower) > 4:
        return verb[:-3] + "y"
    if re.search(r"(?:ch|sh|ss|x|z|o)es$", lower):
        return verb[:-2]
    if lower.endswith("s") and not lower.endswith("ss"):
        return verb[:-1]
    return verb


_AFTER_YOU = {"am": "are", "was": "were"}  # "you" takes the "I" form but for these two


def in_person(persona: Persona, text: str, person: str) -> str:
    """A fact about the persona re-said in the first person ("I", as the NPC says it) or the second
    ("you", as the player asks): "Greta's iron comes from..." -> "My iron comes from..."."""
    me, my = ("I", "my") if person == "first" else ("you", "your")
    names = "|".join(re.escape(form) for form in _name_forms(persona))

    def subject_verb(match: re.Match[str]) -> str:  # "Pip sells" / "She never eats" -> "I sell" / "you never eat"
        adverb, verb = match.group(1), _base_verb(match.group(2))
        if person != "first":
            verb = _AFTER_YOU.get(verb.lower(), verb)
        return f"{me} {adverb + ' ' if adverb else ''}{verb}"

    subject = rf"\b(?:{names}|she|he)\b(?!')" if names else r"\b(?:she|he)\b(?!')"
    text = re.sub(subject + r"\s+(?:(not|never|always|also|only)\s+)?([a-z]+)", subject_verb, text, flags=re.IGNORECASE)
    if names:
        text = re.sub(rf"\b(?:{names})'s\b", my, text)
        text = re.sub(rf"\b(?:{names})\b", me, text)
    text = re.sub(r"\b(?:her|his)\b", my, text, flags=re.IGNORECASE)
    text = re.sub(r"\b(?:herself|himself)\b", "myself" if person == "first" else "yourself", text, flags=re.IGNORECASE)
    return text[:1].upper() + text[1:] if text else text


@dataclass(frozen=True, slots=True)
class IndexLine:
    """One line of a persona's fact index: a clause of a fact, or a fact of several clauses whole."""

    fact: int  # index into persona.facts
    shown: str  # as written: what the prompt and the reply get
    embedded: str  # in the second person, as a player asks: what the encoder compares with the line


def index_lines(persona: Persona) -> list[IndexLine]:
    """What the index holds for a persona's facts (also what `training/lookup_adapter.py` trains on)."""
    clauses = [(index, clause) for index, fact in enumerate(persona.facts) for clause in clauses_of(fact)]
    # a fact with several clauses is also indexed whole: "what does food cost here?" may match the whole best
    whole = [(index, fact) for index, fact in enumerate(persona.facts) if len(clauses_of(fact)) > 1]
    return [IndexLine(index, text, in_person(persona, text, "second")) for index, text in clauses + whole]


class KnowledgeIndex:
    """The persona's facts and forbidden topics as unit vectors, for one persona version."""

    def __init__(self, persona: Persona, embedder: SentenceEmbedder) -> None:
        self.persona = persona
        self._embedder = embedder
        lines = index_lines(persona)
        self._owners = [line.fact for line in lines]
        self._shown = [line.shown for line in lines]
        self._vectors = embedder.embed([line.embedded for line in lines]) if lines else np.zeros((0, 1), dtype=np.float32)
        self._kinds = [given_kinds(text) for text in self._shown]
        self._role_words = frozenset(re.findall(r"[a-z]+", persona.role.lower())) - _NOT_ADDRESS
        # in the second person, as the facts are: "his suppliers" is asked as "who sells to you?"
        asked_topics = [_as_written(topic, in_person(persona, topic, "second")) for topic in persona.forbidden_topics]
        topics = [f"Tell me about {topic}." for topic in asked_topics] + [f"What about {topic}?" for topic in asked_topics]
        self._topic_vectors = embedder.embed(topics) if topics else np.zeros((0, 1), dtype=np.float32)
        self._bridges = NounBridges(persona.facts, {form.lower() for form in _name_forms(persona)})

    def query_text(self, line: str) -> str:
        """What is embedded for the line: the line without its address, and the facts' own words for
        the nouns it names differently ("... tie up my old nag? (horse)")."""
        line = self._without_address(line)
        fact_words = self._bridges.fact_words_for(line)
        return f"{line} ({', '.join(fact_words)})" if fact_words else line

    def lookup(self, line: str) -> Lookup:
        """The facts nearest the line (blocking: one embedding)."""
        if not line.strip() or (not self._shown and not self.persona.forbidden_topics):
            return NOTHING_FOUND
        query = self._embedder.embed([self.query_text(line)])[0]
        topic, topic_score = None, -1.0
        if len(self._topic_vectors):
            topic_scores = self._topic_vectors @ query
            topic_score = float(topic_scores.max())
            if topic_score >= TOPIC_FORBIDDEN:
                topic = self.persona.forbidden_topics[int(topic_scores.argmax()) % len(self.persona.forbidden_topics)]
        if not self._shown:
            return Lookup((), None, topic)
        scores = self._vectors @ query
        if topic is not None and float(scores.max()) >= topic_score:
            topic = None  # "which herbs ease pain?" is nearer a fact than the topic "poisons"
        wanted = asked_kinds(line)
        if wanted:
            scores = scores + ANSWER_KIND_BONUS * np.array([bool(wanted & kinds) for kinds in self._kinds])
        best_per_fact: dict[int, FactMatch] = {}
        for row in np.argsort(-scores):
            owner, score = self._owners[row], float(scores[row])
            if owner not in best_per_fact:
                best_per_fact[owner] = FactMatch(owner, self._shown[row], score)
            elif ";" in self._shown[row] and (score >= WHOLE_FACT_SHARE * best_per_fact[owner].score
                                              or NEGATION.search(best_per_fact[owner].clause.lower())):
                # nearly as near as its best part, or that part says what the NPC does not do: the parts
                # belong together ("I do not forge armour; for armour, go to Karsk": a refusal alone
                # leaves out where to go instead), say the whole fact
                best_per_fact[owner] = FactMatch(owner, self._shown[row], best_per_fact[owner].score)
        ranked = sorted(best_per_fact.values(), key=lambda match: -match.score)
        shown = tuple(match for match in ranked[:FACTS_IN_PROMPT] if match.score >= FACT_SHOWN)
        best = shown[0] if shown else None
        asked = best is not None and (
            best.score >= FACT_CONFIDENT or (best.score >= FACT_QUESTION and is_question(line))
        )
        if not asked:
            return Lookup(shown, None, topic)
        return Lookup(shown, best, topic, self._near_tie(shown))

    def _near_tie(self, shown: tuple[FactMatch, ...]) -> FactMatch | None:
        if len(shown) < 2 or shown[1].score < shown[0].score - NEAR_TIE or claims_of(shown[1].clause).numbers:
            return None
        words = sum(len(spoken_fact(self.persona, match).split()) for match in shown[:2])
        return shown[1] if words <= self.persona.max_reply_words else None

    def _without_address(self, line: str) -> str:
        """The line without the words that only address the NPC ("Healer, where's your house?"): the
        name or the job draws every fact that mentions them, whatever the question is."""
        for form in _name_forms(self.persona):
            line = re.sub(rf",?\s*\b{re.escape(form)}\b", "", line)
        return _VOCATIVE.sub(self._unless_role, line)

    def _unless_role(self, match: re.Match[str]) -> str:
        word = (match.group("first") or match.group("inner")).lower()
        if word in _ADDRESS_WORDS or word in self._role_words:
            return match.group("end") or ""
        return match.group(0)


def _as_written(original: str, rewritten: str) -> str:
    """`rewritten` with the first letter cased as in `original` (in_person capitalises a sentence)."""
    return (rewritten[:1].lower() + rewritten[1:]) if original[:1].islower() else rewritten


def spoken_fact(persona: Persona, match: FactMatch) -> str:
    """The fact as the NPC says it: first person, one sentence."""
    sentence = in_person(persona, match.clause, "first").strip()
    return sentence if sentence[-1:] in ".!?" else sentence + "."
