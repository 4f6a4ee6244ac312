"""Does a turn send the action the player asked for, and only then? Precision, recall and latency.

Each line of loadtest/action_lines.toml (written from the persona files alone, without the detector
in view; about half call for a declared action, the rest are near misses: price questions about
the very wares, declines, past tense, undeclared wares, the gate without the password) is scored:
- *right*: the line calls for this action and it was sent with exactly the expected arguments;
- *false*: an action was sent for a line that calls for none, or the wrong action or arguments
  (the worst error: the game acts on it);
- *missed*: the line calls for one and none was sent.
precision = right / sent, recall = right / lines that call for one.

The full run goes through the server's own turn code with the real LLM and TTS and also scores
whether the reply agrees (says the action's confirm line, or no refusal words), and the reply's
first audio with actions on and with the same personas' actions removed: an action must not cost
voice-to-voice time.

    python -m loadtest.actions --detect-only        # the detector alone, in seconds
    python -m loadtest.actions                      # real models, ~1.5 min on 2 cores
    python -m loadtest.actions --lines loadtest/action_lines_unseen.toml   # the held-out set
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
import tomllib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from loadtest.metrics import LatencyHistogram

LINES = Path(__file__).with_name("action_lines.toml")
# written at the same time by the same hand, and not looked at while the detector was tuned
UNSEEN = Path(__file__).with_name("action_lines_unseen.toml")
_REFUSING = ("no,", "can't", "cannot", "won't", "sorry", "not for sale", "don't have")


def verdict(expected: dict[str, Any], sent: tuple[str, dict[str, Any]] | None) -> str:
    """right / false / missed / none (no action called for, none sent)."""
    wanted = expected.get("action")
    if sent is None:
        return "missed" if wanted else "none"
    if wanted and sent[0] == wanted and sent[1] == expected.get("args", {}):
        return "right"
    return "false"


def history_of(line: dict[str, Any]) -> list[tuple[str, str]]:
    return [(player, npc) for player, npc in line.get("history", [])]


def score(verdicts: list[str]) -> dict[str, Any]:
    tally = Counter(verdicts)
    sent = tally["right"] + tally["false"]
    called = tally["right"] + tally["missed"]
    return {
        "lines": len(verdicts),
        "called_for": called,
        "right": tally["right"],
        "false": tally["false"],
        "missed": tally["missed"],
        "precision": tally["right"] / sent if sent else None,
        "recall": tally["right"] / called if called else None,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def print_scores(by_npc: dict[str, list[str]]) -> dict[str, Any]:
    print(f"{'persona':18s} {'lines':>5s} {'asked':>5s} {'right':>5s} {'false':>5s} {'missed':>6s} {'precision':>9s} {'recall':>7s}")
    every = [v for verdicts in by_npc.values() for v in verdicts]
    table = {npc: score(verdicts) for npc, verdicts in sorted(by_npc.items())} | {"all": score(every)}
    for npc, row in table.items():
        print(f"{npc:18s} {row['lines']:5d} {row['called_for']:5d} {row['right']:5d} {row['false']:5d} {row['missed']:6d} "
              f"{_pct(row['precision']):>9s} {_pct(row['recall']):>7s}")
    return table


def detect_only(args: argparse.Namespace) -> dict[str, Any]:
    """The detector alone: the sentence encoder and the persona files, no LLM or TTS."""
    from npcserver.backends.loading import load_sentence_embedder
    from npcserver.config import Settings
    from npcserver.conversation.actions import ActionIndex
    from npcserver.personas.store import PersonaStore

    settings = Settings()
    embedder = load_sentence_embedder(settings, spec=settings.action_model)
    store = PersonaStore(settings.voices)
    indexes: dict[str, ActionIndex] = {}
    by_npc: dict[str, list[str]] = defaultdict(list)
    for line in tomllib.loads(args.lines.read_text(encoding="utf-8"))["lines"]:
        persona = store.get(line["npc"])
        if persona is None:
            raise SystemExit(f"{args.lines}: no persona {line['npc']!r}")
        index = indexes.setdefault(persona.id, ActionIndex(persona, embedder))
        history = history_of(line)
        decision = index.decide(line["player"], history[-1] if history else None)
        sent = (decision.call.id, decision.call.args) if decision.call else None
        result = verdict(line, sent)
        by_npc[persona.id].append(result)
        if args.verbose or result in ("false", "missed"):
            print(f"{result:6s} {persona.id:16s} {decision.score:.2f} {decision.nearest or '-':15s} {line['player']!r} "
                  f"-> {sent} (want {line.get('action')} {line.get('args', {})})")
    return print_scores(by_npc)


async def full_run(args: argparse.Namespace) -> dict[str, Any]:
    """Every line through the server's turn code with the real models, actions on and off."""
    from npcserver.backends.loading import load_real_backends
    from npcserver.config import Settings
    from npcserver.conversation.persona_turn import reply_to_text
    from npcserver.conversation.pipeline import ModelRunner
    from npcserver.personas.store import PersonaStore
    from npcserver.protocol import Action as ActionMessage

    settings = Settings()
    runner = ModelRunner(load_real_backends(settings))
    store = PersonaStore(settings.voices)
    lines = tomllib.loads(args.lines.read_text(encoding="utf-8"))["lines"]
    by_npc: dict[str, list[str]] = defaultdict(list)
    latency = {"actions": LatencyHistogram(), "no actions": LatencyHistogram()}
    paired: list[float] = []  # per line: with actions minus without
    agreed = disagreed = 0
    started = time.monotonic()
    for number, line in enumerate(lines, start=1):
        persona = store.get(line["npc"])
        assert persona is not None, line["npc"]
        history = history_of(line)
        both: list[float] = []
        # alternate which goes first: the second run of a line finds the LLM's prompt cache warm
        for mode in ("actions", "no actions") if number % 2 else ("no actions", "actions"):
            sent: list[ActionMessage] = []

            async def keep(message: object, sent: list[ActionMessage] = sent) -> None:
                if isinstance(message, ActionMessage):
                    sent.append(message)

            # its own id: the runner keeps one fact and action index per persona id
            who = persona if mode == "actions" else dataclasses.replace(persona, id=f"{persona.id}_no_actions", actions=())
            result = await reply_to_text(runner, who, line["player"], history, seed=number, emit=keep)
            if (ms := result.timings.get("reply_audio_ms") or result.timings.get("voice_to_voice_ms")) is not None:
                latency[mode].record(ms)
                both.append(ms if mode == "actions" else -ms)
            if mode != "actions":
                continue
            got = (sent[0].id, dict(sent[0].args)) if sent else None
            outcome = verdict(line, got)
            by_npc[persona.id].append(outcome)
            if outcome == "right":
                reply = result.reply_text.lower()
                if any(word in reply for word in _REFUSING):
                    disagreed += 1
                    print(f"disagrees {persona.id}: {line['player']!r} -> {result.reply_text!r}", file=sys.stderr)
                else:
                    agreed += 1
            if args.verbose or outcome in ("false", "missed"):
                print(f"{outcome:6s} {persona.id:16s} {line['player']!r} -> {got}; {result.reply_text!r}")
        if len(both) == 2:
            paired.append(sum(both))
        if number % 10 == 0:
            print(f"  {number}/{len(lines)} lines, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    runner.close(wait=True)
    table = print_scores(by_npc)
    print(f"replies that agree with the action sent: {agreed}/{agreed + disagreed}")
    for mode, histogram in latency.items():
        print(f"reply audio, {mode:10s}: p50 {histogram.percentile(50):.0f} ms, p95 {histogram.percentile(95):.0f} ms "
              f"({histogram.count} lines)")
    paired.sort()
    middle = paired[len(paired) // 2] if paired else float("nan")
    print(f"reply audio with actions minus without, the same line: median {middle:+.0f} ms ({len(paired)} lines)")
    table["paired_median_ms"] = middle
    table["agree"] = agreed / max(1, agreed + disagreed)
    table["reply_audio_p50_ms"] = {mode: h.percentile(50) for mode, h in latency.items()}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=Path, default=LINES, help=f"the player lines to score (default {LINES.name})")
    parser.add_argument("--detect-only", action="store_true", help="score the detector alone (seconds, no LLM or TTS)")
    parser.add_argument("--verbose", action="store_true", help="print every line, not only the errors")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    table = detect_only(args) if args.detect_only else asyncio.run(full_run(args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(table, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
