"""Two nodes on loopback sharing a real redis-server: lookups send players to the nearer node, to the
other one when it is full, and forget a node within seconds once it stops."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytest.importorskip("redis", reason="the redis package is not installed (pip install redis)")

from npcserver.edge.server import NpcServer
from tests.conftest import Conversation, RedisServerProcess, fake_backends, fake_settings

pytestmark = pytest.mark.redis

WAIT_S = 10.0
PARIS = (48.85, 2.35)
NEW_YORK = (40.71, -74.0)
PLAYER_IN_BRUSSELS = (50.85, 4.35)


def node_settings(redis_url: str, site_id: str, position: tuple[float, float]) -> Any:
    return fake_settings(
        site_id=site_id,
        site_lat=position[0],
        site_lon=position[1],
        max_sessions=1,
        redis_url=redis_url,
        redis_key_prefix="two-nodes:",
        heartbeat_s=0.2,
        site_ttl_s=1.0,
    )


def lookup(server: NpcServer, position: tuple[float, float]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{server.port}/v1/sites/nearest?lat={position[0]}&lon={position[1]}&npc=greta_blacksmith"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        return dict(json.loads(error.read()))


async def lookup_until(server: NpcServer, condition: Callable[[list[str]], bool]) -> dict[str, Any]:
    """Poll the lookup (bounded) until the ranked site ids satisfy the condition."""
    deadline = time.monotonic() + WAIT_S
    while True:
        answer = await asyncio.to_thread(lookup, server, PLAYER_IN_BRUSSELS)
        if condition([site["id"] for site in answer["sites"]]):
            return answer
        if time.monotonic() > deadline:
            pytest.fail(f"lookup never satisfied the condition; last answer: {answer}")
        await asyncio.sleep(0.05)


async def test_lookup_prefers_the_nearer_node_then_the_other_when_full_then_forgets_a_stopped_one(
    redis_server: RedisServerProcess,
) -> None:
    async with AsyncExitStack() as stack:
        paris = await stack.enter_async_context(
            NpcServer(node_settings(redis_server.url, "paris", PARIS), fake_backends())
        )
        new_york = NpcServer(node_settings(redis_server.url, "new-york", NEW_YORK), fake_backends())
        await new_york.start()
        try:
            await asyncio.gather(paris.wait_ready(), new_york.wait_ready())

            # 1. both nodes known; the player near Brussels is sent to Paris
            answer = await lookup_until(new_york, lambda ids: set(ids) == {"paris", "new-york"})
            assert answer["sites"][0]["id"] == "paris" and answer["sites"][0]["url"] == paris.url

            # 2. Paris fills up (capacity 1): the next player is sent to New York
            first = await stack.enter_async_context(connect(paris.url))
            await Conversation(first).start()
            answer = await lookup_until(paris, lambda ids: ids[:1] == ["new-york"])
            assert "paris" not in [site["id"] for site in answer["sites"]]
            # a player who goes to Paris anyway is refused and told where to go
            async with connect(paris.url) as refused:
                talk = Conversation(refused)
                with pytest.raises(ConnectionClosed):
                    await talk.until("never")
                error = talk.messages[0]
                assert (error["code"], error["retry_url"]) == ("server_full", new_york.url)
            async with connect(answer["sites"][0]["url"]) as second:
                await Conversation(second).start()

            # 3. New York stops: within seconds it drops out of lookups
        finally:
            await new_york.stop()
        stopped_at = time.monotonic()
        await lookup_until(paris, lambda ids: "new-york" not in ids)
        print(f"\nstopped node gone from lookups after {time.monotonic() - stopped_at:.2f} s")
