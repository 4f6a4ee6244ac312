"""The attack benchmark's clients (loadtest/attacks.py) against a real server on loopback with fake models.

Keeps the benchmark working: each attack of issue 18 items 2-4 runs from another loopback address with the
shipped limits, meets them the way the docs say, and a well-behaved player from 127.0.0.1 is still served.
Bounded: a few seconds per attack, loopback only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from loadtest import attacks
from loadtest.corpus import UTTERANCES_DIR, load_utterances
from npcserver.edge.server import NpcServer
from tests.conftest import fake_backends, fake_settings


@pytest.fixture
async def node() -> AsyncIterator[NpcServer]:
    async with NpcServer(fake_settings(), fake_backends()) as server:  # shipped limits: 4 per address, 16 in all
        await asyncio.wait_for(server.wait_ready(), 10)
        yield server


@pytest.mark.parametrize(("attack", "expected"), [
    ("slots", {"HTTP 429", "held to the end"}),  # 6 clients, the address may hold 4 for as long as it likes
    ("flood", {"closed 1008 rate_limited"}),
    ("context", {"closed 1008 rate_limited"}),
])  # fmt: skip
async def test_each_attack_meets_its_limit_and_the_player_is_still_answered(
    node: NpcServer, attack: str, expected: set[str]
) -> None:
    options = attacks.Options(url=node.url, attackers=1, connections=6, attack_s=6.0, warmup_s=1.0, settle_s=5.0,
                              newcomer_every_s=1.0)
    speech = np.concatenate([u.pcm for u in load_utterances(UTTERANCES_DIR)])
    result = await attacks.run_scenario(attack, options, attacks.benchmark_utterances(1), speech, lambda line: None)
    assert result.tally is not None and result.attackers == ("127.0.0.2",)
    assert expected <= set(result.tally.outcomes), result.tally.summary()
    assert not [o for o in result.tally.outcomes if o.startswith("attacker client failed")], result.tally.summary()
    assert result.player.admitted and len(result.player.voice_to_voice_ms) == 1, result.player
    assert result.rss_before_mb and result.rss_after_mb
    assert result.newcomers["admitted"] >= 1 and set(result.newcomers) == {"admitted"}, result.newcomers
    if attack == "slots":
        assert result.tally.admitted <= 4 + 2  # the first 4, and at most a slot or two freed meanwhile
    if attack == "context":
        assert result.tally.errors["invalid_value"] > 0  # the 60 KB values are refused
    assert not node.sessions  # every attacker connection was closed


def test_the_table_compares_with_quiet_and_says_when_the_goal_is_missed() -> None:
    def scenario(name: str, v2v: list[float]) -> attacks.ScenarioResult:
        turns = [{"utterance": f"u{n}", "voice_to_voice_ms": v} for n, v in enumerate(v2v)]
        player = attacks.PlayerResult(admitted=True, turns_tried=len(v2v), voice_to_voice_ms=v2v, turns=turns)
        tally = attacks.AttackerTally(handshakes=3) if name in attacks.ATTACKS else None
        return attacks.ScenarioResult(name, ("127.0.0.2",), player, tally, 100.0, 110.0, 120.0, 10.0)

    results = [scenario("quiet", [1000.0, 1000.0]), scenario("slots", [1100.0, 1150.0]),
               scenario("flood", [1500.0, 1600.0])]
    assert attacks.verdicts(results) == {"slots": True, "flood": False}
    table = attacks.format_table(results, 2)
    assert "+10 %" in table and "+50 %" in table and "+12 % / +15 %" in table and "MISSED: p50 +50 %, p95 +60 %" in table and "100/120/110" in table
    assert attacks.max_context(7)["k31"] and all(
        len(f'{{"{key}": "{value}"}}') == attacks.CONTEXT_ENTRY_CHARS for key, value in attacks.max_context(7).items()
    )
