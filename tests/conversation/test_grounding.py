"""Grounded replies without a model: claims, the fact lookup (fake embedder), person rewriting,
and the clause-by-clause check that keeps made-up values unsaid and adds the fact asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from npcserver.backends.fake import FakeEmbedder
from npcserver.conversation.claims import claims_of, says, words_to_digits
from npcserver.conversation.grounding import ReplyCheck, states
from npcserver.conversation.knowledge import (
    NOTHING_FOUND,
    FactMatch,
    KnowledgeIndex,
    Lookup,
    clauses_of,
    in_person,
    is_question,
    spoken_fact,
)
from npcserver.personas import Persona, load_persona_file

VOICES = Path(__file__).resolve().parents[2] / "voices"


def persona(pid: str) -> Persona:
    loaded = load_persona_file(VOICES / f"{pid}.toml").persona
    assert loaded is not None
    return loaded


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("Three silver a night", "3 silver a night"),
        ("thirty-five coins", "35 coins"),
        ("a hundred and ten", "a 100 and 10"),
        ("the one I like, lucky one", "the one I like, lucky one"),
        ("one silver for stew", "1 silver for stew"),
    ],
)
def test_number_words_read_as_digits_and_one_only_before_a_unit(text: str, digits: str) -> None:
    assert words_to_digits(text) == digits


def test_claims_are_numbers_coins_directions_and_names_not_sentence_openers() -> None:
    claims = claims_of("Three gold, friend. Ask Dame Elsbeth on the eastern road. Good day.")
    assert claims.numbers == {"3"} and claims.coins == {"gold"} and claims.directions == {"east"}
    assert claims.names == {"dame", "elsbeth"}  # "Ask" and "Good" open sentences, "Three" opens the reply


@pytest.mark.parametrize(
    ("reply", "pattern", "expected"),
    [
        ("Three silver, breakfast included.", "3 silver", True),
        ("Thirty silver.", "3 silver", False),
        ("At sundown, citizen.", "/sundown|dusk/", True),
        ("Swords and axes", "sword", True),
        ("Dame Elsbeth commands us.", "elsbeth", True),
    ],
)
def test_says_matches_whole_words_number_words_and_patterns(reply: str, pattern: str, expected: bool) -> None:
    assert says(reply, pattern) is expected


def test_facts_split_into_clauses_and_rewritten_in_first_and_second_person() -> None:
    greta, pip = persona("greta_blacksmith"), persona("pip_merchant")
    assert clauses_of("A plain sword costs 40 silver; repairs cost 5 silver.") == [
        "A plain sword costs 40 silver.",
        "Repairs cost 5 silver.",
    ]
    assert in_person(greta, "Her late husband Ulf built the forge.", "first") == "My late husband Ulf built the forge."
    assert in_person(greta, "She does not forge armour.", "first") == "I do not forge armour."
    assert in_person(pip, "Pip sells rope, lanterns and maps.", "first") == "I sell rope, lanterns and maps."
    assert in_person(pip, "Pip's cart is pulled by a donkey.", "first") == "My cart is pulled by a donkey."
    assert in_person(pip, "Pip leaves town at the end of the week.", "second") == "You leave town at the end of the week."
    assert in_person(persona("maren_healer"), "Maren gathers herbs by the river.", "first") == "I gather herbs by the river."


def test_lookup_finds_the_fact_a_question_names_and_nothing_for_small_talk() -> None:
    bram = persona("bram_innkeeper")
    index = KnowledgeIndex(bram, FakeEmbedder())
    found = index.lookup("What does a mug of ale cost?")
    assert found.must_state is not None and "2 copper" in found.must_state.clause
    assert found.facts[0] == found.must_state.clause
    assert index.lookup("Lovely!").must_state is None
    assert index.lookup("").matches == ()


def test_lookup_answers_a_forbidden_topic_with_the_topic() -> None:
    index = KnowledgeIndex(persona("bram_innkeeper"), FakeEmbedder())
    assert index.lookup("Tell me about the cellar.").forbidden_topic == "the cellar"


def test_forbidden_topics_are_searched_in_the_second_person_as_the_player_asks() -> None:
    embedder = FakeEmbedder()
    KnowledgeIndex(persona("pip_merchant"), embedder)
    searched = [text for call in embedder.calls for text in call]
    assert "Tell me about your suppliers." in searched and "What about your suppliers?" in searched


def test_questions_and_requests_are_told_from_statements() -> None:
    assert is_question("Who runs this place")
    assert is_question("I need rope, how much is it")
    assert not is_question("Lovely weather.")


def _asked(p: Persona, clause: str) -> Lookup:
    match = FactMatch(0, clause, 0.9)
    return Lookup((match,), match, None)


def test_a_clause_with_a_made_up_price_is_never_said_and_the_fact_is_said_instead() -> None:
    bram = persona("bram_innkeeper")
    check = ReplyCheck(bram, _asked(bram, "A room for the night costs 3 silver."), "How much for a bed?")
    said, stop = check.accept("Amber.")
    assert said == ["Amber.", "A room for the night costs 3 silver."] and stop  # a sentence without the fact
    check = ReplyCheck(bram, _asked(bram, "A room for the night costs 3 silver."), "How much for a bed?")
    said, stop = check.accept("Gold, I reckon,")
    assert said == ["A room for the night costs 3 silver."] and stop
    assert check.dropped == ["Gold, I reckon,"] and check.corrected


def test_a_reply_that_states_the_fact_is_left_alone_and_ends_with_its_sentence() -> None:
    bram = persona("bram_innkeeper")
    check = ReplyCheck(bram, _asked(bram, "A room for the night costs 3 silver."), "How much for a bed?")
    assert check.accept("Three silver a night, friend.") == (["Three silver a night, friend."], True)
    assert check.finish() == [] and not check.corrected


def test_the_fact_is_added_when_the_model_ends_without_it() -> None:
    rolf = persona("rolf_guard")
    check = ReplyCheck(rolf, _asked(rolf, "The captain of the guard is Dame Elsbeth."), "Who's your boss?")
    assert check.accept("The captain,") == (["The captain,"], False)
    assert check.finish() == ["The captain of the guard is Dame Elsbeth."]


def test_an_answer_asked_for_one_fact_may_not_state_another_facts_price() -> None:
    greta = persona("greta_blacksmith")
    check = ReplyCheck(greta, _asked(greta, "Repairs cost 5 silver."), "What does a repair cost?")
    said, _ = check.accept("A new axe costs 30 silver.")
    assert said == ["Repairs cost 5 silver."]


def test_the_added_fact_keeps_the_reply_under_the_word_cap() -> None:
    rolf = persona("rolf_guard")  # 20 words at most
    check = ReplyCheck(rolf, _asked(rolf, "The captain of the guard is Dame Elsbeth."), "Who leads you?")
    check.accept("Orders come from above, citizen, as they always have")
    said, stop = check.accept("and always will in this village of ours")
    assert said == ["The captain of the guard is Dame Elsbeth."] and stop
    assert sum(len(c.split()) for c in check.said) <= rolf.max_reply_words


def test_echoing_the_player_is_dropped() -> None:
    bram = persona("bram_innkeeper")
    check = ReplyCheck(bram, NOTHING_FOUND, "I'm riding out north first thing tomorrow.")
    assert check.accept("Riding out north,") == ([], False)


def test_small_talk_may_name_people_but_not_invent_prices() -> None:
    bram = persona("bram_innkeeper")
    check = ReplyCheck(bram, NOTHING_FOUND, "Evening!")
    assert check.accept("Good evening, Traveller!")[0] == ["Good evening, Traveller!"]
    said, stop = check.accept("Ale is 9 gold tonight.")
    assert said == [] and stop


def test_states_ignores_the_speakers_own_name() -> None:
    assert states("The rarest spice I sell is saffron, at 6 silver a pinch.",
                  "The rarest spice Pip sells is saffron, at 6 silver a pinch.", "Pip")
    assert not states("Saffron, 9 silver.", "The rarest spice Pip sells is saffron, at 6 silver a pinch.", "Pip")


def test_spoken_fact_is_one_first_person_sentence() -> None:
    greta = persona("greta_blacksmith")
    assert spoken_fact(greta, FactMatch(0, "Her apprentice is a boy named Tomas", 1.0)) == "My apprentice is a boy named Tomas."


def test_a_clause_on_a_forbidden_topic_is_never_said() -> None:
    greta = persona("greta_blacksmith")
    check = ReplyCheck(greta, NOTHING_FOUND, "Got anyone helping you?")
    assert check.accept("I worked the old mine once,") == ([], True)


def test_a_reply_ends_after_three_sentences() -> None:
    pip = persona("pip_merchant")
    check = ReplyCheck(pip, NOTHING_FOUND, "Show me what you've got.")
    for sentence in ("Pupp!", "Look here!", "A fine gift!"):
        assert check.accept(sentence) == ([sentence], False)
    assert check.accept("You're all I'd need.") == ([], True)


async def test_the_server_says_the_fact_a_typed_question_asks_for(tmp_path: Path) -> None:
    """Real server, fake models plus the fake embedder: the lookup, fact-first reply and check run."""
    import asyncio

    from websockets.asyncio.client import connect

    from npcserver.backends import Backends
    from npcserver.backends.fake import FakeDialogue, FakeSynthesizer, FakeTranscriber
    from npcserver.edge.server import NpcServer
    from tests.conftest import Conversation, fake_settings

    backends = Backends(FakeTranscriber(), FakeDialogue(reply="Ten gold, friend. Best in town."), FakeSynthesizer(),
                        FakeEmbedder())
    async with NpcServer(fake_settings(), backends) as server:
        await asyncio.wait_for(server.wait_ready(), 10)
        async with connect(server.url, max_size=2**20, max_queue=None) as ws:
            talk = Conversation(ws)
            await talk.start(npc="bram_innkeeper")
            await talk.send_json(type="text", text="What does a mug of ale cost?")
            end = await talk.until("turn_end")
            reply = "".join(m["text"] for m in talk.messages if m["type"] == "reply")
    assert reply.startswith("A mug of ale costs 2 copper.")
    assert "gold" not in reply.lower()  # the fake model's made-up price is never sent
    assert "knowledge_ms" in end["timings"]


def test_a_clause_repeating_what_the_reply_said_ends_it() -> None:
    bram = persona("bram_innkeeper")
    check = ReplyCheck(bram, NOTHING_FOUND, "Pour me an ale.")
    assert check.accept("A mug of ale, friend!") == (["A mug of ale, friend!"], False)
    assert check.accept("You are a mug of ale.") == ([], True)


def test_a_fact_whose_parts_both_answer_the_line_is_said_whole() -> None:
    greta = persona("greta_blacksmith")
    found = KnowledgeIndex(greta, FakeEmbedder()).lookup("Do you forge armour, or where do I go for armour?")
    assert found.must_state is not None and "Karsk" in found.must_state.clause and "not forge" in found.must_state.clause


def test_a_part_that_refuses_is_said_with_the_rest_of_its_fact() -> None:
    # with these bag-of-words vectors "Do you forge armour?" is far nearer the refusal than the whole
    greta = persona("greta_blacksmith")
    found = KnowledgeIndex(greta, FakeEmbedder()).lookup("Do you forge armour?")
    assert found.must_state is not None and found.must_state.clause.startswith("She does not forge armour;")


def test_answering_in_the_facts_words_is_not_an_echo_but_repeating_the_player_is() -> None:
    from npcserver.conversation.reply_form import echoes, form_problems

    rolf = persona("rolf_guard")
    assert not echoes("The captain of the guard is Dame Elsbeth.", "Who is the captain of the guard?", rolf.facts)
    assert echoes("Pour me one of your mugs, friend.", "Pour me one of your ales.", rolf.facts)
    assert form_problems(rolf, "Who is the captain of the guard?", "The captain of the guard is Dame Elsbeth.") == []
    assert "speaker label" in form_problems(rolf, "Hi", "Rolf: Move along.")
    assert "stage direction" in form_problems(rolf, "Hi", "*yawns* Move along.")


def test_small_talk_that_ran_long_is_not_topped_up_with_a_fact() -> None:
    pip = persona("pip_merchant")
    shown = FactMatch(9, "Pip's stall opens at noon in the market square.", 0.24)
    check = ReplyCheck(pip, Lookup((shown,), None, None), "Hey there, merchant!")
    for sentence in ("My cart, my prize!", "You are a fine merchant!", "I'm all for it."):
        check.accept(sentence)
    assert check.accept("My stall opens at noon.") == ([], True)
    assert check.finish() == []


def test_unsure_of_the_fact_asked_for_the_reply_states_no_facts_values() -> None:
    rolf = persona("rolf_guard")
    shown = FactMatch(2, "Bandits have robbed two carts on the east road this week.", 0.23)
    check = ReplyCheck(rolf, Lookup((shown,), None, None), "Where can I get my bearings?")
    assert check.accept("That's a tale of two carts on the east road.") == ([], True)
    assert check.finish() == [rolf.greeting]  # nothing was said: a line in the NPC's voice, not a guess


@pytest.mark.parametrize(
    ("npc", "line", "searched"),
    [
        ("maren_healer", "Healer, where's your house?", "where's your house?"),
        ("bram_innkeeper", "You hear all the talk here, innkeeper, what's the word?", "You hear all the talk here, what's the word?"),
        ("rolf_guard", "Been on this job long, Sergeant?", "Been on this job long?"),
        ("pip_merchant", "Morning, Pip! Rope, how much?", "Morning! Rope, how much?"),  # "Rope," is what is asked about
    ],
)
def test_the_lookup_ignores_the_words_that_only_address_the_npc(npc: str, line: str, searched: str) -> None:
    embedder = FakeEmbedder()
    index = KnowledgeIndex(persona(npc), embedder)
    index.lookup(line)
    assert embedder.calls[-1] == [searched]


def test_a_near_tie_without_numbers_is_said_after_the_fact_asked_for() -> None:
    pip = persona("pip_merchant")
    index = KnowledgeIndex(pip, FakeEmbedder())
    found = index.lookup("What do you buy, and what do you sell?")
    assert [match.clause for match in found.to_state] == [
        "Pip buys old coins and shiny stones.", "Pip sells rope, lanterns, maps, spices and lucky charms."]
    check = ReplyCheck(pip, found, "What do you buy, and what do you sell?")
    assert check.lead() == "I buy old coins and shiny stones. I sell rope, lanterns, maps, spices and lucky charms."
    # the runner-up here is the saffron fact, whose price answers another question: said alone
    found = index.lookup("Do you buy or sell?")
    assert found.must_state is not None and found.also_state is None


def test_a_runner_up_holding_a_price_is_never_said_beside_the_fact_asked_for() -> None:
    greta = persona("greta_blacksmith")
    index = KnowledgeIndex(greta, FakeEmbedder())
    for line in ("Do you forge swords?", "What does a plain sword cost?", "Swords?"):
        found = index.lookup(line)
        assert found.also_state is None or not claims_of(found.also_state.clause).numbers
