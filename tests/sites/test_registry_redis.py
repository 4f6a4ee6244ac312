"""The Redis site registry against a real redis-server on loopback, started and stopped by the tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="the redis package is not installed (pip install redis)")

from redis.asyncio import Redis

from npcserver.sites.ranking import SiteRecord
from npcserver.sites.registry import RedisRegistry, SiteSnapshot
from tests.conftest import REDIS_SERVER, RedisServerProcess

pytestmark = pytest.mark.redis

HEARTBEAT_S = 0.2
TTL_S = 1.0
WAIT_S = 10.0  # upper bound for every wait below; the conditions normally hold within a second or two


def record(site_id: str, lat: float = 48.85, lon: float = 2.35, sessions: int = 0) -> SiteRecord:
    return SiteRecord(
        id=site_id,
        region="test",
        lat=lat,
        lon=lon,
        url=f"ws://127.0.0.1/{site_id}",
        active_sessions=sessions,
        capacity=4,
        npcs=("blacksmith",),
    )


def node(url: str, site: SiteRecord) -> RedisRegistry:
    return RedisRegistry(url, lambda: site, heartbeat_s=HEARTBEAT_S, ttl_s=TTL_S, key_prefix="test:")


async def wait_for(condition: Callable[[SiteSnapshot], bool], registry: RedisRegistry) -> SiteSnapshot:
    """Poll the registry's view until the condition holds; fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        snapshot = await registry.list_sites()
        if condition(snapshot):
            return snapshot
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {WAIT_S} s; last snapshot: {snapshot}")
        await asyncio.sleep(0.05)


def ids(snapshot: SiteSnapshot) -> set[str]:
    return {site.id for site in snapshot.records}


def by_id(snapshot: SiteSnapshot, site_id: str) -> SiteRecord:
    return next(site for site in snapshot.records if site.id == site_id)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def checked() -> None:
        await scenario()
        leftover = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        assert leftover == [], f"tasks left running: {leftover}"

    asyncio.run(checked(), debug=True)


def test_heartbeats_make_each_node_visible_to_the_other(redis_server: RedisServerProcess) -> None:
    async def scenario() -> None:
        sessions = [0]
        node_a = RedisRegistry(
            redis_server.url,
            lambda: record("a", sessions=sessions[0]),
            heartbeat_s=HEARTBEAT_S,
            ttl_s=TTL_S,
            key_prefix="test:",
        )
        node_b = node(redis_server.url, record("b", lat=40.7, lon=-74.0))
        await node_a.start()
        await node_b.start()
        try:
            seen_by_b = await wait_for(lambda snap: ids(snap) == {"a", "b"}, node_b)
            assert not seen_by_b.stale
            assert seen_by_b.records[0].id == "b"  # own record first
            assert by_id(seen_by_b, "a").url == "ws://127.0.0.1/a"
            sessions[0] = 3  # load changes reach the other node with the next heartbeat
            await wait_for(lambda snap: by_id(snap, "a").active_sessions == 3, node_b)
            client = Redis.from_url(redis_server.url)
            try:  # every record carries an expiry no longer than the TTL
                ttl_ms = await client.pttl("test:site:a")
                assert 0 < ttl_ms <= TTL_S * 1000
            finally:
                await client.aclose()
        finally:
            await node_a.stop()
            await node_b.stop()

    run(scenario)


KILLED_NODE = """
import asyncio, sys
from npcserver.sites.registry import RedisRegistry
from npcserver.sites.ranking import SiteRecord

async def main():
    site = SiteRecord(id="doomed", region="test", lat=0.0, lon=0.0, url="ws://127.0.0.1/doomed", capacity=4)
    registry = RedisRegistry(sys.argv[1], lambda: site, heartbeat_s=0.2, ttl_s=1.0, key_prefix="test:")
    await registry.start()
    print("published", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_a_killed_node_expires_within_the_ttl(redis_server: RedisServerProcess) -> None:
    async def scenario() -> None:
        observer = node(redis_server.url, record("observer"))
        await observer.start()
        doomed = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            KILLED_NODE,
            redis_server.url,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        try:
            assert doomed.stdout is not None
            assert await asyncio.wait_for(doomed.stdout.readline(), WAIT_S) == b"published\n"
            await wait_for(lambda snap: "doomed" in ids(snap), observer)
            doomed.send_signal(signal.SIGKILL)  # no goodbye: only the expiry can remove it
            await doomed.wait()
            client = Redis.from_url(redis_server.url)
            try:  # Redis itself deletes the record at most TTL_S after the last heartbeat ...
                assert await client.pttl("test:site:doomed") <= TTL_S * 1000
            finally:
                await client.aclose()
            # ... and the other nodes drop it from lookups at their next heartbeat after that.
            await wait_for(lambda snap: "doomed" not in ids(snap), observer)
        finally:
            if doomed.returncode is None:
                doomed.kill()
                await doomed.wait()
            await observer.stop()

    run(scenario)


def test_draining_is_visible_to_other_nodes_and_stop_withdraws_the_record(redis_server: RedisServerProcess) -> None:
    async def scenario() -> None:
        leaving = node(redis_server.url, record("leaving"))
        observer = node(redis_server.url, record("observer"))
        await leaving.start()
        await observer.start()
        try:
            await wait_for(lambda snap: "leaving" in ids(snap), observer)
            await leaving.mark_draining()
            drained = await wait_for(lambda snap: by_id(snap, "leaving").state == "draining", observer)
            assert by_id(drained, "leaving").url == "ws://127.0.0.1/leaving"
            assert (await leaving.list_sites()).records[0].state == "draining"
            await leaving.stop()  # a clean stop deletes the record at once instead of waiting for expiry
            client = Redis.from_url(redis_server.url)
            try:
                assert await client.exists("test:site:leaving") == 0
            finally:
                await client.aclose()
            await wait_for(lambda snap: "leaving" not in ids(snap), observer)
        finally:
            await leaving.stop()
            await observer.stop()

    run(scenario)


def test_redis_restart_answers_stale_then_recovers(redis_server: RedisServerProcess) -> None:
    async def scenario() -> None:
        node_a = node(redis_server.url, record("a"))
        node_b = node(redis_server.url, record("b"))
        await node_a.start()
        await node_b.start()
        try:
            await wait_for(lambda snap: ids(snap) == {"a", "b"} and not snap.stale, node_a)

            await asyncio.to_thread(redis_server.kill)
            outage = await wait_for(lambda snap: snap.stale, node_a)
            # The last known sites still answer lookups, including the other node.
            assert ids(outage) == {"a", "b"}
            await asyncio.sleep(TTL_S + HEARTBEAT_S)  # an outage longer than the TTL keeps them too
            assert ids(await node_a.list_sites()) == {"a", "b"}

            await asyncio.to_thread(redis_server.start)  # same port, empty database
            recovered = await wait_for(lambda snap: not snap.stale and ids(snap) == {"a", "b"}, node_a)
            assert by_id(recovered, "b").state == "serving"
            await wait_for(lambda snap: not snap.stale and ids(snap) == {"a", "b"}, node_b)
        finally:
            await node_a.stop()
            await node_b.stop()

    run(scenario)


def test_a_node_started_while_redis_is_down_serves_itself_and_joins_later(tmp_path: Path) -> None:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    server = RedisServerProcess(tmp_path)  # port chosen, not started yet

    async def scenario() -> None:
        lonely = node(server.url, record("lonely"))
        await lonely.start()  # must not fail
        try:
            snapshot = await lonely.list_sites()
            assert snapshot.stale and ids(snapshot) == {"lonely"}
            await asyncio.to_thread(server.start)
            await wait_for(lambda snap: not snap.stale, lonely)
            client = Redis.from_url(server.url)
            try:
                assert await client.exists("test:site:lonely") == 1
            finally:
                await client.aclose()
        finally:
            await lonely.stop()

    try:
        run(scenario)
    finally:
        server.kill()


def test_unreadable_records_are_skipped_not_fatal(redis_server: RedisServerProcess) -> None:
    async def scenario() -> None:
        client = Redis.from_url(redis_server.url)
        reader = node(redis_server.url, record("reader"))
        try:
            await client.set("test:site:broken", b"{not json")
            await client.sadd("test:sites", "broken")
            await reader.start()
            await reader.publish(replace(record("pushed"), heartbeat_at=time.time()))
            snapshot = await wait_for(lambda snap: "pushed" in ids(snap), reader)
            assert "broken" not in ids(snapshot) and not snapshot.stale
        finally:
            await reader.stop()
            await client.aclose()

    run(scenario)
