"""Before/after figures for each latency technique, on this machine, in one run.

For each step (each adds one technique to the previous) a real server is started with the flags that
switch the techniques, one player speaks the corpus on an open-loop schedule, and the client-side
voice-to-voice latency is read from the load tester's report. The naive sequential chain (ASR, then the
whole reply, then TTS) runs in the same invocation with the same models, for the ratio.

    python -m loadtest.techniques                  # all steps, ~1 min each
    python -m loadtest.techniques --duration 40 --steps streaming,all
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from loadtest.__main__ import main as loadtest_main
from loadtest.server_process import REPO, server_process

# The flags that turn each technique off, in the order the steps turn them back on.
OFF = [
    ["--no-early-first-clause"],
    ["--no-llm-prefix-cache"],
    ["--no-speculative"],
    ["--no-fillers"],
    ["--asr-window-s", "30"],
    ["--end-silence-finished-ms", "0"],
    ["--end-silence-quiet-db", "0"],
    ["--tts-phrase-cache-mb", "0"],
]


def _all_but_first(count: int) -> list[str]:
    """Server flags with the first `count` techniques on and the rest off."""
    return [flag for flags in OFF[count:] for flag in flags]


# name -> (what it adds, server flags); each step turns one more technique on
STEPS: dict[str, tuple[str, list[str]]] = {
    "streaming": ("streamed LLM -> clause -> TTS pipeline, nothing else", _all_but_first(0)),
    "early_clause": ("+ first clause spoken as soon as sayable", _all_but_first(1)),
    "prefix_cache": ("+ persona prompt KV cache", _all_but_first(2)),
    "speculative": ("+ ASR/LLM/TTS started during the endpointing pause", _all_but_first(3)),
    "fillers": ("+ filler line when late", _all_but_first(4)),
    "asr_window": ("+ whisper encodes a 10 s window, not 30 s", _all_but_first(5)),
    "finished_sentence": ("+ a finished sentence ends the turn after 300 ms of silence, not 500", _all_but_first(6)),
    "silence_from_sound": ("+ end-of-turn silence counted from where the sound fell away, not from the VAD's decision",
                           _all_but_first(7)),
    "all": ("+ speech of short phrases said before kept (all techniques, the default)", []),
    "end_silence_400": ("all, with a 400 ms end-of-turn silence (adaptive, up to 640 ms) instead of 500",
                        ["--end-silence-ms", "400", "--adaptive-end-silence"]),
    "llm_2_threads": ("all, but 2 torch threads for the LLM instead of 1", ["--llm-threads", "2"]),
    "ungrounded": ("all, without the fact lookup and reply check, int8 (the default before grounded replies)",
                   ["--knowledge-model", "none", "--llm-precision", "int8"]),
    "no_sentence_end": ("all, but the pause's words are not read (Smart Turn and the end silence alone)",
                        ["--sentence-end-model", "none"]),
    "no_guessed_word": ("all, but a last word whisper guessed does not make the pause wait",
                        ["--last-word-guessed-below", "0"]),
    "words_never_overrule": ("all, but words that read finished never shorten a pause Smart Turn hears as unfinished (the default before)",
                             ["--sentence-end-at", "1.1"]),
    "unfinished_900": ("all, but a pause heard as unfinished waits 900 ms, not 800 (the default before)",
                       ["--end-silence-incomplete-ms", "900"]),
    "minilm_only": ("all, but the fact lookup with MiniLM-L6 alone (with its NPC adapter), not averaged with MPNet",
                    ["--knowledge-model", "all-minilm-l6-v2-npc"]),
    "no_adapters": ("all, but the lookup's two encoders as published, without the NPC adapters (the default before)",
                    ["--knowledge-model", "all-minilm-l6-v2+all-mpnet-base-v2"]),
    "model_first": ("all, but the LLM answers a fact question first; the check adds the fact if missing",
                    ["--no-fact-first"]),
}


def run_step(
    flags: list[str], duration_s: float, interval_s: float, workdir: Path, name: str, utterances: Path | None = None
) -> dict[str, Any]:
    # the same seeded replies in every step: a step differs from the last only by its technique
    with server_process(*flags, "--max-connections-per-ip", "0", "--llm-seed", "7") as server:
        report_path = workdir / f"{name}.json"
        loadtest_main([
            "--url", server.url, "--players", "1", "--duration", str(duration_s), "--turn-interval", str(interval_s),
            "--seed", "7", "--json", str(report_path), "--png", str(workdir / f"{name}.png"), "--quiet",
            *(["--utterances", str(utterances)] if utterances else []),
        ])  # fmt: skip
    report = json.loads(report_path.read_text())
    latency = report["latency_ms"]
    v2v = latency["voice_to_voice_ms"]
    reply = latency.get("server_reply_audio_ms", {})
    by_line: dict[str, list[float]] = {}
    for record in report["records"]:
        if record["ok"] and record["voice_to_voice_ms"] is not None:
            by_line.setdefault(record["utterance"], []).append(record["voice_to_voice_ms"])
    return {
        "turns": report["turns"]["completed_ok"],
        "errors": sum(report["errors_by_code"].values()),
        "v2v_p50": v2v.get("p50_ms"),
        "v2v_p95": v2v.get("p95_ms"),
        "reply_audio_p50": reply.get("p50_ms"),
        "fillers": latency.get("server_filler_ms", {}).get("count", 0),
        "wer": report["wer"],
        "v2v_median_by_line": {line: statistics.median(values) for line, values in sorted(by_line.items())},
    }


def add_same_lines(rows: dict[str, dict[str, Any]]) -> None:
    """Each step's mean of per-line medians over the lines every step answered: which turns complete
    (a long reply makes the next turn overlap and be skipped) differs between steps, and a step that
    happened to answer more of the slow lines would look slower for it."""
    medians = [row["v2v_median_by_line"] for row in rows.values() if "v2v_median_by_line" in row]
    common = set.intersection(*(set(m) for m in medians)) if medians else set()
    for row in rows.values():
        if common and "v2v_median_by_line" in row:
            row["same_lines_v2v"] = statistics.mean(row["v2v_median_by_line"][line] for line in common)
            row["same_lines"] = len(common)


def run_naive(repeats: int) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from loadtest.baseline import run_baseline
    from loadtest.corpus import load_utterances
    from npcserver.config import load_settings

    # naive: no prompt cache and whisper's full window either (the chain as one would first write it)
    settings = load_settings({"voices": str(REPO / "voices"), "llm_prefix_cache": False, "asr_window_s": 30.0})
    result = run_baseline(settings, load_utterances(), repeats=repeats, log=lambda line: None)
    v2v = result["voice_to_voice_ms"]
    return {"turns": v2v.get("count"), "errors": 0, "v2v_p50": v2v.get("p50_ms"), "v2v_p95": v2v.get("p95_ms")}


def format_rows(rows: dict[str, dict[str, Any]], naive_p50: float | None) -> str:
    lines = ["| step | adds | turns | v2v p50 | v2v p95 | same lines (*) | naive / p50 | reply audio p50 | fillers |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        what = STEPS[name][0] if name in STEPS else "ASR, then the whole reply, then TTS (one process)"
        p50, p95 = row.get("v2v_p50"), row.get("v2v_p95")
        ratio = f"{naive_p50 / p50:.2f}x" if naive_p50 and p50 else "-"
        cells = [f"{v:.0f} ms" if isinstance(v, (int, float)) else "-"
                 for v in (p50, p95, row.get("same_lines_v2v"), row.get("reply_audio_p50"))]
        lines.append(f"| {name} | {what} | {row['turns']} | {cells[0]} | {cells[1]} | {cells[2]} | {ratio} | {cells[3]} "
                     f"| {row.get('fillers', '-')} |")
    same = next((row["same_lines"] for row in rows.values() if "same_lines" in row), 0)
    lines.append(f"(*) voice to voice, the mean of each line's median over the {same} lines every step answered")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.techniques", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"Comma-separated steps (default all: {','.join(STEPS)}); '' runs only the naive chain.")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of offered load per step.")
    parser.add_argument("--turn-interval", type=float, default=6.0, help="Mean seconds between the player's turns.")
    parser.add_argument("--naive-repeats", type=int, default=2, help="Passes of the naive chain over the corpus (0: skip it).")
    parser.add_argument("--utterances", type=Path, default=None,
                        help="Speech the player says (default: loadtest/utterances, Piper; loadtest/human_speech is real people).")
    parser.add_argument("--json", type=Path, default=Path("artifacts/techniques.json"),
                        help="Where to write the figures; each step's load-test report and plot go in a folder beside it.")
    args = parser.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    if unknown := set(steps) - set(STEPS):
        parser.error(f"unknown steps: {', '.join(sorted(unknown))}")

    rows: dict[str, dict[str, Any]] = {}
    reports = args.json.with_suffix("")  # artifacts/techniques/<step>.json and .png
    reports.mkdir(parents=True, exist_ok=True)
    for name in steps:
        print(f"step {name}: {STEPS[name][0]}", file=sys.stderr)
        rows[name] = run_step(STEPS[name][1], args.duration, args.turn_interval, reports, name, args.utterances)
        print(f"  {rows[name]}", file=sys.stderr)
    if args.naive_repeats > 0:
        print("naive chain...", file=sys.stderr)
        rows["naive"] = run_naive(args.naive_repeats)
    add_same_lines(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    print(format_rows(rows, rows["naive"]["v2v_p50"] if "naive" in rows else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
