"""Emotes: a stage direction naming a gesture the persona declared is sent to the game, never spoken."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from npcserver.backends import Backends
from npcserver.backends.fake import FakeDialogue, FakeSynthesizer, FakeTranscriber
from npcserver.conversation.emotes import emotes_named
from npcserver.conversation.text import stage_directions
from npcserver.edge.server import NpcServer
from npcserver.personas import load_persona_file
from tests.conftest import VOICES, Conversation, fake_settings
from tests.personas.test_personas import VALID, fake_resolve_voice, messages, only, write

DECLARED = ("smile", "nod", "shake_head", "bow")


def test_stage_directions_are_found_in_every_form_and_markup_is_not_one() -> None:
    text = "*smiles warmly* Well, (bows) [shakes her head] **forty** [silver](http://x) *"
    assert stage_directions(text) == ["smiles warmly", "bows", "shakes her head"]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("*smiles* Good day,", ["smile"]),
        ("*smiling broadly* Aye.", ["smile"]),
        ("(nodded) Done.", ["nod"]),
        ("[shakes his head slowly] No.", ["shake_head"]),
        ("*nods and bows* At your service.", ["nod", "bow"]),
        ("*sighs* Fine.", []),  # not declared: dropped, never sent
        ("I smile at nobody.", []),  # a word in the spoken text is not a stage direction
        ("*shakes fist*", []),  # every word of the emote's name must be there
    ],
)
def test_a_direction_names_the_declared_emotes_whose_words_it_holds(text: str, named: list[str]) -> None:
    assert emotes_named(text, DECLARED) == named


def test_a_persona_declares_its_emotes(tmp_path: Path) -> None:
    text = VALID.replace('greeting = "Mind the sparks."', 'greeting = "Mind the sparks."\nemotes = ["nod", "shake_head"]')
    persona = load_persona_file(write(tmp_path, text), resolve_voice=fake_resolve_voice).persona
    assert persona is not None and persona.emotes == ("nod", "shake_head")


@pytest.mark.parametrize(
    ("emotes", "expected"),
    [
        ('["nod", "Big Smile"]', 'greta.toml:8: emotes[2]: the text "Big Smile" is not an emote name. Use lowercase words joined by _'),
        ('["nod", "nod"]', 'greta.toml:8: emotes[2]: "nod" is listed twice. List each emote once.'),
        ('"nod"', "greta.toml:8: emotes: must be a list"),
    ],
)
def test_emote_mistakes_name_file_line_and_field(tmp_path: Path, emotes: str, expected: str) -> None:
    text = VALID.replace('greeting = "Mind the sparks."', f'greeting = "Mind the sparks."\nemotes = {emotes}')
    assert expected in only(messages(tmp_path, text))


REPLY = "*nods* Leave it on the anvil. *sighs* Five silver, ready by sundown. *frowns deeply* Now go."


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NpcServer]:
    for persona in VOICES.glob("*.toml"):
        shutil.copy(persona, tmp_path)
    backends = Backends(FakeTranscriber(), FakeDialogue(reply=REPLY), FakeSynthesizer())
    async with NpcServer(fake_settings(voices=tmp_path), backends) as server:
        await asyncio.wait_for(server.wait_ready(), 10)
        yield server


def audio_before(talk: Conversation, message: dict) -> int:
    """Samples of the message's turn audio that came before it."""
    index = next(i for i, item in enumerate(talk.order) if item is message)
    return sum(item for item in talk.order[:index] if isinstance(item, int))


async def test_declared_emotes_are_sent_where_their_clause_starts_and_never_spoken(server: NpcServer) -> None:
    async with connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start()  # greta declares nod, frown, shrug, smile
        await talk.send_json(type="text", text="Can you fix my sword?")
        await talk.until("turn_end", turn=1)
    emotes = [m for m in talk.messages if m["type"] == "emote"]
    assert [(m["name"], m["turn"]) for m in emotes] == [("nod", 1), ("frown", 1)]  # *sighs* is not declared
    for emote in emotes:
        assert emote["at_sample"] == audio_before(talk, emote)  # the next clause's audio starts there
    assert emotes[0]["at_sample"] == 0 < emotes[1]["at_sample"] < len(talk.audio[1]) // 2
    assert server.runner is not None
    spoken = " ".join(text for text, _ in server.runner.backends.synthesizer.calls)  # type: ignore[attr-defined]
    assert "nod" not in spoken and "sigh" not in spoken and "frown" not in spoken and "*" not in spoken


async def test_emotes_follow_a_saved_edit_of_the_persona(server: NpcServer) -> None:
    path = server.settings.voices / "greta_blacksmith.toml"
    path.write_text(path.read_text().replace('emotes = ["nod", "frown", "shrug", "smile"]', 'emotes = ["sigh"]'))
    async with asyncio.timeout(10):
        while server.personas.get("greta_blacksmith").emotes != ("sigh",):
            await asyncio.sleep(0.05)
    async with connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        await talk.send_json(type="text", text="Can you fix my sword?")
        await talk.until("turn_end", turn=1)
    assert [m["name"] for m in talk.messages if m["type"] == "emote"] == ["sigh"]
