"""Every protocol path and error code, against a real server on loopback with the fake models."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from npcserver.backends import Backends
from npcserver.backends.fake import FakeDialogue, FakeEmbedder, FakeSynthesizer, FakeTranscriber
from npcserver.config import Settings
from npcserver.edge.server import NpcServer
from tests.conftest import Conversation, fake_backends, fake_settings, silence, tone


def http_get(server: NpcServer, path: str) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_healthz_is_503_while_models_load_then_200() -> None:
    release = threading.Event()

    def slow_loader(settings: Settings) -> Backends:
        release.wait(10)
        return fake_backends()

    async with NpcServer(fake_settings(), load_backends=slow_loader) as server:
        status, body = await asyncio.to_thread(http_get, server, "/healthz")
        assert (status, body["status"]) == (503, "loading")
        release.set()
        await asyncio.wait_for(server.wait_ready(), 5)
        status, body = await asyncio.to_thread(http_get, server, "/healthz")
        assert (status, body["status"]) == (200, "ready")



class _HeldEmbedder(FakeEmbedder):
    """Fake: embeds only once `release` is set, and counts the texts it was given."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.release, self.texts = release, 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.release.wait(10)
        self.texts += len(texts)
        return super().embed(texts)


async def test_the_node_is_ready_only_once_every_persona_index_is_built() -> None:
    release = threading.Event()
    embedder = _HeldEmbedder(release)
    backends = Backends(FakeTranscriber(), FakeDialogue(), FakeSynthesizer(), embedder)
    async with NpcServer(fake_settings(), backends) as server:
        status, body = await asyncio.to_thread(http_get, server, "/healthz")
        assert (status, body["status"]) == (503, "loading")
        release.set()
        await asyncio.wait_for(server.wait_ready(), 5)
        assert embedder.texts > 0 and server.runner is not None
        personas = [server.personas.get(pid) for pid in server.personas.ids()]
        assert all(p is not None and server.runner.knowledge_index(p) is None for p in personas)  # nothing left to build

async def test_personas_endpoint_lists_the_shipped_blacksmith(fake_server: NpcServer) -> None:
    status, body = await asyncio.to_thread(http_get, fake_server, "/v1/personas")
    assert status == 200
    assert "greta_blacksmith" in {p["id"] for p in body["personas"]}


async def test_ready_names_the_npc_and_the_voice_rate(talk: Conversation) -> None:
    ready = await talk.start()
    assert ready["npc"]["id"] == "greta_blacksmith" and ready["npc"]["name"]
    assert ready["audio"] == {"encoding": "pcm_s16le", "sample_rate": 22050}
    assert ready["session"]


async def test_voice_turn_end_to_end(talk: Conversation) -> None:
    await talk.start()
    await talk.send_audio(silence(0.3) + tone(1.0) + silence(1.0))
    transcript = await talk.until("transcript")
    assert transcript["final"] is True and transcript["turn"] == 1
    assert "seconds" in transcript["text"]  # the fake transcriber says how much it heard
    end = await talk.until("turn_end")
    replies = "".join(m["text"] for m in talk.messages if m["type"] == "reply")
    assert replies.startswith("You said fake transcript")
    assert [m["type"] for m in talk.messages].index("audio_start") < [m["type"] for m in talk.messages].index("audio_end")
    assert len(talk.audio[1]) > 22050  # more than half a second of the NPC's voice
    assert end["interrupted"] is False
    assert {"endpoint_ms", "asr_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms"} <= set(end["timings"])


@pytest.mark.parametrize("rate", [24000, 48000])
async def test_other_sample_rates_are_resampled(talk: Conversation, rate: int) -> None:
    await talk.start(rate=rate)
    await talk.send_audio(silence(0.2, rate) + tone(1.0, rate) + silence(1.0, rate), frame_bytes=rate // 25)
    transcript = await talk.until("transcript")
    assert transcript["text"].startswith("fake transcript of 1.")  # ~1 s of speech plus pre-roll and tail


async def test_typed_line_gets_a_spoken_reply(talk: Conversation) -> None:
    await talk.start()
    await talk.send_json(type="text", text="Can you mend my sword?")
    end = await talk.until("turn_end")
    replies = "".join(m["text"] for m in talk.messages if m["type"] == "reply")
    assert "Can you mend my sword?" in replies
    assert talk.audio[1] and "voice_to_voice_ms" in end["timings"]


async def test_end_of_turn_ends_the_turn_without_waiting_for_silence(talk: Conversation) -> None:
    await talk.start()
    await talk.send_audio(tone(0.8))
    await talk.send_json(type="end_of_turn")
    transcript = await talk.until("transcript")
    assert transcript["turn"] == 1 and transcript["text"]


async def test_interrupt_stops_the_npc_mid_reply() -> None:
    backends = fake_backends()
    slow = FakeDialogue(token_delay_s=0.05, reply=" ".join(["word."] * 200))
    backends = type(backends)(backends.transcriber, slow, backends.synthesizer)
    async with NpcServer(fake_settings(), backends) as server:
        await server.wait_ready()
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await talk.send_json(type="text", text="Tell me everything.")
            await talk.until("audio_start")
            await talk.send_json(type="interrupt")
            end = await talk.until("turn_end")
            assert end["interrupted"] is True
            assert any(m["type"] == "audio_end" for m in talk.messages)
            words = "".join(m["text"] for m in talk.messages if m["type"] == "reply").split()
            assert len(words) < 60  # generation stopped long before its 200 words
            # the session goes on
            await talk.send_json(type="text", text="Hello again")
            assert (await talk.until("turn_end"))["turn"] == 2


async def test_context_message_is_accepted_mid_session(talk: Conversation) -> None:
    await talk.start()
    await talk.send_json(type="context", context={"time_of_day": "night"})
    await talk.send_json(type="text", text="hi")
    await talk.until("turn_end")
    assert not [m for m in talk.messages if m["type"] == "error"]


async def test_sessions_keep_their_own_history(fake_server: NpcServer) -> None:
    async with connect(fake_server.url) as a, connect(fake_server.url) as b:
        first, second = Conversation(a), Conversation(b)
        await asyncio.gather(first.start(), second.start())
        await first.send_json(type="text", text="I am Alice")
        await second.send_json(type="text", text="I am Bob")
        await asyncio.gather(first.until("turn_end"), second.until("turn_end"))
        histories = {tuple(p for p, _ in s.history) for s in fake_server.sessions}
        assert histories == {("I am Alice",), ("I am Bob",)}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"npc": "x"}', "bad_message"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "start"}', "missing_field"),
        ('{"type": "start", "npc": 5}', "wrong_type"),
        ('{"type": "start", "npc": "greta_blacksmith", "audio": {"sample_rate": 12345}}', "invalid_value"),
        ('{"type": "start", "npc": "greta_blacksmith", "audio": {"encoding": "opus"}}', "invalid_value"),
        ('{"type": "start", "npc": "nobody_here"}', "unknown_npc"),
        ('{"type": "text", "text": "hello"}', "not_started"),
        ('{"type": "end_of_turn"}', "not_started"),
    ],
)
async def test_each_mistake_gets_its_code_and_the_session_survives(talk: Conversation, frame: str, code: str) -> None:
    await talk.ws.send(frame)
    error = await talk.until("error")
    assert error["code"] == code and error["message"]
    await talk.start()  # recoverable: a correct start still works on the same connection


async def test_audio_before_start_is_an_error(talk: Conversation) -> None:
    await talk.ws.send(silence(0.02))
    assert (await talk.until("error"))["code"] == "not_started"


async def test_second_start_and_bad_frames_are_errors(talk: Conversation) -> None:
    await talk.start()
    await talk.send_json(type="start", npc="greta_blacksmith")
    assert (await talk.until("error"))["code"] == "already_started"
    await talk.ws.send(b"\x00\x01\x02")
    assert (await talk.until("error"))["code"] == "bad_audio"
    await talk.send_json(type="text", text="x" * 5000)
    assert (await talk.until("error"))["code"] == "text_too_long"
    await talk.send_json(type="text", text="   ")
    assert (await talk.until("error"))["code"] == "invalid_value"
    await talk.send_json(type="text", text="still here?")
    assert (await talk.until("turn_end"))["turn"] == 1


async def test_oversized_frame_closes_with_1009(talk: Conversation) -> None:
    await talk.start()
    await talk.ws.send(bytes(64 * 1024 + 2))
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(10):
            await talk.next_message()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_model_error_fails_one_turn_only(fake_server: NpcServer, talk: Conversation) -> None:
    await talk.start()
    assert fake_server.runner is not None
    fake_server.runner.backends.dialogue.fail_next = True  # type: ignore[attr-defined]
    await talk.send_json(type="text", text="break please")
    error = await talk.until("error")
    assert error["code"] == "model_error" and error["turn"] == 1
    await talk.until("turn_end", turn=1)
    await talk.send_json(type="text", text="and now?")
    await talk.until("turn_end", turn=2)
    assert talk.audio[2]


async def test_abrupt_disconnect_mid_turn_frees_the_session(fake_server: NpcServer) -> None:
    async with connect(fake_server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        await talk.send_json(type="text", text="Talk to me")
        await talk.until("reply")
        ws.transport.abort()
    for _ in range(100):
        if not fake_server.sessions:
            break
        await asyncio.sleep(0.02)
    assert not fake_server.sessions
