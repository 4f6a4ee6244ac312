"""Open-loop turn schedule: Poisson arrivals per player, fixed in advance from a seed.

Because the whole schedule exists before the first byte is sent, a slow server cannot slow the offered
load (no coordinated omission): late turns show up as start delays, queued or skipped turns, never as
fewer offered turns.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PlannedTurn:
    player: int
    index: int  # turn number within this player's schedule
    at_s: float  # offset from the start of the run
    utterance: int  # index into the utterance list


def poisson_arrivals(
    mean_interval_s: float, duration_s: float, rng: random.Random, max_count: int = 100_000
) -> list[float]:
    """Arrival times in [0, duration_s) with exponential gaps of mean `mean_interval_s`."""
    if mean_interval_s <= 0:
        raise ValueError("mean_interval_s must be positive")
    times: list[float] = []
    t = rng.expovariate(1.0 / mean_interval_s)
    while t < duration_s and len(times) < max_count:
        times.append(t)
        t += rng.expovariate(1.0 / mean_interval_s)
    return times


def build_schedule(
    players: int, mean_interval_s: float, duration_s: float, utterance_count: int, seed: int
) -> list[list[PlannedTurn]]:
    """One list of planned turns per player; the same arguments always give the same schedule."""
    schedule = []
    for player in range(players):
        rng = random.Random(f"{seed}:{player}")  # per-player stream: adding players keeps the others' schedules
        times = poisson_arrivals(mean_interval_s, duration_s, rng)
        schedule.append([PlannedTurn(player, i, t, rng.randrange(utterance_count)) for i, t in enumerate(times)])
    return schedule
