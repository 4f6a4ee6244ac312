"""Where site records live: this machine alone (plus static sites from a TOML file), or Redis.

Every node owns one `SiteRegistry`. It publishes the node's own record (heartbeats), answers
`list_sites()` for lookups from a local snapshot (a lookup never waits on Redis), marks the node
draining on shutdown and withdraws it when it stops.

Redis layout (one database may hold several deployments, separated by `key_prefix`):
    {prefix}site:{id}  -> the record as JSON, written with an expiry (PX) on every heartbeat
    {prefix}sites      -> a set of site ids, for listing without SCAN; ids whose record expired
                          are dropped from it lazily by whoever lists.
A node that dies stops heartbeating and its key expires after `ttl_s`. If Redis goes away, every
node keeps serving and lookups answer from the last records they read, marked stale; the heartbeat
loop retries with a bounded backoff and the node reappears by itself when Redis returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import socket
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from npcserver.config import Settings
from npcserver.sites.ranking import ANY_NPC, SiteRecord

log = logging.getLogger(__name__)

SiteRecordFn = Callable[[], SiteRecord]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    """The sites a lookup may choose from, as this node knows them."""

    records: tuple[SiteRecord, ...]  # this node's own record first
    stale: bool  # the shared registry could not be read: these are the last known records
    fetched_at: float  # unix seconds of the last successful read of the shared registry

    def staleness_clock(self, now: float) -> float:
        """The `now` to judge heartbeat ages by: while stale, judge them as of the last good read,
        so the last known sites stay eligible instead of all expiring together."""
        return min(now, self.fetched_at) if self.stale else now


class SiteRegistry(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, record: SiteRecord) -> None:
        """Add or refresh one record (another site, a tool); this node's own is heartbeated by start()."""

    async def list_sites(self) -> SiteSnapshot: ...

    async def mark_draining(self) -> None:
        """From now on this node's record says 'draining'; published at once where possible."""

    async def remove(self) -> None:
        """Withdraw this node's record and stop heartbeating it."""


class StaticSitesError(ValueError):
    pass


def load_static_sites(path: Path) -> tuple[SiteRecord, ...]:
    """Read `[[site]]` tables from a TOML file; errors name the file and the site.

    Fields as in SiteRecord; `npcs` omitted means any NPC (we cannot ask a static site what it
    serves) and `active_sessions` is 0 (its load is unknown).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StaticSitesError(f"static sites file {path}: {exc}") from None
    tables = data.get("site", [])
    if not isinstance(tables, list):
        raise StaticSitesError(f"static sites file {path}: 'site' must be an array of tables ([[site]])")
    records = []
    for index, table in enumerate(tables, start=1):
        fields = {"npcs": [ANY_NPC], **table} if isinstance(table, dict) else table
        try:
            records.append(SiteRecord.from_json(fields))
        except ValueError as exc:
            raise StaticSitesError(f"static sites file {path}, site #{index}: {exc}") from None
    ids = [record.id for record in records]
    if len(set(ids)) != len(ids):
        raise StaticSitesError(f"static sites file {path}: site ids must be unique, got {ids}")
    return tuple(records)


class _OwnRecord:
    """This node's record as published: fresh heartbeat time, draining once asked."""

    def __init__(self, record_fn: SiteRecordFn, clock: Clock) -> None:
        self._record_fn = record_fn
        self._clock = clock
        self.draining = False
        self.withdrawn = False

    def current(self, now: float | None = None) -> SiteRecord:
        record = replace(self._record_fn(), heartbeat_at=self._clock() if now is None else now)
        return replace(record, state="draining") if self.draining else record


class LocalRegistry:
    """Embedded default for one machine: this node, plus static sites, plus anything published."""

    def __init__(
        self,
        local_record_fn: SiteRecordFn,
        static_sites_toml: Path | None = None,
        *,
        clock: Clock = time.time,
    ) -> None:
        self._own = _OwnRecord(local_record_fn, clock)
        self._clock = clock
        self._static = load_static_sites(static_sites_toml) if static_sites_toml else ()
        self._published: dict[str, SiteRecord] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self.remove()

    async def publish(self, record: SiteRecord) -> None:
        self._published[record.id] = record

    async def list_sites(self) -> SiteSnapshot:
        now = self._clock()
        records: list[SiteRecord] = [] if self._own.withdrawn else [self._own.current(now)]
        # Static sites cannot heartbeat: they count as alive at every lookup.
        records += [replace(site, heartbeat_at=now) for site in self._static]
        records += self._published.values()
        return SiteSnapshot(_first_per_id(records), stale=False, fetched_at=now)

    async def mark_draining(self) -> None:
        self._own.draining = True

    async def remove(self) -> None:
        self._own.withdrawn = True


class RedisRegistry:
    """Shared registry on a real redis-server (the `redis` package's asyncio client)."""

    def __init__(
        self,
        url: str,
        site_record_fn: SiteRecordFn,
        heartbeat_s: float = 1.0,
        ttl_s: float = 4.0,
        *,
        key_prefix: str = "npcserver:",
        op_timeout_s: float = 0.5,
        max_backoff_s: float = 2.0,
        clock: Clock = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < heartbeat_s < ttl_s:
            raise ValueError(f"heartbeat_s ({heartbeat_s}) must be positive and below ttl_s ({ttl_s})")
        self._url = url
        self._own = _OwnRecord(site_record_fn, clock)
        self._heartbeat_s = heartbeat_s
        self._ttl_ms = max(1, math.ceil(ttl_s * 1000))
        self._prefix = key_prefix
        self._op_timeout_s = op_timeout_s
        self._max_backoff_s = max(max_backoff_s, heartbeat_s)
        self._clock = clock
        self._rng = rng or random.Random()
        self._client: Any = None  # redis.asyncio.Redis; its stubs mix sync and async result types
        self._task: asyncio.Task[None] | None = None
        self._known: tuple[SiteRecord, ...] = ()
        self._fetched_at = 0.0
        self._reachable = False

    # --- lifecycle

    async def start(self) -> None:
        """Connect and publish once; never fails because Redis is down (the loop keeps trying)."""
        if self._task is not None:
            return
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._client = Redis.from_url(
            self._url,
            socket_timeout=self._op_timeout_s,
            socket_connect_timeout=self._op_timeout_s,
            # One immediate retry replaces a pooled connection that died with a restarted server;
            # the heartbeat loop owns the backoff, so the client must not sleep on its own.
            retry=Retry(NoBackoff(), 1),
        )
        await self._beat()
        self._task = asyncio.create_task(self._heartbeat_loop(), name="site-registry-heartbeat")

    async def stop(self) -> None:
        """Stop heartbeating, withdraw this node's record (best effort), close the connections."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self.remove()
            await self._client.aclose()
            self._client = None

    # --- SiteRegistry

    async def publish(self, record: SiteRecord) -> None:
        """Write one record with the expiry; raises redis.RedisError or TimeoutError when Redis is unreachable."""
        if self._client is None:
            raise RuntimeError("RedisRegistry.publish() before start()")
        async with asyncio.timeout(self._op_timeout_s * 2):
            await self._write(record)

    async def list_sites(self) -> SiteSnapshot:
        own = [] if self._own.withdrawn else [self._own.current()]
        stale = not self._reachable or self._clock() - self._fetched_at > self._ttl_ms / 1000
        return SiteSnapshot(_first_per_id([*own, *self._known]), stale=stale, fetched_at=self._fetched_at)

    async def mark_draining(self) -> None:
        self._own.draining = True
        await self._beat()  # tell the others now, not at the next heartbeat

    async def remove(self) -> None:
        self._own.withdrawn = True
        if self._client is None:
            return
        record_id = self._own.current().id
        try:
            async with asyncio.timeout(self._op_timeout_s * 2):
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.delete(self._key(record_id)).srem(self._set_key, record_id)
                    await pipe.execute()
        except (OSError, TimeoutError, _redis_error()) as exc:
            log.warning("site registry: could not withdraw %s from Redis (%s); it expires by itself", record_id, exc)

    # --- internals

    @property
    def _set_key(self) -> str:
        return f"{self._prefix}sites"

    def _key(self, site_id: str) -> str:
        return f"{self._prefix}site:{site_id}"

    async def _heartbeat_loop(self) -> None:
        failures = 0
        while True:
            try:
                beat_ok = await self._beat()
            except Exception:  # a bug (say, in the record function) must not end the heartbeats for good
                log.exception("site registry: heartbeat failed")
                beat_ok = False
            failures = 0 if beat_ok else failures + 1
            if failures == 0:
                delay = self._heartbeat_s
            else:  # exponential, capped, jittered so a fleet does not reconnect in lockstep
                delay = min(self._max_backoff_s, self._heartbeat_s * 2 ** (failures - 1)) * self._rng.uniform(0.5, 1.0)
            await asyncio.sleep(delay)

    async def _beat(self) -> bool:
        """Publish this node's record (unless withdrawn) and refresh the view; False if Redis failed."""
        if self._client is None:  # not started, or stopped
            return False
        try:
            async with asyncio.timeout(self._op_timeout_s * 4):
                if not self._own.withdrawn:
                    await self._write(self._own.current())
                await self._refresh()
        except (OSError, TimeoutError, _redis_error()) as exc:
            if self._reachable or self._fetched_at == 0.0:
                log.warning("site registry: Redis unreachable (%s); answering from the last known sites", exc)
            self._reachable = False
            return False
        if not self._reachable:
            log.info("site registry: Redis reachable; %d sites", len(self._known))
        self._reachable = True
        return True

    async def _write(self, record: SiteRecord) -> None:
        payload = json.dumps(record.to_json(), separators=(",", ":"))
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._key(record.id), payload, px=self._ttl_ms).sadd(self._set_key, record.id)
            await pipe.execute()

    async def _refresh(self) -> None:
        ids = sorted(member.decode() for member in await self._client.smembers(self._set_key))
        values = await self._client.mget([self._key(site_id) for site_id in ids]) if ids else []
        records, expired = [], []
        for site_id, value in zip(ids, values, strict=True):
            if value is None:
                expired.append(site_id)
                continue
            try:
                records.append(SiteRecord.from_json(json.loads(value)))
            except ValueError as exc:  # one bad writer must not hide every other site
                log.warning("site registry: ignoring unreadable record %s: %s", site_id, exc)
        if expired:
            await self._client.srem(self._set_key, *expired)
        self._known = tuple(records)
        self._fetched_at = self._clock()


def _redis_error() -> type[Exception]:
    from redis.exceptions import RedisError

    return RedisError


def _first_per_id(records: Iterable[SiteRecord]) -> tuple[SiteRecord, ...]:
    seen: set[str] = set()
    unique = []
    for record in records:
        if record.id not in seen:
            seen.add(record.id)
            unique.append(record)
    return tuple(unique)


# --- wiring from Settings


def site_id_from_settings(settings: Settings) -> str:
    """This node's site id: the site_id setting, else the host name."""
    return str(settings.site_id or socket.gethostname())


def site_record_from_settings(
    settings: Settings, *, port: int, npcs: Iterable[str], models: Iterable[str], active_sessions: int = 0
) -> SiteRecord:
    """This node's record from the Settings fields site_id (empty: the host name), site_region,
    site_lat, site_lon, public_url and max_sessions; `port` is the port actually bound (settings.port
    may be 0)."""
    url = settings.public_url or f"ws://{settings.host}:{port}/v1/talk"
    return SiteRecord(
        id=site_id_from_settings(settings),
        region=settings.site_region,
        lat=settings.site_lat,
        lon=settings.site_lon,
        url=url,
        active_sessions=active_sessions,
        capacity=settings.max_sessions,
        models=tuple(models),
        npcs=tuple(npcs),
    )


def registry_from_settings(settings: Settings, local_record_fn: SiteRecordFn) -> SiteRegistry:
    """Redis when settings.redis_url is set, else the embedded registry (with settings.static_sites)."""
    if settings.redis_url:
        return RedisRegistry(
            settings.redis_url,
            local_record_fn,
            heartbeat_s=settings.heartbeat_s,
            ttl_s=settings.site_ttl_s,
            key_prefix=settings.redis_key_prefix,
        )
    static = Path(settings.static_sites) if settings.static_sites else None
    return LocalRegistry(local_record_fn, static)
