"""The memory soak (loadtest/soak.py): its report arithmetic on synthetic samples, its bounds, and one short
run of players, an attack and the sampler against a node on loopback with the fake models (a few seconds)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from loadtest import soak
from loadtest.corpus import UTTERANCES_DIR, load_utterances
from npcserver.edge.server import NpcServer
from tests.conftest import fake_backends, fake_settings


def samples(values: list[float], every_s: float = 5.0, hwm: list[float] | None = None) -> list[soak.RssSample]:
    return [soak.RssSample(n * every_s, mb, vm_hwm_mb=hwm[n] if hwm else None) for n, mb in enumerate(values)]


def test_a_flat_run_has_no_slope_and_the_last_window_is_its_last_five_minutes() -> None:
    values = [1000.0 + n for n in range(60)] + [2000.0] * 61  # 10 min: 5 min rising by 1 MiB a sample, 5 min flat
    rss = soak.summarize_rss(samples(values), ceiling_mb=3500)
    assert rss.samples == 121 and rss.at_ready_mb == 1000 and rss.max_mb == rss.peak_mb == 2000
    assert rss.last_window_min_mb == rss.last_window_max_mb == 2000  # t >= 600 - 300: the flat part only
    assert rss.second_half_slope_mb_per_10min == pytest.approx(0.0, abs=1e-6)
    assert rss.p50_mb == 2000 and rss.under_ceiling


def test_the_slope_is_in_mib_per_ten_minutes() -> None:
    values = [1500.0 + 0.5 * n for n in range(241)]  # 0.5 MiB per 5 s sample = 60 MiB per 10 min, for 20 min
    rss = soak.summarize_rss(samples(values), ceiling_mb=3500)
    assert rss.second_half_slope_mb_per_10min == pytest.approx(60.0)
    assert (rss.last_window_min_mb, rss.last_window_max_mb) == (1500.0 + 0.5 * 180, 1620.0)
    assert soak.slope_mb_per_10min([(10.0, 1.0)]) is None


def test_the_ceiling_verdict_counts_a_spike_the_kernel_saw_between_samples() -> None:
    assert not soak.summarize_rss(samples([3000.0, 3600.0, 3000.0]), ceiling_mb=3500).under_ceiling
    assert not soak.summarize_rss(samples([3000.0, 3500.0]), ceiling_mb=3500).under_ceiling  # under means under
    # VmHWM rose past its value at ready during the run: a spike to 3600 the 5 s samples missed
    spiked = soak.summarize_rss(samples([3000.0, 3100.0], hwm=[3000.0, 3600.0]), 3500, hwm_at_ready_mb=3000.0)
    assert spiked.max_mb == 3100 and spiked.peak_mb == 3600 and not spiked.under_ceiling
    # a VmHWM that has not moved since ready is the model loading's peak, not the run's
    loading = soak.summarize_rss(samples([3000.0, 3100.0], hwm=[3900.0, 3900.0]), 3500, hwm_at_ready_mb=3900.0)
    assert loading.peak_mb == 3100 and loading.under_ceiling
    nothing = soak.summarize_rss([soak.RssSample(0.0, None)], ceiling_mb=3500)
    assert nothing.samples == 0 and not nothing.under_ceiling  # nothing measured, nothing claimed


def test_attacks_rotate_after_a_quiet_interval_and_end_before_the_players() -> None:
    windows = soak.attack_windows(1800, 120, 30, soak.ATTACKS)
    assert len(windows) == 14 and windows[0] == soak.AttackWindow("slots", 120, 150)
    assert [w.kind for w in windows[:4]] == ["slots", "flood", "context", "slots"]
    assert windows[-1].end_s <= 1800
    assert [(w.start_s, w.end_s) for w in soak.attack_windows(60, 20, 10, ("flood",))] == [(20, 30), (40, 50)]
    assert soak.attack_windows(60, 20, 10, ()) == []
    assert soak.active_attack(windows, 130) == "slots" and soak.active_attack(windows, 150) is None


@pytest.mark.parametrize("argv", [
    ["--duration-s", "5"], ["--duration-s", "4000"], ["--players", "0"], ["--players", "65"],
    ["--attack-s", "30", "--attack-every-s", "30"], ["--attack-s", "121", "--attack-every-s", "600"],
    ["--attacks", "slots,nuke"], ["--ceiling-mb", "0"],
])  # fmt: skip
def test_out_of_bounds_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(ValueError, match=r"^(--|unknown attacks)"):
        soak.options_from(soak.build_parser().parse_args(argv), "ws://127.0.0.1:1/v1/talk")


def test_the_defaults_are_the_issues_soak() -> None:
    options = soak.options_from(soak.build_parser().parse_args([]), "ws://x")
    assert (options.players, options.duration_s, options.attack_every_s, options.attack_s) == (16, 1800, 120, 30)
    assert options.ceiling_mb == 3900 and options.attack_kinds == soak.ATTACKS
    assert soak.options_from(soak.build_parser().parse_args(["--attacks", "none"]), "ws://x").attack_kinds == ()


@pytest.fixture
async def node() -> AsyncIterator[NpcServer]:
    settings = fake_settings(max_connections_per_ip=0, max_sessions=64)  # what the soak starts its node with
    async with NpcServer(settings, fake_backends()) as server:
        await asyncio.wait_for(server.wait_ready(), 10)
        yield server


async def test_a_short_soak_samples_memory_runs_the_attack_and_reports(node: NpcServer, tmp_path: Path) -> None:
    options = soak.SoakOptions(url=node.url, players=2, duration_s=4.0, turn_interval_s=1.0, attack_every_s=1.5,
                               attack_s=1.0, attack_kinds=("flood",), attackers=1, connections=2,
                               sample_every_s=0.5, progress_every_s=1.0)
    utterances = load_utterances(UTTERANCES_DIR)
    lines: list[str] = []
    result = await asyncio.wait_for(
        soak.run_soak(options, utterances, np.concatenate([u.pcm for u in utterances[:2]]), progress=lines.append), 90)
    assert [(w.kind, w.start_s) for w in result.windows] == [("flood", 1.5), ("flood", 3.0)]
    assert len(result.attacks) == 2 and all(a.tally.handshakes for a in result.attacks)
    assert not [o for a in result.attacks for o in a.tally.outcomes if "failed" in o]
    assert len(result.samples) >= 6 and all(s.rss_mb for s in result.samples)
    assert {s.attack for s in result.samples} >= {"flood", None}
    assert result.load is not None and any(r.ok for r in result.load.records)
    assert any("attack flood" in line for line in lines) and any("RSS" in line for line in lines)
    rss = soak.summarize_rss(result.samples, options.ceiling_mb)
    players = soak.player_figures(result.load)
    text = soak.format_report(result, rss, players)
    assert "verdict: peak RSS" in text and "turns answered" in text and "under the 3900 MiB ceiling" in text
    figures = soak.soak_json(result, rss, players, ())
    assert figures["rss"]["under_ceiling"] and len(figures["samples"]) == len(result.samples)
    soak.write_png(result, rss, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    assert not node.sessions
