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
