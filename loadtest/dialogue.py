"""Do the NPCs say what their persona files know? Fact recall, wrong facts, form and latency.

Every line of loadtest/dialogue_questions.toml (75 fact questions, 15 forbidden-topic lines, 20 small
talk, none of them an example line or a persona self-test) goes through the server's own turn code
(`npcserver.conversation.persona_turn.reply_to_text`: fact lookup, prompt, the real LLM, the grounding check, the
real TTS) with seeded sampling. Scores:
- fact: *held* when the reply says every `must_say`; *wrong* when it says a `wrong` value or a number
  that is neither in the fact nor in the question (a wrong fact counts as worse than a missing one:
  it is a failure even if the right value is there too); else *missed*.
- deflect: the reply is the persona's deflection.
- unknown (loadtest/dialogue_questions_unknown.toml: questions no fact answers): *fact* when the reply
  gives one of the persona's facts' numbers or names that the question did not say (a room's price
  for "how much is a sword?"), *invented* when it gives a number no fact or the question holds; else *ok*.
- form (every line): `npcserver.conversation.reply_form.form_problems`.
- latency: typed line -> first reply audio ready, through lookup, LLM and TTS (no ASR, no network).

    python -m loadtest.dialogue                       # the default server settings, ~4 min on 2 cores
    python -m loadtest.dialogue --llm-precision int8 --runs 2 --json artifacts/dialogue-int8.json
    python -m loadtest.dialogue --knowledge-model none   # facts only in the system prompt, no check
    python -m loadtest.dialogue --questions loadtest/dialogue_questions_unseen.toml   # the second set
    python -m loadtest.dialogue --lookup-only            # the fact lookup alone, in seconds
    python -m loadtest.dialogue --questions loadtest/dialogue_questions_unknown.toml   # questions no fact answers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.metrics import LatencyHistogram
from loadtest.report import machine_line
from npcserver.conversation.claims import claims_of, says
from npcserver.conversation.reply_form import form_problems

QUESTIONS = Path(__file__).with_name("dialogue_questions.toml")
# written later, by someone who had not read QUESTIONS: a change tuned on one set must hold on the other
UNSEEN = Path(__file__).with_name("dialogue_questions_unseen.toml")
KINDS = ("fact", "deflect", "chat", "unknown")  # the line kinds a question file may hold


@dataclass
class Outcome:
    npc: str
    kind: str  # fact / deflect / chat / unknown
    player: str
    reply: str
    verdict: str  # held / wrong / missed, deflected / answered, ok (chat), ok / fact / invented (unknown)
    form: list[str]
    reply_audio_ms: float | None
    first_token_ms: float | None
    corrected: bool = False  # the grounding check said the fact, not the model
    dropped: list[str] = field(default_factory=list)


def judge_fact(question: dict[str, Any], fact: str, reply: str) -> str:
    allowed = claims_of(fact).numbers | claims_of(question["player"]).numbers
    wrong_number = bool(claims_of(reply).numbers - allowed)
    if wrong_number or any(says(reply, pattern) for pattern in question.get("wrong", [])):
        return "wrong"
    return "held" if all(says(reply, pattern) for pattern in question["must_say"]) else "missed"


def judge_unknown(question: dict[str, Any], facts: tuple[str, ...], reply: str) -> str:
    """A question no fact answers: did the reply answer it with a fact anyway, or with a made-up number?"""
    said, asked = claims_of(reply), claims_of(question["player"])
    known = [claims_of(fact) for fact in facts]
    fact_values = frozenset().union(*(claims.numbers | claims.names for claims in known))
    if (said.numbers | said.names) & fact_values - asked.numbers - asked.names:
        return "fact"
    return "invented" if said.numbers - fact_values - asked.numbers else "ok"


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    facts = [o for o in outcomes if o.kind == "fact"]
    deflects = [o for o in outcomes if o.kind == "deflect"]
    unknown = [o for o in outcomes if o.kind == "unknown"]
    latency = LatencyHistogram()
    for outcome in outcomes:
        if outcome.reply_audio_ms is not None:
            latency.record(outcome.reply_audio_ms)
    return {
        "facts": len(facts),
        "recall": sum(o.verdict == "held" for o in facts) / max(1, len(facts)),
        "wrong": sum(o.verdict == "wrong" for o in facts) / max(1, len(facts)),
        "held_by_model": sum(o.verdict == "held" and not o.corrected for o in facts) / max(1, len(facts)),
        "deflected": sum(o.verdict == "deflected" for o in deflects) / max(1, len(deflects)) if deflects else None,
        "unknown_with_fact": sum(o.verdict == "fact" for o in unknown) / len(unknown) if unknown else None,
        "unknown_invented": sum(o.verdict == "invented" for o in unknown) / len(unknown) if unknown else None,
        "form": sum(not o.form for o in outcomes) / max(1, len(outcomes)),
        "lines": len(outcomes),
        "reply_audio_p50_ms": latency.percentile(50),
        "reply_audio_p95_ms": latency.percentile(95),
    }


async def run(args: argparse.Namespace) -> list[Outcome]:
    from npcserver.backends import create_backends
    from npcserver.config import Settings
    from npcserver.conversation.persona_turn import reply_to_text
    from npcserver.conversation.pipeline import ModelRunner
    from npcserver.conversation.prompt import persona_prefix
    from npcserver.personas.store import PersonaStore

    overrides: dict[str, Any] = {"llm_batching": False}
    if args.llm_precision:
        overrides["llm_precision"] = args.llm_precision
    if args.knowledge_model:
        overrides["knowledge_model"] = args.knowledge_model
    if args.no_fact_first:
        overrides["fact_first"] = False
    settings = Settings(**overrides)
    store = PersonaStore(settings.voices)
    print(f"loading models (LLM precision {settings.llm_precision}, knowledge {settings.knowledge_model})...",
          file=sys.stderr, flush=True)
    backends = create_backends(settings)
    runner = ModelRunner(backends)
    spec = tomllib.loads(args.questions.read_text(encoding="utf-8"))
    lines = [(kind, q) for kind in KINDS for q in spec.get(kind, [])]
    if args.npc:
        lines = [(kind, q) for kind, q in lines if q["npc"] in args.npc]
    # as a node does when it starts: every persona's indexes built before its first player speaks
    await runner.build_indexes([persona for npc in sorted({q["npc"] for _, q in lines}) if (persona := store.get(npc)) is not None])
    outcomes = []
    started = time.monotonic()
    total = len(lines) * args.runs
    for attempt in range(args.runs):
        for number, (kind, question) in enumerate(lines):
            persona = store.get(question["npc"])
            if persona is None:
                raise SystemExit(f"no persona {question['npc']!r} in {settings.voices}")
            runner.prefill(persona_prefix(persona), once_key=(persona.id, persona.version))
            result = await reply_to_text(runner, persona, question["player"], seed=args.seed * 1000 + number + attempt * 100_000,
                                         fact_first=settings.fact_first)
            reply = result.reply_text.strip()
            if kind == "fact":
                verdict = judge_fact(question, persona.facts[question["fact"] - 1], reply)
            elif kind == "deflect":
                verdict = "deflected" if persona.deflection and persona.deflection in reply else "answered"
            elif kind == "unknown":
                verdict = judge_unknown(question, persona.facts, reply)
            else:
                verdict = "ok"
            check = result.check
            outcome = Outcome(
                question["npc"], kind, question["player"], reply, verdict, form_problems(persona, question["player"], reply),
                result.timings.get("reply_audio_ms") or result.timings.get("voice_to_voice_ms"),
                result.timings.get("llm_first_token_ms"),
                corrected=bool(check and check.corrected), dropped=list(check.dropped) if check else [],
            )
            outcomes.append(outcome)
            done = len(outcomes)
            if args.verbose or outcome.verdict in ("wrong", "missed", "answered", "fact", "invented") or outcome.form:
                note = f" [{', '.join(outcome.form)}]" if outcome.form else ""
                print(f"  {kind:7s} {verdict:9s} {question['npc']}: {question['player']!r} -> {reply!r}{note}", file=sys.stderr)
            if done % 10 == 0:
                print(f"  {done}/{total} lines, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    runner.close(wait=True)
    return outcomes


def _share(tally: Counter[str], part: str, whole: str) -> str:
    return f"{100 * tally[part] / tally[whole]:.0f} %" if tally[whole] else "-"


def lookup_only(args: argparse.Namespace) -> None:
    """The fact lookup alone, in seconds, without the LLM or TTS: what a change to it does."""
    from npcserver.backends.loading import load_sentence_embedder
    from npcserver.config import Settings
    from npcserver.conversation.knowledge import KnowledgeIndex
    from npcserver.personas.store import PersonaStore

    settings = Settings(**({"knowledge_model": args.knowledge_model} if args.knowledge_model else {}))
    if settings.knowledge_model == "none":
        raise SystemExit("--lookup-only needs a knowledge model")
    embedder = load_sentence_embedder(settings)
    store = PersonaStore(settings.voices)
    spec = tomllib.loads(args.questions.read_text(encoding="utf-8"))
    indexes: dict[str, KnowledgeIndex] = {}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for kind in KINDS:
        for question in spec.get(kind, []):
            persona = store.get(question["npc"])
            if persona is None or (args.npc and persona.id not in args.npc):
                continue
            found = indexes.setdefault(persona.id, KnowledgeIndex(persona, embedder)).lookup(question["player"])
            tally = counts[persona.id]
            tally[kind] += 1
            if kind == "fact" and found.must_state is not None and found.forbidden_topic is None:
                said = [match.fact for match in found.to_state]
                tally["right" if question["fact"] - 1 in said else "other"] += 1
                tally["two_facts"] += len(said) > 1
            elif kind == "deflect":
                tally["topic"] += found.forbidden_topic is not None
            elif kind in ("chat", "unknown"):
                tally[f"{kind}_fact"] += found.must_state is not None
    counts["all"] = sum(counts.values(), Counter())
    print(f"{'persona':18s} {'asked fact':>10s} {'other fact':>10s} {'two facts':>9s} {'topic':>6s} {'chat+fact':>9s} "
          f"{'unknown+fact':>12s}")
    for npc, tally in counts.items():
        print(f"{npc:18s} {_share(tally, 'right', 'fact'):>10s} {_share(tally, 'other', 'fact'):>10s} "
              f"{_share(tally, 'two_facts', 'fact'):>9s} {_share(tally, 'topic', 'deflect'):>6s} "
              f"{_share(tally, 'chat_fact', 'chat'):>9s} {_share(tally, 'unknown_fact', 'unknown'):>12s}")
    print("asked fact: the reply must state the fact the question asks for (alone or with a near tie); other fact: "
          "it must state other facts only; two facts: a near tie, both said; topic: a forbidden-topic line is seen as "
          "one; chat+fact: small talk that must state a fact; unknown+fact: a question no fact answers that must "
          "state a fact.")


def print_report(outcomes: list[Outcome]) -> None:
    by_npc: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_npc[outcome.npc].append(outcome)

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.0f} %"

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    print(f"{'persona':18s} {'facts':>5s} {'recall':>7s} {'wrong':>6s} {'by model':>8s} {'deflect':>7s} {'unknown+fact':>12s} "
          f"{'invented':>8s} {'form':>6s} {'p50 ms':>7s} {'p95 ms':>7s}")
    for npc in [*sorted(by_npc), "all"]:
        s = summarise(outcomes if npc == "all" else by_npc[npc])
        recall = pct(s["recall"]) if s["facts"] else "-"
        wrong = pct(s["wrong"]) if s["facts"] else "-"
        by_model = pct(s["held_by_model"]) if s["facts"] else "-"
        print(f"{npc:18s} {s['facts']:5d} {recall:>7s} {wrong:>6s} {by_model:>8s} {pct(s['deflected']):>7s} "
              f"{pct(s['unknown_with_fact']):>12s} {pct(s['unknown_invented']):>8s} {pct(s['form']):>6s} "
              f"{ms(s['reply_audio_p50_ms']):>7s} {ms(s['reply_audio_p95_ms']):>7s}")
    print("recall: fact questions whose reply states the fact and no wrong value; wrong: a different number, name or "
          "place; by model: held without the grounding check adding the fact; unknown+fact: questions no fact answers "
          "answered with a fact's number or name; invented: with a number no fact holds; latency: typed line -> first "
          "reply audio.")


def write_png(outcomes: list[Outcome], path: Path) -> None:
    """Per persona: how the fact questions went (held by the model, held by the check, missed, wrong)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    npcs = sorted({o.npc for o in outcomes})
    facts = {npc: [o for o in outcomes if o.npc == npc and o.kind == "fact"] for npc in npcs}
    parts = [
        ("held, said by the model", "#2e7d32", lambda o: o.verdict == "held" and not o.corrected),
        ("held, fact said by the check", "#81c784", lambda o: o.verdict == "held" and o.corrected),
        ("missed", "#bdbdbd", lambda o: o.verdict == "missed"),
        ("wrong value", "#c62828", lambda o: o.verdict == "wrong"),
    ]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    left = [0.0] * len(npcs)
    for label, colour, chosen in parts:
        shares = [100 * sum(map(chosen, facts[npc])) / max(1, len(facts[npc])) for npc in npcs]
        ax.barh(npcs, shares, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of held-out fact questions")
    ax.invert_yaxis()
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--llm-precision", choices=("auto", "fp32", "bf16", "fp16", "int8"), help="override the server default")
    parser.add_argument("--knowledge-model", help="override the fact lookup model ('none' = no lookup, no check)")
    parser.add_argument("--no-fact-first", action="store_true", help="the LLM answers first; the fact is only added when missing")
    parser.add_argument("--questions", type=Path, default=QUESTIONS,
                        help=f"the question file (default {QUESTIONS.name}; {UNSEEN.name} is the second set)")
    parser.add_argument("--seed", type=int, default=7, help="sampling seed (default 7)")
    parser.add_argument("--runs", type=int, default=1, help="ask every line this many times (default 1)")
    parser.add_argument("--npc", action="append", help="only this persona (repeatable)")
    parser.add_argument("--json", type=Path, help="also write every reply and verdict here")
    parser.add_argument("--png", type=Path, default=Path("artifacts/dialogue.png"), help="where to draw the fact outcomes")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every reply, not only failures")
    parser.add_argument("--lookup-only", action="store_true", help="score the fact lookup alone (seconds, no LLM)")
    args = parser.parse_args(argv)
    if args.lookup_only:
        lookup_only(args)
        return 0
    outcomes = asyncio.run(run(args))
    print(machine_line())
    print_report(outcomes)
    write_png(outcomes, args.png)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summarise(outcomes), "lines": [o.__dict__ for o in outcomes]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
