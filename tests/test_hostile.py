"""Hostile clients against a real server on loopback (fake models): what they try, what they get.

Each test is one attack from issue 18 and what must hold under it. Loops are bounded in count and
time; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import connect

from npcserver.server import NpcServer
from tests.conftest import Conversation, fake_backends, fake_settings


@asynccontextmanager
async def running(**changes: Any) -> AsyncIterator[NpcServer]:
    async with NpcServer(fake_settings(**changes), fake_backends()) as server:
        await asyncio.wait_for(server.wait_ready(), 10)
        yield server


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
