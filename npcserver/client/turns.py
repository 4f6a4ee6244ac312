"""What the client records of a turn: the events of one turn, stamped with `time.perf_counter()` on arrival.

`TurnCollector` is filled in while the turn runs (by `TalkSession`, from parsed protocol messages) and frozen
into a `HeardTurn` when it ends. No I/O here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from npcserver.protocol import Action, Emote, Viseme

FRAME_MS = 20
SPEECH_RMS_THRESHOLD = 0.01  # -40 dBFS over 10 ms: above this the WAV holds speech, below is (near) silence
CLIENT_TIMEOUT_CODE = "client_timeout"
CONNECTION_CLOSED_CODE = "connection_closed"
CONNECT_FAILED_CODE = "connect_failed"


class TalkError(Exception):
    """The session could not be opened or was refused; `code` is the server's error code when it sent one."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class ServerError:
    code: str
    message: str
    at: float  # perf_counter seconds on arrival


@dataclass(frozen=True, slots=True)
class AudioArrival:
    at: float  # perf_counter seconds on arrival
    samples: int


@dataclass(frozen=True, slots=True)
class Underrun:
    """Playback ran dry: the next frame came `gap_s` after the buffered audio had all been played."""

    at_audio_s: float  # position in the reply audio where the silence was heard
    gap_s: float


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session: str
    npc_id: str
    npc_name: str
    reply_sample_rate: int


@dataclass(frozen=True, slots=True)
class HeardTurn:
    """One turn as the client saw it. Times are perf_counter seconds; `None` when the event never came."""

    turn: int | None
    started_at: float  # when the turn began: the mic started capturing it, or the text was sent
    wall_started_at: float  # time.time() at the same moment, for plots and logs
    speech_end_at: float | None  # when the last speech sample was captured and sent (or the text sent)
    final_transcript_at: float | None
    first_reply_text_at: float | None
    first_audio_at: float | None
    audio_end_at: float | None
    turn_end_at: float | None
    transcript: str
    reply_text: str
    reply_audio: bytes
    reply_sample_rate: int
    audio_arrivals: tuple[AudioArrival, ...]
    interrupted: bool
    server_timings: Mapping[str, float]
    errors: tuple[ServerError, ...]
    close_code: int | None = None  # set when the connection closed during the turn
    timed_out: bool = False
    visemes: tuple[Viseme, ...] = ()  # mouth shapes, when the session asked for them
    emotes: tuple[Emote, ...] = ()  # gestures the NPC's persona declared
    actions: tuple[Action, ...] = ()  # what the game should carry out for this turn

    @property
    def ok(self) -> bool:
        return self.turn_end_at is not None and not self.errors and not self.timed_out and self.close_code is None

    def _since_speech_ms(self, at: float | None) -> float | None:
        if at is None or self.speech_end_at is None:
            return None
        return (at - self.speech_end_at) * 1000.0

    @property
    def voice_to_voice_ms(self) -> float | None:
        return self._since_speech_ms(self.first_audio_at)

    @property
    def transcript_ms(self) -> float | None:
        return self._since_speech_ms(self.final_transcript_at)

    @property
    def first_reply_text_ms(self) -> float | None:
        return self._since_speech_ms(self.first_reply_text_at)

    @property
    def turn_end_ms(self) -> float | None:
        return self._since_speech_ms(self.turn_end_at)

    @property
    def reply_audio_seconds(self) -> float:
        return len(self.reply_audio) / 2 / self.reply_sample_rate if self.reply_sample_rate else 0.0

    @property
    def underruns(self) -> list[Underrun]:
        return find_underruns(self.audio_arrivals, self.reply_sample_rate)

    @property
    def playback_end_at(self) -> float | None:
        """When a player would hear the reply's last sample (playback starts on the first frame)."""
        return playback_end(self.audio_arrivals, self.reply_sample_rate)

    @property
    def error_codes(self) -> list[str]:
        codes = [error.code for error in self.errors]
        if self.timed_out:
            codes.append(CLIENT_TIMEOUT_CODE)
        if self.close_code is not None and not codes:
            codes.append(CONNECTION_CLOSED_CODE)
        return codes


def find_underruns(
    arrivals: tuple[AudioArrival, ...] | list[AudioArrival], sample_rate: int, tolerance_s: float = 0.0
) -> list[Underrun]:
    """Audible stutters: frames that arrived after everything received before them had been played.

    Playback starts when the first frame arrives and runs at real time; when the buffer runs dry it stops
    and restarts on the next frame. A gap between frames is only audible if it is longer than the audio
    buffered when it began, which is what this measures.
    """
    if not arrivals or sample_rate <= 0:
        return []
    underruns: list[Underrun] = []
    play_until = arrivals[0].at  # wall time when the buffered audio runs out
    played_s = 0.0  # reply audio position at play_until
    for arrival in arrivals:
        gap = arrival.at - play_until
        if gap > tolerance_s and arrival is not arrivals[0]:
            underruns.append(Underrun(at_audio_s=played_s, gap_s=gap))
        duration = arrival.samples / sample_rate
        play_until = max(play_until, arrival.at) + duration
        played_s += duration
    return underruns


def playback_end(arrivals: tuple[AudioArrival, ...] | list[AudioArrival], sample_rate: int) -> float | None:
    if not arrivals or sample_rate <= 0:
        return None
    play_until = arrivals[0].at
    for arrival in arrivals:
        play_until = max(play_until, arrival.at) + arrival.samples / sample_rate
    return play_until


def speech_end_sample(pcm: np.ndarray, sample_rate: int, threshold: float = SPEECH_RMS_THRESHOLD) -> int:
    """Index just past the last 10 ms window whose RMS is above `threshold` (0 if all silent).

    Recorded utterances carry some silence at the end; voice-to-voice is measured from the last speech
    sample, as the server's endpointer locates it, not from the end of the file.
    """
    window = max(1, sample_rate // 100)
    samples = pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float32)
    usable = samples.size - samples.size % window
    if usable == 0:
        return 0
    rms = np.sqrt(np.mean(np.square(samples[:usable].reshape(-1, window)), axis=1))
    loud = np.flatnonzero(rms > threshold)
    return 0 if loud.size == 0 else int((loud[-1] + 1) * window)


@dataclass(slots=True)
class TurnCollector:
    """Mutable state for the turn in progress; frozen into a HeardTurn when it ends."""

    started_at: float
    wall_started_at: float
    reply_sample_rate: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    turn: int | None = None
    speech_end_at: float | None = None
    final_transcript_at: float | None = None
    first_reply_text_at: float | None = None
    first_audio_at: float | None = None
    audio_end_at: float | None = None
    turn_end_at: float | None = None
    transcript: str = ""
    reply_parts: list[str] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    arrivals: list[AudioArrival] = field(default_factory=list)
    interrupted: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    errors: list[ServerError] = field(default_factory=list)
    close_code: int | None = None
    timed_out: bool = False
    visemes: list[Viseme] = field(default_factory=list)
    emotes: list[Emote] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)

    def result(self) -> HeardTurn:
        return HeardTurn(
            turn=self.turn,
            started_at=self.started_at,
            wall_started_at=self.wall_started_at,
            speech_end_at=self.speech_end_at,
            final_transcript_at=self.final_transcript_at,
            first_reply_text_at=self.first_reply_text_at,
            first_audio_at=self.first_audio_at,
            audio_end_at=self.audio_end_at,
            turn_end_at=self.turn_end_at,
            transcript=self.transcript,
            reply_text="".join(self.reply_parts),
            reply_audio=bytes(self.audio),
            reply_sample_rate=self.reply_sample_rate,
            audio_arrivals=tuple(self.arrivals),
            interrupted=self.interrupted,
            server_timings=dict(self.timings),
            errors=tuple(self.errors),
            close_code=self.close_code,
            timed_out=self.timed_out,
            visemes=tuple(self.visemes),
            emotes=tuple(self.emotes),
            actions=tuple(self.actions),
        )
