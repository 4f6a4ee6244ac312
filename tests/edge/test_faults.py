"""Faults a public node meets: players vanishing mid-turn, clients that stop reading, failing models."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Awaitable, Callable

import pytest
from websockets.asyncio.client import ClientConnection, connect

from npcserver.backends import Backends
from npcserver.backends.fake import FakeDialogue, FakeSynthesizer, FakeTranscriber
from npcserver.edge.limits import resident_memory_bytes
from npcserver.edge.server import NpcServer
from tests.conftest import Conversation, fake_settings, silence, tone

DISCONNECTS = 500


def slowish_backends() -> Backends:
    """Fake models slow enough that a disconnect lands inside a stage, fast enough for 500 turns."""
    return Backends(FakeTranscriber(delay_s=0.002), FakeDialogue(token_delay_s=0.001), FakeSynthesizer(delay_s=0.002))


async def settle(server: NpcServer) -> None:
    """Wait (bounded) until every session is gone and no model call is queued or running."""
    for _ in range(500):
        idle = server.runner is None or all(load.pending == 0 for load in server.runner.load.values())
        if not server.sessions and idle:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    gc.collect()


# Where in a turn the player vanishes: each step is awaited, then the socket is cut without a close.
async def _after_handshake(talk: Conversation) -> None:
    pass


async def _after_start_sent(talk: Conversation) -> None:
    await talk.send_json(type="start", npc="greta_blacksmith", greeting=False)


async def _mid_upload(talk: Conversation) -> None:
    await talk.start()
    await talk.send_audio(tone(0.5))


async def _during_asr(talk: Conversation) -> None:
    await talk.start()
    await talk.send_audio(tone(0.4) + silence(0.6))


async def _after_first_reply(talk: Conversation) -> None:
    await talk.start()
    await talk.send_json(type="text", text="Tell me about the forge")
    await talk.until("reply")


async def _mid_audio(talk: Conversation) -> None:
    await talk.start()
    await talk.send_json(type="text", text="Tell me about the forge")
    await talk.until("audio_start")


async def _after_interrupt(talk: Conversation) -> None:
    await talk.start()
    await talk.send_json(type="text", text="Tell me about the forge")
    await talk.until("reply")
    await talk.send_json(type="interrupt")


MOMENTS: list[Callable[[Conversation], Awaitable[None]]] = [
    _after_handshake,
    _after_start_sent,
    _mid_upload,
    _during_asr,
    _after_first_reply,
    _mid_audio,
    _after_interrupt,
]


async def vanish(server: NpcServer, moment: Callable[[Conversation], Awaitable[None]]) -> None:
    ws: ClientConnection = await connect(server.url)
    try:
        await moment(Conversation(ws))
    finally:
        ws.transport.abort()  # no close frame: the player's network just went away


async def test_500_abrupt_disconnects_mid_turn_leak_nothing() -> None:
    async with NpcServer(fake_settings(max_connections_per_ip=0), slowish_backends()) as server:
        await server.wait_ready()
        for index in range(3 * len(MOMENTS)):  # warm up pools and caches before measuring
            await vanish(server, MOMENTS[index % len(MOMENTS)])
        await settle(server)
        tasks_before = len(asyncio.all_tasks())
        threads_before = threading.active_count()
        rss_before = resident_memory_bytes()

        for index in range(DISCONNECTS):
            await vanish(server, MOMENTS[index % len(MOMENTS)])
        await settle(server)

        tasks_after = len(asyncio.all_tasks())
        threads_after = threading.active_count()
        rss_after = resident_memory_bytes()
        print(
            f"\n{DISCONNECTS} abrupt disconnects: tasks {tasks_before} -> {tasks_after}, threads {threads_before} -> "
            f"{threads_after}, RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB"
        )
        assert not server.sessions
        assert tasks_after <= tasks_before
        assert threads_after <= threads_before
        assert rss_after - rss_before < 30 * 2**20  # no per-session memory kept (500 sessions would show)
        assert server.connections.count("127.0.0.1") == 0
        # and the node still serves
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await talk.send_json(type="text", text="Still open?")
            assert (await talk.until("turn_end"))["interrupted"] is False


async def test_a_client_that_stops_reading_is_dropped_and_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    # Each reply word is 400 characters: 20 s of fake speech per word, megabytes per turn.
    words = " ".join(["a" * 399 + "."] * 20)
    backends = Backends(FakeTranscriber(), FakeDialogue(reply=words), FakeSynthesizer())
    async with NpcServer(fake_settings(send_timeout_s=0.5), backends) as server:
        await server.wait_ready()
        stalled = await connect(server.url, max_queue=1)  # reads one frame, then nothing more
        try:
            stalled_talk = Conversation(stalled)
            await stalled_talk.start()
            stalled_session = next(iter(server.sessions))
            await stalled_talk.send_json(type="text", text="Talk, I won't listen")
            async with connect(server.url) as ws:  # a well-behaved player meanwhile
                talk = Conversation(ws)
                await talk.start()
                await talk.send_json(type="interrupt")
                for _ in range(1000):  # bounded: the stalled client is cut after send_timeout_s
                    if stalled_session not in server.sessions:
                        break
                    await asyncio.sleep(0.01)
                assert stalled_session not in server.sessions
                assert "read nothing" in caplog.text  # dropped for not reading, not for anything else
                assert len(server.sessions) == 1  # the good one is still there
                await talk.send_json(type="dance")
                assert (await talk.until("error"))["code"] == "unknown_type"  # and is answered
        finally:
            stalled.transport.abort()


async def test_a_model_error_in_a_turn_leaves_the_node_healthy() -> None:
    backends = Backends(FakeTranscriber(), FakeDialogue(), FakeSynthesizer())
    async with NpcServer(fake_settings(), backends) as server:
        await server.wait_ready()
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            backends.transcriber.fail_next = True  # type: ignore[attr-defined]
            await talk.send_audio(tone(0.5) + silence(1.0))
            assert (await talk.until("error"))["code"] == "model_error"
            await talk.until("turn_end", turn=1)
            await talk.send_json(type="text", text="and again")
            await talk.until("turn_end", turn=2)
        assert server._health().status == 200 and server._readiness().status == 200
