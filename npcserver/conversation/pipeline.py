"""The overlapping turn: utterance -> ASR -> streamed reply -> clauses -> audio chunks.

`ModelRunner` owns one single-worker executor per model (the worker is also the model's lock), so
no model call ever runs on the event loop and concurrent sessions queue per model. `run_turn`
overlaps the stages: the first clause is being spoken while the LLM writes the next one.
Cancelling the task running `run_turn` (an interrupt) stops generation at the next token and
drops any synthesis in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from npcserver.backends import Backends
from npcserver.backends.base import (
    ChatMessage,
    ConcurrentModel,
    GenerationOptions,
    IdlePrefillingModel,
    ModelWithWorker,
    PrefillingModel,
    Speech,
    Transcript,
    VoiceSettings,
    first_encoder,
)
from npcserver.conversation.actions import NO_ACTION, ActionCall, ActionDecision, ActionIndex
from npcserver.conversation.emotes import emotes_named
from npcserver.conversation.grounding import ReplyCheck
from npcserver.conversation.knowledge import NOTHING_FOUND, KnowledgeIndex, Lookup
from npcserver.conversation.phrase_cache import PhraseAudioCache
from npcserver.conversation.prompt import NOTHING_SAID
from npcserver.conversation.scheduling import DeadlineExecutor
from npcserver.conversation.text import ClauseSplitter, ReplyLimiter, clean_for_speech, is_backchannel
from npcserver.conversation.visemes import visemes_of
from npcserver.personas import Persona
from npcserver.protocol import Action as ActionMessage
from npcserver.protocol import AudioEnd, AudioStart, Emote, Reply, ServerMessage, TranscriptMessage, Visemes

log = logging.getLogger(__name__)
T = TypeVar("T")

AUDIO_FRAME_SAMPLES = 8192  # ~0.37 s at 22.05 kHz, 16 KiB: few frames, well under the 64 KiB limit
CLAUSE_QUEUE_SIZE = 8
# A first clause with no comma is cut after this many words (before "for a ..." where it can): each
# word costs ~30 ms of LLM and ~25 ms of TTS before the player hears anything.
FIRST_CLAUSE_MAX_WORDS = 4


class StageError(Exception):
    """A model failed during a turn; the session reports it and goes on."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {cause}")
        self.stage = stage


@dataclass
class StageLoad:
    """Calls waiting for or running on one model; exported as metrics and used to predict lateness."""

    pending: int = 0
    busy_seconds: float = 0.0
    calls: int = 0


class ModelRunner:
    def __init__(
        self, backends: Backends, *, interleave_llm: bool = True, phrase_cache: PhraseAudioCache | None = None
    ) -> None:
        self.backends = backends
        self.interleave_llm = interleave_llm
        self.phrase_cache = phrase_cache
        self.sample_rate = backends.synthesizer.sample_rate
        # One worker per model is also its lock. A batching transcriber or dialogue model is its own
        # lock and wants several callers waiting at once, or no batch could ever form.
        workers = {
            "asr": backends.transcriber.max_concurrent_calls if isinstance(backends.transcriber, ConcurrentModel) else 1,
            "llm": backends.dialogue.max_concurrent_calls if isinstance(backends.dialogue, ConcurrentModel) else 1,
            "tts": 1,
        }
        self._llm_batches = workers["llm"] > 1
        self._executors: dict[str, Executor] = {
            stage: ThreadPoolExecutor(max_workers=count, thread_name_prefix=stage)
            for stage, count in workers.items()
            if stage != "tts"
        }
        # one voice for every session: the clause needed soonest goes first (see scheduling.py)
        self._executors["tts"] = DeadlineExecutor("tts")
        if backends.embedder is not None:
            self._executors["knowledge"] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="knowledge")
        if backends.turn_detector is not None or backends.sentence_end is not None:
            self._executors["turn"] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn")
        self._indexes: dict[str, PersonaIndexes] = {}  # by persona id: those of its latest version
        self._load_lock = threading.Lock()  # several ASR or LLM workers may finish at once
        self.load = {stage: StageLoad() for stage in self._executors}
        self._prefilled: set[object] = set()

    async def _call(self, stage: str, fn: Callable[[], T], needed_by: float | None = None) -> T:
        load = self.load[stage]

        def timed() -> T:
            started = time.perf_counter()
            try:
                return fn()
            finally:
                elapsed = time.perf_counter() - started
                with self._load_lock:
                    load.busy_seconds += elapsed
                    load.calls += 1

        load.pending += 1
        executor = self._executors[stage]
        try:
            if isinstance(executor, DeadlineExecutor):
                deadline = time.perf_counter() if needed_by is None else needed_by
                return await asyncio.wrap_future(executor.submit_by(deadline, timed))
            return await asyncio.get_running_loop().run_in_executor(executor, timed)
        except Exception as exc:
            raise StageError(stage, exc) from exc
        finally:
            load.pending -= 1

    async def transcribe(self, audio: np.ndarray) -> Transcript:
        return await self._call("asr", lambda: self.backends.transcriber.transcribe(audio))

    async def score_turn_end(self, audio: np.ndarray) -> float:
        """The turn detector's probability that the utterance is a finished turn (needs one)."""
        detector = self.backends.turn_detector
        assert detector is not None, "no turn detector loaded"
        return await self._call("turn", lambda: detector.turn_complete_probability(audio))

    async def score_sentence_end(self, text: str) -> float:
        """The sentence-end model's probability that the transcript is a whole sentence (needs one)."""
        model = self.backends.sentence_end
        assert model is not None, "no sentence-end model loaded"
        return await self._call("turn", lambda: model.sentence_end_probability(text))

    async def understand(
        self, persona: Persona, line: str, previous: tuple[str, str] | None = None
    ) -> tuple[Lookup, ActionDecision]:
        """The facts the line asks about and the action it calls for (NOTHING_FOUND and NO_ACTION
        without an embedder)."""
        if self.backends.embedder is None:
            return NOTHING_FOUND, NO_ACTION
        return await self._call("knowledge", lambda: self._understand(persona, line, previous))

    def _understand(self, persona: Persona, line: str, previous: tuple[str, str] | None) -> tuple[Lookup, ActionDecision]:
        indexes = self._indexes_of(persona)
        return indexes.facts.lookup(line), indexes.actions.decide(line, previous)

    async def build_indexes(self, personas: Sequence[Persona]) -> None:
        """Build the personas' fact and action indexes on the knowledge worker and wait until they are
        built (a persona whose build fails is logged, and built again at its first turn)."""
        building = [future for persona in personas if (future := self.knowledge_index(persona)) is not None]
        await asyncio.gather(*(asyncio.wrap_future(future) for future in building), return_exceptions=True)

    def knowledge_index(self, persona: Persona) -> Future[PersonaIndexes] | None:
        """Build the persona's fact and action indexes in the background, so its first turn does not wait
        (None: nothing to build)."""
        known = self._indexes.get(persona.id)
        if self.backends.embedder is None or (known is not None and known.version == persona.version):
            return None
        building = self._executors["knowledge"].submit(self._indexes_of, persona)
        building.add_done_callback(_log_background_failure)
        return building

    def _indexes_of(self, persona: Persona) -> PersonaIndexes:
        """On the knowledge worker: the persona's indexes, built when its version is new (on a CPU thread
        ~60 ms with MiniLM alone, 0.4-3 s with MiniLM and MPNet)."""
        known = self._indexes.get(persona.id)
        if known is None or known.version != persona.version:
            assert self.backends.embedder is not None
            embedder = self.backends.embedder
            actions = ActionIndex(persona, self.backends.action_embedder or first_encoder(embedder))
            known = self._indexes[persona.id] = PersonaIndexes(KnowledgeIndex(persona, embedder), actions)
        return known

    async def synthesize(self, text: str, voice: VoiceSettings, needed_by: float | None = None) -> Speech:
        """Speech for `text`. `needed_by` (a `time.perf_counter()` time, default now) orders the waiting
        calls: the one needed soonest is synthesized first. A phrase said before may come from the cache."""
        cache = self.phrase_cache
        if cache is not None and (kept := cache.get(text, voice)) is not None:
            return kept
        speech = await self._call("tts", lambda: self.backends.synthesizer.synthesize(text, voice), needed_by)
        if cache is not None:
            cache.put(text, voice, speech)
        return speech

    async def stream_reply(self, messages: list[ChatMessage], options: GenerationOptions) -> AsyncGenerator[str]:
        """Yield reply pieces as the model writes them; leaving the loop early stops the model."""
        stop = threading.Event()
        if self._llm_batches or not self.interleave_llm:  # a batching model interleaves replies itself
            async for piece in self._stream_whole_reply(messages, options, stop):
                yield piece
            return
        # One executor call per token: replies of several sessions take turns on the LLM worker token by
        # token, so a new turn's first token waits for one token of each other reply, not for whole replies.
        iterator: Iterator[str] = self.backends.dialogue.generate(messages, options, stop.is_set)

        def step() -> str | None:
            return next(iterator, None)

        try:
            while True:
                token_text = await self._call("llm", step)
                if token_text is None:
                    break
                yield token_text
        finally:
            stop.set()
            close = getattr(iterator, "close", None)
            if close is not None:  # the generator's own clean-up, queued behind any step still running
                with contextlib.suppress(RuntimeError):  # the runner is already closed
                    self._executors["llm"].submit(close)

    async def _stream_whole_reply(
        self, messages: list[ChatMessage], options: GenerationOptions, stop: threading.Event
    ) -> AsyncGenerator[str]:
        """The reply generated in one executor call (other sessions wait for all of it)."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | BaseException | None] = asyncio.Queue()  # bounded by max_new_tokens

        def post(item: str | BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be gone at shutdown
                loop.call_soon_threadsafe(pieces.put_nowait, item)

        def generate() -> None:
            try:
                for piece in self.backends.dialogue.generate(messages, options, stop.is_set):
                    post(piece)
                    if stop.is_set():
                        break
            except Exception as exc:  # noqa: BLE001 (reported to the awaiting turn, never lost in the thread)
                post(exc)
            finally:
                post(None)

        task = asyncio.ensure_future(self._call("llm", generate))
        try:
            while (item := await pieces.get()) is not None:
                if isinstance(item, BaseException):
                    raise StageError("llm", item)
                yield item
        finally:
            stop.set()
            if not task.done():
                task.add_done_callback(_consume_result)

    def prefill(self, messages: list[ChatMessage], once_key: object = None) -> None:
        """Let the LLM precompute the state of a prompt start (a persona's, or the next turn's) in the
        background, so a turn that starts with it prefills only its new text. With `once_key`, only
        the first call with that key does anything. A batching model does it only while it writes no reply."""
        dialogue = self.backends.dialogue
        if once_key is not None:
            if once_key in self._prefilled:
                return
            self._prefilled.add(once_key)
        if isinstance(dialogue, IdlePrefillingModel):
            dialogue.prefill_when_idle(messages)
        elif isinstance(dialogue, PrefillingModel):
            future = self._executors["llm"].submit(dialogue.prefill, messages)
            future.add_done_callback(_log_background_failure)

    def close(self, wait: bool = False) -> None:
        """Stop the model workers. `wait`: until they are done (a command line tool about to exit, whose
        interpreter must not tear down a model library under a running worker thread)."""
        for executor in self._executors.values():
            executor.shutdown(wait=wait, cancel_futures=True)
        for model in (self.backends.transcriber, self.backends.dialogue):
            if isinstance(model, ModelWithWorker):  # a batching model's worker thread
                model.close(wait=wait)


@dataclass(frozen=True, slots=True)
class PersonaIndexes:
    """What a persona version's lines are compared with: its facts and its actions (one embedder)."""

    facts: KnowledgeIndex
    actions: ActionIndex

    @property
    def version(self) -> str:
        return self.facts.persona.version


def _log_background_failure(future: Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("background model work (prefill, fact index) failed: %s", future.exception())


def _consume_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


# --------------------------------------------------------------------------- one turn

Emit = Callable[[ServerMessage | bytes], Awaitable[None]]


@dataclass
class TurnRequest:
    turn: int
    messages_for: Callable[[str, tuple[str, ...], ActionCall | None], list[ChatMessage]]  # text, facts, action -> prompt
    voice: VoiceSettings
    options: GenerationOptions
    max_reply_words: int
    early_first_clause: bool = True  # cut the first clause at a comma once sayable, not only at a sentence end
    audio: np.ndarray | None = None  # the utterance at 16 kHz, or None for a typed line
    text: str | None = None
    scripted_line: str | None = None  # the game's own line (a "say"): spoken as the reply, no ASR or LLM
    scripted_action: ActionCall | None = None  # the action a "say" carries out (checked against the persona)
    previous: tuple[str, str] | None = None  # the exchange before this turn: "I'll take it" finds "it" there
    resume_text: str | None = None  # the cut-off reply to say again if this turn is a false interruption
    fixed_reply: Callable[[str], str | None] | None = None  # player text -> a line to say instead of asking the LLM
    fact_first: bool = True  # a line that asks for a fact hears it at once; the model goes on from it
    # told the player's words as soon as ASR has them, and ASR's confidence in the last of them
    on_transcript: Callable[[str, float | None], None] | None = None
    persona: Persona | None = None  # whose facts the reply is looked up in and checked against (None: neither)
    context_text: str = ""  # the game context as the prompt shows it: a claim may come from it


@dataclass
class TurnResult:
    player_text: str = ""
    reply_text: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    spoken_clauses: list[str] = field(default_factory=list)  # clauses whose audio was sent, in order
    check: ReplyCheck | None = None  # what the grounding check held back or added
    action: ActionCall | None = None  # the action sent to the game for this turn
    resumed: bool = False  # a false interruption: the cut-off reply was said again instead of a new one

    def unheard_reply(self) -> str:
        """The reply from the clause being spoken when it was cut, on (what to say again on resume)."""
        if not self.spoken_clauses:
            return self.reply_text.strip()
        start = self.reply_text.rfind(self.spoken_clauses[-1])
        return self.reply_text[start:].strip() if start >= 0 else self.reply_text.strip()


@dataclass(frozen=True, slots=True)
class EmoteCue:
    """A declared emote a clause's stage direction named: it travels with the clauses, just before its
    clause, so it is sent where that clause's audio starts."""

    name: str


Clause = str | EmoteCue


def _with_emote_cues(clauses: list[str], declared: tuple[str, ...]) -> list[Clause]:
    """Each clause preceded by the emotes its stage directions name (the directions are never spoken)."""
    items: list[Clause] = []
    for clause in clauses:
        items.extend(EmoteCue(name) for name in emotes_named(clause, declared))
        items.append(clause)
    return items


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


_REPLY_AUDIO_BEGINS = object()


class TurnOutput:
    """Where one turn's messages go.

    - While `held` (a speculative turn, started before the end of the player's turn is confirmed)
      messages are kept back; `commit()` releases them in order, `discard` is just dropping this object.
    - Audio is sent in whole chunks under a lock, so a filler line and the reply never interleave.
    - The voice-to-voice clock (from `started_at`, the end of the player's speech) stops at the first
      audio frame that really reaches the socket.
    - With `visemes`, each piece of speech is preceded by its mouth shapes, timed in samples of the
      turn's audio (`samples_sent` is where the next piece starts).
    """

    def __init__(
        self, emit: Emit, turn: int, timings: dict[str, float], started_at: float, held: bool = False,
        visemes: bool = False,
    ) -> None:
        self._emit = emit
        self.turn = turn
        self.timings = timings
        self.started_at = started_at
        self.visemes = visemes
        self._held: list[ServerMessage | bytes | object] | None = [] if held else None
        self._audio_lock = asyncio.Lock()
        self.audio_started = False
        self.reply_audio_started = False
        self.filler_played = False
        self.samples_sent = 0

    @property
    def held(self) -> bool:
        return self._held is not None

    async def send(self, message: ServerMessage | bytes) -> None:
        if self._held is not None:
            self._held.append(message)
        else:
            await self._deliver(message)

    async def _deliver(self, message: ServerMessage | bytes | object) -> None:
        if message is _REPLY_AUDIO_BEGINS:  # a marker, not a frame: the filler (if any) is over
            self.timings["reply_audio_ms"] = _ms(time.perf_counter() - self.started_at)
            return
        await self._emit(message)  # type: ignore[arg-type]
        if isinstance(message, bytes) and "voice_to_voice_ms" not in self.timings:
            self.timings["voice_to_voice_ms"] = _ms(time.perf_counter() - self.started_at)

    async def commit(self, started_at: float) -> None:
        """The player's turn really ended: release what was held, then pass messages straight on."""
        self.started_at = started_at
        while self._held:  # what the turn produces while we flush is appended, and flushed too
            await self._deliver(self._held.pop(0))
        self._held = None

    async def audio(self, speech: Speech, *, filler: bool = False) -> bool:
        """Send the speech's int16 audio framed for the socket; a filler only if no audio has started yet."""
        pcm = speech.audio
        if pcm.size == 0:
            return False
        async with self._audio_lock:
            if filler and self.audio_started:
                return False
            if not self.audio_started:
                self.audio_started = True
                await self.send(AudioStart(self.turn))
            if filler:
                self.filler_played = True
                self.timings["filler_ms"] = _ms(time.perf_counter() - self.started_at)
            elif not self.reply_audio_started:
                self.reply_audio_started = True
                await self.send(_REPLY_AUDIO_BEGINS)  # type: ignore[arg-type]
            if self.visemes and speech.phonemes:
                await self.send(Visemes(self.turn, visemes_of(speech.phonemes, first_sample=self.samples_sent)))
            data = pcm.astype("<i2", copy=False).tobytes()
            step = AUDIO_FRAME_SAMPLES * 2
            for offset in range(0, len(data), step):
                await self.send(data[offset : offset + step])
            self.samples_sent += pcm.size
        return True

    async def emote(self, name: str) -> None:
        """The NPC's gesture, timed where the next piece of speech will start."""
        async with self._audio_lock:
            await self.send(Emote(self.turn, name, at_sample=self.samples_sent))

    async def end_audio(self) -> None:
        async with self._audio_lock:
            if self.audio_started:
                self.audio_started = False
                await self.send(AudioEnd(self.turn))


async def run_turn(runner: ModelRunner, request: TurnRequest, out: TurnOutput, result: TurnResult) -> None:
    """Run one turn, filling `result` as it goes (so a cancelled turn still tells what was said)."""
    timings = result.timings
    if request.scripted_line is not None:
        result.player_text = NOTHING_SAID  # the history shows a turn in which the player said nothing
        if request.scripted_action is not None:
            await _send_action(out, result, request.scripted_action)
        await _say(runner, request, out, result, request.scripted_line)
        return
    if request.audio is not None:
        asr_started = time.perf_counter()
        transcript = await runner.transcribe(request.audio)
        timings["asr_ms"] = _ms(time.perf_counter() - asr_started)
        result.player_text = transcript.text.strip()
        if request.on_transcript is not None:
            request.on_transcript(result.player_text, transcript.last_word_probability)
        await out.send(TranscriptMessage(request.turn, result.player_text, final=True))
        if request.resume_text and is_backchannel(result.player_text):
            # the player only coughed or said "uh-huh" over the NPC: say the cut-off part again
            result.player_text, result.resumed = "", True  # nothing to remember in the history
            await _say(runner, request, out, result, request.resume_text)
            return
    else:
        result.player_text = (request.text or "").strip()
    if not result.player_text:
        return  # nothing was said: no reply
    if request.fixed_reply is not None and (line := request.fixed_reply(result.player_text)):
        await _say(runner, request, out, result, line)  # e.g. the designer's deflection of a forbidden topic
        return
    if request.persona is not None and runner.backends.embedder is not None:  # no lookup, nothing to check by
        started = time.perf_counter()
        lookup, decision = await runner.understand(request.persona, result.player_text, request.previous)
        timings["knowledge_ms"] = _ms(time.perf_counter() - started)
        # a line asking for a declared action is about that action, however near a forbidden topic it
        # sounds ("the password is hawthorn" is near "the guard's numbers")
        if lookup.forbidden_topic is not None and request.persona.deflection and decision.call is None:
            await _say(runner, request, out, result, request.persona.deflection)
            return
        if decision.refusal is not None:  # asked for the gate without the password: the designer's line
            await _say(runner, request, out, result, decision.refusal)
            return
        if decision.call is not None:  # sent before any of the reply, which then agrees with it
            await _send_action(out, result, decision.call)
        result.check = ReplyCheck(request.persona, lookup, result.player_text, request.context_text)

    clauses: asyncio.Queue[Clause | None] = asyncio.Queue(CLAUSE_QUEUE_SIZE)
    async with asyncio.TaskGroup() as group:
        group.create_task(_write_reply(runner, request, out, result, clauses))
        group.create_task(_speak_clauses(runner, request, out, result, clauses))
    await out.end_audio()


async def _send_action(out: TurnOutput, result: TurnResult, call: ActionCall) -> None:
    """Tell the game to carry out a declared action (its arguments were checked against the persona)."""
    assert call.action.accepts(dict(call.args)), call
    result.action = call
    await out.send(ActionMessage(out.turn, call.id, dict(call.args)))


async def _say(runner: ModelRunner, request: TurnRequest, out: TurnOutput, result: TurnResult, text: str) -> None:
    """Speak a fixed line as this turn's reply, without the LLM."""
    result.reply_text = text
    await out.send(Reply(out.turn, text))
    splitter = ClauseSplitter()
    clauses: asyncio.Queue[Clause | None] = asyncio.Queue()
    for clause in [*_with_emote_cues([*splitter.push(text), *splitter.flush()], _emotes_of(request)), None]:
        clauses.put_nowait(clause)
    await _speak_clauses(runner, request, out, result, clauses)
    await out.end_audio()


def _emotes_of(request: TurnRequest) -> tuple[str, ...]:
    return request.persona.emotes if request.persona is not None else ()


async def _write_reply(
    runner: ModelRunner,
    request: TurnRequest,
    out: TurnOutput,
    result: TurnResult,
    clauses: asyncio.Queue[Clause | None],
) -> None:
    # a one-word opener ("Aye," "Well,") is already sayable: the player hears the NPC a few tokens sooner
    splitter = ClauseSplitter(
        first_chunk_min_words=1, first_chunk_max_words=FIRST_CLAUSE_MAX_WORDS, early_first_chunk=request.early_first_clause
    )
    limiter = ReplyLimiter(request.max_reply_words)
    emotes = _emotes_of(request)
    check = result.check
    lookup = check.lookup if check is not None else NOTHING_FOUND
    lead = check.lead() if check is not None and request.fact_first else None
    confirm = result.action.action.confirmation(result.action.args) if result.action is not None else None
    if confirm:  # the designer's words for the action: the reply cannot refuse what the game does
        lead = f"{confirm} {lead}" if lead else confirm
    if lead:
        # the fact is said at once (cut like a first clause, so TTS starts on a few words); the model
        # only goes on from it, within what is left of the word cap
        lead_splitter = ClauseSplitter(first_chunk_min_words=1, first_chunk_max_words=FIRST_CLAUSE_MAX_WORDS)
        # a confirm line may hold a gesture ("*nods* The axe it is."): it plays, it is not spoken
        said_first = _with_emote_cues([*lead_splitter.push(lead), *lead_splitter.flush()], emotes)
        await _pass_on("", out, result, [], clauses, said_first)
    if confirm:
        # the confirm line (and the fact asked for) is the whole reply, with no prompt built: a model
        # going on from it may still say "you can't buy that" while the game hands the item over
        await clauses.put(None)
        return
    facts = tuple(match.clause for match in lookup.to_state) if lead and lookup.must_state else lookup.facts
    messages = request.messages_for(result.player_text, facts, result.action)
    options = request.options
    if lead:
        messages = [*messages, ChatMessage("assistant", lead)]
        left = max(0, request.max_reply_words - len(lead.split()))
        options = replace(options, max_new_tokens=min(options.max_new_tokens, int(left * 1.5) + 4))
        splitter = ClauseSplitter(first_chunk_min_words=1, first_chunk_max_words=FIRST_CLAUSE_MAX_WORDS, early_first_chunk=False)
    llm_started = time.perf_counter()
    try:
        stopped = False
        async with contextlib.aclosing(runner.stream_reply(messages, options)) as pieces:
            async for piece in pieces:
                if "llm_first_token_ms" not in result.timings:
                    result.timings["llm_first_token_ms"] = _ms(time.perf_counter() - llm_started)
                kept, done = limiter.accept(piece)
                stopped = await _pass_on(kept, out, result, _with_emote_cues(splitter.push(kept), emotes), clauses)
                if done or stopped:
                    break
        if not stopped:
            rest = limiter.flush()
            cut = _with_emote_cues([*splitter.push(rest), *splitter.flush()], emotes)
            await _pass_on(rest, out, result, cut, clauses)
        if check is not None:
            await _pass_on("", out, result, [], clauses, check.finish())
    finally:
        result.timings["llm_total_ms"] = _ms(time.perf_counter() - llm_started)
        # a model with nothing to add after a fact said first ends at once: its end is its first token
        result.timings.setdefault("llm_first_token_ms", result.timings["llm_total_ms"])
        with contextlib.suppress(asyncio.QueueFull):
            clauses.put_nowait(None)  # a cancelled turn's speaker is cancelled too


async def _pass_on(
    kept: str,
    out: TurnOutput,
    result: TurnResult,
    cut: Sequence[Clause],
    clauses: asyncio.Queue[Clause | None],
    extra: Sequence[Clause] | None = None,
) -> bool:
    """Reply text the limiter let through goes on to the client and to TTS clause by clause; True
    when the grounding check stopped the reply.

    `cut` holds the clauses `kept` completed, each after its emote cues. Without a check
    (`result.check` None) the text goes to the client as it comes; with one, each clause is checked
    first and only what it lets through (or says instead) is sent, a clause at a time; an emote
    cue passes unchecked.
    """
    check = result.check
    if check is None:
        if kept:
            result.reply_text += kept
            await out.send(Reply(out.turn, kept))
        for clause in cut:
            await clauses.put(clause)
        return False
    stop = False
    spoken: list[Clause] = list(extra or [])  # said by the check itself (the fact), not passed through it
    for clause in cut:
        if isinstance(clause, EmoteCue):
            spoken.append(clause)
            continue
        accepted, stop = check.accept(clause)
        spoken.extend(accepted)
        if stop:
            break
    for clause in spoken:
        if isinstance(clause, EmoteCue):
            await clauses.put(clause)
            continue
        clause = clean_for_speech(clause)  # the text shown is what is said: no "*smiles*", labels or emoji
        if not clause:
            continue
        text = (" " if result.reply_text else "") + clause
        result.reply_text += text
        await out.send(Reply(out.turn, text))
        await clauses.put(clause)
    return stop


async def _speak_clauses(
    runner: ModelRunner, request: TurnRequest, out: TurnOutput, result: TurnResult,
    clauses: asyncio.Queue[Clause | None],
) -> None:
    audio_runs_out: float | None = None  # when the audio sent so far will have played at the client
    while (clause := await clauses.get()) is not None:
        if isinstance(clause, EmoteCue):
            await out.emote(clause.name)
            continue
        sayable = clean_for_speech(clause)
        if not sayable:
            continue
        tts_started = time.perf_counter()
        # the first clause is needed now; a later one only when what was sent before has played
        speech = await runner.synthesize(sayable, request.voice, needed_by=audio_runs_out or tts_started)
        if "tts_first_audio_ms" not in result.timings:
            result.timings["tts_first_audio_ms"] = _ms(time.perf_counter() - tts_started)
        await out.audio(speech)
        result.spoken_clauses.append(clause)
        now = time.perf_counter()
        audio_runs_out = max(now, audio_runs_out or now) + speech.audio.size / runner.sample_rate
