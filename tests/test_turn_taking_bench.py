"""The turn-taking benchmark's own parts that need no model (the benchmark itself runs by hand)."""

from __future__ import annotations

from pathlib import Path

from loadtest.turn_taking import DEFAULT_RULE, RULES, player_lines
from npcserver.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_words_benchmark_reads_every_player_line_of_the_repository_as_plain_words() -> None:
    lines = player_lines(ROOT)
    assert len(lines) > 500  # three question sets, the action lines and the personas' tests and examples
    assert len(set(lines)) == len(lines) and all(len(line.split()) >= 3 for line in lines)
    assert all(line == line.lower() and "?" not in line and "," not in line for line in lines)
    assert "how much for a bed tonight" in lines or any(line.startswith("how much") for line in lines)


def test_the_benchmarks_default_rule_is_the_servers() -> None:
    """The README's default row must be what `npcserver serve` runs."""
    rule, settings = RULES[DEFAULT_RULE], Settings()
    assert (rule.complete_at, rule.complete_ms) == (settings.turn_complete_at, settings.end_silence_complete_ms)
    assert (rule.incomplete_below, rule.incomplete_ms) == (settings.turn_incomplete_below, settings.end_silence_incomplete_ms)
    assert (rule.sentence_end_below, rule.sentence_end_at) == (settings.sentence_end_below, settings.sentence_end_at)
    assert rule.guessed_word_below == settings.last_word_guessed_below
