"""What the client records of a turn: the events of one turn, stamped with `time.perf_counter()` on arrival.

`TurnCollector` is filled in while the turn runs (by `TalkSession`, from parsed protocol messages) and frozen
into a `HeardTurn` when it ends. No I/O here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from npcserver.protocol import Action, Emote, Viseme

FRAME_MS = 20
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
    audio_arrivals: tuple[AudioArrival, ...]  # each reply audio frame as it came (loadtest/measure.py plays them)
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
    def error_codes(self) -> list[str]:
        codes = [error.code for error in self.errors]
        if self.timed_out:
            codes.append(CLIENT_TIMEOUT_CODE)
        if self.close_code is not None and not codes:
            codes.append(CONNECTION_CLOSED_CODE)
        return codes


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
