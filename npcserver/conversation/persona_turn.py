"""How a turn for a persona is built: the one definition the server's sessions, `npcserver chat`,
`npcserver personas test` and the dialogue benchmark share, so a designer's preview answers as the
server would (the prompt, the facts looked up, the grounding check, the forbidden-topic deflection).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from npcserver.conversation.actions import ActionCall
from npcserver.conversation.pipeline import Emit, ModelRunner, TurnOutput, TurnRequest, TurnResult, run_turn
from npcserver.conversation.prompt import build_messages, context_note, deflection_for, remembered
from npcserver.personas import Persona


def persona_turn_request(
    persona: Persona,
    history: Sequence[tuple[str, str]],
    context: Mapping[str, Any],
    *,
    turn: int,
    seed: int | None = None,
    early_first_clause: bool = True,
    fact_first: bool = True,
    audio: np.ndarray | None = None,
    text: str | None = None,
    scripted_line: str | None = None,
    scripted_action: ActionCall | None = None,
    resume_text: str | None = None,
) -> TurnRequest:
    shown = remembered(history, persona.history_turns)
    context = dict(context)
    return TurnRequest(
        turn=turn,
        messages_for=lambda player_text, facts, action: build_messages(
            persona, shown, context, player_text, facts, action.action if action is not None else None
        ),
        voice=persona.voice,
        options=persona.generation_options(seed=seed),
        max_reply_words=persona.max_reply_words,
        early_first_clause=early_first_clause,
        audio=audio,
        text=text,
        scripted_line=scripted_line,
        scripted_action=scripted_action,
        previous=history[-1] if history and all(history[-1]) else None,
        resume_text=resume_text,
        # a 135M model does not reliably keep off forbidden topics: the designer's deflection answers them
        fixed_reply=lambda player_text: deflection_for(persona, player_text),
        fact_first=fact_first,
        persona=persona,
        context_text=context_note(persona, context),
    )


async def reply_to_text(
    runner: ModelRunner,
    persona: Persona,
    line: str,
    history: Sequence[tuple[str, str]] = (),
    context: Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    fact_first: bool = True,
    emit: Emit | None = None,
) -> TurnResult:
    """One typed turn through the server's turn code, audio included; its result (text, timings, check)."""

    async def drop(_message: object) -> None:
        return None

    request = persona_turn_request(persona, history, context or {}, turn=1, seed=seed, text=line, fact_first=fact_first)
    result = TurnResult()
    out = TurnOutput(emit or drop, 1, result.timings, time.perf_counter())
    await run_turn(runner, request, out, result)
    return result
