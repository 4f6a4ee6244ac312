"""Turn records -> the JSON report, the printed table and the SLO verdict. No I/O except `write_json`."""

from __future__ import annotations

import json
import os
import platform
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.metrics import LatencyHistogram, corpus_word_error_rate, histogram_of
from loadtest.runner import RunResult, TurnRecord

# Client-side latency metrics, all in ms from the end of the player's speech (or the text being sent).
CLIENT_METRICS = ("voice_to_voice_ms", "transcript_ms", "first_reply_text_ms", "turn_end_ms", "start_delay_ms")
DEFAULT_SLO_METRIC = "voice_to_voice_ms"


@dataclass(frozen=True, slots=True)
class SloTarget:
    metric: str
    percentile: float
    limit_ms: float

    def __str__(self) -> str:
        return f"{self.metric}:p{self.percentile:g}<={self.limit_ms:g}"


_SLO = re.compile(r"^(?:(?P<metric>[a-z_]+):)?p(?P<pct>\d+(?:\.\d+)?)\s*<=\s*(?P<limit>\d+(?:\.\d+)?)$")



def machine() -> dict[str, Any]:
    """What the figures were measured on: the same code gives other numbers on another CPU (bfloat16
    is native only with AVX512-BF16 or AMX, and ONNX models' numerics follow the instruction set)."""
    model, flags = platform.processor(), set()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE).group(1)  # type: ignore[union-attr]
        flags = set(re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.MULTILINE).group(1).split())  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": model,
        "cpus": os.cpu_count(),
        "bf16": sorted(flags & {"avx512_bf16", "amx_bf16"}),
    }


def machine_line() -> str:
    """One line for a benchmark's output: "machine: AMD EPYC, 2 CPUs, bf16: avx512_bf16"."""
    about = machine()
    return f"machine: {about['processor'] or 'unknown CPU'}, {about['cpus']} CPUs, bf16: {', '.join(about['bf16']) or 'none'}"

def parse_slo(text: str) -> list[SloTarget]:
    """'p95<=1000' or 'p50<=500,transcript_ms:p95<=400' (metric defaults to voice_to_voice_ms)."""
    targets = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _SLO.match(part)
        if not match:
            raise ValueError(f"bad SLO {part!r}: expected like 'p95<=1000' or 'transcript_ms:p95<=400'")
        pct = float(match["pct"])
        if not 0 < pct <= 100:
            raise ValueError(f"bad SLO {part!r}: percentile must be in (0, 100]")
        targets.append(SloTarget(match["metric"] or DEFAULT_SLO_METRIC, pct, float(match["limit"])))
    return targets


def metric_histograms(records: Sequence[TurnRecord]) -> dict[str, LatencyHistogram]:
    """Histograms over successful turns: the client metrics and every server timing field seen."""
    ok = [r for r in records if r.ok]
    hists = {name: histogram_of(v for r in ok if (v := getattr(r, name)) is not None) for name in CLIENT_METRICS}
    server_fields = sorted({key for r in ok for key in r.server_timings})
    for key in server_fields:
        hists[f"server_{key}"] = histogram_of(
            r.server_timings[key] for r in ok if key in r.server_timings and r.server_timings[key] >= 0
        )
    hists["underrun_gap_ms"] = histogram_of(gap for r in ok for gap in r.underrun_gaps_ms)
    hists["server_overhead_ms"] = histogram_of(v for r in ok if (v := server_overhead_ms(r.server_timings)) is not None)
    return hists


MODEL_STAGES = ("endpoint_ms", "asr_ms", "llm_first_token_ms", "tts_first_audio_ms")


def server_overhead_ms(timings: dict[str, float]) -> float | None:
    """Time to first audio not spent endpointing or in a model: the server's own cost per turn.

    Exact when the stages run one after another (no speculation, no filler); with the fake models,
    whose calls take ~0 ms, it is what everything that is not a model adds.
    """
    if "voice_to_voice_ms" not in timings or "filler_ms" in timings or not all(k in timings for k in MODEL_STAGES):
        return None
    overhead = timings["voice_to_voice_ms"] - sum(timings[k] for k in MODEL_STAGES)
    return overhead if overhead >= 0 else None  # negative: stages overlapped (speculation), not measurable


def check_slo(hists: dict[str, LatencyHistogram], targets: Iterable[SloTarget]) -> list[dict[str, Any]]:
    checks = []
    for target in targets:
        hist = hists.get(target.metric)
        value = hist.percentile(target.percentile) if hist is not None else None
        checks.append({"slo": str(target), "value_ms": value, "met": value is not None and value <= target.limit_ms})
    return checks


def build_report(
    result: RunResult, *, budget_ms: float, slo: Sequence[SloTarget] = (), baseline: dict[str, Any] | None = None
) -> dict[str, Any]:
    records = result.records
    ok = [r for r in records if r.ok]
    hists = metric_histograms(records)
    v2v = hists["voice_to_voice_ms"]
    errors = Counter(code for r in records for code in r.error_codes)
    errors.update(result.session_errors)
    close_codes = Counter(str(r.close_code) for r in records if r.close_code is not None)
    # Offered turns that were skipped, never started or failed all count as outside the budget.
    within_ok = v2v.share_within(budget_ms)
    within_count = round((within_ok or 0.0) * len(ok))
    report: dict[str, Any] = {
        "config": {k: getattr(result.config, k) for k in result.config.__slots__},
        "machine": machine(),
        "started_at_unix": result.wall_started_at,
        "elapsed_s": round(result.elapsed_s, 3),
        "turns": {
            "offered": result.offered_turns,
            "completed_ok": len(ok),
            "failed": len(records) - len(ok),
            "skipped_overlapped": result.skipped,
            "not_started_at_end": result.not_started,
            "with_stutter": sum(1 for r in ok if r.underrun_count),
        },
        "throughput_turns_per_s": round(len(ok) / result.elapsed_s, 4) if result.elapsed_s > 0 else None,
        "budget_ms": budget_ms,
        "within_budget_share": within_ok,  # of successful turns
        "within_budget_share_of_offered": within_count / result.offered_turns if result.offered_turns else None,
        "latency_ms": {name: hist.summary().as_dict() for name, hist in hists.items()},
        "reply_audio_s_total": round(sum(r.reply_audio_s for r in ok), 3),
        "wer": corpus_word_error_rate([(r.reference_text, r.transcript) for r in ok if r.wer is not None]),
        "errors_by_code": dict(errors),
        "close_codes": dict(close_codes),
        "connect_failures": result.connect_failures,
        "reconnects": result.reconnects,
        "slo": check_slo(hists, slo),
        "slo_met": all(c["met"] for c in check_slo(hists, slo)),
        "records": [r.as_dict() for r in records],
    }
    if baseline is not None:
        report["baseline"] = baseline
        report["gain_over_baseline"] = gain_over_baseline(report, baseline)
    return report


def gain_over_baseline(report: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """How many times faster than the naive chain the pipeline answered (baseline / pipeline, same run)."""
    gains: dict[str, float | None] = {}
    pipeline = report["latency_ms"]["voice_to_voice_ms"]
    for pct in ("p50_ms", "p95_ms"):
        ours, theirs = pipeline.get(pct), baseline.get("voice_to_voice_ms", {}).get(pct)
        gains[pct] = round(theirs / ours, 3) if ours and theirs else None
    return gains


def format_table(report: dict[str, Any]) -> str:
    """A short human summary: one line per metric with data, then counts and verdicts."""
    lines = [f"{'metric':<28}{'n':>6}{'p50':>9}{'p90':>9}{'p95':>9}{'p99':>9}{'max':>9}"]
    for name, s in report["latency_ms"].items():
        if not s["count"]:
            continue
        cells = "".join(f"{s[k]:>9.0f}" for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms"))
        lines.append(f"{name:<28}{s['count']:>6}{cells}")
    turns = report["turns"]
    share = report["within_budget_share"]
    lines.append(
        f"turns: {turns['completed_ok']} ok / {turns['offered']} offered, {turns['failed']} failed, "
        f"{turns['skipped_overlapped']} skipped, {turns['not_started_at_end']} not started, {turns['with_stutter']} with stutter; "
        f"{report['throughput_turns_per_s']} turns/s"
    )
    wer = report["wer"]
    share_text = "-" if share is None else f"{share:.1%}"
    wer_text = "-" if wer is None else f"{wer:.3f}"
    lines.append(f"within {report['budget_ms']:g} ms: {share_text} of ok turns; WER {wer_text}")
    if report["errors_by_code"] or report["close_codes"]:
        lines.append(f"errors: {report['errors_by_code']}  close codes: {report['close_codes']}")
    lines.extend(f"SLO {check['slo']}: {'met' if check['met'] else 'MISSED'} ({check['value_ms']})" for check in report["slo"])
    if "gain_over_baseline" in report:
        b = report["baseline"]["voice_to_voice_ms"]
        gain = report["gain_over_baseline"]
        lines.append(
            f"naive chain voice-to-voice p50 {_fmt(b['p50_ms'])} ms, p95 {_fmt(b['p95_ms'])} ms; "
            f"the pipeline is {_fmt(gain['p50_ms'], '.2f')}x faster at p50, {_fmt(gain['p95_ms'], '.2f')}x at p95"
        )
    return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
