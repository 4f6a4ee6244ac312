"""Every abuse limit: unit tests of the bookkeeping, then each limit against a real server with fake models."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from npcserver.conversation.pipeline import StageLoad
from npcserver.edge.limits import ConnectionCounter, Pressure, SessionLimits, TokenBucket
from npcserver.edge.server import NpcServer
from tests.conftest import Conversation, fake_backends, fake_settings, silence, tone


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- bookkeeping


def test_token_bucket_allows_the_rate_and_a_burst_but_not_more() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=4.0, clock=clock)
    assert all(bucket.take() for _ in range(4)) and not bucket.take()
    clock.now = 1.0
    assert bucket.take() and bucket.take() and not bucket.take()


def test_audio_at_real_time_is_never_limited_but_three_times_real_time_is() -> None:
    clock = FakeClock()
    limits = SessionLimits(frames_per_s=0, frame_burst=0, audio_rate=1.5, audio_burst_s=5.0, clock=clock)
    for _ in range(3000):  # 60 s of 20 ms frames, sent in real time
        clock.now += 0.02
        assert limits.audio_allowed(0.02)
    refused = 0
    for _ in range(3000):  # then three times real time
        clock.now += 0.02 / 3
        refused += not limits.audio_allowed(0.02)
    assert refused > 0


def test_connection_counter_caps_each_address() -> None:
    counter = ConnectionCounter(per_address=2)
    counter.opened("1.2.3.4")
    counter.opened("1.2.3.4")
    assert not counter.allows("1.2.3.4") and counter.allows("5.6.7.8")
    counter.closed("1.2.3.4")
    assert counter.allows("1.2.3.4")
    counter.closed("1.2.3.4")
    assert counter.count("1.2.3.4") == 0
    assert ConnectionCounter(per_address=0).allows("anyone")


def test_pressure_names_memory_and_queue_overload() -> None:
    pressure = Pressure(max_rss_mb=100, max_queue_depth=3)
    assert pressure.refusal(50 * 2**20, {"llm": StageLoad(pending=3)}) is None
    assert "memory" in (pressure.refusal(200 * 2**20, {}) or "")
    assert "llm queue" in (pressure.refusal(0, {"llm": StageLoad(pending=4)}) or "")
    assert Pressure(0, 0).refusal(10**12, {"llm": StageLoad(pending=10**6)}) is None


# --------------------------------------------------------------------------- against a server


@asynccontextmanager
async def running(**changes: Any) -> AsyncIterator[NpcServer]:
    async with NpcServer(fake_settings(**changes), fake_backends()) as server:
        await asyncio.wait_for(server.wait_ready(), 10)
        yield server


async def closed_with(talk: Conversation) -> tuple[int | None, list[str]]:
    """Read until the server closes; its close code and the error codes it sent."""
    try:
        while True:
            await talk.next_message(timeout=10)
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd is not None else None
    return code, [m["code"] for m in talk.messages if m["type"] == "error"]


async def test_audio_much_faster_than_real_time_is_rate_limited() -> None:
    async with running(audio_rate_limit=1.5, audio_burst_s=2.0) as server, connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        with contextlib.suppress(ConnectionClosed):  # the server may close before the last frame leaves
            await talk.send_audio(silence(20.0), frame_bytes=16000)  # 20 s of audio in a moment
        assert await closed_with(talk) == (1008, ["rate_limited"])


async def test_too_many_messages_are_rate_limited() -> None:
    async with running(max_frames_per_s=5, frame_burst=10) as server, connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        with contextlib.suppress(ConnectionClosed):
            for _ in range(100):
                await talk.send_json(type="interrupt")
                await asyncio.sleep(0)
        code, errors = await closed_with(talk)
        assert code == 1008 and errors[-1] == "rate_limited"


async def test_an_idle_session_is_closed() -> None:
    async with running(idle_timeout_s=0.3) as server, connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        assert await closed_with(talk) == (1000, ["idle_timeout"])
        for _ in range(200):  # the server's side of the close finishes a moment later
            if not server.sessions:
                break
            await asyncio.sleep(0.01)
        assert not server.sessions


async def test_a_session_listening_to_a_long_reply_is_not_idle() -> None:
    from npcserver.backends.fake import FakeDialogue

    backends = fake_backends()
    slow = type(backends)(backends.transcriber, FakeDialogue(token_delay_s=0.05), backends.synthesizer)
    async with NpcServer(fake_settings(idle_timeout_s=0.2), slow) as server:
        await server.wait_ready()
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await talk.send_json(type="text", text="Tell me a story")
            end = await talk.until("turn_end")  # takes ~0.7 s of generation, longer than the idle timeout
            assert end["interrupted"] is False


async def test_connections_per_address_are_capped() -> None:
    async with running(max_connections_per_ip=2) as server:
        async with connect(server.url), connect(server.url):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(server.url):
                    pass
            assert refused.value.response.status_code == 429
        async with connect(server.url) as ws:  # freed again once they closed
            await Conversation(ws).start()


async def test_a_full_node_refuses_with_server_full() -> None:
    async with running(max_sessions=1) as server, connect(server.url) as first:
        await Conversation(first).start()
        async with connect(server.url) as second:
            talk = Conversation(second)
            code, errors = await closed_with(talk)
            assert (code, errors) == (1013, ["server_full"])


async def test_memory_pressure_refuses_new_sessions() -> None:
    async with running(max_rss_mb=1) as server, connect(server.url) as ws:
        talk = Conversation(ws)
        code, errors = await closed_with(talk)
        assert (code, errors) == (1013, ["server_full"])
        assert "overloaded" in talk.messages[0]["message"]


async def test_model_queue_pressure_refuses_new_sessions_and_readyz_says_why() -> None:
    import json
    import urllib.error
    import urllib.request

    async with running(max_queue_depth=2) as server:
        assert server.runner is not None
        server.runner.load["llm"].pending = 3  # as if three turns waited for the LLM
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            code, errors = await closed_with(talk)
            assert (code, errors) == (1013, ["server_full"])
            assert "overloaded" in talk.messages[0]["message"]

        def readyz() -> tuple[int, dict[str, Any]]:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5)
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())
            raise AssertionError("readyz answered 200 while overloaded")

        status, body = await asyncio.to_thread(readyz)
        assert status == 503 and body["status"] == "overloaded" and "llm" in body["reason"]
        server.runner.load["llm"].pending = 0


async def test_a_long_utterance_is_cut_at_max_utterance_s() -> None:
    async with running(max_utterance_s=1.0) as server, connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        await talk.send_audio(tone(3.0) + silence(1.0))  # three seconds without a pause
        await talk.until("turn_end", interrupted=False)
        heard = [float(m["text"].split()[3]) for m in talk.messages if m["type"] == "transcript"]
        assert heard and max(heard) < 1.6  # no turn holds more than the limit (plus pre-roll)


def test_an_ipv6_client_counts_as_its_slash_64_and_a_mapped_ipv4_as_itself() -> None:
    from npcserver.edge.limits import client_key

    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")  # the next network is another client
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7" == client_key("203.0.113.7")
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key("?") == "?"


def test_rotating_through_one_ipv6_network_buys_no_more_connections() -> None:
    from npcserver.edge.limits import ConnectionCounter, client_key

    counter = ConnectionCounter(per_address=2)
    for host in range(2):
        counter.opened(client_key(f"2001:db8::{host + 1}"))
    assert not counter.allows(client_key("2001:db8::99"))  # a fresh address in the same /64
    assert counter.allows(client_key("2001:db8:0:1::1"))
