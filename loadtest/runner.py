"""Drive many simulated players against one server and record every turn as the client saw it.

Each player is one WebSocket session. Its turns follow a schedule fixed in advance (schedule.py). A player
talks, listens to the whole reply (until the reply's audio would have finished playing), and only then may
speak again. An arrival that comes while the player is still busy waits in the player's line, up to
`max_queued_turns`; beyond that it is counted as skipped. A waiting turn's start delay is recorded, so a
stalled server shows up as growing start delays and skipped turns, never as a quietly reduced load.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadtest.corpus import Utterance
from loadtest.measure import turn_playback_end, turn_underruns
from loadtest.metrics import word_error_rate
from loadtest.schedule import PlannedTurn, build_schedule
from npcserver.client import CONNECT_FAILED_CODE, HeardTurn, TalkError, TalkSession


@dataclass(frozen=True, slots=True)
class LoadConfig:
    url: str
    npc: str
    players: int
    duration_s: float
    turn_interval_s: float = 15.0  # mean time between one player's turn arrivals (Poisson)
    text_mode: bool = False  # send each utterance's text instead of its audio
    seed: int = 1
    turn_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    max_queued_turns: int = 1
    drain_s: float = 30.0  # after the schedule ends, how long turns in flight may still finish


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One turn, flattened for the JSON report. Latencies are milliseconds from the end of the player's speech."""

    player: int
    index: int
    utterance: str
    scheduled_s: float  # from the schedule, seconds after the run started
    started_s: float  # when the player actually began speaking
    start_delay_ms: float  # started - scheduled: waiting for the player's previous turn
    ok: bool
    error_codes: tuple[str, ...]
    close_code: int | None
    voice_to_voice_ms: float | None
    transcript_ms: float | None
    first_reply_text_ms: float | None
    turn_end_ms: float | None
    reply_audio_s: float
    underrun_count: int
    underrun_gaps_ms: tuple[float, ...]
    server_timings: dict[str, float]
    reference_text: str
    transcript: str
    reply_text: str
    wer: float | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class RunState:
    """Live counters, read by the progress line while the run goes on."""

    players: int
    connected: int = 0
    records: list[TurnRecord] = field(default_factory=list)
    skipped: int = 0  # arrivals dropped because the player's line was full
    not_started: int = 0  # queued arrivals still waiting when the run ended
    connect_failures: int = 0
    reconnects: int = 0
    session_errors: Counter[str] = field(default_factory=Counter)  # errors outside any turn


@dataclass(frozen=True, slots=True)
class RunResult:
    config: LoadConfig
    records: tuple[TurnRecord, ...]
    offered_turns: int
    skipped: int
    not_started: int
    connect_failures: int
    reconnects: int
    session_errors: dict[str, int]
    wall_started_at: float  # time.time() when the schedule clock started
    elapsed_s: float


def make_record(
    planned: PlannedTurn, utterance: Utterance, result: HeardTurn, run_t0: float, text_mode: bool
) -> TurnRecord:
    underruns = turn_underruns(result)
    wer = None
    if not text_mode and result.final_transcript_at is not None:
        wer = word_error_rate(utterance.text, result.transcript)
    return TurnRecord(
        player=planned.player,
        index=planned.index,
        utterance=utterance.name,
        scheduled_s=round(planned.at_s, 4),
        started_s=round(result.started_at - run_t0, 4),
        start_delay_ms=round(max(0.0, (result.started_at - run_t0 - planned.at_s) * 1000.0), 3),
        ok=result.ok,
        error_codes=tuple(result.error_codes),
        close_code=result.close_code,
        voice_to_voice_ms=result.voice_to_voice_ms,
        transcript_ms=result.transcript_ms,
        first_reply_text_ms=result.first_reply_text_ms,
        turn_end_ms=result.turn_end_ms,
        reply_audio_s=round(result.reply_audio_seconds, 4),
        underrun_count=len(underruns),
        underrun_gaps_ms=tuple(round(u.gap_s * 1000.0, 3) for u in underruns),
        server_timings=dict(result.server_timings),
        reference_text=utterance.text,
        transcript=result.transcript,
        reply_text=result.reply_text,
        wer=wer,
    )


def failed_record(
    planned: PlannedTurn, utterance: Utterance, code: str, close_code: int | None, run_t0: float
) -> TurnRecord:
    started = time.perf_counter() - run_t0
    return TurnRecord(
        planned.player, planned.index, utterance.name, round(planned.at_s, 4), round(started, 4),
        round(max(0.0, (started - planned.at_s) * 1000.0), 3), False, (code,), close_code,
        None, None, None, None, 0.0, 0, (), {}, utterance.text, "", "", None,
    )  # fmt: skip


class _Player:
    def __init__(
        self, number: int, turns: list[PlannedTurn], config: LoadConfig, utterances: list[Utterance], state: RunState
    ) -> None:
        self.number = number
        self.turns = turns
        self.config = config
        self.utterances = utterances
        self.state = state
        self.session: TalkSession | None = None

    async def connect(self) -> bool:
        try:
            self.session = await TalkSession.open(
                self.config.url,
                self.config.npc,
                sample_rate=self.utterances[0].sample_rate,
                player=f"loadtest-{self.number}",
                greeting=False,  # each turn on the schedule is the player's; a greeting would shift the first one
                timeout_s=self.config.connect_timeout_s,
            )
        except TalkError as exc:
            self.state.connect_failures += 1
            self.state.session_errors[exc.code] += 1
            self.session = None
            return False
        self.state.connected += 1
        return True

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.state.connected -= 1
            self.session = None

    async def run(self, run_t0: float, stop_at: float) -> None:
        """Play the schedule; no turn starts after `stop_at` (perf_counter seconds)."""
        waiting: deque[PlannedTurn] = deque()
        idle_since = 0.0  # run-relative time the player last became free
        next_arrival = 0
        while True:
            now = time.perf_counter() - run_t0
            while next_arrival < len(self.turns) and self.turns[next_arrival].at_s <= now:
                arrival = self.turns[next_arrival]
                came_while_idle = arrival.at_s >= idle_since and not waiting
                if came_while_idle or len(waiting) < self.config.max_queued_turns:
                    waiting.append(arrival)
                else:
                    self.state.skipped += 1
                next_arrival += 1
            if time.perf_counter() >= stop_at:
                self.state.not_started += len(waiting)
                return
            if waiting:
                await self._take_turn(waiting.popleft(), run_t0)
                idle_since = time.perf_counter() - run_t0
                continue
            if next_arrival >= len(self.turns):
                return
            wake = min(run_t0 + self.turns[next_arrival].at_s, stop_at)
            await asyncio.sleep(max(0.0, wake - time.perf_counter()))

    async def _take_turn(self, planned: PlannedTurn, run_t0: float) -> None:
        utterance = self.utterances[planned.utterance]
        if self.session is None or self.session.closed:
            if self.session is not None:
                await self.close()
            self.state.reconnects += 1
            if not await self.connect():
                self.state.records.append(failed_record(planned, utterance, CONNECT_FAILED_CODE, None, run_t0))
                return
        session = self.session  # close() may clear self.session while this turn runs (a stopped run)
        assert session is not None
        if self.config.text_mode:
            result = await session.say(utterance.text, timeout_s=self.config.turn_timeout_s)
        else:
            result = await session.speak(utterance.pcm, speech_end=utterance.speech_end, timeout_s=self.config.turn_timeout_s)
        self.state.records.append(make_record(planned, utterance, result, run_t0, self.config.text_mode))
        for error in session.unrouted_errors:
            self.state.session_errors[error.code] += 1
        session.unrouted_errors.clear()
        # The player listens to the whole reply before speaking again (bounded by the turn timeout).
        end = turn_playback_end(result)
        if end is not None:
            await asyncio.sleep(min(max(0.0, end - time.perf_counter()), self.config.turn_timeout_s))


async def run_load(
    config: LoadConfig, utterances: list[Utterance], on_progress: Callable[[RunState, float], None] | None = None
) -> RunResult:
    """Connect every player, play the schedule for `duration_s`, let turns in flight finish, close."""
    schedule = build_schedule(config.players, config.turn_interval_s, config.duration_s, len(utterances), config.seed)
    state = RunState(players=config.players)
    players = [_Player(i, turns, config, utterances, state) for i, turns in enumerate(schedule)]
    await asyncio.gather(*(p.connect() for p in players))
    run_t0 = time.perf_counter()
    wall_t0 = time.time()
    stop_at = run_t0 + config.duration_s
    progress = asyncio.create_task(_report_progress(state, run_t0, on_progress)) if on_progress else None
    tasks = [asyncio.create_task(p.run(run_t0, stop_at), name=f"player-{p.number}") for p in players]
    try:
        # Turns that started before the end may finish; nothing may outlive duration + drain.
        done, pending = await asyncio.wait(tasks, timeout=config.duration_s + config.drain_s + config.turn_timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        if progress is not None:
            progress.cancel()
            await asyncio.gather(progress, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in players), return_exceptions=True)
    return RunResult(
        config=config,
        records=tuple(sorted(state.records, key=lambda r: (r.started_s, r.player))),
        offered_turns=sum(len(turns) for turns in schedule),
        skipped=state.skipped,
        not_started=state.not_started,
        connect_failures=state.connect_failures,
        reconnects=state.reconnects,
        session_errors=dict(state.session_errors),
        wall_started_at=wall_t0,
        elapsed_s=time.perf_counter() - run_t0,
    )


async def _report_progress(state: RunState, run_t0: float, on_progress: Callable[[RunState, float], None]) -> None:
    while True:
        await asyncio.sleep(1.0)
        on_progress(state, time.perf_counter() - run_t0)
