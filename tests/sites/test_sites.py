"""Site selection rules, the lookup HTTP handlers and the embedded registry (no Redis, no sockets)."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from npcserver.sites.http import nearest_sites, next_best_site, ping
from npcserver.sites.ranking import (
    SiteRecord,
    estimate_rtt_ms,
    great_circle_km,
    load_penalty_ms,
    rank_sites,
)
from npcserver.sites.registry import (
    LocalRegistry,
    SiteSnapshot,
    StaticSitesError,
    load_static_sites,
    registry_from_settings,
    site_record_from_settings,
)

NOW = 1_000_000.0
PARIS = (48.8566, 2.3522)
LONDON = (51.5074, -0.1278)
FRANKFURT = (50.1109, 8.6821)
NEW_YORK = (40.7128, -74.0060)
SYDNEY = (-33.8688, 151.2093)
MADRID = (40.4168, -3.7038)


def site(site_id: str, position: tuple[float, float], **fields: object) -> SiteRecord:
    defaults: dict[str, object] = {
        "region": site_id,
        "url": f"wss://{site_id}.example/v1/talk",
        "capacity": 100,
        "npcs": ("blacksmith", "innkeeper"),
        "models": ("tiny.en",),
        "heartbeat_at": NOW,
    }
    defaults.update(fields)
    return SiteRecord(id=site_id, lat=position[0], lon=position[1], **defaults)  # type: ignore[arg-type]


def ranked_ids(*sites: SiteRecord, player: tuple[float, float] = PARIS, seed: int = 0, **options: object) -> list[str]:
    ranking = rank_sites(player[0], player[1], sites, now=NOW, rng=random.Random(seed), **options)  # type: ignore[arg-type]
    return [ranked.site.id for ranked in ranking.ranked]


# --- distance and RTT model


def test_great_circle_distance_matches_known_city_pairs() -> None:
    assert great_circle_km(*PARIS, *LONDON) == pytest.approx(344, abs=5)
    assert great_circle_km(*LONDON, *NEW_YORK) == pytest.approx(5570, rel=0.01)
    assert great_circle_km(*PARIS, *PARIS) == 0


def test_rtt_estimate_is_fibre_time_there_and_back_inflated_plus_last_mile() -> None:
    # 1000 km: 5 ms one way in fibre, 10 ms round trip, x1.5 route, +5 ms access network.
    assert estimate_rtt_ms(1000) == pytest.approx(20.0)
    assert estimate_rtt_ms(0) == pytest.approx(5.0)


def test_load_penalty_grows_sharply_near_capacity_and_is_infinite_when_full() -> None:
    assert load_penalty_ms(0, 10) == 0
    assert load_penalty_ms(5, 10) == pytest.approx(20)
    assert load_penalty_ms(9, 10) > 4 * load_penalty_ms(5, 10) * 2
    assert load_penalty_ms(10, 10) == float("inf")


# --- selection rules


def test_nearest_site_ranks_first_and_far_sites_follow_in_distance_order() -> None:
    assert ranked_ids(site("sydney", SYDNEY), site("new-york", NEW_YORK), site("london", LONDON)) == [
        "london",
        "new-york",
        "sydney",
    ]


def test_every_ranked_site_explains_its_place() -> None:
    ranking = rank_sites(*PARIS, [site("london", LONDON, active_sessions=50)], now=NOW, rng=random.Random(0))
    best = ranking.best
    assert best is not None
    assert best.rtt_source == "estimated"
    assert "estimated RTT" in best.reasons[0] and "344 km" in best.reasons[0]
    assert "load 50%" in best.reasons[1]
    assert best.score_ms == pytest.approx(best.rtt_ms + 20)


def test_measured_rtt_wins_over_the_distance_estimate() -> None:
    # London is nearer, but the player measured Frankfurt faster (a better route).
    sites = (site("london", LONDON), site("frankfurt", FRANKFURT))
    assert ranked_ids(*sites, measured_rtt_ms={"london": 60.0, "frankfurt": 12.0}) == ["frankfurt", "london"]
    ranking = rank_sites(*PARIS, sites, measured_rtt_ms={"frankfurt": 12.0}, now=NOW, rng=random.Random(0))
    by_id = {ranked.site.id: ranked for ranked in ranking.ranked}
    assert by_id["frankfurt"].rtt_source == "measured" and by_id["frankfurt"].rtt_ms == 12.0
    assert by_id["london"].rtt_source == "estimated"


def test_estimates_learn_the_players_last_mile_from_its_measurements() -> None:
    # A player on slow Wi-Fi measured London at 40 ms (about 8 ms of it distance): unmeasured
    # Madrid must not look faster just because the default estimate assumes a 5 ms last mile.
    sites = (site("london", LONDON), site("madrid", MADRID))
    assert ranked_ids(*sites, measured_rtt_ms={"london": 40.0}) == ["london", "madrid"]
    ranking = rank_sites(*PARIS, sites, measured_rtt_ms={"london": 40.0}, now=NOW, rng=random.Random(0))
    madrid = ranking.ranked[1]
    assert madrid.rtt_source == "estimated" and madrid.rtt_ms > 40
    assert "from the measured RTTs" in madrid.reasons[0]


def test_unusable_measurements_fall_back_to_the_estimate() -> None:
    ranking = rank_sites(
        *PARIS, [site("london", LONDON)], measured_rtt_ms={"london": float("nan")}, now=NOW, rng=random.Random(0)
    )
    assert ranking.ranked[0].rtt_source == "estimated"


def test_stale_heartbeat_excludes_a_site_with_the_age_as_reason() -> None:
    ranking = rank_sites(
        *PARIS,
        [site("london", LONDON, heartbeat_at=NOW - 7.5), site("new-york", NEW_YORK)],
        now=NOW,
        rng=random.Random(0),
    )
    assert [ranked.site.id for ranked in ranking.ranked] == ["new-york"]
    assert ranking.excluded[0].site.id == "london"
    assert ranking.excluded[0].reasons == ("stale: last heartbeat 7.5 s ago (limit 5 s)",)


def test_stale_limit_is_configurable() -> None:
    fresh_enough = site("london", LONDON, heartbeat_at=NOW - 7.5)
    assert ranked_ids(fresh_enough, stale_after_s=10.0) == ["london"]


def test_draining_site_is_excluded() -> None:
    ranking = rank_sites(*PARIS, [site("london", LONDON, state="draining")], now=NOW, rng=random.Random(0))
    assert ranking.ranked == () and ranking.best is None
    assert ranking.excluded[0].reasons == ("draining: takes no new sessions",)


def test_full_site_is_excluded_and_the_next_nearest_takes_the_player() -> None:
    full = site("london", LONDON, active_sessions=100, capacity=100)
    ranking = rank_sites(*PARIS, [full, site("new-york", NEW_YORK)], now=NOW, rng=random.Random(0))
    assert [ranked.site.id for ranked in ranking.ranked] == ["new-york"]
    assert ranking.excluded[0].reasons == ("full: 100/100 sessions",)


def test_site_without_capacity_counts_as_full() -> None:
    assert ranked_ids(site("london", LONDON, capacity=0)) == []


def test_site_lacking_the_npc_is_excluded_unless_it_serves_any_npc() -> None:
    sites = (site("london", LONDON, npcs=("innkeeper",)), site("static", FRANKFURT, npcs=("*",)))
    ranking = rank_sites(*PARIS, sites, npc="blacksmith", now=NOW, rng=random.Random(0))
    assert [ranked.site.id for ranked in ranking.ranked] == ["static"]
    assert ranking.excluded[0].reasons == ("lacks NPC 'blacksmith'",)
    assert ranked_ids(*sites) == ["london", "static"]  # no NPC asked: both qualify


def test_all_reasons_are_listed_for_an_excluded_site() -> None:
    broken = site("london", LONDON, state="draining", active_sessions=5, capacity=5, heartbeat_at=NOW - 60, npcs=())
    ranking = rank_sites(*PARIS, [broken], npc="blacksmith", now=NOW, rng=random.Random(0))
    assert len(ranking.excluded[0].reasons) == 4


def test_a_loaded_near_site_loses_to_an_idle_site_a_little_further() -> None:
    # London ~6 ms from Paris, Frankfurt ~11 ms: at 90 % load London costs 180 ms more.
    busy_london = site("london", LONDON, active_sessions=90)
    assert ranked_ids(busy_london, site("frankfurt", FRANKFURT)) == ["frankfurt", "london"]
    # At low load the nearer site still wins over one clearly further (Madrid ~21 ms).
    assert ranked_ids(replace(busy_london, active_sessions=5), site("madrid", MADRID)) == ["london", "madrid"]


def test_load_does_not_send_players_across_an_ocean_at_moderate_load() -> None:
    half_full_london = site("london", LONDON, active_sessions=50)
    assert ranked_ids(half_full_london, site("new-york", NEW_YORK)) == ["london", "new-york"]


def test_near_equal_sites_are_shuffled_so_players_spread() -> None:
    # Two sites in the same city: whichever comes first must vary with the rng.
    twins = (site("paris-a", PARIS), site("paris-b", PARIS), site("new-york", NEW_YORK))
    firsts = {ranked_ids(*twins, seed=seed)[0] for seed in range(20)}
    assert firsts == {"paris-a", "paris-b"}
    assert all(ranked_ids(*twins, seed=seed)[2] == "new-york" for seed in range(20))
    ranking = rank_sites(*PARIS, twins, now=NOW, rng=random.Random(0))
    assert "order randomised" in ranking.ranked[0].reasons[-1]
    assert "order randomised" not in " ".join(ranking.ranked[2].reasons)


def test_clearly_better_site_is_never_shuffled_down() -> None:
    sites = (site("london", LONDON), site("madrid", MADRID))
    assert {ranked_ids(*sites, seed=seed)[0] for seed in range(20)} == {"london"}


def test_ranking_is_deterministic_for_a_given_rng_and_input_order_does_not_matter() -> None:
    sites = [site(f"paris-{n}", PARIS) for n in range(5)] + [site("london", LONDON)]
    assert ranked_ids(*sites, seed=7) == ranked_ids(*sites, seed=7)
    assert ranked_ids(*sites, seed=7) == ranked_ids(*reversed(sites), seed=7)


def test_duplicate_site_ids_keep_the_first_record() -> None:
    live = site("london", LONDON, active_sessions=1)
    ranking = rank_sites(*PARIS, [live, replace(live, active_sessions=99)], now=NOW, rng=random.Random(0))
    assert len(ranking.ranked) == 1 and ranking.ranked[0].site.active_sessions == 1


# --- records


def test_record_round_trips_through_json() -> None:
    record = site("london", LONDON, state="draining", active_sessions=3)
    assert SiteRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lat", 91, "'lat'"),
        ("capacity", -1, "'capacity'"),
        ("capacity", 2.5, "'capacity'"),
        ("state", "gone", "state"),
        ("npcs", "blacksmith", "'npcs'"),
        ("url", "", "'url'"),
    ],
)
def test_bad_record_fields_are_named(field: str, value: object, message: str) -> None:
    data = site("london", LONDON).to_json() | {field: value}
    with pytest.raises(ValueError, match=message):
        SiteRecord.from_json(data)


# --- HTTP handlers


def snapshot(*records: SiteRecord, stale: bool = False, fetched_at: float = NOW) -> SiteSnapshot:
    return SiteSnapshot(records, stale=stale, fetched_at=fetched_at)


def reply_json(reply_body: bytes) -> dict:  # type: ignore[type-arg]
    return json.loads(reply_body)  # type: ignore[no-any-return]


def test_nearest_lookup_returns_ranked_sites_with_urls_and_reasons() -> None:
    sites = snapshot(
        site("new-york", NEW_YORK), site("london", LONDON, active_sessions=10), site("gone", LONDON, heartbeat_at=0)
    )
    reply = nearest_sites({"lat": "48.85", "lon": "2.35", "npc": "blacksmith"}, sites, NOW, rng=random.Random(0))
    assert reply.status == 200 and reply.content_type == "application/json"
    assert reply.headers["Cache-Control"] == "no-store"
    body = reply_json(reply.body)
    assert [entry["id"] for entry in body["sites"]] == ["london", "new-york"]
    first = body["sites"][0]
    assert first["rank"] == 1 and first["url"] == "wss://london.example/v1/talk"
    assert first["rtt_source"] == "estimated" and first["load"] == 0.1 and first["reasons"]
    assert body["excluded"][0]["id"] == "gone" and "stale" in body["excluded"][0]["reasons"][0]
    assert body["stale"] is False


def test_nearest_lookup_uses_client_measured_rtts_and_limit() -> None:
    sites = snapshot(site("new-york", NEW_YORK), site("london", LONDON))
    reply = nearest_sites({"lat": "48.85", "lon": "2.35", "rtt": "new-york:9, london:80", "limit": "1"}, sites, NOW)
    body = reply_json(reply.body)
    assert [entry["id"] for entry in body["sites"]] == ["new-york"]
    assert body["sites"][0]["rtt_source"] == "measured"


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"lon": "2"}, "lat"),
        ({"lat": "2"}, "lon"),
        ({"lat": "north", "lon": "2"}, "lat"),
        ({"lat": "91", "lon": "2"}, "lat"),
        ({"lat": "nan", "lon": "2"}, "lat"),
        ({"lat": "1", "lon": "inf"}, "lon"),
        ({"lat": "1", "lon": "2", "rtt": "london"}, "rtt"),
        ({"lat": "1", "lon": "2", "rtt": "london:-3"}, "rtt"),
        ({"lat": "1", "lon": "2", "rtt": ":30"}, "rtt"),
        ({"lat": "1", "lon": "2", "rtt": ",".join(f"s{n}:1" for n in range(65))}, "rtt"),
        ({"lat": "1", "lon": "2", "limit": "0"}, "limit"),
        ({"lat": "1_0", "lon": "2"}, "lat"),  # float() would read 10
        ({"lat": "١٠", "lon": "2"}, "lat"),  # and Arabic-Indic digits
        ({"lat": "1", "lon": "2", "rtt": "london:3_0"}, "rtt"),
        ({"lat": "1", "lon": "2", "limit": "٣"}, "limit"),  # int() would read 3
        ({"lat": "1", "lon": "2", "limit": "1_0"}, "limit"),
        ({"lat": "1", "lon": "2", "npc": "x" * 200}, "npc"),
    ],
)
def test_bad_lookup_parameters_get_a_clear_400(query: dict[str, str], param: str) -> None:
    reply = nearest_sites(query, snapshot(site("london", LONDON)), NOW)
    assert reply.status == 400
    error = reply_json(reply.body)["error"]
    assert error["code"] == "bad_param" and error["param"] == param and param in error["message"]


def test_unknown_lookup_parameters_are_ignored() -> None:
    reply = nearest_sites({"lat": "1", "lon": "2", "token": "abc", "_": "123"}, snapshot(site("london", LONDON)), NOW)
    assert reply.status == 200


def test_lookup_with_no_eligible_site_answers_503_with_the_reasons() -> None:
    reply = nearest_sites({"lat": "1", "lon": "2"}, snapshot(site("london", LONDON, state="draining")), NOW)
    assert reply.status == 503 and reply.headers["Retry-After"]
    body = reply_json(reply.body)
    assert body["sites"] == [] and body["error"]["code"] == "no_site_available"
    assert body["excluded"][0]["reasons"] == ["draining: takes no new sessions"]


def test_stale_registry_still_answers_from_the_last_known_sites() -> None:
    # Redis went away 30 s ago: heartbeats are 30 s old, but the lookup keeps offering those sites.
    last_known = snapshot(site("london", LONDON, heartbeat_at=NOW - 31), stale=True, fetched_at=NOW - 30)
    body = reply_json(nearest_sites({"lat": "1", "lon": "2"}, last_known, NOW).body)
    assert body["stale"] is True and [entry["id"] for entry in body["sites"]] == ["london"]


def test_ping_is_tiny_and_never_cached() -> None:
    reply = ping()
    assert reply.status == 200 and len(reply.body) <= 8
    assert reply.headers["Cache-Control"] == "no-store"


def test_next_best_site_names_another_site_near_the_refusing_one() -> None:
    here = site("paris", PARIS, active_sessions=100)
    sites = snapshot(
        here, site("new-york", NEW_YORK), site("london", LONDON), site("frankfurt", FRANKFURT, state="draining")
    )
    best = next_best_site(sites, "paris", NOW, rng=random.Random(0))
    assert best is not None and best.site.id == "london"
    # With the player's position it ranks from there instead.
    best = next_best_site(sites, "paris", NOW, lat=NEW_YORK[0], lon=NEW_YORK[1], rng=random.Random(0))
    assert best is not None and best.site.id == "new-york"
    assert next_best_site(snapshot(here), "paris", NOW) is None


# --- embedded registry


def write_static_sites(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sites.toml"
    path.write_text(text, encoding="utf-8")
    return path


STATIC = """
[[site]]
id = "london"
region = "eu-west"
lat = 51.5
lon = -0.13
url = "wss://london.example/v1/talk"
capacity = 50
"""


def test_static_sites_load_and_serve_any_npc_by_default(tmp_path: Path) -> None:
    (london,) = load_static_sites(write_static_sites(tmp_path, STATIC))
    assert london.id == "london" and london.capacity == 50 and london.npcs == ("*",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[site]]\nid = 'x'\n", "site #1: site record lacks 'region'"),
        ("site = 3\n", "array of tables"),
        ("[[site\n", "sites.toml"),
        (STATIC + STATIC, "unique"),
    ],
)
def test_bad_static_sites_file_names_file_and_site(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(StaticSitesError, match=message):
        load_static_sites(write_static_sites(tmp_path, text))


def test_local_registry_lists_this_node_then_static_sites_and_follows_draining(tmp_path: Path) -> None:
    clock = iter(range(100, 200)).__next__
    sessions = [3]
    local = site("local", PARIS, heartbeat_at=0)
    registry = LocalRegistry(
        lambda: replace(local, active_sessions=sessions[0]), write_static_sites(tmp_path, STATIC), clock=clock
    )

    async def scenario() -> list[SiteSnapshot]:
        await registry.start()
        first = await registry.list_sites()
        sessions[0] = 4
        await registry.mark_draining()
        second = await registry.list_sites()
        await registry.stop()
        return [first, second, await registry.list_sites()]

    first, second, after_stop = asyncio.run(scenario())
    assert [record.id for record in first.records] == ["local", "london"] and not first.stale
    assert first.records[0].heartbeat_at == 100 and first.records[1].heartbeat_at == 100
    assert second.records[0].state == "draining" and second.records[0].active_sessions == 4
    assert [record.id for record in after_stop.records] == ["london"]


def test_registry_from_settings_builds_the_local_record_and_the_embedded_registry() -> None:
    settings = SimpleNamespace(
        host="127.0.0.1",
        public_url="",
        site_id="node-1",
        site_region="eu-west",
        site_lat=48.85,
        site_lon=2.35,
        max_sessions=8,
        redis_url="",
        static_sites="",
        heartbeat_s=1.0,
        site_ttl_s=4.0,
        redis_key_prefix="npcserver:",
    )
    record = site_record_from_settings(settings, port=8765, npcs=["blacksmith"], models=["tiny.en"])
    assert record.url == "ws://127.0.0.1:8765/v1/talk" and record.capacity == 8
    registry = registry_from_settings(settings, lambda: record)
    assert isinstance(registry, LocalRegistry)
    listed = asyncio.run(registry.list_sites())
    assert listed.records[0].id == "node-1"


def test_registry_from_settings_picks_redis_when_a_url_is_set() -> None:
    from npcserver.sites.registry import RedisRegistry

    settings = SimpleNamespace(
        redis_url="redis://127.0.0.1:1/0", heartbeat_s=1.0, site_ttl_s=4.0, redis_key_prefix="x:", static_sites=""
    )
    assert isinstance(registry_from_settings(settings, lambda: site("a", PARIS)), RedisRegistry)
    with pytest.raises(ValueError, match="heartbeat_s"):
        registry_from_settings(replace_namespace(settings, heartbeat_s=5.0), lambda: site("a", PARIS))


def replace_namespace(namespace: SimpleNamespace, **changes: object) -> SimpleNamespace:
    return SimpleNamespace(**{**vars(namespace), **changes})
