"""Hostile clients against a real server on loopback (fake models): what they try, what they get.

Each test is one attack from issue 18 and what must hold under it. Loops are bounded in count and
time; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from npcserver.config import Settings
from npcserver.edge.auth import issue_token
from npcserver.edge.limits import AddressBudgets
from npcserver.edge.server import NpcServer
from tests.conftest import Conversation, fake_backends, fake_settings, silence

ATTACKER = "127.0.0.1"
PLAYER = "127.0.0.2"  # another loopback address: a different client as far as the server can tell


@asynccontextmanager
async def running(**changes: Any) -> AsyncIterator[NpcServer]:
    async with NpcServer(fake_settings(**changes), fake_backends()) as server:
        await asyncio.wait_for(server.wait_ready(), 10)
        yield server


def connect_from(server: NpcServer, address: str) -> Any:
    return connect(server.url, local_addr=(address, 0), max_queue=None)


async def closed_with(talk: Conversation, timeout: float = 10) -> tuple[int | None, list[str]]:
    """Read until the server closes; its close code and the error codes it sent."""
    try:
        while True:
            await talk.next_message(timeout)
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd is not None else None
    return code, [m["code"] for m in talk.messages if m["type"] == "error"]


async def answered(ws: ClientConnection) -> dict[str, Any]:
    talk = Conversation(ws)
    await talk.start()
    await talk.send_json(type="text", text="How much for a sword?")
    return await talk.until("turn_end", turn=1)


# --------------------------------------------------------------------------- item 2: holding every slot


def test_one_address_may_hold_only_a_small_share_of_the_sessions_by_default() -> None:
    defaults = Settings()
    assert 0 < defaults.max_connections_per_ip <= defaults.max_sessions // 4


async def test_an_address_at_its_share_is_refused_while_another_player_is_admitted() -> None:
    async with running(max_sessions=4, max_connections_per_ip=2) as server, contextlib.AsyncExitStack() as held:
        for _ in range(2):
            await Conversation(await held.enter_async_context(connect_from(server, ATTACKER))).start()
        with pytest.raises(InvalidStatus) as raised:
            await held.enter_async_context(connect_from(server, ATTACKER))
        assert raised.value.response.status_code == 429 and raised.value.response.headers["Retry-After"]
        async with connect_from(server, PLAYER) as ws:
            assert (await answered(ws))["interrupted"] is False


async def test_one_token_holds_no_more_sessions_than_one_address_from_any_address() -> None:
    secret = "a secret of a reasonable length, for the tests"
    async with running(auth_secret=secret, site_id="edge", max_connections_per_ip=2) as server:
        url = server.url + "?token=" + issue_token(secret, "mallory", "edge")
        async with connect(url, local_addr=(ATTACKER, 0)), connect(url, local_addr=("127.0.0.3", 0)):
            with pytest.raises(InvalidStatus) as raised:
                async with connect(url, local_addr=(PLAYER, 0)):
                    pass
            assert raised.value.response.status_code == 429
            other = server.url + "?token=" + issue_token(secret, "alice", "edge")
            async with connect(other, local_addr=(PLAYER, 0)) as ws:
                assert (await answered(ws))["interrupted"] is False


async def test_a_connection_that_never_starts_is_closed_after_start_timeout() -> None:
    async with running(start_timeout_s=0.3) as server, connect_from(server, ATTACKER) as ws:
        talk = Conversation(ws)
        assert await closed_with(talk) == (1000, ["idle_timeout"])


async def test_keep_alives_do_not_hold_a_slot_but_audio_does() -> None:
    async with (
        running(idle_timeout_s=0.6) as server,
        connect_from(server, ATTACKER) as keeping,
        connect_from(server, PLAYER) as talking,
    ):
        attacker, player = Conversation(keeping), Conversation(talking)
        await attacker.start()
        await player.start()
        started = time.monotonic()
        with contextlib.suppress(ConnectionClosed):
            for _ in range(30):  # 3 s of context and interrupt messages, every 0.1 s
                await attacker.send_json(type="context", context={})
                await attacker.send_json(type="interrupt")
                await player.send_audio(silence(0.1), frame_bytes=640)  # an open mic, in real time
                await asyncio.sleep(0.1)
        assert await closed_with(attacker) == (1000, ["idle_timeout"])
        assert time.monotonic() - started < 2.0  # freed about idle_timeout_s after start
        await player.send_json(type="text", text="Still there?")
        assert (await player.until("turn_end", turn=1))["interrupted"] is False


async def test_a_trickle_of_audio_is_no_keep_alive() -> None:
    async with running(idle_timeout_s=0.6) as server, connect_from(server, ATTACKER) as ws:
        talk = Conversation(ws)
        await talk.start()
        with contextlib.suppress(ConnectionClosed):
            for _ in range(30):  # 20 ms of audio every 0.1 s: a fifth of real time
                await talk.send_audio(silence(0.02))
                await asyncio.sleep(0.1)
        assert await closed_with(talk) == (1000, ["idle_timeout"])


# --------------------------------------------------------------------------- item 3: budgets per address


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_address_budget_is_shared_by_its_connections_and_refills() -> None:
    clock = FakeClock()
    budgets = AddressBudgets({"audio": (3.0, 4.0), "text": (0.0, 5.0)}, clock, max_addresses=2)
    assert budgets.take(ATTACKER, "audio", 3.0) and not budgets.take(ATTACKER, "audio", 3.0)  # any connection
    assert budgets.retry_after_s(ATTACKER) == 0.0 and not budgets.take(ATTACKER, "audio", 1.5)
    assert budgets.take(PLAYER, "audio", 3.0)  # another address has its own
    assert all(budgets.take(ATTACKER, "text") for _ in range(100))  # rate 0: not limited
    budgets.take(ATTACKER, "audio", 1.0)
    assert budgets.retry_after_s(ATTACKER) == pytest.approx(1 / 3)
    clock.now = 1.0
    assert budgets.retry_after_s(ATTACKER) == 0.0 and budgets.take(ATTACKER, "audio", 3.0)
    budgets.take("127.0.0.3", "audio", 4.0)  # a third address: the least recent one is forgotten
    assert budgets.take(PLAYER, "audio", 4.0) and budgets.retry_after_s(ATTACKER) == 0.0


async def test_reconnecting_after_each_burst_of_audio_buys_no_more_audio() -> None:
    limited = {"audio_rate_limit": 1.5, "audio_burst_s": 2.0, "max_connections_per_ip": 2}  # per address: 3x, 4 s
    async with running(**limited) as server:

        async def one_burst() -> object:  # 1.5 s of audio at once: under one connection's own 2 s burst
            try:
                async with connect_from(server, ATTACKER) as ws:
                    talk = Conversation(ws)
                    await talk.start()
                    with contextlib.suppress(ConnectionClosed):
                        await talk.send_audio(silence(1.5), frame_bytes=16000)
                        await talk.send_json(type="bad")  # answered once the audio before it was counted
                        await talk.until("error", code="unknown_type")
                        return "served"
                    return await closed_with(talk)
            except InvalidStatus as refused:
                assert int(refused.response.headers["Retry-After"]) >= 1
                return refused.response.status_code

        outcomes = [await one_burst() for _ in range(8)]
        assert (1008, ["rate_limited"]) in outcomes and 429 in outcomes
        assert outcomes.count("served") <= 3  # 4 s of burst, plus what 3x real time refilled meanwhile
        async with connect_from(server, PLAYER) as ws:  # another address is served as ever
            assert (await answered(ws))["interrupted"] is False


@pytest.mark.parametrize("kind", ["text", "context"])
async def test_typed_lines_and_context_are_budgeted_per_address(kind: str) -> None:
    limits = {"max_connections_per_ip": 1, f"{kind}_per_min" if kind == "context" else "text_lines_per_min": 6.0,
              f"{kind}_burst": 3}
    message = {"type": "text", "text": "hello"} if kind == "text" else {"type": "context", "context": {"x": 1}}
    async with running(**limits) as server:
        async with connect_from(server, ATTACKER) as ws:
            talk = Conversation(ws)
            await talk.start()
            with contextlib.suppress(ConnectionClosed):
                for _ in range(6):
                    await talk.send_json(**message)
            assert (await closed_with(talk))[0] == 1008
            assert [m["code"] for m in talk.messages if m["type"] == "error"][-1] == "rate_limited"
        with pytest.raises(InvalidStatus) as raised:  # reconnecting at once: still out of allowance
            async with connect_from(server, ATTACKER):
                pass
        assert raised.value.response.status_code == 429
        assert 1 <= int(raised.value.response.headers["Retry-After"]) <= 10  # a line per 10 s refills
        async with connect_from(server, PLAYER) as ws:
            assert (await answered(ws))["interrupted"] is False


async def test_forged_tokens_are_throttled_per_address_and_logged_once_each_at_most(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "a secret of a reasonable length, for the tests"
    caplog.set_level("INFO", logger="npcserver.edge.server")
    async with running(auth_secret=secret, site_id="edge", auth_failure_burst=3) as server:
        statuses = []
        for _ in range(20):
            forged = issue_token("not the secret at all, but long enough", "mallory", "edge")
            with pytest.raises(InvalidStatus) as raised:
                async with connect(server.url + "?token=" + forged, local_addr=(ATTACKER, 0)):
                    pass
            statuses.append(raised.value.response.status_code)
        assert statuses == [401] * 3 + [429] * 17
        assert caplog.text.count("refused") == 3  # the flood is counted (metrics), not logged line by line
        async with connect(server.url + "?token=" + issue_token(secret, "alice", "edge"), local_addr=(PLAYER, 0)) as ws:
            assert (await answered(ws))["interrupted"] is False


# --------------------------------------------------------------------------- item 4: context bloat


async def test_context_is_capped_per_entry_and_per_session_with_invalid_value() -> None:
    async with running(max_context_keys=8, max_context_entry_chars=100) as server, connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.send_json(type="start", npc="greta_blacksmith", audio={"encoding": "pcm_s16le", "sample_rate": 16000},
                             greeting=False, context={"time_of_day": "x" * 60_000})
        assert (await talk.until("error"))["code"] == "invalid_value"  # the start is refused; a good one works
        await talk.start(context={"time_of_day": "dusk"})
        for number in range(20):  # 60 KB values, then more keys than allowed
            await talk.send_json(type="context", context={f"key{number}": "x" * 60_000})
            await talk.send_json(type="context", context={f"small{number}": number})
        await talk.send_json(type="text", text="Still listening?")
        assert (await talk.until("turn_end", turn=1))["interrupted"] is False
        (session,) = server.sessions
        assert len(session.context) == 8 and session.context["time_of_day"] == "dusk"
        assert len(json.dumps(session.context)) <= 8 * 100
    errors = [m["code"] for m in talk.messages if m["type"] == "error"]
    assert errors == ["invalid_value"] * (1 + 20 + 13)  # every big value, and every key past the eighth


# --------------------------------------------------------------------------- item 5: turn_end


async def test_lines_sent_back_to_back_each_get_exactly_one_turn_end() -> None:
    async with running() as server, connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.send_json(type="start", npc="greta_blacksmith", audio={"encoding": "pcm_s16le", "sample_rate": 16000})
        for number in range(10):  # the greeting (turn 0) and each line cut by the next one
            await talk.send_json(type="text", text=f"line {number}")
        await talk.until("turn_end", turn=10, timeout=10)
    ends = Counter(m["turn"] for m in talk.messages if m["type"] == "turn_end")
    assert ends == Counter(range(11))
    interrupted = {m["turn"] for m in talk.messages if m["type"] == "turn_end" and m["interrupted"]}
    assert interrupted <= set(range(10))


# --------------------------------------------------------------------------- item 6: never a 500


async def raw_http(port: int, request: bytes) -> tuple[int, bytes]:
    """Send a hand-written HTTP request; the status code and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


LONG_SEGMENT = "a" * 300
UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"


@pytest.mark.parametrize(("request_text", "status"), [
    (f"GET /{LONG_SEGMENT} HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (f"GET /static/{LONG_SEGMENT}/{LONG_SEGMENT}.js HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    ("GET /v1/talk HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\nOrigin: http://b\r\n{upgrade}\r\n", 400),
    ("GET /v1/talk HTTP/1.1\r\nHost: x\r\nHost: y\r\n{upgrade}\r\n", 400),
    ("GET /v1/talk HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n{upgrade}\r\n", 400),
])  # fmt: skip
async def test_odd_requests_get_a_short_4xx_never_a_500(request_text: str, status: int) -> None:
    async with running(auth_secret="a secret the checks read Authorization for") as server:
        answer, body = await raw_http(server.port, request_text.replace("{upgrade}", UPGRADE.decode()).encode())
    assert answer == status and len(body) < 200
