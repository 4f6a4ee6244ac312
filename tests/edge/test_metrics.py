"""`GET /metrics`: what an operator's Prometheus scrapes after some conversation."""

from __future__ import annotations

import asyncio
import logging
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from npcserver.edge.server import NpcServer
from tests.conftest import Conversation, fake_backends, fake_settings, silence, tone


def scrape(server: NpcServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_sessions_turns_errors_latency_and_audio(fake_server: NpcServer) -> None:
    async with connect(fake_server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        await talk.send_audio(silence(0.3) + tone(1.0) + silence(1.0))
        await talk.until("turn_end")
        await talk.send_json(type="dance")
        await talk.until("error")
        metrics = await asyncio.to_thread(scrape, fake_server)
        assert metrics[("npcserver_sessions_active", ())] == 1
    assert metrics[("npcserver_sessions_total", ())] == 1
    assert metrics[("npcserver_turns_total", (("interrupted", "false"),))] >= 1
    assert metrics[("npcserver_errors_total", (("code", "unknown_type"),))] == 1
    assert metrics[("npcserver_stage_latency_seconds_count", (("stage", "voice_to_voice"),))] >= 1
    assert metrics[("npcserver_stage_latency_seconds_count", (("stage", "asr"),))] >= 1
    assert 2.2 <= metrics[("npcserver_audio_in_seconds_total", ())] <= 2.4
    assert metrics[("npcserver_audio_out_seconds_total", ())] > 0.5
    assert metrics[("npcserver_model_queue_depth", (("stage", "llm"),))] == 0
    assert metrics[("npcserver_model_calls_total", (("stage", "asr"),))] >= 1
    assert ("npcserver_model_busy_seconds_total", (("stage", "tts"),)) in metrics
    assert ("npcserver_tts_phrase_cache_hits_total", ()) in metrics
    assert metrics[("npcserver_tts_phrase_cache_misses_total", ())] >= 1  # the first reply's short clause
    assert metrics[("npcserver_ready", ())] == 1 and metrics[("npcserver_draining", ())] == 0


async def test_two_servers_keep_separate_metrics() -> None:
    async with (
        NpcServer(fake_settings(), fake_backends()) as first,
        NpcServer(fake_settings(), fake_backends()) as second,
    ):
        await first.wait_ready()
        await second.wait_ready()
        async with connect(first.url) as ws:
            await Conversation(ws).start()
        one, other = await asyncio.gather(asyncio.to_thread(scrape, first), asyncio.to_thread(scrape, second))
        assert one[("npcserver_sessions_total", ())] == 1 and other[("npcserver_sessions_total", ())] == 0


async def test_refused_handshakes_are_counted() -> None:
    async with NpcServer(fake_settings(max_sessions=1), fake_backends()) as server:
        await server.wait_ready()
        async with connect(server.url) as first:
            await Conversation(first).start()
            async with connect(server.url) as second:
                await Conversation(second).until("error")
        metrics = await asyncio.to_thread(scrape, server)
        assert metrics[("npcserver_refused_total", (("reason", "full"),))] == 1
        assert metrics[("npcserver_errors_total", (("code", "server_full"),))] == 1


async def test_info_logs_name_the_session_but_never_what_was_said(
    fake_server: NpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with connect(fake_server.url) as ws:
        talk = Conversation(ws)
        ready = await talk.start()
        await talk.send_json(type="text", text="my secret password is swordfish")
        await talk.until("turn_end")
    for _ in range(100):  # the close is logged a moment after the client leaves
        if f"session {ready['session']} closed" in caplog.text:
            break
        await asyncio.sleep(0.01)
    session_lines = [r.getMessage() for r in caplog.records if ready["session"] in r.getMessage()]
    assert any("connected" in line for line in session_lines) and any("closed" in line for line in session_lines)
    assert "swordfish" not in caplog.text and "Well met" not in caplog.text
