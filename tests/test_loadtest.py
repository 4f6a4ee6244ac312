"""The load tester: report math (percentiles, budget share, WER, SLO), the open-loop schedule, and one
short real run against `npcserver serve --backend fake` checking the JSON report and the PNG."""

from __future__ import annotations

import itertools
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.__main__ import main as loadtest_main
from loadtest.__main__ import parse_ramp, step_passes
from loadtest.corpus import load_utterances
from loadtest.metrics import LatencyHistogram, corpus_word_error_rate, histogram_of, normalize_words, word_error_rate
from loadtest.report import build_report, check_slo, format_table, parse_slo
from loadtest.runner import LoadConfig, RunResult, TurnRecord
from loadtest.schedule import build_schedule, poisson_arrivals
from loadtest.server_process import server_process
from loadtest.techniques import add_same_lines

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- histograms


def test_percentiles_of_one_to_a_thousand_ms() -> None:
    hist = histogram_of(float(v) for v in range(1, 1001))
    summary = hist.summary()
    assert summary.count == 1000
    # HDR keeps 3 significant digits: each percentile is within 0.1 % of the exact value.
    for got, exact in (
        (summary.p50_ms, 500),
        (summary.p90_ms, 900),
        (summary.p95_ms, 950),
        (summary.p99_ms, 990),
        (summary.max_ms, 1000),
    ):
        assert got == pytest.approx(exact, rel=1e-3)
    assert summary.min_ms == pytest.approx(1.0, rel=1e-3)
    assert summary.mean_ms == pytest.approx(500.5, rel=1e-3)


def test_one_slow_turn_in_a_hundred_shows_at_p99_and_max_only() -> None:
    hist = histogram_of([100.0] * 99 + [5000.0])
    assert hist.percentile(95) == pytest.approx(100, rel=1e-3)
    assert hist.percentile(99) == pytest.approx(100, rel=1e-3)
    assert hist.summary().max_ms == pytest.approx(5000, rel=1e-3)


def test_share_within_budget_counts_values_at_the_budget() -> None:
    hist = histogram_of(float(v) for v in range(1, 101))
    assert hist.share_within(80) == pytest.approx(0.80)
    assert hist.share_within(1000) == 1.0
    assert LatencyHistogram().share_within(800) is None
    assert LatencyHistogram().summary().p95_ms is None


# --------------------------------------------------------------------------- WER


def test_wer_ignores_case_and_punctuation() -> None:
    assert normalize_words("Good morning, Blacksmith!") == "good morning blacksmith"
    assert word_error_rate("Good morning, blacksmith.", " good morning Blacksmith") == 0.0


def test_wer_counts_substitutions_deletions_and_insertions() -> None:
    assert word_error_rate("how much for a steel sword", "how much for steel sword") == pytest.approx(1 / 6)
    assert word_error_rate("a b c d", "a x c d e") == pytest.approx(2 / 4)
    assert word_error_rate("a b", "") == 1.0
    with pytest.raises(ValueError):
        word_error_rate("", "anything")


def test_corpus_wer_weights_by_reference_words() -> None:
    # 1 error in 4 words plus 0 in 1 word: 1/5, not the mean of 1/4 and 0.
    assert corpus_word_error_rate([("a b c d", "a b c"), ("e", "e")]) == pytest.approx(0.2)
    assert corpus_word_error_rate([]) is None


# --------------------------------------------------------------------------- schedule


def test_the_schedule_is_fixed_by_the_seed() -> None:
    one = build_schedule(players=3, mean_interval_s=5.0, duration_s=60.0, utterance_count=6, seed=7)
    assert one == build_schedule(players=3, mean_interval_s=5.0, duration_s=60.0, utterance_count=6, seed=7)
    assert one != build_schedule(players=3, mean_interval_s=5.0, duration_s=60.0, utterance_count=6, seed=8)
    # Adding a player leaves the others' schedules as they were.
    assert build_schedule(players=4, mean_interval_s=5.0, duration_s=60.0, utterance_count=6, seed=7)[:3] == one


def test_arrivals_are_poisson_with_the_requested_mean() -> None:
    import random

    times = poisson_arrivals(mean_interval_s=2.0, duration_s=20_000.0, rng=random.Random(1))
    assert all(0 <= a < b < 20_000 for a, b in itertools.pairwise(times))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sum(gaps) / len(gaps) == pytest.approx(2.0, rel=0.05)
    # Exponential gaps: about 1 - 1/e of them are shorter than the mean.
    assert sum(g < 2.0 for g in gaps) / len(gaps) == pytest.approx(0.632, abs=0.03)


# --------------------------------------------------------------------------- report and SLO


def _record(
    v2v: float | None, ok: bool = True, codes: tuple[str, ...] = (), stutters: tuple[float, ...] = ()
) -> TurnRecord:
    return TurnRecord(
        player=0, index=0, utterance="greeting", scheduled_s=1.0, started_s=1.2, start_delay_ms=200.0, ok=ok,
        error_codes=codes, close_code=None if ok else 1011, voice_to_voice_ms=v2v, transcript_ms=None if v2v is None else v2v / 2,
        first_reply_text_ms=None, turn_end_ms=None, reply_audio_s=1.0, underrun_count=len(stutters), underrun_gaps_ms=stutters,
        server_timings={"asr_ms": 10.0}, reference_text="Good morning, blacksmith.", transcript="good morning blacksmith", reply_text="Hm.", wer=0.0,
    )  # fmt: skip


def _result(records: list[TurnRecord], offered: int, skipped: int = 0) -> RunResult:
    config = LoadConfig(url="ws://127.0.0.1:1/v1/talk", npc="greta_blacksmith", players=2, duration_s=10.0)
    return RunResult(config, tuple(records), offered, skipped, 0, 0, 0, {}, 0.0, 10.0)


def test_report_counts_failures_skips_stutters_and_the_budget() -> None:
    records = [
        _record(500.0),
        _record(700.0, stutters=(120.0,)),
        _record(900.0),
        _record(None, ok=False, codes=("model_error",)),
    ]
    report = build_report(_result(records, offered=5, skipped=1), budget_ms=800, slo=parse_slo("p95<=1000"))
    assert report["turns"] == {
        "offered": 5,
        "completed_ok": 3,
        "failed": 1,
        "skipped_overlapped": 1,
        "not_started_at_end": 0,
        "with_stutter": 1,
    }
    assert report["within_budget_share"] == pytest.approx(2 / 3)
    assert report["within_budget_share_of_offered"] == pytest.approx(2 / 5)  # failed and skipped turns miss the budget
    assert report["throughput_turns_per_s"] == pytest.approx(0.3)
    assert report["errors_by_code"] == {"model_error": 1}
    assert report["close_codes"] == {"1011": 1}
    assert report["latency_ms"]["voice_to_voice_ms"]["count"] == 3
    assert report["latency_ms"]["server_asr_ms"]["p50_ms"] == pytest.approx(10, rel=1e-3)
    assert report["latency_ms"]["underrun_gap_ms"]["count"] == 1
    assert report["wer"] == 0.0
    assert report["slo_met"] is True
    json.dumps(report)  # serialisable as it is
    assert "voice_to_voice_ms" in format_table(report)


def test_a_missed_slo_is_reported_with_its_value() -> None:
    report = build_report(
        _result([_record(900.0), _record(1500.0)], offered=2), budget_ms=800, slo=parse_slo("p50<=1000,p95<=1000")
    )
    assert [check["met"] for check in report["slo"]] == [True, False]
    assert report["slo_met"] is False
    assert report["slo"][1]["value_ms"] == pytest.approx(1500, rel=1e-3)


def test_steps_are_compared_on_the_lines_every_step_answered() -> None:
    rows = {
        "all": {"v2v_median_by_line": {"fast": 300.0, "slow": 900.0, "only_here": 100.0}},
        "other": {"v2v_median_by_line": {"fast": 200.0, "slow": 800.0}},
        "naive": {"v2v_p50": 1500.0},
    }
    add_same_lines(rows)
    assert rows["all"]["same_lines_v2v"] == 600.0 and rows["other"]["same_lines_v2v"] == 500.0
    assert rows["all"]["same_lines"] == 2 and "same_lines_v2v" not in rows["naive"]


def test_slo_and_ramp_syntax() -> None:
    (target,) = parse_slo("p95<=1000")
    assert (target.metric, target.percentile, target.limit_ms) == ("voice_to_voice_ms", 95.0, 1000.0)
    assert parse_slo("transcript_ms:p99.9<=400")[0].percentile == 99.9
    for bad in ("p95<1000", "p0<=5", "latency<=3"):
        with pytest.raises(ValueError):
            parse_slo(bad)
    assert check_slo({}, parse_slo("p95<=1"))[0]["met"] is False  # no data never meets an SLO
    assert parse_ramp("1,2,4") == [1, 2, 4]
    assert parse_ramp("2:8:3") == [2, 5, 8]
    for bad in ("4,2", "0,1", "5:1:1"):
        with pytest.raises(ValueError):
            parse_ramp(bad)


def test_a_ramp_step_holds_only_with_zero_errors_and_the_target_met() -> None:
    good = build_report(_result([_record(500.0), _record(700.0)], offered=2), budget_ms=800)
    slow = build_report(_result([_record(500.0), _record(900.0)], offered=2), budget_ms=800)
    failing = build_report(
        _result([_record(500.0), _record(None, ok=False, codes=("model_error",))], offered=2), budget_ms=800
    )
    assert step_passes(good, [], budget_ms=800)
    assert not step_passes(slow, [], budget_ms=800)  # without an SLO, p95 must be within the budget
    assert step_passes(slow, parse_slo("p95<=1000"), budget_ms=800)  # an SLO replaces the budget rule
    assert not step_passes(failing, parse_slo("p95<=1000"), budget_ms=800)
    empty = build_report(_result([], offered=2), budget_ms=800)
    assert not step_passes(empty, [], budget_ms=800)


def test_the_utterances_are_real_speech_with_known_text() -> None:
    utterances = load_utterances()
    assert len(utterances) >= 4
    for u in utterances:
        assert u.sample_rate == 16000 and u.text
        assert 0.5 < u.speech_end / u.sample_rate < u.seconds  # speech, then a little silence


# --------------------------------------------------------------------------- a short real run


@pytest.fixture
def fake_backend_server() -> Iterator[str]:
    """`npcserver serve --backend fake --port 0` as a subprocess; yields its URL once it says it is ready."""
    with server_process("--backend", "fake", timeout_s=30) as server:
        health = server.url.replace("ws://", "http://").replace("/v1/talk", "/healthz")
        with urllib.request.urlopen(health, timeout=10) as response:
            assert response.status == 200
        yield server.url


def test_a_short_run_writes_a_sane_report_and_plot(
    fake_backend_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path, png_path = tmp_path / "report.json", tmp_path / "report.png"
    code = loadtest_main([
        "--url", fake_backend_server, "--players", "2", "--duration", "20", "--turn-interval", "6", "--seed", "3",
        "--json", str(report_path), "--png", str(png_path), "--slo", "p95<=60000", "--quiet",
    ])  # fmt: skip
    report = json.loads(report_path.read_text())
    assert code == 0, capsys.readouterr()
    turns = report["turns"]
    assert turns["completed_ok"] >= 2 and turns["failed"] == 0
    assert report["errors_by_code"] == {} and report["connect_failures"] == 0
    v2v = report["latency_ms"]["voice_to_voice_ms"]
    assert v2v["count"] == turns["completed_ok"]
    assert 0 < v2v["p50_ms"] <= v2v["p95_ms"] <= v2v["max_ms"] < 30_000
    assert report["latency_ms"]["transcript_ms"]["count"] == turns["completed_ok"]
    assert report["latency_ms"]["server_voice_to_voice_ms"]["count"] == turns["completed_ok"]
    assert report["throughput_turns_per_s"] > 0
    assert 0 <= report["within_budget_share"] <= 1
    assert report["wer"] is not None  # the fake ASR does not hear the words, but WER is computed
    assert {r["player"] for r in report["records"]} == {0, 1}
    assert all(r["reply_audio_s"] > 0 for r in report["records"])
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 10_000
    assert "voice_to_voice_ms" in capsys.readouterr().out


def test_server_overhead_is_what_the_stages_do_not_explain() -> None:
    from loadtest.report import server_overhead_ms

    stages = {"endpoint_ms": 520.0, "asr_ms": 300.0, "llm_first_token_ms": 60.0, "tts_first_audio_ms": 100.0}
    assert server_overhead_ms({**stages, "voice_to_voice_ms": 984.5}) == pytest.approx(4.5)
    assert server_overhead_ms({**stages, "voice_to_voice_ms": 900.0, "filler_ms": 600.0}) is None  # filler first
    assert server_overhead_ms({**stages, "voice_to_voice_ms": 700.0}) is None  # speculation overlapped the stages
    assert server_overhead_ms({"voice_to_voice_ms": 10.0}) is None


@pytest.mark.real
def test_the_lookup_benchmark_scores_every_question_file_with_the_real_encoder(capsys: pytest.CaptureFixture[str]) -> None:
    from loadtest.dialogue import QUESTIONS, UNSEEN
    from loadtest.dialogue import main as dialogue_main

    for questions in (QUESTIONS, UNSEEN):
        assert dialogue_main(["--lookup-only", "--questions", str(questions)]) == 0
        rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line[:1].islower()}
        assert {"bram_innkeeper", "greta_blacksmith", "maren_healer", "pip_merchant", "rolf_guard", "all"} <= rows.keys()
        assert float(rows["all"][1]) >= 60  # the share of fact questions whose fact the lookup finds


def test_a_question_no_fact_answers_fails_when_the_reply_gives_a_facts_value_or_a_made_up_number() -> None:
    from loadtest.dialogue import judge_unknown

    facts = ("A room for the night costs 3 silver.", "Bram's wife Hilda bakes the bread every morning.")
    asked = {"player": "How much is a sword here?"}
    assert judge_unknown(asked, facts, "A room for the night costs 3 silver.") == "fact"
    assert judge_unknown(asked, facts, "Ask Hilda, she knows everything.") == "fact"
    assert judge_unknown(asked, facts, "Swords go for 40 silver, I hear.") == "invented"
    assert judge_unknown(asked, facts, "I sell ale, friend, not swords.") == "ok"
    # what the player said himself is no fact given: "Hilda's bread is 3 coins?" -> "Ask Hilda."
    assert judge_unknown({"player": "Does Hilda sell bread for 3 copper?"}, facts, "Ask Hilda about 3 copper.") == "ok"
