"""The nouns a player may say for a fact's noun, read from WordNet's real data files (~0.5 s once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from npcserver.backends.fake import FakeEmbedder
from npcserver.conversation.knowledge import KnowledgeIndex
from npcserver.conversation.wordnet import NounBridges, fact_nouns, noun_net
from npcserver.personas import load_persona_file

VOICES = Path(__file__).resolve().parents[2] / "voices"


@pytest.mark.parametrize(
    ("fact", "line", "named"),
    [
        ("Stabling a horse overnight costs 1 silver.", "Where can I tie up my old nag?", ["horse"]),
        ("Her late husband Ulf built the forge.", "Did you set up this smithy yourself?", ["forge"]),
        ("A set of four horseshoes costs 8 silver.", "My mare lost a shoe on the road.", ["horseshoes"]),
        ("A healing salve costs 2 silver.", "Got an ointment for this scrape?", ["salve"]),
        ("Mint settles the stomach.", "My belly's in knots.", ["stomach"]),
    ],
)
def test_a_noun_the_player_says_for_a_facts_noun_names_the_facts_word(fact: str, line: str, named: list[str]) -> None:
    assert NounBridges([fact], set()).fact_words_for(line) == named


def test_a_line_that_says_the_facts_own_word_or_no_related_noun_names_nothing() -> None:
    bridges = NounBridges(["Stabling a horse overnight costs 1 silver."], set())
    assert bridges.fact_words_for("Can I stable my horses here?") == []
    assert bridges.fact_words_for("Lovely weather today.") == []


def test_names_and_the_verb_after_a_subject_are_not_a_facts_nouns() -> None:
    net = noun_net()
    assert fact_nouns(net, "Pip's next stop is the town of Eastwatch.", {"pip"}) == ["next", "stop", "the", "town"]
    assert "looks" not in fact_nouns(net, "The inn has six rooms; the best one looks over the river.", set())
    assert "horseshoes" in fact_nouns(net, "A set of four horseshoes costs 8 silver.", set())
    assert "costs" not in fact_nouns(net, "A set of four horseshoes costs 8 silver.", set())


def test_plurals_and_irregular_plurals_find_their_noun() -> None:
    net = noun_net()
    assert "horseshoe" in net.base_forms("horseshoes")
    assert "knife" in net.base_forms("knives")
    assert "berry" in net.base_forms("berries")


def test_the_knowledge_query_names_the_facts_word_after_the_line() -> None:
    bram = load_persona_file(VOICES / "bram_innkeeper.toml").persona
    assert bram is not None
    index = KnowledgeIndex(bram, FakeEmbedder())
    assert index.query_text("Where can I tie up my old nag?") == "Where can I tie up my old nag? (horse)"
    assert index.query_text("Where can I tie up my horse?") == "Where can I tie up my horse?"
