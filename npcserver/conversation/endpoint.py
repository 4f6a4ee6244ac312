"""Streaming end-of-speech detection: 16 kHz float32 audio in, turn events out. No I/O, no asyncio.

`Endpointer` turns a microphone stream (chunks of any size) into events:

    SpeechStarted   speech lasted `min_speech_ms` (a click or cough never gets here)
    SpeechPaused    speech stopped `trailing_ms` ago; carries the utterance as it would end now,
                    so the pipeline can start a speculative transcription while waiting for the turn to end
    SpeechResumed   speech came back before the end-of-turn silence elapsed: drop the speculation
    TurnEnded       the player's turn is over (silence, max length, or forced by push-to-talk release)

The speech probability comes from a frame classifier: `SileroVad` (the Silero model that faster-whisper
ships, run statefully across frames) or `FakeVad` (an energy threshold, for tests and the fake backend).

All sample positions are absolute positions in the stream fed so far (sample 0 = first sample fed),
so `TurnEnded.speech_end_sample` can be compared with where the client sent its last speech sample.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from npcserver.audio import ASR_SAMPLE_RATE, rms_dbfs

FRAME_SAMPLES = 512  # 32 ms: the frame size the Silero model was trained on at 16 kHz
CONTEXT_SAMPLES = 64  # Silero v6 looks at the previous frame's last 64 samples too
HYSTERESIS = 0.15  # speech continues until the probability falls this far below the start threshold
# Silero keeps a high probability for a frame or two after the sound stops (its context and LSTM
# memory): the silence is counted from where the sound fell away, at most this many frames earlier.
SILENCE_LOOKBACK_FRAMES = 2

TurnEndReason = Literal["silence", "max_length", "forced"]


# --------------------------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class SpeechStarted:
    at_sample: int  # where the speech began (before the min_speech_ms it took to confirm it)


@dataclass(frozen=True, slots=True, eq=False)
class SpeechPaused:
    at_sample: int  # where the speech stopped (start of the silence)
    utterance_so_far: np.ndarray  # exactly the `TurnEnded.utterance` this pause becomes if speech doesn't resume


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    at_sample: int  # first sample of the frame where speech came back


@dataclass(frozen=True, slots=True, eq=False)
class TurnEnded:
    utterance: np.ndarray  # pre-roll + speech + a little trailing audio, 16 kHz float32
    speech_end_sample: int  # where the speech stopped in the stream (start of the silence)
    reason: TurnEndReason
    speech_start_sample: int = 0  # where the speech began
    utterance_start_sample: int = 0  # stream position of utterance[0]
    detected_at_sample: int = 0  # how much of the stream had been fed when the turn ended

    @property
    def endpoint_delay_ms(self) -> float:
        """Audio time between the end of speech and the decision that the turn is over."""
        return (self.detected_at_sample - self.speech_end_sample) * 1000.0 / ASR_SAMPLE_RATE


EndpointEvent = SpeechStarted | SpeechPaused | SpeechResumed | TurnEnded


# --------------------------------------------------------------------------------------- classifiers
class FrameClassifier(Protocol):
    """Speech probability per 512-sample frame, with per-stream memory kept in a state object."""

    def new_state(self) -> object: ...

    def speech_probabilities(self, frames: np.ndarray, state: object) -> np.ndarray:
        """frames: [T, 512] float32, consecutive in the stream; returns T probabilities; updates state."""
        ...


def silero_model_path() -> str:
    from faster_whisper.utils import get_assets_path  # the model ships inside faster-whisper

    return os.path.join(get_assets_path(), "silero_vad_v6.onnx")


@dataclass(slots=True)
class SileroState:
    """One stream's memory: the LSTM state and the last 64 samples of the previous frame."""

    h: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    c: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT_SAMPLES, np.float32))


class SileroVad:
    """Silero VAD v6 (faster-whisper's copy) run statefully, one frame after another.

    The model's first input dimension is time: several consecutive frames in one call carry the LSTM
    state from row to row, and give exactly the probabilities of one call per frame, only cheaper.
    One instance (one onnxruntime session, 1 thread) can serve every stream of a process: run() is
    thread-safe and all per-stream memory lives in the `SileroState` each stream owns.
    """

    _shared: SileroVad | None = None
    _shared_lock = threading.Lock()

    def __init__(self, model_path: str | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # ~60 µs a frame: more threads would only cost the other stages
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            model_path or silero_model_path(), options, providers=["CPUExecutionProvider"]
        )

    @classmethod
    def shared(cls) -> SileroVad:
        """The process-wide instance, loaded on first use (~20 ms)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def new_state(self) -> SileroState:
        return SileroState()

    def speech_probabilities(self, frames: np.ndarray, state: object) -> np.ndarray:
        assert isinstance(state, SileroState)
        frames = np.asarray(frames, dtype=np.float32).reshape(-1, FRAME_SAMPLES)
        if frames.shape[0] == 0:
            return np.zeros(0, np.float32)
        previous_tails = np.concatenate([state.context[None, :], frames[:-1, -CONTEXT_SAMPLES:]])
        model_input = np.ascontiguousarray(np.concatenate([previous_tails, frames], axis=1))
        probs, state.h, state.c = self._session.run(None, {"input": model_input, "h": state.h, "c": state.c})
        state.context = frames[-1, -CONTEXT_SAMPLES:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)

    def speech_probability(self, frame512: np.ndarray, state: SileroState) -> float:
        return float(self.speech_probabilities(np.asarray(frame512).reshape(1, FRAME_SAMPLES), state)[0])


class FakeVad:
    """A fake VAD for tests and the fake backend: frame loudness mapped linearly to a 'probability'.

    At or below `silence_dbfs` the probability is 0, at or above `speech_dbfs` it is 1. Deterministic,
    stateless, no model; a tone at amplitude 0.1 (-23 dBFS RMS) is 'speech', digital silence is not.
    """

    def __init__(self, silence_dbfs: float = -50.0, speech_dbfs: float = -35.0) -> None:
        self.silence_dbfs = silence_dbfs
        self.speech_dbfs = speech_dbfs

    def new_state(self) -> None:
        return None

    def speech_probabilities(self, frames: np.ndarray, state: object) -> np.ndarray:
        frames = np.asarray(frames, dtype=np.float32).reshape(-1, FRAME_SAMPLES)
        rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
        dbfs = 20.0 * np.log10(np.maximum(rms, 1e-10))
        span = self.speech_dbfs - self.silence_dbfs
        return np.clip((dbfs - self.silence_dbfs) / span, 0.0, 1.0).astype(np.float32)

    def speech_probability(self, frame512: np.ndarray, state: object = None) -> float:
        return float(self.speech_probabilities(np.asarray(frame512).reshape(1, FRAME_SAMPLES), state)[0])


# ---------------------------------------------------------------------------------------- endpointer
def _ms_to_samples(ms: float) -> int:
    return round(ms * ASR_SAMPLE_RATE / 1000.0)


class Endpointer:
    """Decides where the player's turns start and end in a 16 kHz float32 stream.

    A frame is speech once its probability reaches `threshold`; speech then continues while the
    probability stays at or above `threshold - 0.15` (hysteresis, so one soft frame isn't a pause).
    Speech must last `min_speech_ms` before `SpeechStarted`; shorter bursts are forgotten. Once speech
    has stopped for `end_silence_ms`, the turn ends. If it comes back sooner (needs `threshold` again),
    `SpeechResumed` and the silence count starts over. A turn is cut at `max_utterance_s`.

    The utterance handed on starts `pre_roll_ms` before the detected speech start (word onsets are
    soft) and ends `trailing_ms` after the detected speech end (Silero's probability falls ~50 ms after
    the true end, so one more frame already holds the last sound; a longer tail only delays speculation). `SpeechPaused` is emitted once
    `trailing_ms` of silence has been seen, so its `utterance_so_far` is identical to the utterance
    the turn will end with unless speech resumes: a speculative transcription of it can be committed.

    Where the silence starts: Silero's probability falls 1-4 frames after the sound stops (by corpus
    utterance 36-132 ms after the last 10 ms window above -40 dBFS). With `quiet_db` set, once Silero
    has decided that speech stopped, the silence is moved back over the up to 2 frames before it that
    are `quiet_db` below the loudest frame of the utterance, so the end-of-turn wait counts silence,
    not Silero's reaction time. It only moves where the silence starts, never whether there is one;
    with background noise within `quiet_db` of the speech nothing moves.

    Background (`background_db` set): the player is the loudest voice in their own microphone. Within
    a turn, a frame more than `background_db` below the utterance's loudest frame is not the player,
    whatever the VAD says: talkers and music 20 dB under the player neither keep the turn open nor
    make a pause resume. A turn still starts on the VAD alone (there is no player level to compare to yet).

    `end_pause_early()` lets one pause end the turn sooner: the session calls it when the pause's
    speculative transcript reads as a finished sentence.

    Adaptive end silence (`adaptive=True`): some players pause long between phrases and get cut off.
    The endpointer remembers the player's last 20 pauses that did not end a turn (silences that
    speech resumed after, plus a new turn starting within `end_silence_ms * 1.6` of a silence-ended
    one: the player was cut off and went on). With at least 3 remembered, the silence needed to end
    a turn becomes p90(pauses) + 150 ms, clamped to [end_silence_ms, end_silence_ms * 1.6]. It never
    drops below the configured value, so it can only make the NPC wait a little longer for players
    who are known to pause, and the longest extra wait is bounded (+60 %: 300 ms at the default).
    The shorter wait of `end_pause_early()` adapts too: it becomes at least p90(pauses) + 50 ms (never
    more than the end silence), so a player who pauses 350 ms after "Good morning," is not answered
    there because the transcript so far looked finished.
    """

    ADAPTIVE_HISTORY = 20
    ADAPTIVE_MIN_PAUSES = 3
    ADAPTIVE_MARGIN_MS = 150.0
    ADAPTIVE_MAX_FACTOR = 1.6
    ADAPTIVE_EARLY_MARGIN_MS = 50.0

    _pending: np.ndarray  # samples of a partial frame, waiting for the rest
    _pause_end_samples: int | None  # this pause's own end silence (end_pause_early, wait_longer)

    def __init__(
        self,
        vad: FrameClassifier,
        threshold: float = 0.5,
        end_silence_ms: float = 500,
        min_speech_ms: float = 160,
        pre_roll_ms: float = 300,
        max_utterance_s: float = 30,
        *,
        trailing_ms: float = 32,
        adaptive: bool = False,
        quiet_db: float | None = None,
        background_db: float | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        if end_silence_ms <= 0 or max_utterance_s <= 0:
            raise ValueError("end_silence_ms and max_utterance_s must be positive")
        self._vad = vad
        self.threshold = threshold
        self.off_threshold = max(threshold - HYSTERESIS, 0.01)
        self.base_end_silence_ms = float(end_silence_ms)
        self.min_speech_samples = _ms_to_samples(min_speech_ms)
        self.pre_roll_samples = _ms_to_samples(pre_roll_ms)
        self.max_utterance_samples = int(max_utterance_s * ASR_SAMPLE_RATE)
        # never longer than the end silence: the utterance must be complete when the turn ends
        self.trailing_samples = min(_ms_to_samples(trailing_ms), _ms_to_samples(end_silence_ms))
        self.adaptive = adaptive
        if quiet_db is not None and quiet_db <= 0:
            raise ValueError(f"quiet_db must be positive (or None for no look-back), got {quiet_db}")
        self.quiet_db = quiet_db
        if background_db is not None and background_db <= 0:
            raise ValueError(f"background_db must be positive (or None for no gate), got {background_db}")
        self.background_db = background_db
        self._pauses_ms: deque[float] = deque(maxlen=self.ADAPTIVE_HISTORY)
        self._usual_pause_ms: float | None = None  # adaptive, once enough pauses are known: their p90
        self._end_silence_ms = self.base_end_silence_ms
        self._end_silence_samples = _ms_to_samples(self._end_silence_ms)
        self._samples_seen = 0
        self._clear()

    # --- public state
    @property
    def samples_seen(self) -> int:
        """Total samples fed since creation (reset() keeps counting: positions stay stream positions)."""
        return self._samples_seen

    @property
    def is_speaking(self) -> bool:
        """True from SpeechStarted until a pause or the end of the turn."""
        return self._phase == "speech"

    @property
    def in_turn(self) -> bool:
        """True from SpeechStarted until TurnEnded (pauses included)."""
        return self._phase in ("speech", "pause")

    @property
    def end_silence_ms(self) -> float:
        """The silence that ends a turn now (the configured value unless adaptive has raised it)."""
        return self._end_silence_ms

    @property
    def recent_pauses_ms(self) -> tuple[float, ...]:
        return tuple(self._pauses_ms)

    @property
    def paused_at(self) -> int | None:
        """Where the current pause began (its `SpeechPaused.at_sample`), or None when not paused."""
        return self._silence_start if self._phase == "pause" and self._pause_announced else None

    def end_pause_early(self, after_silence_ms: float) -> None:
        """Let the current pause end the turn after `after_silence_ms` of silence instead of the full
        end silence (the caller knows more, e.g. the pause's transcript reads as a finished sentence).

        The turn then ends from the next frame `feed()` classifies once that much silence has passed
        (at once, if it has already), unless speech resumes first. Only ever shortens the wait.
        """
        if self.paused_at is not None:
            if self._usual_pause_ms is not None:  # adaptive: not shorter than this player's pauses
                after_silence_ms = max(after_silence_ms, self._usual_pause_ms + self.ADAPTIVE_EARLY_MARGIN_MS)
            wanted = max(_ms_to_samples(after_silence_ms), self.trailing_samples)
            self._pause_end_samples = min(self._end_silence_samples, wanted)

    def wait_longer(self, after_silence_ms: float) -> None:
        """Let the current pause end the turn after `after_silence_ms` of silence, never less than the end
        silence (the caller hears an unfinished thought; with the end silence itself it takes back an
        `end_pause_early`). The length limit still ends the turn."""
        if self.paused_at is not None:
            self._pause_end_samples = max(self._end_silence_samples, _ms_to_samples(after_silence_ms))

    # --- feeding
    def feed(self, samples: np.ndarray) -> list[EndpointEvent]:
        """Feed 16 kHz mono float samples in [-1, 1] (any count); returns the events they caused, in order.

        Samples are classified in 512-sample frames; a partial frame waits for the next call.
        """
        samples = np.asarray(samples)
        if samples.dtype.kind in "iu":
            raise TypeError("Endpointer.feed() takes float samples in [-1, 1]; convert PCM with audio.pcm16_to_float()")
        samples = np.array(samples, dtype=np.float32).reshape(-1)  # a copy: the caller may reuse its buffer
        if samples.size == 0:
            return []
        self._samples_seen += samples.size
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        whole = samples.size // FRAME_SAMPLES * FRAME_SAMPLES
        self._pending = samples[whole:].copy()
        if whole == 0:
            return []
        frames = samples[:whole].reshape(-1, FRAME_SAMPLES)
        probabilities = self._vad.speech_probabilities(frames, self._vad_state)
        events: list[EndpointEvent] = []
        for frame, probability in zip(frames, probabilities, strict=True):
            self._step(frame, float(probability), events)
        return events

    def end_of_turn(self) -> TurnEnded | None:
        """End the turn now (push-to-talk released) with whatever speech was collected.

        Unlike the silence rule, a burst shorter than min_speech_ms counts here: the player said the
        turn is over, and a short "yes" matters more than a cough. Returns None when there was no speech.
        """
        # the not-yet-classified partial frame belongs to the utterance too
        if self._pending.size:
            self._keep_audio(self._pending.copy())
            self._pending = np.zeros(0, np.float32)
        if self._phase == "idle":
            return None
        speech_end = self._silence_start if self._phase == "pause" else self._samples_seen
        if self._phase == "pause":
            end = min(self._samples_seen, self._silence_start + self.trailing_samples)
        else:
            end = self._samples_seen
        return self._finish_turn(speech_end, end, "forced")

    def reset(self) -> None:
        """Forget the turn in progress, the buffered audio and the VAD's memory.

        The stream position keeps counting (sample positions stay positions in the whole stream), and
        the adaptive rule keeps what it learnt about the player's pauses.
        """
        self._clear()

    # --- internals
    def _clear(self) -> None:
        self._vad_state = self._vad.new_state()
        self._pending = np.zeros(0, np.float32)
        self._audio: list[np.ndarray] = []  # kept frames, contiguous, the first starting at _audio_start
        self._audio_start = self._samples_seen
        self._audio_end = self._samples_seen
        self._floor = self._samples_seen  # a new utterance never reaches back before this
        self._phase: Literal["idle", "candidate", "speech", "pause"] = "idle"
        self._speech_start = 0
        self._silence_start = 0
        self._pause_announced = False
        self._pause_end_samples = None
        self._last_silence_turn_end: int | None = None
        self._loudest_dbfs = -np.inf  # of the speech in progress
        self._recent_dbfs: deque[float] = deque(maxlen=SILENCE_LOOKBACK_FRAMES)  # the frames just before this one
        self._sound_began = 0  # the frame where speech last began or came back: a silence can't start before it

    def _keep_audio(self, frame: np.ndarray) -> None:
        self._audio.append(frame)
        self._audio_end += frame.size
        if self._phase == "idle":
            # only the pre-roll (plus one frame of slack) is needed while nobody speaks
            while (
                self._audio
                and self._audio_end - self._audio_start - self._audio[0].size >= self.pre_roll_samples + FRAME_SAMPLES
            ):
                self._audio_start += self._audio.pop(0).size

    def _slice(self, start: int, end: int) -> np.ndarray:
        start = max(start, self._audio_start)
        end = min(end, self._audio_end)
        if end <= start:
            return np.zeros(0, np.float32)
        joined = np.concatenate(self._audio) if len(self._audio) > 1 else self._audio[0]
        return joined[start - self._audio_start : end - self._audio_start].copy()

    def _utterance_start(self) -> int:
        return max(self._speech_start - self.pre_roll_samples, self._floor)

    def _step(self, frame: np.ndarray, probability: float, events: list[EndpointEvent]) -> None:
        frame_start = self._audio_end
        self._keep_audio(frame)
        frame_end = self._audio_end
        loudness = rms_dbfs(frame) if self.quiet_db is not None or self.background_db is not None else 0.0
        if self._is_background(loudness):
            probability = 0.0
        self._classify(frame_start, frame_end, probability, loudness, events)
        self._recent_dbfs.append(loudness)

    def _classify(
        self, frame_start: int, frame_end: int, probability: float, loudness: float, events: list[EndpointEvent]
    ) -> None:
        if self._phase == "idle":
            if probability >= self.threshold:
                self._phase = "candidate"
                self._speech_start = self._sound_began = frame_start
                self._loudest_dbfs = loudness
                self._check_confirmed(frame_end, events)
            return
        if self._phase in ("candidate", "speech"):
            self._loudest_dbfs = max(self._loudest_dbfs, loudness)

        if self._phase == "candidate":
            if probability < self.off_threshold:
                self._phase = "idle"  # too short: a click or a cough
            else:
                self._check_confirmed(frame_end, events)
            return

        if self._phase == "speech":
            if probability < self.off_threshold:
                self._phase = "pause"
                self._silence_start = self._where_sound_stopped(frame_start)
                self._pause_announced = False
            elif frame_end - self._speech_start >= self.max_utterance_samples:
                self._finish_turn(frame_end, frame_end, "max_length", events)
                # the player is still talking: the next turn starts right here (the floor stops its pre-roll)
                self._phase = "candidate"
                self._speech_start = self._sound_began = frame_end
                return
        elif self._phase == "pause" and probability >= self.threshold:
            self._remember_pause(frame_start - self._silence_start)
            self._phase = "speech"
            self._sound_began = frame_start
            self._pause_end_samples = None
            if self._pause_announced:
                events.append(SpeechResumed(at_sample=frame_start))
            return

        if self._phase == "pause":
            silence = frame_end - self._silence_start
            if not self._pause_announced and silence >= self.trailing_samples:
                self._pause_announced = True
                utterance = self._slice(self._utterance_start(), self._silence_start + self.trailing_samples)
                events.append(SpeechPaused(at_sample=self._silence_start, utterance_so_far=utterance))
            if silence >= (self._pause_end_samples or self._end_silence_samples):
                self._last_silence_turn_end = self._silence_start
                self._finish_turn(self._silence_start, self._silence_start + self.trailing_samples, "silence", events)
            elif frame_end - self._speech_start >= self.max_utterance_samples:
                self._finish_turn(
                    self._silence_start, self._silence_start + self.trailing_samples, "max_length", events
                )

    def _is_background(self, loudness: float) -> bool:
        """In a turn, sound far below the player's own level is someone else (a TV, the room), not the player."""
        if self.background_db is None or self._phase not in ("speech", "pause"):
            return False
        return loudness < self._loudest_dbfs - self.background_db

    def _where_sound_stopped(self, frame_start: int) -> int:
        """Silero just decided speech stopped at `frame_start`: step back over the quiet frames before it."""
        if self.quiet_db is None:
            return frame_start
        quiet_below = self._loudest_dbfs - self.quiet_db
        start = frame_start
        for loudness in reversed(self._recent_dbfs):
            if loudness >= quiet_below or start - FRAME_SAMPLES <= self._sound_began:
                break
            start -= FRAME_SAMPLES
        return start

    def _check_confirmed(self, frame_end: int, events: list[EndpointEvent]) -> None:
        if frame_end - self._speech_start < self.min_speech_samples:
            return
        self._phase = "speech"
        if self._last_silence_turn_end is not None:
            gap = self._speech_start - self._last_silence_turn_end
            if gap <= _ms_to_samples(self.base_end_silence_ms * self.ADAPTIVE_MAX_FACTOR):
                self._remember_pause(gap)  # the previous turn ended mid-thought
        self._last_silence_turn_end = None
        events.append(SpeechStarted(at_sample=self._speech_start))

    def _remember_pause(self, samples: int) -> None:
        self._pauses_ms.append(samples * 1000.0 / ASR_SAMPLE_RATE)
        if self.adaptive and len(self._pauses_ms) >= self.ADAPTIVE_MIN_PAUSES:
            p90 = self._usual_pause_ms = float(np.percentile(np.fromiter(self._pauses_ms, float), 90))
            upper = self.base_end_silence_ms * self.ADAPTIVE_MAX_FACTOR
            self._end_silence_ms = min(max(p90 + self.ADAPTIVE_MARGIN_MS, self.base_end_silence_ms), upper)
        self._end_silence_samples = _ms_to_samples(self._end_silence_ms)

    def _finish_turn(
        self, speech_end: int, end: int, reason: TurnEndReason, events: list[EndpointEvent] | None = None
    ) -> TurnEnded:
        start = self._utterance_start()
        turn = TurnEnded(
            utterance=self._slice(start, end),
            speech_end_sample=speech_end,
            reason=reason,
            speech_start_sample=self._speech_start,
            utterance_start_sample=start,
            detected_at_sample=self._audio_end,
        )
        if events is not None:
            events.append(turn)
        # keep only what a following pre-roll may need; it must not reach back into this turn
        self._floor = end
        self._phase = "idle"
        self._pause_announced = False
        self._pause_end_samples = None
        keep_from = max(self._audio_end - self.pre_roll_samples - FRAME_SAMPLES, self._audio_start)
        if self._audio:
            tail = self._slice(keep_from, self._audio_end)
            self._audio = [tail] if tail.size else []
            self._audio_start = self._audio_end - tail.size
        return turn


def utterance_contains(turn: TurnEnded, sample: int) -> bool:
    """Whether a stream position lies inside the turn's utterance (handy for tests and logs)."""
    return turn.utterance_start_sample <= sample < turn.utterance_start_sample + turn.utterance.size


__all__ = [
    "FRAME_SAMPLES",
    "EndpointEvent",
    "Endpointer",
    "FakeVad",
    "FrameClassifier",
    "SileroState",
    "SileroVad",
    "SpeechPaused",
    "SpeechResumed",
    "SpeechStarted",
    "TurnEnded",
    "silero_model_path",
    "utterance_contains",
]
