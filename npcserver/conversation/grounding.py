"""Keeping a reply to what the persona knows, clause by clause, before anything is spoken. Pure.

The model writes; this decides what of it may be said:
- a clause that claims a number, coin, direction or name that neither the fact the line asks for,
  the persona's own texts, the player's line nor the game context holds is never spoken ("Three
  gold, I reckon." when the fact says 3 silver): the reply stops there, and the fact the line asked
  about is said instead;
- when the line clearly asked for a fact (`Lookup.must_state`) and the reply's first sentence did not
  state it, the model stops and the NPC says the fact itself, in the first person.
So a wrong fact is never worse than a missing one, and a missing one is added.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from npcserver.conversation.claims import claims_of, normalise_for_matching, unsupported, vocabulary
from npcserver.conversation.knowledge import FactMatch, Lookup, spoken_fact
from npcserver.conversation.prompt import names_topic
from npcserver.conversation.reply_form import echoes
from npcserver.personas import Persona

_SENTENCE_END = (".", "!", "?", "…")
MAX_SENTENCES = 3


def states(text: str, fact_clause: str, speaker: str = "") -> bool:
    """Whether `text` says what the fact clause says: every number, coin, direction and name of it
    (the speaker's own name aside: the NPC says "I"), or, for a fact without such claims, most of
    its content words."""
    wanted = claims_of(fact_clause)
    own = {word.lower() for word in speaker.split()}
    wanted = replace(wanted, names=frozenset(name for name in wanted.names if name not in own))
    said = vocabulary(text)
    if wanted:
        return not unsupported(wanted, said)
    words = [w for w in normalise_for_matching(fact_clause).split() if len(w) > 3]
    if not words:
        return True
    return sum(w in said or w.rstrip("s") in said for w in words) >= max(1, (len(words) + 1) // 2)


@dataclass
class ReplyCheck:
    """The check of one reply: feed it each clause before it is spoken."""

    persona: Persona
    lookup: Lookup
    player_text: str
    context_text: str = ""
    said: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # clauses held back, for logs and benchmarks
    corrected: bool = False  # the fact was said by the check, not by the model

    def __post_init__(self) -> None:
        # Asked for one fact, a reply may state that one only ("A new axe costs 30 silver" is no answer
        # to "what does a repair cost?", nor is the "thirty years" of the persona's story). Unsure of
        # the fact asked for, it may state no fact's values: a true price for the wrong question is wrong.
        if self.lookup.must_state:
            clauses = tuple(match.clause for match in self.lookup.to_state)
            sources: tuple[str, ...] = (self.persona.name, self.persona.role, *clauses)
        else:
            sources = _identity(self.persona)
        self._known = vocabulary(*sources, self.player_text, self.context_text)

    def accept(self, clause: str) -> tuple[list[str], bool]:
        """The clauses to speak in place of `clause`, and whether the model should stop writing."""
        if echoes(clause, self.player_text, self.persona.facts):  # "Pour me one of your ales, friend."
            self.dropped.append(clause)
            return [], False
        if _repeats(clause, self.said) or any(names_topic(topic, clause) for topic in self.persona.forbidden_topics) or (
            _sentences(self.said) >= MAX_SENTENCES and self.said[-1].rstrip().endswith(_SENTENCE_END)
        ):  # the model loops ("...2 copper. You are a mug of ale."), wanders onto a forbidden topic, or is done
            self.dropped.append(clause)
            return self._with_fact(), True
        claims = claims_of(clause)
        if not self.lookup.matches:  # small talk: "Good day, Traveller" names no one the facts know
            claims = replace(claims, names=frozenset())
        if unsupported(claims, self._known):
            self.dropped.append(clause)
            return self._with_fact(), True
        need = self.lookup.must_state
        unsaid = self._unsaid()
        if unsaid:
            # the fact must fit under the word cap after what the model said: say it now if it would not
            fact_words = sum(len(spoken_fact(self.persona, match).split()) for match in unsaid)
            if _words(self.said) + len(clause.split()) + fact_words > self.persona.max_reply_words:
                return self._with_fact(), True
        if self.said and _words(self.said) + len(clause.split()) > self.persona.max_reply_words:
            self.dropped.append(clause)
            return [], True
        self.said.append(clause)
        finished_sentence = clause.rstrip().rstrip("\"'”)").endswith(_SENTENCE_END)
        if finished_sentence and need is not None:
            # a reply to a question about a fact is that fact: it stops at the sentence that has it
            return [clause, *self._with_fact()], True
        return [clause], False

    def lead(self) -> str | None:
        """The fact the line asked for, to say before the model writes anything (None: nothing asked).
        The model then only goes on from it, so the answer comes first and at TTS speed."""
        said = self._with_fact()
        return said[0] if said else None

    def finish(self) -> list[str]:
        """The clauses to add when the model has stopped: the fact asked for, if still unsaid; with
        nothing said at all, the greeting (a line in the NPC's own voice rather than silence)."""
        added = self._with_fact()
        if not self.said and self.persona.greeting:
            added = [self.persona.greeting]
            self.said.extend(added)
        return added

    def _unsaid(self) -> list[FactMatch]:
        said = " ".join(self.said)
        return [match for match in self.lookup.to_state if not states(said, match.clause, self.persona.name)]

    def _with_fact(self) -> list[str]:
        """The fact to say in place of what was held back: the one the line asked for (and its near
        tie), as far as still unsaid, in one line."""
        unsaid = self._unsaid()
        if not unsaid:
            return []
        line = " ".join(spoken_fact(self.persona, match) for match in unsaid)
        self.said.append(line)
        self.corrected = True
        return [line]


def _identity(persona: Persona) -> tuple[str, ...]:
    """The persona's own texts, which a claim may come from (not the example lines: their prices are
    other questions' answers, "Three silver" for a room; not the facts: see ReplyCheck)."""
    return (persona.name, persona.role, persona.description, persona.speaking_style, persona.greeting or "",
            persona.deflection or "")  # fmt: skip


def _words(clauses: list[str]) -> int:
    return sum(len(clause.split()) for clause in clauses)


def _sentences(clauses: list[str]) -> int:
    return sum(clause.rstrip().rstrip("\"'”)").endswith(_SENTENCE_END) for clause in clauses)


def _repeats(clause: str, said: list[str]) -> bool:
    """Three words in a row that the reply already said: the small model starts to loop."""
    before = normalise_for_matching(" ".join(said)).split()
    mine = normalise_for_matching(clause).split()
    threes = {tuple(before[i : i + 3]) for i in range(len(before) - 2)}
    return any(tuple(mine[i : i + 3]) in threes for i in range(len(mine) - 2))
