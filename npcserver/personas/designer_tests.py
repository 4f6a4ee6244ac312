"""A persona's own [[tests]]: ask each line through the server's turn code, check what the reply says.

`npcserver personas test [ID] [--runs N]` prints each test's pass rate and the replies that failed;
the server runs the tests of a persona in the background after each hot reload and logs the result.
A reply passes when it says every `must_say`, none of `must_not_say` (`npcserver.conversation.claims.says`), and
is in form (`npcserver.conversation.reply_form`). Failing tests never stop a persona from loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from npcserver.conversation.claims import says
from npcserver.conversation.persona_turn import reply_to_text
from npcserver.conversation.pipeline import ModelRunner
from npcserver.conversation.reply_form import form_problems
from npcserver.personas import Persona, PersonaTest


@dataclass
class TestOutcome:
    test: PersonaTest
    passed: int = 0
    runs: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (reply, why)

    @property
    def rate(self) -> float:
        return self.passed / self.runs if self.runs else 0.0


def why_reply_fails(persona: Persona, test: PersonaTest, reply: str) -> str | None:
    """Why the reply fails the test, or None when it passes."""
    missing = [pattern for pattern in test.must_say if not says(reply, pattern)]
    if missing:
        return "does not say " + ", ".join(repr(p) for p in missing)
    forbidden = [pattern for pattern in test.must_not_say if says(reply, pattern)]
    if forbidden:
        return "says " + ", ".join(repr(p) for p in forbidden)
    problems = form_problems(persona, test.player, reply)
    return "form: " + ", ".join(problems) if problems else None


async def run_persona_tests(runner: ModelRunner, persona: Persona, runs: int = 1, seed: int | None = None) -> list[TestOutcome]:
    """Every test of the persona, `runs` times each (sampled replies differ; `seed` makes them repeat)."""
    outcomes = []
    for number, test in enumerate(persona.tests):
        outcome = TestOutcome(test)
        for attempt in range(runs):
            turn_seed = None if seed is None else seed * 1000 + number * 10 + attempt
            result = await reply_to_text(runner, persona, test.player, seed=turn_seed)
            reply = result.reply_text.strip()
            why = why_reply_fails(persona, test, reply)
            outcome.runs += 1
            if why is None:
                outcome.passed += 1
            else:
                outcome.failures.append((reply, why))
        outcomes.append(outcome)
    return outcomes


PASSING_RATE = 0.9  # a persona passes its tests when this share of the replies pass


def pass_rate(outcomes: list[TestOutcome]) -> float:
    runs = sum(o.runs for o in outcomes)
    return sum(o.passed for o in outcomes) / runs if runs else 1.0


def report_lines(persona: Persona, outcomes: list[TestOutcome]) -> list[str]:
    replies = sum(o.runs for o in outcomes)
    lines = [f"{persona.id}: {100 * pass_rate(outcomes):.0f} % of {replies} replies pass ({len(outcomes)} tests)"]
    for outcome in outcomes:
        mark = "ok  " if outcome.passed == outcome.runs else "FAIL"
        lines.append(f"  {mark} {outcome.passed}/{outcome.runs}  {outcome.test.player}")
        for reply, why in outcome.failures:
            lines.append(f"         {why}: {reply!r}")
    return lines
