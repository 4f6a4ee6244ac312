"""The site-selection simulation: a small seeded world, its table, its figures file and its PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loadtest import sites_sim
from loadtest.sites_sim import SimConfig, queueing_delay_ms, simulate


@pytest.fixture(scope="module")
def small_world() -> sites_sim.SimResult:
    return simulate(SimConfig(players=600, seed=3))


def test_edge_sites_beat_one_central_site_on_network_rtt(small_world: sites_sim.SimResult) -> None:
    central, ours = small_world.by_strategy("central"), small_world.by_strategy("ours")
    assert ours.rtt_p50_ms < central.rtt_p50_ms / 2
    assert ours.within_budget > central.within_budget


def test_our_selection_never_overloads_a_site_while_nearest_by_distance_does(small_world: sites_sim.SimResult) -> None:
    nearest, ours = small_world.by_strategy("nearest"), small_world.by_strategy("ours")
    assert ours.overloaded_sites == 0 and ours.max_utilisation <= 1.0
    assert nearest.overloaded_sites > 0
    assert ours.wait_p95_ms < nearest.wait_p95_ms
    # Every player got exactly one site.
    assert all(len(chosen) == 600 for chosen in small_world.assignment.values())


def test_same_seed_same_world() -> None:
    first, second = simulate(SimConfig(players=200, seed=5)), simulate(SimConfig(players=200, seed=5))
    assert first.results == second.results
    assert np.array_equal(first.assignment["ours"], second.assignment["ours"])


def test_queueing_delay_only_beyond_capacity() -> None:
    delays = queueing_delay_ms(np.array([5, 10, 20]), np.array([10, 10, 10]), turn_ms=400.0)
    assert delays.tolist() == [0.0, 0.0, 400.0]


def test_command_prints_the_table_and_writes_png_and_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sites_sim.main(["--players", "300", "--seed", "2", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    for strategy in sites_sim.STRATEGIES:
        assert f"\n{strategy} " in table
    png = tmp_path / "sites_sim.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    figures = json.loads((tmp_path / "sites_sim.json").read_text())
    assert figures["config"]["players"] == 300
    assert [row["strategy"] for row in figures["results"]] == list(sites_sim.STRATEGIES)


def test_player_count_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        sites_sim.main(["--players", str(sites_sim.MAX_PLAYERS + 1), "--out", str(tmp_path)])
