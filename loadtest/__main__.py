"""`python -m loadtest`: many simulated players against one npcserver, with a latency report that tells the truth.

Open loop: each player's turns arrive on a Poisson schedule fixed in advance (--turn-interval is the mean
gap). A player speaks real speech at real-time pace in 20 ms frames, keeps the mic open (silence) until the
NPC's turn ends, listens to the reply, and only then speaks again; an arrival that comes while the player is
busy waits in line (--max-queued) or is counted as skipped. Latencies are measured at the client.

Examples:
  python -m loadtest --players 4 --duration 60
  python -m loadtest --players 8 --duration 120 --slo p95<=1000          # exit 1 when missed
  python -m loadtest --ramp 1,2,4,8,12,16 --duration 60 --slo p95<=1000  # capacity in players
  python -m loadtest --players 1 --duration 60 --baseline                 # gain over the naive chain
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from loadtest.corpus import UTTERANCES_DIR, load_utterances
from loadtest.metrics import histogram_of
from loadtest.report import SloTarget, build_report, format_table, parse_slo, write_json
from loadtest.runner import LoadConfig, RunState, run_load

DEFAULT_URL = "ws://127.0.0.1:8765/v1/talk"
MAX_RAMP_STEPS = 32


def parse_ramp(text: str) -> list[int]:
    """'1,2,4,8' or 'start:stop:step' (inclusive), e.g. '2:16:2'."""
    if ":" in text:
        parts = [int(p) for p in text.split(":")]
        if len(parts) != 3 or parts[0] < 1 or parts[2] < 1 or parts[1] < parts[0]:
            raise ValueError(f"bad ramp {text!r}: expected start:stop:step with 1 <= start <= stop, step >= 1")
        steps = list(range(parts[0], parts[1] + 1, parts[2]))
    else:
        steps = [int(p) for p in text.split(",") if p.strip()]
    if not steps or any(n < 1 for n in steps) or steps != sorted(set(steps)):
        raise ValueError(f"bad ramp {text!r}: player counts must be positive and increasing")
    if len(steps) > MAX_RAMP_STEPS:
        raise ValueError(f"bad ramp {text!r}: at most {MAX_RAMP_STEPS} steps")
    return steps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"Server endpoint (default {DEFAULT_URL}). Traffic goes only here."
    )
    parser.add_argument("--npc", default="greta_blacksmith", help="Persona id every player talks to.")
    parser.add_argument("--players", type=int, default=1, help="Concurrent simulated players (one session each).")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="Seconds during which turns may start (per ramp step)."
    )
    parser.add_argument(
        "--turn-interval", type=float, default=15.0, help="Mean seconds between one player's turn arrivals (Poisson)."
    )
    parser.add_argument(
        "--text", action="store_true", help="Send each utterance's text as a typed line instead of speech."
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="Seed of the schedule and utterance choice (same seed, same load)."
    )
    parser.add_argument(
        "--budget-ms",
        type=float,
        default=800.0,
        help="Voice-to-voice budget: the report gives the share of turns within it.",
    )
    parser.add_argument(
        "--slo", help="e.g. 'p95<=1000' or 'p50<=500,p95<=800,transcript_ms:p95<=400'; exit 1 when missed."
    )
    parser.add_argument(
        "--ramp", help="Player counts to step through, '1,2,4,8' or 'start:stop:step'; reports the largest that holds."
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="After the load, run the naive sequential chain in this process and report the gain.",
    )
    parser.add_argument(
        "--baseline-backend",
        choices=("real", "fake"),
        default="real",
        help="Models for --baseline (default real: the server's embedded models).",
    )
    parser.add_argument(
        "--voices", type=Path, default=Path("voices"), help="Persona folder for --baseline's prompt and voice."
    )
    parser.add_argument(
        "--turn-timeout",
        type=float,
        default=30.0,
        help="A turn with no turn_end after this many seconds fails (client_timeout).",
    )
    parser.add_argument(
        "--max-queued", type=int, default=1, help="Arrivals that may wait while a player is busy; more are skipped."
    )
    parser.add_argument(
        "--utterances", type=Path, default=UTTERANCES_DIR, help="Folder with manifest.json and WAVs (16-bit mono)."
    )
    parser.add_argument(
        "--json", type=Path, default=Path("artifacts/loadtest/report.json"), help="Where to write the JSON report."
    )
    parser.add_argument(
        "--png", type=Path, default=Path("artifacts/loadtest/report.png"), help="Where to write the plots."
    )
    parser.add_argument("--quiet", action="store_true", help="No progress line.")
    return parser


class Progress:
    """One line on stderr, rewritten in place on a terminal, every 5 s otherwise."""

    def __init__(self, label: str, duration_s: float) -> None:
        self.label = label
        self.duration_s = duration_s
        self.tty = sys.stderr.isatty()
        self._last_print = 0.0

    def __call__(self, state: RunState, elapsed_s: float) -> None:
        if not self.tty and time.monotonic() - self._last_print < 5.0:
            return
        self._last_print = time.monotonic()
        ok = [r.voice_to_voice_ms for r in state.records if r.ok and r.voice_to_voice_ms is not None]
        p95 = histogram_of(ok).percentile(95)
        failed = sum(1 for r in state.records if not r.ok)
        line = (
            f"{self.label}{elapsed_s:5.0f}/{self.duration_s:.0f} s  players {state.connected}/{state.players} connected  "
            f"turns {len(ok)} ok, {failed} failed, {state.skipped} skipped  p95 voice-to-voice {'-' if p95 is None else f'{p95:.0f} ms'}"
        )
        print(("\r" + line + "\033[K") if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _config(args: argparse.Namespace, players: int) -> LoadConfig:
    return LoadConfig(
        url=args.url,
        npc=args.npc,
        players=players,
        duration_s=args.duration,
        turn_interval_s=args.turn_interval,
        text_mode=args.text,
        seed=args.seed,
        turn_timeout_s=args.turn_timeout,
        max_queued_turns=args.max_queued,
    )


def _run_once(
    args: argparse.Namespace, players: int, utterances: list[Any], slo: list[SloTarget], label: str = ""
) -> dict[str, Any]:
    progress = None if args.quiet else Progress(label, args.duration)
    result = asyncio.run(run_load(_config(args, players), utterances, on_progress=progress))
    if progress is not None:
        progress.done()
    return build_report(result, budget_ms=args.budget_ms, slo=slo)


def step_passes(report: dict[str, Any], slo: list[SloTarget], budget_ms: float) -> bool:
    """Zero errors, at least one good turn, and the SLO (or, without one, p95 voice-to-voice within the budget)."""
    if (
        report["turns"]["completed_ok"] == 0
        or report["turns"]["failed"]
        or report["errors_by_code"]
        or report["connect_failures"]
    ):
        return False
    if slo:
        return bool(report["slo_met"])
    p95 = report["latency_ms"]["voice_to_voice_ms"]["p95_ms"]
    return p95 is not None and p95 <= budget_ms


def _ramp(args: argparse.Namespace, utterances: list[Any], slo: list[SloTarget]) -> int:
    from loadtest.plot import write_ramp_png

    steps: list[dict[str, Any]] = []
    capacity = 0
    for players in parse_ramp(args.ramp):
        report = _run_once(args, players, utterances, slo, label=f"[{players} players] ")
        passed = step_passes(report, slo, args.budget_ms)
        print(
            f"--- {players} players: {'holds' if passed else 'does not hold'}\n{format_table(report)}", file=sys.stderr
        )
        steps.append(
            {
                "players": players,
                "passed": passed,
                "voice_to_voice_ms": report["latency_ms"]["voice_to_voice_ms"],
                # the first audio may be a filler line: the reply's own first audio tells the rest
                "reply_audio_ms": report["latency_ms"].get("server_reply_audio_ms"),
                "report": report,
            }
        )
        if not passed:
            break  # beyond capacity: more players only take longer to say so
        capacity = players
    ramp = {
        "criterion": ", ".join(map(str, slo)) if slo else f"voice_to_voice_ms:p95<={args.budget_ms:g}",
        "zero_errors_required": True,
        "budget_ms": args.budget_ms,
        "capacity_players": capacity,
        "steps": steps,
    }
    write_json(ramp, args.json)
    write_ramp_png(ramp, args.png)
    print(
        f"capacity: {capacity} players hold {ramp['criterion']} with zero errors  (report {args.json}, plot {args.png})"
    )
    return 0 if capacity else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        slo = parse_slo(args.slo) if args.slo else []
        if args.ramp:
            parse_ramp(args.ramp)
    except ValueError as exc:
        parser.error(str(exc))
    if args.ramp and args.baseline:
        parser.error("--baseline runs after a single load run; run it without --ramp")
    if args.players < 1 or args.duration <= 0 or args.turn_interval <= 0 or args.max_queued < 0:
        parser.error("--players must be >= 1, --duration and --turn-interval > 0, --max-queued >= 0")
    utterances = load_utterances(args.utterances)
    if args.ramp:
        return _ramp(args, utterances, slo)

    report = _run_once(args, args.players, utterances, slo)
    if args.baseline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from loadtest.baseline import run_baseline
        from loadtest.report import gain_over_baseline
        from npcserver.config import load_settings

        settings = load_settings({"backend": args.baseline_backend, "voices": args.voices})
        baseline = run_baseline(settings, utterances, npc=args.npc, log=lambda line: print(line, file=sys.stderr))
        report["baseline"] = {k: v for k, v in baseline.items()}
        report["gain_over_baseline"] = gain_over_baseline(report, baseline)

    from loadtest.plot import write_png

    write_json(report, args.json)
    write_png(report, args.png)
    print(format_table(report))
    print(f"report: {args.json}  plot: {args.png}")
    return 0 if report["slo_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
