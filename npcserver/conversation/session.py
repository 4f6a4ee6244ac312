"""One player's conversation: protocol messages and audio in, turns out.

The session is the asyncio driver of the turn-taking core (`turn_taking.TurnTaking`, no I/O), which
decides when a turn starts, is speculated, committed or dropped, and when the NPC is cut off. The
session feeds it the player's audio and messages and runs its commands: model work as tasks,
messages through `emit` (it knows nothing of sockets). It owns the history and game context.

It also plays fillers: when no reply audio has left by the persona's latency budget, a cached
filler line plays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol

import numpy as np
import soxr

from npcserver.audio import ASR_SAMPLE_RATE, pcm16_to_float
from npcserver.backends import Backends
from npcserver.config import Settings
from npcserver.conversation.actions import ActionCall, NotDeclared, declared_call
from npcserver.conversation.endpoint import Endpointer, TurnEnded
from npcserver.conversation.fillers import FillerCache, LatenessForecast
from npcserver.conversation.persona_turn import persona_turn_request
from npcserver.conversation.pipeline import Emit, ModelRunner, StageError, TurnOutput, TurnRequest, TurnResult, run_turn
from npcserver.conversation.prompt import build_messages, event_line, persona_prefix
from npcserver.conversation.turn_taking import (
    Command,
    CommitSpeculation,
    DropSpeculation,
    PauseRule,
    ScoreSentenceEnd,
    ScoreTurnEnd,
    StartSpeculation,
    StartTurn,
    StopSpeaking,
    TurnTaking,
    TurnTakingRules,
)
from npcserver.edge.limits import TokenBucket, context_refusal
from npcserver.personas import Persona
from npcserver.protocol import (
    AudioFormat,
    ClientMessage,
    CloseCode,
    Context,
    EndOfTurn,
    Error,
    ErrorCode,
    Event,
    Interrupt,
    NpcInfo,
    ProtocolError,
    Ready,
    Reply,
    Say,
    Start,
    Text,
    TurnEnd,
    parse_client_message,
)

log = logging.getLogger(__name__)

FILLER_LEAD_MS = 150  # play the filler this long before the budget runs out: it must be heard in time


class PersonaSource(Protocol):
    def get(self, persona_id: str) -> Persona | None: ...


class SessionState(Enum):
    AWAITING_START = "awaiting_start"
    LISTENING = "listening"  # no NPC turn in flight
    RESPONDING = "responding"  # a turn is being transcribed, written or spoken
    CLOSED = "closed"


class SessionClosed(Exception):
    """Raised to the connection loop when the session must end: the error to send, then the close code."""

    def __init__(self, close_code: int, error_code: str, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.error_code = error_code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SessionServices:
    """What every session shares: settings, models, personas, fillers and how to make an endpointer."""

    settings: Settings
    runner: ModelRunner
    personas: PersonaSource
    new_endpointer: Callable[[bool], Endpointer]  # push_to_talk -> an endpointer for this session
    fillers: FillerCache
    forecast: LatenessForecast


class ArrivalClock:
    """Maps a sample index of the 16 kHz stream back to the wall time it reached the server."""

    def __init__(self, keep: int = 512) -> None:
        self._chunks: deque[tuple[int, float]] = deque(maxlen=keep)  # (end sample, perf_counter at arrival)

    def arrived(self, end_sample: int) -> None:
        self._chunks.append((end_sample, time.perf_counter()))

    def wall_time(self, sample: int) -> float:
        for end_sample, at in self._chunks:
            if end_sample >= sample:
                # the chunk was sent as soon as its last sample was captured: step back from there
                return at - (end_sample - sample) / ASR_SAMPLE_RATE
        return time.perf_counter()


@dataclass
class Turn:
    """An NPC turn in flight: its task, where its output goes, and what it has said so far."""

    number: int
    out: TurnOutput
    result: TurnResult
    task: asyncio.Task[None] | None = None
    speech_end_sample: int | None = None  # for speculative turns: the pause they were started at
    extras: list[asyncio.Task[None]] = field(default_factory=list)  # e.g. the filler timer
    ended: bool = False  # its turn_end has been sent (exactly one per turn)

    def cancel(self) -> None:
        for task in (self.task, *self.extras):
            if task is not None and not task.done():
                task.cancel()

    async def stopped(self) -> None:
        self.cancel()
        tasks = [t for t in (self.task, *self.extras) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class Session:
    def __init__(
        self, services: SessionServices, emit: Emit, session_id: str | None = None,
        allowed: Callable[[str], bool] = lambda kind: True,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.emit = emit
        self._allowed = allowed  # may the client send one more message of this type ("text", "context")?
        self.id = session_id or uuid.uuid4().hex[:12]
        self.state = SessionState.AWAITING_START
        self.persona_id = ""
        self.player: str | None = None
        self.context: dict[str, Any] = {}
        self.history: list[tuple[str, str]] = []
        self.turn = 0
        self._active: Turn | None = None  # the NPC turn the player hears (or is about to)
        self._speculative: Turn | None = None  # started at a pause, output held until the turn is confirmed
        self._turn_taking: TurnTaking | None = None
        self._visemes = False  # the client wants mouth shapes with the audio
        self._resampler: soxr.ResampleStream | None = None
        self.input_rate = 0  # the client's audio sample rate, once started
        self._clock = ArrivalClock()
        self._samples_in = 0
        self._cut_off: TurnResult | None = None  # the NPC turn the player's voice last cut short
        self.active_at = time.monotonic()  # when the player was last active, for the idle timeout
        self._scripted_action: ActionCall | None = None  # a checked say's action, until its StartTurn runs
        self._remembered_turn: int | None = None  # whose exchange is the last of the history
        self._forgotten_turn: int | None = None  # replaced by a continuation: never remembered
        self._scoring: set[asyncio.Task[None]] = set()  # turn detector calls in flight
        # say and event: lines the game sends, each a turn (an event a model turn): budgeted per session
        per_minute = self.settings.game_lines_per_minute
        self._game_lines = TokenBucket(per_minute / 60.0, self.settings.game_line_burst) if per_minute > 0 else None

    # ------------------------------------------------------------------ inbound

    async def on_text_frame(self, text: str) -> None:
        if self.state is SessionState.CLOSED:
            return  # ending: what the client still sends is dropped
        try:
            message = parse_client_message(text)
            await self._dispatch(message)
        except ProtocolError as exc:
            await self.emit(Error(exc.code, exc.message, turn=self.turn or None))

    async def _dispatch(self, message: ClientMessage) -> None:
        if isinstance(message, Start):
            await self._start(message)
            return
        if self.state is SessionState.AWAITING_START:
            raise ProtocolError(ErrorCode.NOT_STARTED, f"send \"start\" before \"{message.type}\"")
        self._persona()  # a removed persona ends the session here
        if isinstance(message, Text | Context) and not self._allowed(message.type):
            raise SessionClosed(CloseCode.POLICY_VIOLATION, ErrorCode.RATE_LIMITED,
                                f"more {message.type} messages than this address may send")
        if isinstance(message, Text | EndOfTurn):
            self._active_now()
        if isinstance(message, Text):
            limit = self.settings.max_text_chars
            if len(message.text) > limit:
                raise ProtocolError(ErrorCode.TEXT_TOO_LONG, f"text is {len(message.text)} characters; the limit is {limit}")
            if not message.text.strip():
                raise ProtocolError(ErrorCode.INVALID_VALUE, "text: \"text\" must not be empty")
            await self._run(self._core().on_text(message.text))
        elif isinstance(message, Say):
            action = self._declared_action(message)  # a refused action costs none of the say budget
            self._accept_game_line(message)
            self._scripted_action = action
            await self._run(self._core().on_text(message.text.strip(), scripted=True))
        elif isinstance(message, Event):
            self._accept_game_line(message, reacting=True)
            await self._run(self._core().on_text(event_line(message.text.strip())))
        elif isinstance(message, EndOfTurn):
            await self._run(self._core().on_end_of_turn())
        elif isinstance(message, Interrupt):
            await self._run(self._core().on_interrupt())
        elif isinstance(message, Context):
            self._check_context(message.context)
            self.context.update(message.context)

    def _accept_game_line(self, message: Say | Event, reacting: bool = False) -> None:
        """Refuse a say or event beyond its limits (ProtocolError); an event also while the NPC is
        answering or the player is talking: it never cuts either off."""
        limit = self.settings.max_game_line_chars
        if len(message.text) > limit:
            raise ProtocolError(ErrorCode.TEXT_TOO_LONG, f"{message.type}: text is {len(message.text)} characters; the limit is {limit}")
        if not message.text.strip():
            raise ProtocolError(ErrorCode.INVALID_VALUE, f"{message.type}: \"text\" must not be empty")
        if reacting and (
            (self._active is not None and self._active.running) or self._speculative is not None
            or self._core().player_speaking
        ):
            raise ProtocolError(ErrorCode.NPC_BUSY, "event: the NPC is answering or the player is talking; send it again later")
        if self._game_lines is not None and not self._game_lines.take():
            per_minute = self.settings.game_lines_per_minute
            raise ProtocolError(ErrorCode.RATE_LIMITED, f"{message.type}: more than {per_minute:g} say/event messages a minute; this one was dropped")

    def _declared_action(self, message: Say) -> ActionCall | None:
        """The action a say carries, checked against the persona: never passed on to the game unchecked."""
        if message.action is None:
            return None
        try:
            return declared_call(self._persona(), message.action.id, message.action.args)
        except NotDeclared as exc:
            raise ProtocolError(ErrorCode.UNKNOWN_ACTION, f"say: {exc}") from None

    async def _start(self, message: Start) -> None:
        if self.state is not SessionState.AWAITING_START:
            raise ProtocolError(ErrorCode.ALREADY_STARTED, "this session has already started; open a new connection for another NPC")
        persona = self.services.personas.get(message.npc)
        if persona is None:
            raise ProtocolError(ErrorCode.UNKNOWN_NPC, f"no NPC with id {message.npc!r} on this server (GET /v1/personas lists them)")
        self._check_context(message.context, held={})
        self.persona_id = persona.id
        self._active_now()
        self.player = message.player
        self.context = dict(message.context)
        self._turn_taking = TurnTaking(
            self.services.new_endpointer(message.push_to_talk),
            _rules(self.settings, self.services.runner.backends),
            push_to_talk=message.push_to_talk,
        )
        self._visemes = message.visemes
        rate = self.input_rate = message.audio.sample_rate
        if rate != ASR_SAMPLE_RATE:
            self._resampler = soxr.ResampleStream(rate, ASR_SAMPLE_RATE, 1, dtype="float32")
        self.state = SessionState.LISTENING
        out = AudioFormat("pcm_s16le", self.services.runner.sample_rate)
        await self.emit(Ready(self.id, NpcInfo(persona.id, persona.name), out))
        log.info("session %s started: npc=%s rate=%d", self.id, persona.id, rate)
        self.services.runner.prefill(persona_prefix(persona), once_key=(persona.id, persona.version))
        if self.settings.fillers:
            self.services.fillers.warm(persona)
        if persona.greeting and message.greeting:
            turn = self._new_turn(0, started_at=time.perf_counter())
            self._launch(turn, self._speak_greeting(turn, persona, persona.greeting))

    async def on_audio_frame(self, data: bytes) -> None:
        if self.state is SessionState.CLOSED:
            return
        if self.state is SessionState.AWAITING_START:
            await self.emit(Error(ErrorCode.NOT_STARTED, "audio arrived before \"start\"; it was dropped"))
            return
        if len(data) % 2:
            await self.emit(Error(ErrorCode.BAD_AUDIO, f"audio frame of {len(data)} bytes is not whole 16-bit samples; it was dropped"))
            return
        # audio keeps the session awake for as long as it lasts: a trickle of it is no keep-alive
        seconds = len(data) / 2 / self.input_rate
        self.active_at = min(time.monotonic(), self.active_at + seconds)
        samples = pcm16_to_float(data)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        self._samples_in += len(samples)
        self._clock.arrived(self._samples_in)
        busy = bool(self.services.runner.load["asr"].pending)
        await self._run(self._core().on_audio(samples, time.perf_counter() * 1000.0, models_busy=busy))

    def _core(self) -> TurnTaking:
        assert self._turn_taking is not None, "the session has started"
        return self._turn_taking

    async def _run(self, commands: list[Command]) -> None:
        """Carry out what the turn-taking core decided, in order."""
        for command in commands:
            if isinstance(command, StopSpeaking):
                if command.resumable and self._active is not None:
                    log.debug("session %s: the player's voice cut turn %d off", self.id, command.turn)
                    self._cut_off = self._active.result
                await self.interrupt()
            elif isinstance(command, StartSpeculation):
                self._speculate(command)
            elif isinstance(command, DropSpeculation):
                await self._drop_speculation()
            elif isinstance(command, CommitSpeculation):
                speculative, self._speculative = self._speculative, None
                assert speculative is not None and speculative.number == command.turn
                self._forget(command.replaces)
                speech_end, timings = self._endpoint_timings(command.ended)
                await self._commit(speculative, speech_end, timings)
            elif isinstance(command, StartTurn):
                self._forget(command.replaces)
                if command.scripted:
                    action, self._scripted_action = self._scripted_action, None  # the say's own action, once
                    await self._begin_turn(command.turn, scripted_line=command.text, scripted_action=action,
                                           started_at=time.perf_counter())
                elif command.ended is None:
                    await self._begin_turn(command.turn, text=command.text, started_at=time.perf_counter())
                else:
                    speech_end, timings = self._endpoint_timings(command.ended)
                    await self._begin_turn(
                        command.turn, audio=command.audio, started_at=speech_end, timings=timings, resume=command.resume
                    )
            elif isinstance(command, ScoreTurnEnd | ScoreSentenceEnd):
                self._score_pause(command)

    def _endpoint_timings(self, ended: TurnEnded) -> tuple[float, dict[str, float]]:
        speech_end = self._clock.wall_time(ended.speech_end_sample)
        return speech_end, {
            "endpoint_ms": round((time.perf_counter() - speech_end) * 1000.0, 1),  # wall time
            "end_silence_ms": round(ended.endpoint_delay_ms, 1),  # the silence in the stream that ended it
        }

    def _forget(self, number: int | None) -> None:
        """The player went on with the line turn `number` answered: that exchange never happened."""
        if number is None:
            return
        self._forgotten_turn = number
        if self._remembered_turn == number and self.history:
            self.history.pop()
            self._remembered_turn = None

    def _score_pause(self, command: ScoreTurnEnd | ScoreSentenceEnd) -> None:
        """Ask the turn detector or the sentence-end model in the background; the answer goes to the core when it comes."""
        runner = self.services.runner

        async def score() -> None:
            if isinstance(command, ScoreTurnEnd):
                self._core().on_turn_score(command.at_sample, await runner.score_turn_end(command.audio))
            else:
                self._core().on_sentence_end_score(command.at_sample, await runner.score_sentence_end(command.text))

        task = asyncio.create_task(score())
        self._scoring.add(task)
        task.add_done_callback(self._scored)

    def _scored(self, task: asyncio.Task[None]) -> None:
        self._scoring.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("session %s: scoring a pause failed: %s", self.id, task.exception())

    # ------------------------------------------------------------------ turns

    def _check_context(self, update: dict[str, Any], held: dict[str, Any] | None = None) -> None:
        """Refuse (invalid_value) a context that would go over the size limits: nothing of it is kept."""
        refusal = context_refusal(self.context if held is None else held, update,
                                  self.settings.max_context_keys, self.settings.max_context_entry_chars)
        if refusal is not None:
            raise ProtocolError(ErrorCode.INVALID_VALUE, refusal)

    def _active_now(self) -> None:
        self.active_at = time.monotonic()

    def _persona(self) -> Persona:
        persona = self.services.personas.get(self.persona_id)
        if persona is None:
            raise self.persona_removed()
        return persona

    def persona_removed(self) -> SessionClosed:
        """Why this session ends when its persona file was deleted."""
        return SessionClosed(CloseCode.GOING_AWAY, ErrorCode.NPC_REMOVED, f"npc {self.persona_id!r} was removed from this server")

    def _new_turn(self, number: int, started_at: float, timings: dict[str, float] | None = None, held: bool = False) -> Turn:
        result = TurnResult(timings=dict(timings or {}))
        out = TurnOutput(self.emit, number, result.timings, started_at, held=held, visemes=self._visemes)
        return Turn(number, out, result)

    def _request(
        self, number: int, audio: np.ndarray | None = None, text: str | None = None, resume: bool = False,
        scripted_line: str | None = None, scripted_action: ActionCall | None = None,
    ) -> TurnRequest:
        return persona_turn_request(
            self._persona(),
            self.history,
            self.context,
            turn=number,
            seed=self._reply_seed(number),
            early_first_clause=self.settings.early_first_clause,
            fact_first=self.settings.fact_first,
            audio=audio,
            text=text,
            scripted_line=scripted_line,
            scripted_action=scripted_action,
            resume_text=self._cut_off.unheard_reply() if self._cut_off is not None and resume else None,
        )

    def _reply_seed(self, number: int) -> int | None:
        """With `llm_seed` set, turn N of every conversation samples alike (a speculative try and its commit too)."""
        return None if self.settings.llm_seed < 0 else self.settings.llm_seed * 1_000_003 + number

    async def _begin_turn(
        self, number: int, *, started_at: float, audio: np.ndarray | None = None, text: str | None = None,
        scripted_line: str | None = None, scripted_action: ActionCall | None = None,
        timings: dict[str, float] | None = None, resume: bool = False,
    ) -> None:
        await self._drop_speculation()
        await self.interrupt()  # a new player turn always cuts the NPC's previous one
        self.turn = number
        turn = self._new_turn(number, started_at, timings)
        self._launch(turn, self._run_turn(turn, self._request(number, audio, text, resume, scripted_line, scripted_action)))
        self._cut_off = None
        if scripted_line is None:  # a scripted line needs no model: nothing to fill a wait with
            self._start_filler_timer(turn)

    def _speculate(self, command: StartSpeculation) -> None:
        """Start the turn now, output held, in case this pause is the end of the player's turn."""
        turn = self._new_turn(command.turn, self._clock.wall_time(command.at_sample), held=True)
        turn.speech_end_sample = command.at_sample
        request = self._request(command.turn, audio=command.audio, resume=command.resume)
        request.on_transcript = lambda text, last_word: self._heard(command.turn, text, last_word)
        turn.task = asyncio.create_task(self._run_turn(turn, request))
        self._speculative = turn

    def _heard(self, turn: int, text: str, last_word_probability: float | None) -> None:
        """A speculation's transcript: the core may want the sentence-end model's view of it."""
        for command in self._core().on_transcript(turn, text, last_word_probability):
            assert isinstance(command, ScoreSentenceEnd)
            self._score_pause(command)

    async def _drop_speculation(self) -> None:
        turn, self._speculative = self._speculative, None
        if turn is not None:
            await turn.stopped()

    async def _commit(self, turn: Turn, speech_end: float, endpoint_timings: dict[str, float]) -> None:
        await self.interrupt()
        self.turn = turn.number
        self._cut_off = None
        turn.result.timings.update(endpoint_timings)
        self._active = turn
        self.state = SessionState.RESPONDING
        assert turn.task is not None
        turn.task.add_done_callback(self._turn_finished)
        self._start_filler_timer(turn)
        await turn.out.commit(speech_end)

    def _launch(self, turn: Turn, work: Coroutine[Any, Any, None]) -> None:
        self.state = SessionState.RESPONDING
        self._active = turn
        self._core().on_npc_turn_started(turn.number)
        turn.task = asyncio.create_task(work, name=f"turn-{self.id}-{turn.number}")
        turn.task.add_done_callback(self._turn_finished)

    def _turn_finished(self, task: asyncio.Task[None]) -> None:
        """A turn the player heard is over: remember what was said (even if cut short)."""
        turn = self._active
        if turn is None or task is not turn.task:
            return
        turn.cancel()  # its filler timer
        self._active_now()  # the player was listening: the idle time starts when the NPC stops
        self._core().on_npc_turn_done(turn.number)
        if turn.result.player_text and turn.number != self._forgotten_turn:
            self.history.append((turn.result.player_text, turn.result.reply_text.strip()))
            self._remembered_turn = turn.number
            self._prefill_next_prompt()
        if self.state is SessionState.RESPONDING:
            self.state = SessionState.LISTENING
        if not task.cancelled() and task.exception() is not None:
            log.error("session %s: turn task failed", self.id, exc_info=task.exception())

    def _prefill_next_prompt(self) -> None:
        """The next turn's prompt starts with the persona and the history as it is now: have the LLM
        compute that while the player listens, so the next turn prefills only the player's new line
        (~60 ms instead of ~250 ms when the history was just trimmed)."""
        persona = self.services.personas.get(self.persona_id)
        if persona is not None:  # build_messages keeps only the exchanges the prompt shows
            self.services.runner.prefill(build_messages(persona, self.history, self.context, "")[:-1])

    def _start_filler_timer(self, turn: Turn) -> None:
        if not self.settings.fillers:
            return
        persona = self._persona()
        if not persona.fillers:
            return
        turn.extras.append(asyncio.create_task(self._filler_when_late(turn, persona)))

    async def _filler_when_late(self, turn: Turn, persona: Persona) -> None:
        """Say a filler line so the NPC isn't mute: at once when recent replies came later than the
        persona's budget and this one hasn't started writing yet, else if no reply audio has left
        shortly before the budget runs out."""
        budget_ms = persona.latency_budget_ms
        expected_ms = self.services.forecast.expected_ms()
        late_already = expected_ms is not None and expected_ms > budget_ms and not turn.result.reply_text
        if not late_already:
            deadline = turn.out.started_at + (budget_ms - FILLER_LEAD_MS) / 1000.0
            await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
        filler = self.services.fillers.get(persona, turn.number)
        if filler is not None and not turn.out.audio_started and turn.running:
            await turn.out.audio(filler, filler=True)

    async def _run_turn(self, turn: Turn, request: TurnRequest) -> None:
        """Run a turn and always close it with turn_end."""
        interrupted = False
        try:
            await run_turn(self.services.runner, request, turn.out, turn.result)
        except asyncio.CancelledError:
            interrupted = True
            raise
        except (StageError, ExceptionGroup) as exc:
            error = _find_stage_error(exc)
            if error is None:
                raise
            log.warning("session %s turn %d: %s", self.id, turn.number, error)
            message = f"the {error.stage} model failed on this turn; please try again"
            await turn.out.end_audio()
            await turn.out.send(Error(ErrorCode.MODEL_ERROR, message, turn=turn.number))
        finally:
            if "reply_audio_ms" in turn.result.timings and not turn.out.held:
                self.services.forecast.observe(turn.result.timings["reply_audio_ms"])
            await self._end_turn(turn, interrupted)

    async def _end_turn(self, turn: Turn, interrupted: bool) -> None:
        """Close the turn's audio and send its one turn_end (held back, like everything, while speculative)."""
        if turn.ended:
            return
        turn.ended = True
        timings = turn.result.timings if turn.number else {}  # the greeting answers no speech: nothing to time
        with contextlib.suppress(Exception):
            await turn.out.end_audio()
            await turn.out.send(TurnEnd(turn.number, interrupted, timings, filler=turn.out.filler_played,
                                        speculative=turn.speech_end_sample is not None, resumed=turn.result.resumed))

    async def _speak_greeting(self, turn: Turn, persona: Persona, greeting: str) -> None:
        """The greeting: spoken as turn 0, before the player's first turn."""
        interrupted = False
        try:
            await turn.out.send(Reply(0, greeting))
            await turn.out.audio(await self.services.runner.synthesize(greeting, persona.voice))
        except asyncio.CancelledError:
            interrupted = True
            raise
        finally:
            await self._end_turn(turn, interrupted)

    async def interrupt(self) -> None:
        """Stop the NPC now: cancel generation and synthesis, and wait until they have let go."""
        turn = self._active
        if turn is not None and turn.running:
            await turn.stopped()
            # a turn cancelled before its task ever ran (lines sent back to back) ran no finally: end it here
            await self._end_turn(turn, interrupted=True)

    async def wait_turn_done(self) -> None:
        """Return when no NPC turn is in flight (used when draining)."""
        turn = self._active
        if turn is not None and turn.task is not None and not turn.task.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(turn.task)

    def end(self) -> bool:
        """Take no more input (frames are dropped from now on); False if it had ended already."""
        if self.state is SessionState.CLOSED:
            return False
        self.state = SessionState.CLOSED
        return True

    async def close(self) -> None:
        """End the session and stop its turns (they let go of the models before this returns)."""
        self.state = SessionState.CLOSED
        for task in list(self._scoring):
            task.cancel()
        await self._drop_speculation()
        if self._active is not None:
            await self._active.stopped()


def _rules(settings: Settings, backends: Backends) -> TurnTakingRules:
    pause = PauseRule(
        finished_ms=settings.end_silence_finished_ms,
        incomplete_ms=settings.end_silence_incomplete_ms,
        guessed_word_below=settings.last_word_guessed_below,
    )
    if backends.turn_detector is not None:
        pause = replace(
            pause,
            complete_at=settings.turn_complete_at,
            complete_ms=settings.end_silence_complete_ms,
            incomplete_below=settings.turn_incomplete_below,
        )
    if backends.sentence_end is not None and settings.speculative:  # the words come from a speculation
        pause = replace(
            pause,
            sentence_end_below=settings.sentence_end_below,
            sentence_end_at=settings.sentence_end_at,
        )
    return TurnTakingRules(
        speculative=settings.speculative,
        barge_in_ms=settings.barge_in_ms,
        resume_after_false_interruption=settings.false_interruption == "resume",
        continuation_ms=settings.continuation_ms,
        pause=pause,
    )


def _find_stage_error(exc: BaseException) -> StageError | None:
    """The model failure inside what a turn raised (TaskGroup wraps it in an ExceptionGroup)."""
    if isinstance(exc, StageError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _find_stage_error(inner)) is not None:
                return found
    return None
