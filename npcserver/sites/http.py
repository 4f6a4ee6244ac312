"""HTTP handlers for site lookup: `GET /v1/sites/nearest` and `GET /v1/ping`.

Pure functions of the query parameters and a registry snapshot; `edge/server.py` only routes and awaits
`registry.list_sites()`. Both answers may be read cross-origin (a browser game on another origin
looks sites up and probes their RTT) and must never be cached (the ranking changes every second,
and a cached ping measures nothing).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

from npcserver.edge.web import HttpReply, json_reply
from npcserver.sites.ranking import DEFAULT_STALE_AFTER_S, RankedSite, rank_sites
from npcserver.sites.registry import SiteSnapshot

MAX_RTT_ENTRIES = 64
MAX_RTT_MS = 10_000.0
MAX_NPC_LENGTH = 128
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
_NO_CACHE = {"Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"}
# Numbers as a URL writes them: ASCII digits only. float() and int() also take "1_0" and other
# scripts' digits ("٣"), which no client means and a cache or log would read differently.
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_WHOLE = re.compile(r"[0-9]+")


class BadParam(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class NearestQuery:
    lat: float
    lon: float
    npc: str | None
    rtt_ms: dict[str, float]
    limit: int


def parse_nearest_query(query: Mapping[str, str]) -> NearestQuery:
    """Validate `lat`, `lon`, optional `npc`, `rtt` (site-a:23,site-b:40) and `limit`; unknown
    parameters are ignored (a browser may add a token or a cache buster)."""
    if "lat" not in query or "lon" not in query:
        missing = "lat" if "lat" not in query else "lon"
        raise BadParam(missing, "lat and lon are required (the player's position in degrees)")
    lat = _coordinate(query, "lat", 90.0)
    lon = _coordinate(query, "lon", 180.0)
    npc = query.get("npc") or None
    if npc is not None and len(npc) > MAX_NPC_LENGTH:
        raise BadParam("npc", f"npc must be at most {MAX_NPC_LENGTH} characters")
    return NearestQuery(lat, lon, npc, _rtts(query.get("rtt", "")), _limit(query.get("limit")))


def _number(text: str) -> float:
    """A plain ASCII decimal number, or NaN."""
    return float(text) if _DECIMAL.fullmatch(text) else math.nan


def _coordinate(query: Mapping[str, str], name: str, bound: float) -> float:
    value = _number(query[name])
    if not -bound <= value <= bound:  # also false for NaN
        raise BadParam(
            name, f"{name} must be a number of degrees between -{bound:g} and {bound:g}, got {query[name]!r}"
        )
    return value


def _rtts(text: str) -> dict[str, float]:
    rtts: dict[str, float] = {}
    if not text.strip():
        return rtts
    entries = text.split(",")
    if len(entries) > MAX_RTT_ENTRIES:
        raise BadParam("rtt", f"rtt may name at most {MAX_RTT_ENTRIES} sites")
    for entry in entries:
        site_id, sep, value = entry.strip().rpartition(":")
        rtt = _number(value)
        if not sep or not site_id or not 0 <= rtt <= MAX_RTT_MS:
            raise BadParam(
                "rtt", f"rtt must look like site-a:23,site-b:40 (milliseconds, 0-{MAX_RTT_MS:g}); bad entry {entry!r}"
            )
        rtts[site_id] = rtt
    return rtts


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not _WHOLE.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise BadParam("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    return int(text)


def nearest_sites(
    query: Mapping[str, str],
    snapshot: SiteSnapshot,
    now: float,
    *,
    rng: random.Random | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> HttpReply:
    """`GET /v1/sites/nearest`: the ranked sites for a player, as JSON.

    200 with `sites` (best first, each with its WebSocket URL, RTT, load and reasons), `excluded`
    (with why) and `stale` (true while the shared registry is unreachable); 503 with the same body
    when no site can take the player; 400 with `{"error": {"code": "bad_param", "param", "message"}}`
    for a bad parameter.
    """
    try:
        parsed = parse_nearest_query(query)
    except BadParam as exc:
        error = {"code": "bad_param", "param": exc.param, "message": str(exc)}
        return json_reply({"error": error}, status=400, headers=dict(_NO_CACHE))
    ranking = rank_sites(
        parsed.lat,
        parsed.lon,
        snapshot.records,
        npc=parsed.npc,
        measured_rtt_ms=parsed.rtt_ms,
        now=snapshot.staleness_clock(now),
        stale_after_s=stale_after_s,
        rng=rng or random.Random(),
    )
    body: dict[str, object] = {
        "sites": [
            dict(rank=index, **ranked.to_json()) for index, ranked in enumerate(ranking.ranked[: parsed.limit], 1)
        ],
        "excluded": [excluded.to_json() for excluded in ranking.excluded],
        "stale": snapshot.stale,
    }
    if not ranking.ranked:
        body["error"] = {"code": "no_site_available", "message": "no site can take a session now; retry shortly"}
        return json_reply(body, status=503, headers={**_NO_CACHE, "Retry-After": "2"})
    return json_reply(body, headers=dict(_NO_CACHE))


def ping() -> HttpReply:
    """`GET /v1/ping`: the smallest useful answer, for clients measuring their RTT to this site."""
    return HttpReply(200, b"pong", headers={**_NO_CACHE, "Timing-Allow-Origin": "*"})


def next_best_site(
    snapshot: SiteSnapshot,
    local_site_id: str,
    now: float,
    *,
    npc: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    rng: random.Random | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> RankedSite | None:
    """The site to name when this node refuses a session (full or draining), or None.

    Without the player's position, rank from this site's own position: a player who reached this
    site is most likely near it.
    """
    others = [record for record in snapshot.records if record.id != local_site_id]
    if lat is None or lon is None:
        local = next((record for record in snapshot.records if record.id == local_site_id), None)
        if local is None:
            return None
        lat, lon = local.lat, local.lon
    ranking = rank_sites(
        lat,
        lon,
        others,
        npc=npc,
        now=snapshot.staleness_clock(now),
        stale_after_s=stale_after_s,
        rng=rng or random.Random(),
    )
    return ranking.best
