"""Actions: the persona format, reading requests and arguments, the detector (fake and real encoder),
and the `action` message on a real server (fake models): sent before the reply, which agrees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from npcserver.backends import Backends
from npcserver.backends.fake import FakeDialogue, FakeEmbedder, FakeSynthesizer, FakeTranscriber
from npcserver.conversation.actions import ActionIndex, NotDeclared, bind_args, declared_call, values_named
from npcserver.conversation.requests import asks_for_something
from npcserver.edge.server import NpcServer
from npcserver.personas import Persona, load_persona_file, parse_persona
from tests.conftest import Conversation, fake_settings

VOICES = Path(__file__).resolve().parents[2] / "voices"


def persona(pid: str) -> Persona:
    loaded = load_persona_file(VOICES / f"{pid}.toml")
    assert loaded.persona is not None, loaded.problems
    return loaded.persona


# --------------------------------------------------------------------------- the persona format


def test_shipped_personas_declare_actions_with_typed_arguments() -> None:
    pip = persona("pip_merchant")
    sell = pip.action("sell_item")
    assert sell is not None and sell.confirm and len(sell.player_lines) >= 3
    item, count = sell.args
    assert "lucky charm" in item.values and item.default is None
    assert count.is_integer and (count.low, count.high, count.default) == (1, 10, 1)
    assert sell.accepts({"item": "rope", "count": 3})
    assert not sell.accepts({"item": "horse", "count": 1}) and not sell.accepts({"item": "rope", "count": 11})
    assert not sell.accepts({"item": "rope"}) and not sell.accepts({"item": "rope", "count": 1, "extra": 1})
    assert not sell.accepts({"item": "rope", "count": True})  # a JSON true is not the number 1
    gate = persona("rolf_guard").action("open_gate")
    assert gate is not None and gate.requires_words == ("hawthorn",) and gate.refusal


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        (('args.item = { values = ["old coin", "shiny stone"] }', 'args.item = { values = [] }'), "actions[2].args.item", "has no values"),
        (("min = 1, max = 10, default = 1", "min = 5, max = 1"), "actions[1].args.count", "min (5) is above max (1)"),
        (("min = 1, max = 10, default = 1", "min = 1, max = 10, default = 20"), "actions[1].args.count", "outside min..max"),
        (('confirm = "Sold! A real bargain, the {item}', 'confirm = "Sold! A real bargain, the {thing}'), "actions[1].confirm", "{thing}"),
        (('id = "buy_from_player"', 'id = "sell_item"'), "actions[2].id", "declared twice"),
        (('args.item = { values = ["old coin", "shiny stone"] }', 'args.item = { value = ["old coin"] }'),
         "actions[2].args.item.value", 'Did you mean "values"'),
        (('type = "integer"', 'type = "number"'), "actions[1].args.count.type", "'choice' or 'integer'"),
        (('"old coin", "shiny stone"', '"old coin", "Shiny Stone!"'), "actions[2].args.item.values[2]", "wrong form"),
        (("Sold! A real bargain, the {item}.", "Sold! A real bargain. The {item}. Yours."), "actions[1].confirm", "more than 2 sentences"),
    ],
)
def test_a_broken_action_names_file_line_and_field(change: tuple[str, str], field: str, says: str) -> None:
    text = (VOICES / "pip_merchant.toml").read_text(encoding="utf-8")
    assert change[0] in text
    loaded = parse_persona(text.replace(change[0], change[1]), VOICES / "pip_merchant.toml")
    assert loaded.persona is None
    problem = next(p for p in loaded.problems if p.field == field)
    assert says in str(problem) and problem.line is not None and problem.line > 60


def test_a_refusal_without_required_words_is_a_mistake() -> None:
    text = (VOICES / "rolf_guard.toml").read_text(encoding="utf-8").replace('requires_words = ["hawthorn"]\n', "")
    loaded = parse_persona(text, VOICES / "rolf_guard.toml")
    assert any(p.field == "actions[1].refusal" and "requires_words" in p.problem for p in loaded.problems)


# --------------------------------------------------------------------------- requests and arguments


@pytest.mark.parametrize(
    "line",
    [
        "I'll take the lantern.", "Could I get a bowl of stew?", "One ale, please.", "Here's the toll.",
        "Can you fix my sword?", "gimme an ale mate", "ill take 2 lanterns", "the blade is chipped could you mend it",
        "Patch me up, Maren, I took a nasty cut.", "Hawthorn. Let me in.", "I'd like a room for the night.",
        "I should like to purchase one of your swords, if you please.", "three of them spices then",
        "got bit by a wolf can u help", "uh wanna buy this shiny stone off me", "great, do it",
    ],
)
def test_requests_are_heard_in_every_register(line: str) -> None:
    assert asks_for_something(line)


@pytest.mark.parametrize(
    "line",
    [
        "How much is a lantern?", "Do you sell maps?", "I stayed in your best room last summer.",
        "If I get bitten by a wolf, what should I do?", "No thanks, I don't need rope.", "You healed my brother last winter.",
        "How much would you charge to fix my sword?", "Could you tell me where the inn is?", "I paid the toll yesterday.",
        "Thank you, but I think I'll pass on the rope today.", "What's in the stew?", "Nice day for it, Sergeant.",
        "When does the gate close?", "Is the room nice?",
    ],
)
def test_questions_stories_and_refusals_ask_for_nothing(line: str) -> None:
    assert not asks_for_something(line)


def test_arguments_are_read_from_the_words_never_guessed() -> None:
    sell = persona("pip_merchant").action("sell_item")
    assert sell is not None
    item = sell.args[0]
    assert values_named(item, "Two lucky charms and a map") == ["map", "lucky charm"]
    assert values_named(item, "a charm for luck") == ["lucky charm"]  # a multi-word value's last word names it
    assert bind_args(sell, "I'll take two lanterns") == {"item": "lantern", "count": 2}
    assert bind_args(sell, "five pinches of saffron please") == {"item": "saffron", "count": 5}
    assert bind_args(sell, "Sell me fifty feet of rope") == {"item": "rope", "count": 1}  # 50 is no count of rope
    assert bind_args(sell, "A lantern and a map, please") is None  # which one?
    assert bind_args(sell, "Sell me a horse") is None  # not a declared ware
    assert bind_args(sell, "I'll take it", recent="How much is a map? A map costs 10 silver.") == {"item": "map", "count": 1}
    heal = persona("maren_healer").action("heal_player")
    assert heal is not None and bind_args(heal, "Heal me") == {}


def test_a_say_may_only_carry_a_declared_action_with_declared_values() -> None:
    pip = persona("pip_merchant")
    call = declared_call(pip, "sell_item", {"item": "map"})
    assert call.args == {"item": "map", "count": 1}  # the default filled in
    for action_id, args in (("give_castle", {}), ("sell_item", {"item": "horse"}), ("sell_item", {"item": "map", "count": 0}),
                            ("sell_item", {"item": "map", "price": 0})):
        with pytest.raises(NotDeclared):
            declared_call(pip, action_id, args)


# --------------------------------------------------------------------------- the detector


def test_the_detector_with_the_fake_encoder_sends_only_what_was_asked() -> None:
    index = ActionIndex(persona("pip_merchant"), FakeEmbedder())
    sold = index.decide("I'll buy two lanterns.")
    assert sold.call is not None and (sold.call.id, sold.call.args) == ("sell_item", {"item": "lantern", "count": 2})
    assert index.decide("How much is a lantern?").call is None  # a question, not a purchase
    bought = index.decide("Will you buy this shiny stone from me?")
    assert bought.call is not None and bought.call.id == "buy_from_player"
    assert index.decide("Sell me a horse.").call is None


def test_asking_for_the_gate_without_the_password_gets_the_refusal() -> None:
    rolf = persona("rolf_guard")
    index = ActionIndex(rolf, FakeEmbedder())
    refused = index.decide("Open the gate, please.")
    assert refused.call is None and refused.refusal == rolf.action("open_gate").refusal  # type: ignore[union-attr]
    opened = index.decide("Hawthorn. Open the gate.")
    assert opened.call is not None and opened.call.id == "open_gate"


@pytest.mark.real
def test_the_real_encoder_separates_requests_about_the_same_ware() -> None:
    """MiniLM (the shipped knowledge model): a few lines of each kind per persona; the figures over
    ~250 lines are `python -m loadtest.actions --detect-only`."""
    from npcserver.backends.loading import load_sentence_embedder
    from npcserver.config import Settings

    embedder = load_sentence_embedder(Settings())
    cases = {
        "greta_blacksmith": [("Please mend my sword, it's bent.", "repair_item", {"item": "sword"}),
                             ("I'll buy that axe.", "sell_item", {"item": "axe"}), ("What does an axe cost?", None, None)],
        "bram_innkeeper": [("Pour me an ale, friend.", "serve", {"item": "ale"}), ("Could I get a bed tonight?", "rent_room", {}),
                           ("How much to stable a horse?", None, None)],
        "maren_healer": [("Please tend my wound.", "heal_player", {}), ("If I get bitten, what do I do?", None, None)],
        "rolf_guard": [("Here's the toll, sergeant.", "pay_toll", {}), ("How much is the toll?", None, None)],
    }
    for pid, lines in cases.items():
        index = ActionIndex(persona(pid), embedder)
        for line, action_id, args in lines:
            decision = index.decide(line)
            got = (decision.call.id, decision.call.args) if decision.call else (None, None)
            assert got == (action_id, args), (pid, line, decision)


# --------------------------------------------------------------------------- on the wire


@pytest.fixture
async def pip() -> AsyncIterator[tuple[Conversation, FakeDialogue]]:
    dialogue = FakeDialogue(reply="Off you go, then.")
    backends = Backends(FakeTranscriber(), dialogue, FakeSynthesizer(), FakeEmbedder())
    async with NpcServer(fake_settings(fillers=False), backends) as server:
        await asyncio.wait_for(server.wait_ready(), 10)
        async with connect(server.url, max_queue=None) as ws:
            talk = Conversation(ws)
            await talk.start(npc="pip_merchant", greeting=False)
            yield talk, dialogue


async def test_a_request_sends_the_action_before_the_reply_which_confirms_it(pip: tuple[Conversation, FakeDialogue]) -> None:
    talk, dialogue = pip
    await talk.send_json(type="text", text="I'll buy two lanterns.")
    await talk.until("turn_end", turn=1)
    kinds = [m["type"] for m in talk.messages if m.get("turn") == 1]
    assert kinds.index("action") < kinds.index("reply") < kinds.index("audio_start")
    action = next(m for m in talk.messages if m["type"] == "action")
    assert action == {"type": "action", "turn": 1, "id": "sell_item", "args": {"item": "lantern", "count": 2}}
    reply = "".join(m["text"] for m in talk.messages if m["type"] == "reply" and m["turn"] == 1)
    assert reply.startswith("Sold! A real bargain, the lantern.")
    assert dialogue.prompts == []  # the confirm line is the reply: no model writes "you can't buy that"

    await talk.send_json(type="text", text="How much is a map?")
    await talk.until("turn_end", turn=2)
    assert [m for m in talk.messages if m["type"] == "action" and m["turn"] == 2] == []
    assert len(dialogue.prompts) == 1  # a question gets the model's answer


async def test_a_say_carries_a_declared_action_and_refuses_any_other(pip: tuple[Conversation, FakeDialogue]) -> None:
    talk, _ = pip
    await talk.send_json(type="say", text="Here, a charm for luck.", action={"id": "sell_item", "args": {"item": "lucky charm"}})
    await talk.until("turn_end", turn=1)
    assert [(m["id"], m["args"]) for m in talk.messages if m["type"] == "action"] == [("sell_item", {"item": "lucky charm", "count": 1})]
    for action in ({"id": "give_castle"}, {"id": "sell_item", "args": {"item": "horse"}}, {"id": "sell_item", "args": {"item": 3}}):
        await talk.send_json(type="say", text="Here you go.", action=action)
        error = await talk.until("error")
        assert error["code"] == "unknown_action" and not error.get("fatal")
    await talk.send_json(type="say", text="Anything else?")
    await talk.until("turn_end", turn=2)  # the session goes on; the refused says started no turn
    assert len([m for m in talk.messages if m["type"] == "action"]) == 1


async def test_a_gesture_in_the_confirm_line_is_played_with_the_action_not_spoken() -> None:
    synthesizer = FakeSynthesizer()
    backends = Backends(FakeTranscriber(), FakeDialogue(), synthesizer, FakeEmbedder())
    async with NpcServer(fake_settings(fillers=False), backends) as server:
        await asyncio.wait_for(server.wait_ready(), 10)
        async with connect(server.url, max_queue=None) as ws:
            talk = Conversation(ws)
            await talk.start(npc="bram_innkeeper", greeting=False)  # confirm = "*smiles* A room it is, friend! ..."
            await talk.send_json(type="text", text="I'd like a room for the night, please.")
            await talk.until("turn_end", turn=1)
    kinds = [m["type"] for m in talk.messages if m.get("turn") == 1]
    assert kinds.index("action") < kinds.index("emote")  # the game hears what happens, then sees the smile
    assert [(m["name"], m["at_sample"]) for m in talk.messages if m["type"] == "emote"] == [("smile", 0)]
    assert "smile" not in " ".join(text for text, _ in synthesizer.calls).lower()


def test_a_persona_s_own_action_lines_teach_the_request_grammar_its_verbs() -> None:
    from npcserver.conversation.requests import opening_verbs

    verbs = opening_verbs(["Teach me the fire spell.", "Please show me how to cast it.", "I'll pay for a lesson."])
    assert verbs == {"teach", "show"}
    assert asks_for_something("teach me a spell, wizard", verbs)
    assert not asks_for_something("teach me a spell, wizard")  # not a verb the grammar knows by itself
    assert not asks_for_something("tell me about the spell", verbs | {"tell"})  # asking to be told is a question


def test_aliases_name_a_value_and_the_game_gets_the_value() -> None:
    maren = persona("maren_healer")
    sell = maren.action("sell_item")
    assert sell is not None
    assert bind_args(sell, "I'll take a bottle of sleep potion") == {"item": "sleeping draught"}
    assert bind_args(sell, "some ointment for this scrape, please") == {"item": "healing salve"}
    pip = persona("pip_merchant").action("sell_item")
    assert pip is not None and bind_args(pip, "two charts of the valley") == {"item": "map", "count": 2}
    text = (VOICES / "maren_healer.toml").read_text(encoding="utf-8").replace('aliases = { "healing salve"', 'aliases = { "healing balm"')
    loaded = parse_persona(text, VOICES / "maren_healer.toml")
    assert any(p.field == "actions[1].args.item" and "not among its values" in p.problem for p in loaded.problems)
