"""Nearest-site selection: a pure function over site records.

A player should reach the site that answers fastest, unless it is stale, draining, full or lacks the
NPC; then the next best. `rank_sites` takes the records (wherever they came from: the local node, a
TOML file, Redis) and returns every eligible site in order, with the reasons, plus the excluded ones
with why, so a client can fall back in order and an operator can read why a player went where.

The score of an eligible site is a latency in milliseconds:

    score = network RTT (measured by the client, else estimated from distance) + load penalty

- RTT estimate: light in fibre covers ~200 km per millisecond (refractive index ~1.47), but fibre does
  not follow the great circle: cables follow coasts, roads and rail, and traffic detours through
  exchange points. Measurement studies of Internet paths find typical minimum RTTs of a few times the
  vacuum light-speed bound, i.e. roughly 1.3-2x the great-circle fibre time. We use a route factor of
  1.5 and add a fixed access-network overhead (Wi-Fi, DSL/cable/5G last mile) that is the same for every
  site and so only matters for absolute figures, not for the order.
- Load penalty: a site near capacity gets slower (GPU batches grow, queues form) and will soon refuse
  sessions. Queueing theory says waiting grows like u / (1 - u) with utilisation u (M/M/1), so the
  penalty is `LOAD_PENALTY_SCALE_MS * u / (1 - u)`: 20 ms at half load, 80 ms at 80 %, 380 ms at 95 %.
  A full site (sessions >= capacity) is excluded outright.
- Near-equal sites (within a few ms or a few % of the best score) are shuffled with the injected rng,
  so a crowd of players in one city spreads over equivalent sites instead of piling onto one.

Everything here is deterministic given `now` and `rng`; nothing reads the clock or does I/O.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, cast

SiteState = Literal["serving", "draining"]
RttSource = Literal["measured", "estimated"]

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)
FIBRE_KM_PER_MS = 200.0  # speed of light in glass, one way
ROUTE_FACTOR = 1.5  # real fibre paths are longer than the great circle
ACCESS_OVERHEAD_MS = 5.0  # last-mile round trip added to every estimate
LOAD_PENALTY_SCALE_MS = 20.0  # penalty at 50 % load; grows like u / (1 - u)
NEAR_EQUAL_MS = 5.0  # sites this close to the best score count as equal ...
NEAR_EQUAL_FRACTION = 0.05  # ... or this fraction of the best score, whichever is larger
DEFAULT_STALE_AFTER_S = 5.0
ANY_NPC = "*"  # a site whose npcs contain this serves every NPC (e.g. a static site we cannot ask)


@dataclass(frozen=True, slots=True)
class SiteRecord:
    """What one site says about itself (heartbeated into the registry)."""

    id: str
    region: str
    lat: float
    lon: float
    url: str  # public WebSocket URL players connect to
    state: SiteState = "serving"
    active_sessions: int = 0
    capacity: int = 1
    models: tuple[str, ...] = ()
    npcs: tuple[str, ...] = ()
    heartbeat_at: float = 0.0  # unix seconds

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = list(self.models)
        data["npcs"] = list(self.npcs)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SiteRecord:
        """Build a record from decoded JSON or TOML; raises ValueError naming the bad field."""
        if not isinstance(data, Mapping):
            raise ValueError("a site record must be an object")  # noqa: TRY004 - one error type for every malformed record
        try:
            record = cls(
                id=_text(data, "id"),
                region=_text(data, "region"),
                lat=_number(data, "lat", -90.0, 90.0),
                lon=_number(data, "lon", -180.0, 180.0),
                url=_text(data, "url"),
                state=cast(SiteState, data.get("state", "serving")),
                active_sessions=_count(data, "active_sessions", default=0),
                capacity=_count(data, "capacity", default=1),
                models=_texts(data, "models", default=()),
                npcs=_texts(data, "npcs", default=()),
                heartbeat_at=_number(data, "heartbeat_at", 0, math.inf, default=0.0),
            )
        except KeyError as exc:
            raise ValueError(f"site record lacks {exc.args[0]!r}") from None
        if record.state not in ("serving", "draining"):
            raise ValueError(f"site {record.id!r}: state must be 'serving' or 'draining', got {record.state!r}")
        return record


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"site record field {name!r} must be a non-empty string, got {value!r}")
    return value


def _number(data: Mapping[str, Any], name: str, low: float, high: float, default: float | None = None) -> float:
    value = data[name] if default is None else data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"site record field {name!r} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _count(data: Mapping[str, Any], name: str, default: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"site record field {name!r} must be a whole number >= 0, got {value!r}")
    return value


def _texts(data: Mapping[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = data.get(name, default)
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"site record field {name!r} must be a list of strings, got {value!r}")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class RankedSite:
    """An eligible site, in the order the client should try it."""

    site: SiteRecord
    rtt_ms: float  # network round trip, measured or estimated
    rtt_source: RttSource
    distance_km: float
    load: float  # utilisation, active_sessions / capacity
    load_penalty_ms: float
    score_ms: float  # rtt_ms + load_penalty_ms; lower is better
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.site.id,
            "region": self.site.region,
            "url": self.site.url,
            "rtt_ms": round(self.rtt_ms, 1),
            "rtt_source": self.rtt_source,
            "distance_km": round(self.distance_km),
            "load": round(self.load, 3),
            "active_sessions": self.site.active_sessions,
            "capacity": self.site.capacity,
            "score_ms": round(self.score_ms, 1),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class ExcludedSite:
    site: SiteRecord
    reasons: tuple[str, ...]  # every rule that excluded it

    def to_json(self) -> dict[str, Any]:
        return {"id": self.site.id, "region": self.site.region, "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class SiteRanking:
    ranked: tuple[RankedSite, ...]  # best first
    excluded: tuple[ExcludedSite, ...]

    @property
    def best(self) -> RankedSite | None:
        return self.ranked[0] if self.ranked else None


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance on a spherical Earth (error < 0.5 %, far below the route uncertainty)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    h = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def estimate_rtt_ms(
    distance_km: float, *, route_factor: float = ROUTE_FACTOR, access_overhead_ms: float = ACCESS_OVERHEAD_MS
) -> float:
    """Round trip over fibre: there and back at 200 km/ms, inflated by the route factor, plus the last mile."""
    return 2 * distance_km / FIBRE_KM_PER_MS * route_factor + access_overhead_ms


def load_penalty_ms(active_sessions: int, capacity: int, *, scale_ms: float = LOAD_PENALTY_SCALE_MS) -> float:
    """Queueing-style penalty u / (1 - u); infinite for a full site."""
    if capacity <= 0 or active_sessions >= capacity:
        return math.inf
    utilisation = active_sessions / capacity
    return scale_ms * utilisation / (1 - utilisation)


def exclusion_reasons(
    site: SiteRecord, *, npc: str | None, now: float, stale_after_s: float = DEFAULT_STALE_AFTER_S
) -> tuple[str, ...]:
    reasons = []
    age = now - site.heartbeat_at
    if age > stale_after_s:
        reasons.append(f"stale: last heartbeat {age:.1f} s ago (limit {stale_after_s:g} s)")
    if site.state == "draining":
        reasons.append("draining: takes no new sessions")
    if site.capacity <= 0 or site.active_sessions >= site.capacity:
        reasons.append(f"full: {site.active_sessions}/{site.capacity} sessions")
    if npc is not None and npc not in site.npcs and ANY_NPC not in site.npcs:
        reasons.append(f"lacks NPC {npc!r}")
    return tuple(reasons)


def rank_sites(
    player_lat: float,
    player_lon: float,
    sites: Iterable[SiteRecord],
    *,
    npc: str | None = None,
    measured_rtt_ms: Mapping[str, float] | None = None,
    now: float,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    rng: random.Random,
    route_factor: float = ROUTE_FACTOR,
    access_overhead_ms: float = ACCESS_OVERHEAD_MS,
    load_penalty_scale_ms: float = LOAD_PENALTY_SCALE_MS,
    near_equal_ms: float = NEAR_EQUAL_MS,
    near_equal_fraction: float = NEAR_EQUAL_FRACTION,
) -> SiteRanking:
    """Rank the sites for one player, best first; see the module docstring for the rules."""
    usable = {
        site_id: float(rtt) for site_id, rtt in (measured_rtt_ms or {}).items() if math.isfinite(rtt) and rtt >= 0
    }
    unique: list[SiteRecord] = []  # one record per site: the first wins (callers pass the freshest first)
    seen: set[str] = set()
    for site in sites:
        if site.id not in seen:
            seen.add(site.id)
            unique.append(site)
    distance_to = {site.id: great_circle_km(player_lat, player_lon, site.lat, site.lon) for site in unique}
    overhead, calibrated = _access_overhead(usable, distance_to, route_factor, access_overhead_ms)

    scored: list[RankedSite] = []
    excluded: list[ExcludedSite] = []
    for site in unique:
        reasons = exclusion_reasons(site, npc=npc, now=now, stale_after_s=stale_after_s)
        if reasons:
            excluded.append(ExcludedSite(site, reasons))
            continue
        distance = distance_to[site.id]
        source: RttSource
        if site.id in usable:
            rtt, source = usable[site.id], "measured"
            why = f"measured RTT {rtt:.0f} ms"
        else:
            rtt = estimate_rtt_ms(distance, route_factor=route_factor, access_overhead_ms=overhead)
            source = "estimated"
            why = f"estimated RTT {rtt:.0f} ms from {distance:.0f} km"
            if calibrated:
                why += f" (last mile {overhead:.0f} ms, from the measured RTTs)"
        penalty = load_penalty_ms(site.active_sessions, site.capacity, scale_ms=load_penalty_scale_ms)
        load = site.active_sessions / site.capacity
        load_why = f"load {load:.0%} ({site.active_sessions}/{site.capacity}) adds {penalty:.0f} ms"
        scored.append(RankedSite(site, rtt, source, distance, load, penalty, rtt + penalty, (why, load_why)))

    # The id breaks exact ties so the result depends only on the inputs and the rng.
    scored.sort(key=lambda ranked: (ranked.score_ms, ranked.site.id))
    if len(scored) > 1:
        best = scored[0].score_ms
        tolerance = max(near_equal_ms, near_equal_fraction * best)
        tied = [ranked for ranked in scored if ranked.score_ms <= best + tolerance]
        if len(tied) > 1:
            rng.shuffle(tied)
            note = f"within {tolerance:.0f} ms of the best of {len(tied)} near-equal sites: order randomised"
            tied = [_with_reason(ranked, note) for ranked in tied]
            scored = tied + scored[len(tied) :]
    return SiteRanking(tuple(scored), tuple(excluded))


def _access_overhead(
    measured: Mapping[str, float], distance_to: Mapping[str, float], route_factor: float, default_ms: float
) -> tuple[float, bool]:
    """The player's own last-mile round trip, learnt from its measurements where it has any.

    A measured RTT includes the player's real access network (Wi-Fi, DSL: often 10-30 ms), while the
    estimate assumes a default. Mixing both would favour unmeasured sites, so estimates for the
    unmeasured ones use the median excess of the measurements over the distance-only estimate.
    """
    excess = sorted(
        rtt - estimate_rtt_ms(distance_to[site_id], route_factor=route_factor, access_overhead_ms=0.0)
        for site_id, rtt in measured.items()
        if site_id in distance_to
    )
    if not excess:
        return default_ms, False
    middle = len(excess) // 2
    median = excess[middle] if len(excess) % 2 else (excess[middle - 1] + excess[middle]) / 2
    return max(0.0, median), True


def _with_reason(ranked: RankedSite, reason: str) -> RankedSite:
    return replace(ranked, reasons=(*ranked.reasons, reason))
