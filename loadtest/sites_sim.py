"""Does site selection matter? A world-map simulation of where players connect and what they wait.

    python -m loadtest.sites_sim --players 5000 --out artifacts/sites

Places 30 edge sites in real data-centre cities plus one central region (US East), scatters players
around population centres, and compares for the same players and the same total capacity:

- central:        one big site in US East (enough capacity for everybody, but far from most),
- nearest:        the edge site nearest by great-circle distance, whatever its load,
- ours:           `npcserver.sites.ranking.rank_sites` (estimated RTT + load penalty, full sites excluded),
- ours+measured:  the same, with the client's measured RTT to its 5 nearest sites (as a game client
                  that probes /v1/ping would send).

The model (see docs/multi-site.md) and its assumptions:
- True RTT of a player to a site = 2 * distance / 200 km/ms * route factor + last mile. The route
  factor is drawn per player-site pair from U(1.2, 2.2) (real paths detour; the selection's estimate
  assumes 1.5), the last mile per player is 3 ms + Exp(mean 7 ms) (fibre to Wi-Fi over DSL).
- All players are in a session at once (the peak hour); they arrive one at a time in random order,
  and the selection sees the sessions already placed (as heartbeats would show).
- Capacity, two models (`--capacity`). planned (default): each edge site is sized from a demand
  forecast (its share of players nearest to it, from an independent sample) times a per-site
  forecast error drawn from a log-normal with sigma 0.3 (launches, local events, a lost rack);
  equal: identical sites everywhere. Either way the edge fleet together has `headroom` x players
  sessions, and the central site alone has the same total.
- Over capacity a site cannot refuse (nearest-by-distance ignores load) and its GPUs are shared:
  with n sessions on capacity c, each turn's processing takes n / c times as long, so a player waits
  `turn_ms * (n / c - 1)` extra per turn (processor sharing; an optimistic model for the overloaded
  site, real batching degrades earlier). Below capacity there is no extra wait.
- Mainland China is left out (it is served by separate deployments in practice).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from npcserver.sites.ranking import EARTH_RADIUS_KM, FIBRE_KM_PER_MS, SiteRecord, rank_sites

MAX_PLAYERS = 200_000
PROBED_SITES = 5  # a client measures RTT to this many candidates

# (id, lat, lon): cities with large public-cloud / CDN points of presence.
EDGE_CITIES: tuple[tuple[str, float, float], ...] = (
    ("new-york", 40.71, -74.01),
    ("chicago", 41.88, -87.63),
    ("dallas", 32.78, -96.80),
    ("atlanta", 33.75, -84.39),
    ("miami", 25.76, -80.19),
    ("los-angeles", 34.05, -118.24),
    ("san-jose", 37.34, -121.89),
    ("seattle", 47.61, -122.33),
    ("denver", 39.74, -104.99),
    ("toronto", 43.65, -79.38),
    ("mexico-city", 19.43, -99.13),
    ("sao-paulo", -23.55, -46.63),
    ("santiago", -33.45, -70.67),
    ("bogota", 4.71, -74.07),
    ("buenos-aires", -34.60, -58.38),
    ("london", 51.51, -0.13),
    ("frankfurt", 50.11, 8.68),
    ("paris", 48.86, 2.35),
    ("amsterdam", 52.37, 4.90),
    ("madrid", 40.42, -3.70),
    ("stockholm", 59.33, 18.07),
    ("warsaw", 52.23, 21.01),
    ("dubai", 25.20, 55.27),
    ("johannesburg", -26.20, 28.05),
    ("mumbai", 19.08, 72.88),
    ("singapore", 1.35, 103.82),
    ("tokyo", 35.68, 139.69),
    ("seoul", 37.57, 126.98),
    ("hong-kong", 22.32, 114.17),
    ("sydney", -33.87, 151.21),
)
CENTRAL = ("us-east", 39.04, -77.49)  # Ashburn, Virginia

# (name, lat, lon, weight, spread_km): player population centres. Weights are rough millions of
# internet users the centre stands for (orders of magnitude, not data); spread is the std-dev of the
# scatter around the centre.
PLAYER_REGIONS: tuple[tuple[str, float, float, float, float], ...] = (
    ("US Northeast", 40.7, -74.0, 50, 300),
    ("US Southeast", 33.7, -84.4, 45, 500),
    ("US Midwest", 41.9, -87.6, 40, 500),
    ("Texas", 31.0, -97.0, 30, 400),
    ("California", 35.5, -119.5, 40, 350),
    ("Pacific Northwest", 47.6, -122.3, 12, 250),
    ("US Mountain", 39.7, -105.0, 10, 400),
    ("Eastern Canada", 44.5, -76.0, 18, 350),
    ("Mexico", 20.0, -100.0, 60, 500),
    ("Central America", 14.5, -88.0, 20, 400),
    ("Brazil Southeast", -23.0, -46.0, 70, 500),
    ("Brazil Northeast", -8.0, -37.0, 40, 500),
    ("Argentina", -34.6, -60.0, 30, 400),
    ("Chile", -33.5, -70.7, 12, 300),
    ("Colombia", 4.7, -74.0, 35, 350),
    ("Peru", -12.0, -77.0, 20, 300),
    ("United Kingdom", 52.5, -1.5, 50, 250),
    ("France", 47.0, 2.5, 50, 300),
    ("Germany", 51.0, 10.0, 65, 300),
    ("Iberia", 40.0, -4.0, 45, 350),
    ("Italy", 42.5, 12.5, 45, 350),
    ("Central Europe", 51.0, 19.0, 40, 350),
    ("Nordics", 60.0, 15.0, 20, 400),
    ("Benelux", 51.5, 5.0, 25, 150),
    ("Western Russia", 55.8, 37.6, 80, 600),
    ("Turkey", 39.5, 32.0, 60, 500),
    ("Ukraine and Romania", 47.5, 28.0, 40, 400),
    ("Gulf", 24.5, 50.0, 30, 600),
    ("Egypt", 30.0, 31.0, 60, 300),
    ("Iran", 35.7, 51.4, 60, 500),
    ("Nigeria", 8.0, 6.0, 80, 500),
    ("East Africa", -1.3, 36.8, 40, 500),
    ("South Africa", -26.2, 28.0, 35, 400),
    ("North India", 28.6, 77.2, 200, 500),
    ("West India", 19.0, 73.0, 120, 400),
    ("South India", 13.0, 78.0, 120, 400),
    ("East India", 22.6, 88.4, 80, 300),
    ("Pakistan", 28.0, 70.0, 80, 500),
    ("Bangladesh", 23.8, 90.4, 60, 200),
    ("Indonesia", -6.5, 107.0, 150, 600),
    ("Philippines", 14.6, 121.0, 70, 400),
    ("Vietnam and Thailand", 14.0, 102.0, 100, 600),
    ("Malaysia and Singapore", 2.5, 102.5, 30, 300),
    ("Japan", 35.7, 139.7, 100, 350),
    ("Korea", 37.0, 127.5, 45, 200),
    ("Hong Kong and Taiwan", 23.5, 117.0, 30, 300),
    ("Eastern Australia", -33.9, 151.0, 20, 400),
    ("Victoria", -37.8, 145.0, 10, 200),
    ("New Zealand", -37.0, 175.0, 5, 200),
)

STRATEGIES = ("central", "nearest", "ours", "ours+measured")


@dataclass(frozen=True, slots=True)
class SimConfig:
    players: int = 5000
    seed: int = 1
    headroom: float = 1.2  # total capacity / players
    turn_ms: float = 400.0  # end of speech to first audio on an unloaded node
    budget_ms: float = 100.0  # conversational network budget (round trip)
    capacity: str = "planned"  # "planned" (forecast with error) or "equal"
    forecast_error_sigma: float = 0.3


@dataclass(frozen=True, slots=True)
class StrategyResult:
    strategy: str
    rtt_p50_ms: float
    rtt_p95_ms: float
    within_budget: float  # share of players whose network RTT fits the budget
    wait_p50_ms: float  # network RTT + queueing delay
    wait_p95_ms: float
    wait_within_budget: float
    overloaded_sites: int
    players_on_overloaded_sites: float  # share
    max_utilisation: float


@dataclass(frozen=True, slots=True)
class SimResult:
    config: SimConfig
    results: tuple[StrategyResult, ...]
    player_lat: np.ndarray
    player_lon: np.ndarray
    site_ids: tuple[str, ...]  # edge fleet: 30 edges + the central region
    site_lat: np.ndarray
    site_lon: np.ndarray
    site_capacity: np.ndarray  # sessions per site of the edge fleet
    assignment: dict[str, np.ndarray]  # strategy -> site index per player (central: all the central index)
    rtt_ms: dict[str, np.ndarray]
    wait_ms: dict[str, np.ndarray]

    def by_strategy(self, name: str) -> StrategyResult:
        return next(result for result in self.results if result.strategy == name)


def place_players(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    weights = np.array([region[3] for region in PLAYER_REGIONS], dtype=float)
    chosen = rng.choice(len(PLAYER_REGIONS), size=count, p=weights / weights.sum())
    centre_lat = np.array([PLAYER_REGIONS[i][1] for i in chosen])
    centre_lon = np.array([PLAYER_REGIONS[i][2] for i in chosen])
    spread_km = np.array([PLAYER_REGIONS[i][4] for i in chosen])
    lat = np.clip(centre_lat + rng.normal(0, 1, count) * spread_km / 111.2, -85, 85)
    lon = centre_lon + rng.normal(0, 1, count) * spread_km / (111.2 * np.cos(np.radians(lat)))
    lon = (lon + 180) % 360 - 180
    return lat, lon


def distances_km(lat: np.ndarray, lon: np.ndarray, site_lat: np.ndarray, site_lon: np.ndarray) -> np.ndarray:
    """Great-circle distance of every player (rows) to every site (columns)."""
    phi1, phi2 = np.radians(lat)[:, None], np.radians(site_lat)[None, :]
    dlambda = np.radians(site_lon[None, :] - lon[:, None])
    h = np.sin((phi2 - phi1) / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))


def plan_capacity(
    config: SimConfig, site_lat: np.ndarray, site_lon: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Sessions per site; the fleet holds about headroom x players in total."""
    total = config.headroom * config.players
    if config.capacity == "equal":
        return np.full(len(site_lat), max(1, math.ceil(total / len(site_lat))))
    forecast_lat, forecast_lon = place_players(20_000, rng)  # the forecast: an independent sample
    nearest = distances_km(forecast_lat, forecast_lon, site_lat, site_lon).argmin(axis=1)
    share = np.bincount(nearest, minlength=len(site_lat)) / len(nearest)
    share = share * rng.lognormal(0.0, config.forecast_error_sigma, len(site_lat))
    return np.maximum(1, np.ceil(total * share / share.sum())).astype(int)


def queueing_delay_ms(sessions: np.ndarray, capacity: np.ndarray, turn_ms: float) -> np.ndarray:
    """Extra wait per turn on a site with `sessions` on `capacity` (processor sharing beyond capacity)."""
    return turn_ms * np.maximum(0.0, sessions / capacity - 1.0)


def simulate(config: SimConfig) -> SimResult:
    if not 1 <= config.players <= MAX_PLAYERS:
        raise ValueError(f"players must be 1..{MAX_PLAYERS}")
    rng = np.random.default_rng(config.seed)
    lat, lon = place_players(config.players, rng)
    cities = (*EDGE_CITIES, CENTRAL)
    site_ids = tuple(city[0] for city in cities)
    site_lat = np.array([city[1] for city in cities])
    site_lon = np.array([city[2] for city in cities])
    central_index = len(cities) - 1
    distance = distances_km(lat, lon, site_lat, site_lon)
    capacity = plan_capacity(config, site_lat, site_lon, rng)
    route_factor = rng.uniform(1.2, 2.2, distance.shape)
    last_mile = 3.0 + rng.exponential(7.0, config.players)
    true_rtt = 2 * distance / FIBRE_KM_PER_MS * route_factor + last_mile[:, None]

    arrival = rng.permutation(config.players)
    assignment = {
        "central": np.full(config.players, central_index),
        "nearest": distance.argmin(axis=1),
        "ours": _assign_ours(lat, lon, site_ids, site_lat, site_lon, capacity, arrival, None, config.seed),
        "ours+measured": _assign_ours(
            lat, lon, site_ids, site_lat, site_lon, capacity, arrival, (distance, true_rtt), config.seed
        ),
    }
    rows = np.arange(config.players)
    results, rtts, waits = [], {}, {}
    for strategy in STRATEGIES:
        chosen = assignment[strategy]
        site_capacity = np.full(len(cities), config.headroom * config.players) if strategy == "central" else capacity
        sessions = np.bincount(chosen, minlength=len(cities))
        rtt = true_rtt[rows, chosen]
        wait = rtt + queueing_delay_ms(sessions, site_capacity, config.turn_ms)[chosen]
        overloaded = sessions > site_capacity
        rtts[strategy], waits[strategy] = rtt, wait
        results.append(
            StrategyResult(
                strategy=strategy,
                rtt_p50_ms=float(np.percentile(rtt, 50)),
                rtt_p95_ms=float(np.percentile(rtt, 95)),
                within_budget=float(np.mean(rtt <= config.budget_ms)),
                wait_p50_ms=float(np.percentile(wait, 50)),
                wait_p95_ms=float(np.percentile(wait, 95)),
                wait_within_budget=float(np.mean(wait <= config.budget_ms)),
                overloaded_sites=int(overloaded.sum()),
                players_on_overloaded_sites=float(np.mean(overloaded[chosen])),
                max_utilisation=float((sessions / site_capacity).max()),
            )
        )
    return SimResult(config, tuple(results), lat, lon, site_ids, site_lat, site_lon, capacity, assignment, rtts, waits)


def _assign_ours(
    lat: np.ndarray,
    lon: np.ndarray,
    site_ids: tuple[str, ...],
    site_lat: np.ndarray,
    site_lon: np.ndarray,
    capacity: np.ndarray,
    arrival: np.ndarray,
    probes: tuple[np.ndarray, np.ndarray] | None,
    seed: int,
) -> np.ndarray:
    """Players arrive one by one and take the best site `rank_sites` offers, seeing the load so far."""
    sessions = [0] * len(site_ids)
    index_of = {site_id: index for index, site_id in enumerate(site_ids)}
    rng = random.Random(seed)
    chosen = np.empty(len(lat), dtype=int)
    for player in arrival:
        records = [
            SiteRecord(
                site_ids[i],
                site_ids[i],
                float(site_lat[i]),
                float(site_lon[i]),
                "",
                "serving",
                sessions[i],
                int(capacity[i]),
            )
            for i in range(len(site_ids))
        ]
        measured = None
        if probes is not None:  # the client pinged the few sites nearest by distance
            distance, true_rtt = probes
            nearest = np.argsort(distance[player])[:PROBED_SITES]
            measured = {site_ids[i]: float(true_rtt[player, i]) for i in nearest}
        best = rank_sites(
            float(lat[player]), float(lon[player]), records, measured_rtt_ms=measured, now=0.0, rng=rng
        ).best
        # Total capacity exceeds the players, so some site always has room.
        assert best is not None
        site = index_of[best.site.id]
        sessions[site] += 1
        chosen[player] = site
    return chosen


def format_table(result: SimResult) -> str:
    budget = result.config.budget_ms
    header = (
        f"{'strategy':<14} {'RTT p50':>8} {'RTT p95':>8} {f'<={budget:g}ms':>8} "
        f"{'wait p50':>9} {'wait p95':>9} {f'<={budget:g}ms':>8} {'overloaded':>10} {'players there':>13}"
    )
    lines = [header, "-" * len(header)]
    lines.extend(
        f"{r.strategy:<14} {r.rtt_p50_ms:>8.0f} {r.rtt_p95_ms:>8.0f} {r.within_budget:>8.0%} "
        f"{r.wait_p50_ms:>9.0f} {r.wait_p95_ms:>9.0f} {r.wait_within_budget:>8.0%} "
        f"{r.overloaded_sites:>10} {r.players_on_overloaded_sites:>13.0%}"
        for r in result.results
    )
    lines.append(
        f"({result.config.players} players, seed {result.config.seed}; {len(result.site_ids)} edge sites, {result.config.capacity} "
        f"capacity, {int(result.site_capacity.sum())} sessions in all = {result.config.headroom:g}x the players; "
        f"wait = RTT + queueing delay at {result.config.turn_ms:g} ms per turn)"
    )
    return "\n".join(lines)


def write_png(result: SimResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(14, 10))
    grid = fig.add_gridspec(2, 2, height_ratios=(1.15, 1))
    world = fig.add_subplot(grid[0, :])
    ours = result.assignment["ours"]
    world.scatter(result.player_lon, result.player_lat, s=2, c=ours % 20, cmap="tab20", alpha=0.5, linewidths=0)
    nearest_sessions = np.bincount(result.assignment["nearest"], minlength=len(result.site_ids))
    overloaded = nearest_sessions > result.site_capacity
    world.scatter(
        result.site_lon[~overloaded], result.site_lat[~overloaded], marker="^", s=60, c="black", label="edge site"
    )
    world.scatter(
        result.site_lon[overloaded],
        result.site_lat[overloaded],
        marker="^",
        s=90,
        c="red",
        label="overloaded under nearest-by-distance",
    )
    world.scatter(
        result.site_lon[-1:],
        result.site_lat[-1:],
        marker="*",
        s=260,
        c="gold",
        edgecolors="black",
        label="central region (us-east)",
    )
    for index in np.flatnonzero(overloaded):
        utilisation = nearest_sessions[index] / result.site_capacity[index]
        world.annotate(
            f"{result.site_ids[index]} {utilisation:.0%}",
            (result.site_lon[index], result.site_lat[index]),
            fontsize=8,
            color="red",
            xytext=(4, 4),
            textcoords="offset points",
        )
    world.set(xlim=(-180, 180), ylim=(-60, 75), xlabel="longitude", ylabel="latitude", aspect="equal")
    world.set_title(
        f"{result.config.players} players (coloured by the site our selection chose) and {len(result.site_ids)} sites"
    )
    world.legend(loc="lower left", fontsize=8)
    world.grid(alpha=0.3)

    budget = result.config.budget_ms
    for column, (series, title) in enumerate(
        ((result.rtt_ms, "network RTT"), (result.wait_ms, "network RTT + queueing delay at an overloaded site"))
    ):
        axis = fig.add_subplot(grid[1, column])
        for strategy in STRATEGIES:
            values = np.sort(series[strategy])
            axis.plot(values, np.arange(1, len(values) + 1) / len(values), label=strategy)
        axis.axvline(budget, color="grey", linestyle="--", label=f"budget {budget:g} ms")
        axis.set(
            xscale="log",
            xlim=(3, None),
            ylim=(0, 1),
            xlabel="milliseconds (log scale)",
            ylabel="share of players",
            title=f"CDF: {title}",
        )
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.sites_sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, default=5000, help=f"players in a session at once (1..{MAX_PLAYERS})")
    parser.add_argument("--seed", type=int, default=1, help="random seed: same seed, same world")
    parser.add_argument("--headroom", type=float, default=1.2, help="total capacity of each deployment / players")
    parser.add_argument(
        "--turn-ms", type=float, default=400.0, help="turn processing time on an unloaded node (queueing model)"
    )
    parser.add_argument("--budget-ms", type=float, default=100.0, help="conversational network budget (round trip)")
    parser.add_argument(
        "--capacity",
        choices=("planned", "equal"),
        default="planned",
        help="how edge sites are sized (see the module docstring)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("artifacts/sites"), help="folder for sites_sim.png and sites_sim.json"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.players <= MAX_PLAYERS:
        parser.error(f"--players must be 1..{MAX_PLAYERS}")
    if args.headroom < 1:
        parser.error("--headroom must be at least 1 (the deployments must hold every player)")

    result = simulate(SimConfig(args.players, args.seed, args.headroom, args.turn_ms, args.budget_ms, args.capacity))
    args.out.mkdir(parents=True, exist_ok=True)
    png, figures = args.out / "sites_sim.png", args.out / "sites_sim.json"
    write_png(result, png)
    figures.write_text(
        json.dumps({"config": asdict(result.config), "results": [asdict(r) for r in result.results]}, indent=2) + "\n",
        encoding="utf-8",
    )
    print(format_table(result))
    print(f"wrote {png} and {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
