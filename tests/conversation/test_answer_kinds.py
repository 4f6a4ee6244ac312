"""The expected answer type: what a question asks for, what a fact gives, and the lookup's bonus."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from npcserver.backends.fake import FakeEmbedder
from npcserver.conversation.answer_kinds import AMOUNT, DURATION, PERSON, PLACE, PRICE, TIME, asked_kinds, given_kinds
from npcserver.conversation.knowledge import KnowledgeIndex
from npcserver.personas import load_persona_file

VOICES = Path(__file__).resolve().parents[2] / "voices"


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("What's that going to run me?", PRICE),
        ("How much for the lot?", PRICE),
        ("What do I owe you?", PRICE),
        ("When do you shut up shop?", TIME),
        ("How late are you open?", TIME),
        ("Have you been here long?", DURATION),
        ("How long has the inn stood?", DURATION),
        ("Who's in charge around here?", PERSON),
        ("Is anyone helping you?", PERSON),
        ("Where can I find the healer?", PLACE),
        ("Which way to the city?", PLACE),
        ("How many rooms are there?", AMOUNT),
    ],
)
def test_a_question_asks_for_its_kind_of_answer(line: str, kind: str) -> None:
    assert kind in asked_kinds(line)


@pytest.mark.parametrize("line", ["Good morning to you.", "Nice hat.", "Do you know any good songs?", "Hot work, isn't it?"])
def test_small_talk_asks_for_no_kind(line: str) -> None:
    assert asked_kinds(line) == frozenset()


@pytest.mark.parametrize(
    ("fact", "kinds"),
    [
        ("A new axe costs 30 silver.", {PRICE}),
        ("Pip buys old coins and shiny stones.", set()),  # coins, but no price
        ("The forge opens at sunrise and closes at dusk.", {TIME}),
        ("Rolf has guarded the gate for ten years.", {DURATION, PLACE, AMOUNT}),
        ("Her apprentice is a boy named Tomas.", {PERSON}),
        ("The captain of the guard is Dame Elsbeth.", {PERSON}),
        ("Greta the blacksmith drinks here every evening.", {PERSON, TIME}),
        ("She lives in a cottage behind the old mill.", {PLACE}),
        ("Honey and garlic ease a cough.", set()),
    ],
)
def test_a_fact_gives_the_kinds_of_answer_it_holds(fact: str, kinds: set[str]) -> None:
    assert given_kinds(fact) == frozenset(kinds)


def test_the_kind_asked_for_breaks_a_tie_between_facts_that_share_the_lines_words() -> None:
    loaded = load_persona_file(VOICES / "greta_blacksmith.toml").persona
    assert loaded is not None
    # both facts share one word with the line; only one holds what it asks for
    facts = ("Greta keeps a good axe.", "A good axe costs 30 silver.")
    index = KnowledgeIndex(dataclasses.replace(loaded, facts=facts), FakeEmbedder())
    assert index.lookup("What is the price of a good axe?").matches[0].clause == facts[1]
    assert index.lookup("Do you keep a good axe?").matches[0].clause == facts[0]
