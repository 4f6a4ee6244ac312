"""An asyncio client for protocol v1 (docs/protocol.md), used by the command-line client and the load tester.

It behaves like a game client with an open microphone: `TalkSession.speak()` streams PCM in 20 ms frames at
real-time pace (each frame leaves when its last sample would have been captured), then keeps sending
silence until the NPC's turn ends. Every server event is stamped with `time.perf_counter()` on arrival,
so a `HeardTurn` can tell what the player felt: voice-to-voice (end of speech -> first reply audio),
time to the final transcript and to the first reply text, and when each reply audio frame came.

On the client side only this module speaks WebSocket. Messages go out through `protocol.encode` and come in
through `protocol.parse_server_message`, the same definitions the server uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from npcserver.client.turns import (
    CLIENT_TIMEOUT_CODE,
    CONNECT_FAILED_CODE,
    CONNECTION_CLOSED_CODE,
    FRAME_MS,
    AudioArrival,
    HeardTurn,
    ServerError,
    SessionInfo,
    TalkError,
    TurnCollector,
)
from npcserver.protocol import SUPPORTED_SAMPLE_RATES as PROTOCOL_SAMPLE_RATES
from npcserver.protocol import (
    Action,
    AudioEnd,
    AudioFormat,
    AudioStart,
    ClientMessage,
    Emote,
    EndOfTurn,
    Error,
    Event,
    Interrupt,
    ProtocolError,
    Ready,
    Reply,
    Say,
    ServerMessage,
    Start,
    Text,
    TranscriptMessage,
    TurnEnd,
    Visemes,
    encode,
    parse_server_message,
)


class TalkSession:
    """One open conversation with an NPC. Create with `await TalkSession.open(...)`; use `async with`."""

    def __init__(self, ws: ClientConnection, info: SessionInfo, sample_rate: int) -> None:
        self._ws = ws
        self.info = info
        self.sample_rate = sample_rate
        self._turn: TurnCollector | None = None
        self._finished_turns: set[int] = set()
        self._audio_turn: int | None = None
        self._greeting: TurnCollector | None = None  # turn 0: the NPC speaks first
        self._greeting_seen = asyncio.Event()
        self.unrouted_errors: list[ServerError] = []  # errors that arrived outside any turn
        self.close_code: int | None = None
        self._receiver = asyncio.create_task(self._receive_loop(), name="talk-receiver")

    @classmethod
    async def open(
        cls,
        url: str,
        npc: str,
        *,
        sample_rate: int = 16_000,
        player: str | None = None,
        context: Mapping[str, Any] | None = None,
        greeting: bool = True,
        visemes: bool = False,
        timeout_s: float = 10.0,
    ) -> TalkSession:
        """Connect, send `start` and wait for `ready`. Raises TalkError if refused or unreachable.

        With `greeting` the NPC may speak its greeting first, as turn 0 (see `wait_greeting`); with
        `visemes` each turn's audio comes with its mouth shapes (`HeardTurn.visemes`).
        """
        if sample_rate not in PROTOCOL_SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {PROTOCOL_SAMPLE_RATES}, got {sample_rate}")
        try:
            ws = await connect(
                url, open_timeout=timeout_s, close_timeout=2, proxy=None, compression=None, max_size=2**22
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise TalkError(CONNECT_FAILED_CODE, f"cannot connect to {url}: {exc}") from exc
        start = Start(npc=npc, audio=AudioFormat(sample_rate=sample_rate), player=player, context=dict(context or {}),
                      greeting=greeting, visemes=visemes)
        try:
            await ws.send(encode(start))
            async with asyncio.timeout(timeout_s):
                while True:
                    raw = await ws.recv()
                    message = None if isinstance(raw, bytes) else _parsed(raw)
                    if isinstance(message, Ready):
                        break
                    if isinstance(message, Error):
                        await ws.close()
                        raise TalkError(message.code, message.message, ws.close_code)
        except ConnectionClosed as exc:
            raise TalkError(
                CONNECTION_CLOSED_CODE, f"closed before ready: {exc}", exc.rcvd.code if exc.rcvd else None
            ) from exc
        except TimeoutError as exc:
            await ws.close()
            raise TalkError(CLIENT_TIMEOUT_CODE, f"no ready message within {timeout_s} s") from exc
        info = SessionInfo(message.session, message.npc.id, message.npc.name, message.audio.sample_rate)
        return cls(ws, info, sample_rate)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._receiver.done()

    async def close(self) -> None:
        await self._ws.close()
        try:
            async with asyncio.timeout(3):
                await self._receiver
        except TimeoutError:
            self._receiver.cancel()

    # --- sending

    async def _send(self, message: ClientMessage) -> None:
        await self._ws.send(encode(message))

    async def interrupt(self) -> None:
        await self._send(Interrupt())

    async def end_of_turn(self) -> None:
        await self._send(EndOfTurn())

    def _begin_turn(self) -> TurnCollector:
        if self._turn is not None:
            raise RuntimeError("a turn is already in progress on this session")
        collector = TurnCollector(time.perf_counter(), time.time(), self.info.reply_sample_rate)
        self._turn = collector
        if self.closed:
            collector.close_code = self.close_code
            collector.done.set()
        return collector

    async def _finish_turn(self, collector: TurnCollector, timeout_s: float) -> HeardTurn:
        try:
            async with asyncio.timeout(max(0.0, timeout_s - (time.perf_counter() - collector.started_at))):
                await collector.done.wait()
        except TimeoutError:
            collector.timed_out = True
        if collector.turn is not None:
            self._finished_turns.add(collector.turn)
        self._turn = None
        return collector.result()

    async def say(self, text: str, *, timeout_s: float = 30.0) -> HeardTurn:
        """Send a typed line and collect the NPC's reply. Latencies run from the moment the text was sent."""
        return await self._send_line(Text(text), timeout_s)

    async def scripted_line(self, text: str, *, timeout_s: float = 30.0) -> HeardTurn:
        """Have the NPC say the game's own line (a "say" message) and collect that turn."""
        return await self._send_line(Say(text), timeout_s)

    async def game_event(self, text: str, *, timeout_s: float = 30.0) -> HeardTurn:
        """Tell the NPC what happened in the game (an "event" message) and collect its reaction."""
        return await self._send_line(Event(text), timeout_s)

    async def _send_line(self, line: Text | Say | Event, timeout_s: float) -> HeardTurn:
        collector = self._begin_turn()
        try:
            await self._send(line)
        except ConnectionClosed as exc:
            collector.close_code = exc.rcvd.code if exc.rcvd else None
            collector.done.set()
        collector.speech_end_at = time.perf_counter()
        return await self._finish_turn(collector, timeout_s)

    async def speak(
        self,
        pcm: np.ndarray,
        *,
        speech_end: int | None = None,
        push_to_talk: bool = False,
        timeout_s: float = 30.0,
        frame_ms: int = FRAME_MS,
    ) -> HeardTurn:
        """Stream int16 mono `pcm` (at the session's rate) like a live mic, then open-mic silence until turn_end.

        `speech_end` is the sample index just past the last speech sample (the end of `pcm` if not given;
        for a recording with trailing silence, loadtest.measure.speech_end_sample finds it); voice-to-voice
        runs from the moment that sample was captured. With `push_to_talk`, `end_of_turn` is sent after the
        audio instead of silence.
        """
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise ValueError("pcm must be mono int16")
        speech_end = pcm.size if speech_end is None else speech_end
        collector = self._begin_turn()
        sender = asyncio.create_task(
            self._stream(collector, pcm, speech_end, push_to_talk, frame_ms), name="talk-sender"
        )
        try:
            return await self._finish_turn(collector, timeout_s)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _stream(
        self, collector: TurnCollector, pcm: np.ndarray, speech_end: int, push_to_talk: bool, frame_ms: int
    ) -> None:
        frame = self.sample_rate * frame_ms // 1000
        silence = bytes(frame * 2)
        t0 = collector.started_at
        index = 0
        try:
            # Speech, then silence until the turn ends; frame k leaves when its last sample is "captured".
            while not collector.done.is_set():
                delay = t0 + (index + 1) * frame_ms / 1000.0 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                start = index * frame
                if start < pcm.size:
                    chunk = pcm[start : start + frame]
                    await self._ws.send(chunk.astype("<i2").tobytes())
                    end = start + chunk.size
                    if collector.speech_end_at is None and end >= speech_end:
                        # The last speech sample was captured (end - speech_end) samples before this frame left.
                        collector.speech_end_at = time.perf_counter() - (end - speech_end) / self.sample_rate
                elif push_to_talk:
                    if collector.speech_end_at is None:
                        collector.speech_end_at = time.perf_counter()
                    await self._send(EndOfTurn())
                    return
                else:
                    await self._ws.send(silence)
                index += 1
        except ConnectionClosed:
            return  # the receiver records the close and ends the turn

    async def send_audio(self, pcm: bytes) -> None:
        """Raw mic audio (s16le at the session's rate), for callers that pace it themselves (a live mic)."""
        await self._ws.send(pcm)

    async def await_turn(self, *, timeout_s: float = 120.0) -> HeardTurn:
        """Collect the next turn the server detects in audio sent with `send_audio` (no client speech-end time)."""
        return await self._finish_turn(self._begin_turn(), timeout_s)

    # --- receiving

    async def _receive_loop(self) -> None:
        try:
            async for raw in self._ws:
                now = time.perf_counter()
                if isinstance(raw, bytes):
                    self._on_audio(raw, now)
                else:
                    message = _parsed(raw)
                    if message is not None:
                        self._on_message(message, now)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code
            for collector in (self._turn, self._greeting):
                if collector is not None and not collector.done.is_set():
                    collector.close_code = self.close_code
                    collector.done.set()

    async def wait_greeting(self, *, first_event_timeout_s: float = 2.0, timeout_s: float = 30.0) -> HeardTurn | None:
        """The greeting (turn 0) once it has ended, or None if none began within `first_event_timeout_s`."""
        try:
            async with asyncio.timeout(first_event_timeout_s):
                await self._greeting_seen.wait()
        except TimeoutError:
            return None
        assert self._greeting is not None
        try:
            async with asyncio.timeout(timeout_s):
                await self._greeting.done.wait()
        except TimeoutError:
            self._greeting.timed_out = True
        return self._greeting.result()

    def _collector_for(self, turn: Any) -> TurnCollector | None:
        if turn == 0 and not isinstance(turn, bool):
            # The greeting is the NPC's own turn 0; it never counts as the player's turn.
            if self._greeting is None:
                self._greeting = TurnCollector(time.perf_counter(), time.time(), self.info.reply_sample_rate, turn=0)
                self._greeting_seen.set()
            return None if self._greeting.done.is_set() else self._greeting
        collector = self._turn
        if collector is None or collector.done.is_set():
            return None
        if isinstance(turn, int):
            if turn in self._finished_turns:
                return None  # late events of an earlier (interrupted or timed-out) turn
            if collector.turn is None:
                collector.turn = turn
        return collector

    def _on_audio(self, data: bytes, now: float) -> None:
        collector = self._collector_for(self._audio_turn)
        if collector is None:
            return
        if collector.first_audio_at is None:
            collector.first_audio_at = now
        collector.audio.extend(data)
        collector.arrivals.append(AudioArrival(now, len(data) // 2))

    def _on_message(self, message: ServerMessage, now: float) -> None:
        if isinstance(message, Error):
            error = ServerError(message.code, message.message, now)
            collector = self._collector_for(message.turn)
            if collector is None:
                self.unrouted_errors.append(error)
                return
            collector.errors.append(error)
            if message.turn is None and collector.turn is None:
                # Refused before the server opened a turn (e.g. text_too_long): no turn_end will follow.
                collector.done.set()
            return  # otherwise the server still ends the turn with turn_end
        if isinstance(message, Ready):
            return
        if isinstance(message, AudioStart):
            self._audio_turn = message.turn
        collector = self._collector_for(message.turn)
        if collector is None:
            return
        if isinstance(message, TranscriptMessage):
            collector.transcript = message.text
            if message.final and collector.final_transcript_at is None:
                collector.final_transcript_at = now
        elif isinstance(message, Reply):
            if collector.first_reply_text_at is None:
                collector.first_reply_text_at = now
            collector.reply_parts.append(message.text)
        elif isinstance(message, Visemes):
            collector.visemes.extend(message.visemes)
        elif isinstance(message, Emote):
            collector.emotes.append(message)
        elif isinstance(message, Action):
            collector.actions.append(message)
        elif isinstance(message, AudioEnd):
            collector.audio_end_at = now
        elif isinstance(message, TurnEnd):
            collector.turn_end_at = now
            collector.interrupted = message.interrupted
            collector.timings = {
                k: float(v) for k, v in message.timings.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            collector.done.set()


def _parsed(raw: str) -> ServerMessage | None:
    """A server message, or None for one this client does not know (a newer server may send more)."""
    try:
        return parse_server_message(raw)
    except ProtocolError:
        return None
