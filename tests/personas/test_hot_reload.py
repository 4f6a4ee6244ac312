"""Designers edit persona files under a running server (real server, fake models): nothing is dropped."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from npcserver.backends.fake import FakeDialogue
from npcserver.edge.server import NpcServer
from tests.conftest import VOICES, Conversation, fake_backends, fake_settings


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NpcServer]:
    for persona in VOICES.glob("*.toml"):
        shutil.copy(persona, tmp_path)
    async with NpcServer(fake_settings(voices=tmp_path), fake_backends()) as server:
        await asyncio.wait_for(server.wait_ready(), 10)
        yield server


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) for the file watcher to pick a change up."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def status(server: NpcServer, persona_id: str) -> dict:
    return next(s for s in server.personas.statuses() if s["id"] == persona_id)


def prompts(server: NpcServer) -> list:
    assert server.runner is not None
    dialogue = server.runner.backends.dialogue
    assert isinstance(dialogue, FakeDialogue)
    return dialogue.prompts


async def test_a_saved_edit_reaches_running_sessions_at_their_next_turn(server: NpcServer) -> None:
    path = server.settings.voices / "greta_blacksmith.toml"
    async with connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        await talk.send_json(type="text", text="Hello")
        await talk.until("turn_end", turn=1)
        old_version = status(server, "greta_blacksmith")["version"]

        path.write_text(path.read_text().replace('name = "Greta"', 'name = "Greta Ironhand"'))
        await eventually(lambda: status(server, "greta_blacksmith")["version"] != old_version)

        await talk.send_json(type="text", text="Who are you?")
        await talk.until("turn_end", turn=2)
    assert "Greta Ironhand" in prompts(server)[-1][0].content  # the running session's next turn
    async with connect(server.url) as ws:
        assert (await Conversation(ws).start())["npc"]["name"] == "Greta Ironhand"  # and new sessions


async def test_a_broken_edit_keeps_the_last_good_version_live(server: NpcServer) -> None:
    path = server.settings.voices / "greta_blacksmith.toml"
    path.write_text(path.read_text().replace("max_reply_words = 25", "max_reply_words = 'lots'"))
    await eventually(lambda: status(server, "greta_blacksmith")["error"] is not None)
    record = status(server, "greta_blacksmith")
    assert record["live"] is True and "max_reply_words" in record["error"]
    async with connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        await talk.send_json(type="text", text="Still open?")
        assert (await talk.until("turn_end"))["interrupted"] is False


async def test_game_context_reaches_the_prompt_and_changes_with_the_game(server: NpcServer) -> None:
    async with connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start(context={"time_of_day": "early morning", "player_holding": "a broken sword",
                                  "not_a_declared_key": "ignored"})
        await talk.send_json(type="text", text="Good day!")
        await talk.until("turn_end", turn=1)
        morning = prompts(server)[-1][-1].content
        await talk.send_json(type="context", context={"time_of_day": "midnight"})
        await talk.send_json(type="text", text="Good day!")
        await talk.until("turn_end", turn=2)
        night = prompts(server)[-1][-1].content
    assert '"early morning"' in morning and '"a broken sword"' in morning and "ignored" not in morning
    assert '"midnight"' in night and "early morning" not in night and '"a broken sword"' in night


async def test_forbidden_topic_gets_the_designers_deflection(server: NpcServer) -> None:
    persona = server.personas.get("greta_blacksmith")
    async with connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        calls = len(prompts(server))
        await talk.send_json(type="text", text="What is hidden in the old mine in the hills?")
        await talk.until("turn_end", turn=1)
    reply = "".join(m["text"] for m in talk.messages if m["type"] == "reply")
    assert reply == persona.deflection and len(prompts(server)) == calls  # the LLM was not asked


async def test_a_saved_persona_has_its_tests_run_in_the_background_and_logged(
    server: NpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    file = Path(server.settings.voices) / "bram_innkeeper.toml"
    caplog.set_level("INFO", logger="npcserver.edge.server")
    file.write_text(file.read_text().replace("Sleepy Goose", "Sleepy Gander"))
    await eventually(lambda: "persona tests after reload: bram_innkeeper" in caplog.text, timeout=20)
    assert "replies pass (9 tests)" in caplog.text  # the report names every test; failing ones with replies


async def test_an_added_file_is_served_and_deleting_it_ends_its_sessions_at_once(server: NpcServer) -> None:
    voices = server.settings.voices
    copy = (voices / "greta_blacksmith.toml").read_text().replace('id = "greta_blacksmith"', 'id = "hilda_smith"')
    (voices / "hilda_smith.toml").write_text(copy)
    await eventually(lambda: server.personas.get("hilda_smith") is not None)
    async with connect(server.url) as ws, connect(server.url) as other:
        talk, bystander = Conversation(ws), Conversation(other)
        await talk.start(npc="hilda_smith")
        await bystander.start()
        (voices / "hilda_smith.toml").unlink()
        # the client sends nothing more: the server ends the session on its own
        error = await talk.until("error", timeout=10)
        assert error["code"] == "npc_removed" and error["fatal"] is True
        with pytest.raises(ConnectionClosed) as closed:
            await talk.next_message()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        await bystander.send_json(type="text", text="Still there?")  # another persona's session goes on
        assert (await bystander.until("turn_end", turn=1))["interrupted"] is False
    await eventually(lambda: not server.sessions)
