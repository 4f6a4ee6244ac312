"""The protocol client and the command-line client, against a scripted fake server speaking protocol v1.

The fake server is a few lines of websockets: it answers `start`, ends a turn after 200 ms of quiet
following loud audio (or at once on `text`/`end_of_turn`), and replies with a fixed script. The real
server is exercised by the load tester's end-to-end test (tests/test_loadtest.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from game_client_demo.cli import build_parser, mic_audio, talk
from game_client_demo.wav import read_wav_mono16, write_wav_mono16
from loadtest.measure import find_underruns, playback_end, speech_end_sample
from npcserver.client import AudioArrival, TalkError, TalkSession

REPLY_RATE = 22050
FAKE_REPLY = ["Forty silver", " for a good blade."]


def tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 300 * t) * 32767).astype(np.int16)


def quiet(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


@dataclass
class FakeTalkServer:
    """Protocol v1 as a script; records what each session sent."""

    url: str = ""
    starts: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: list[int] = field(default_factory=list)  # per session
    frame_sizes: set[int] = field(default_factory=set)
    close_after_speech: bool = False
    lines: list[tuple[str, str]] = field(default_factory=list)  # (type, text) of text, say and event messages

    async def handler(self, ws: ServerConnection) -> None:
        turn = 0
        heard_speech = False
        quiet_samples = 0
        rate = 16000
        session = len(self.audio_bytes)
        self.audio_bytes.append(0)
        replies: set[asyncio.Task[None]] = set()
        visemes = False

        async def reply(number: int, transcript: str) -> None:
            await ws.send(json.dumps({"type": "transcript", "turn": number, "text": transcript, "final": True}))
            await ws.send(json.dumps({"type": "action", "turn": number, "id": "sell_item", "args": {"item": "sword"}}))
            for piece in FAKE_REPLY:
                await ws.send(json.dumps({"type": "reply", "turn": number, "text": piece}))
            await ws.send(json.dumps({"type": "audio_start", "turn": number}))
            await ws.send(json.dumps({"type": "emote", "turn": number, "name": "nod", "at_sample": 0}))
            if visemes:
                shapes = [{"name": "FF", "start": 0, "duration": 5000}, {"name": "oh", "start": 5000, "duration": 6025}]
                await ws.send(json.dumps({"type": "visemes", "turn": number, "visemes": shapes}))
            for _ in range(5):
                await ws.send(np.full(REPLY_RATE // 10, 1000, dtype="<i2").tobytes())  # 5 x 100 ms
            await ws.send(json.dumps({"type": "audio_end", "turn": number}))
            timings = {
                "endpoint_ms": 200.0,
                "asr_ms": 1.0,
                "llm_first_token_ms": 1.0,
                "tts_first_audio_ms": 1.0,
                "voice_to_voice_ms": 203.0,
            }
            await ws.send(json.dumps({"type": "turn_end", "turn": number, "interrupted": False, "timings": timings}))

        def start_turn(transcript: str) -> None:
            nonlocal turn
            turn += 1
            task = asyncio.create_task(reply(turn, transcript))
            replies.add(task)
            task.add_done_callback(replies.discard)

        async for frame in ws:
            if isinstance(frame, bytes):
                self.audio_bytes[session] += len(frame)
                self.frame_sizes.add(len(frame))
                samples = np.frombuffer(frame, dtype="<i2")
                if np.abs(samples).max(initial=0) > 1000:
                    heard_speech, quiet_samples = True, 0
                elif heard_speech:
                    quiet_samples += samples.size
                    if quiet_samples >= rate // 5:
                        heard_speech = False
                        if self.close_after_speech:
                            await ws.close(1011, "scripted failure")
                            return
                        start_turn(f"heard turn {turn + 1}")
                continue
            message = json.loads(frame)
            if message["type"] == "start":
                self.starts.append(message)
                if message["npc"] != "greta_blacksmith":
                    await ws.send(json.dumps({"type": "error", "code": "unknown_npc", "message": "no such NPC"}))
                    await ws.close(1008, "unknown npc")
                    return
                rate = message["audio"]["sample_rate"]
                visemes = message.get("visemes", False)
                info = {
                    "type": "ready",
                    "session": "s1",
                    "npc": {"id": "greta_blacksmith", "name": "Greta"},
                    "audio": {"encoding": "pcm_s16le", "sample_rate": REPLY_RATE},
                }
                await ws.send(json.dumps(info))
                if message.get("greeting", True):
                    await ws.send(json.dumps({"type": "reply", "turn": 0, "text": "Mind the sparks."}))
                    await ws.send(json.dumps({"type": "audio_start", "turn": 0}))
                    await ws.send(np.full(REPLY_RATE // 20, 500, dtype="<i2").tobytes())
                    await ws.send(json.dumps({"type": "audio_end", "turn": 0}))
                    await ws.send(json.dumps({"type": "turn_end", "turn": 0, "interrupted": False, "timings": {}}))
            elif message["type"] == "text" and message["text"] == "refuse":
                await ws.send(json.dumps({"type": "error", "code": "text_too_long", "message": "too long"}))
            elif message["type"] == "text" and message["text"] == "fail":
                turn += 1
                await ws.send(json.dumps({"type": "error", "code": "model_error", "message": "failed", "turn": turn}))
                await ws.send(json.dumps({"type": "turn_end", "turn": turn, "interrupted": False, "timings": {}}))
            elif message["type"] in ("text", "say", "event"):
                self.lines.append((message["type"], message["text"]))
                start_turn(message["text"])
            elif message["type"] == "end_of_turn" and heard_speech:
                heard_speech = False
                start_turn(f"heard turn {turn + 1}")


@pytest.fixture
async def fake_talk_server() -> AsyncIterator[FakeTalkServer]:
    fake = FakeTalkServer()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        fake.url = f"ws://127.0.0.1:{port}/v1/talk"
        yield fake


# --------------------------------------------------------------- loadtest/measure.py: playback, as the CLI prints it


def test_no_stutter_when_audio_arrives_faster_than_it_plays() -> None:
    # Ten 100 ms frames, each 50 ms after the last: the buffer only grows.
    arrivals = [AudioArrival(at=i * 0.05, samples=1600) for i in range(10)]
    assert find_underruns(arrivals, 16000) == []
    assert playback_end(arrivals, 16000) == pytest.approx(1.0)


def test_a_gap_longer_than_the_buffered_audio_is_one_stutter() -> None:
    # 200 ms of audio at t=0, the next frame at t=0.5: 300 ms of silence heard after 200 ms of reply.
    arrivals = [AudioArrival(0.0, 1600), AudioArrival(0.05, 1600), AudioArrival(0.5, 1600)]
    (stutter,) = find_underruns(arrivals, 16000)
    assert stutter.at_audio_s == pytest.approx(0.2)
    assert stutter.gap_s == pytest.approx(0.3)
    assert playback_end(arrivals, 16000) == pytest.approx(0.6)


def test_a_gap_shorter_than_the_buffer_is_not_audible() -> None:
    arrivals = [AudioArrival(0.0, 16000), AudioArrival(0.9, 1600)]  # 1 s buffered, next frame after 0.9 s
    assert find_underruns(arrivals, 16000) == []


def test_playback_restarts_after_a_stall_so_later_frames_are_judged_from_there() -> None:
    # Stall, then a frame every 100 ms carrying 100 ms: after the restart, no further stutters.
    arrivals = [AudioArrival(0.0, 1600), AudioArrival(1.0, 1600), AudioArrival(1.1, 1600), AudioArrival(1.2, 1600)]
    underruns = find_underruns(arrivals, 16000)
    assert len(underruns) == 1
    assert underruns[0].gap_s == pytest.approx(0.9)


def test_speech_end_is_found_before_trailing_silence() -> None:
    pcm = np.concatenate([quiet(0.2), tone(0.5), quiet(0.3)])
    end = speech_end_sample(pcm, 16000)
    assert abs(end - int(0.7 * 16000)) <= 160  # within one 10 ms window
    assert speech_end_sample(quiet(0.5), 16000) == 0


def test_a_wav_at_an_odd_rate_is_resampled_for_the_protocol(tmp_path: Path) -> None:
    path = tmp_path / "q.wav"
    write_wav_mono16(path, tone(1.0, 11025), 11025)
    pcm, rate = mic_audio(path)
    assert rate == 16000 and abs(pcm.size - 16000) <= 2
    write_wav_mono16(path, tone(1.0, 48000), 48000)
    assert mic_audio(path)[1] == 48000


# --------------------------------------------------------------------------- against the fake server


async def test_speak_streams_real_time_frames_and_collects_the_reply(fake_talk_server: FakeTalkServer) -> None:
    async with await TalkSession.open(fake_talk_server.url, "greta_blacksmith", greeting=False) as session:
        pcm = np.concatenate([tone(0.4), quiet(0.1)])
        result = await session.speak(pcm, timeout_s=10)
    assert result.ok and result.turn == 1
    assert result.transcript == "heard turn 1"
    assert result.reply_text == "".join(FAKE_REPLY)
    assert result.reply_sample_rate == REPLY_RATE and result.reply_audio_seconds == pytest.approx(0.5)
    assert result.server_timings["voice_to_voice_ms"] == 203.0
    assert result.voice_to_voice_ms is not None and result.voice_to_voice_ms > 0
    assert result.transcript_ms is not None and result.first_reply_text_ms is not None
    # 20 ms frames of 16 kHz s16le; the speech plus open-mic silence reached the server.
    assert fake_talk_server.frame_sizes == {640}
    assert fake_talk_server.audio_bytes[0] >= pcm.size * 2
    assert fake_talk_server.starts[0]["greeting"] is False


async def test_typed_lines_and_several_turns_in_one_session(fake_talk_server: FakeTalkServer) -> None:
    async with await TalkSession.open(fake_talk_server.url, "greta_blacksmith", greeting=False) as session:
        first = await session.say("How much for a sword?", timeout_s=10)
        second = await session.say("And a shield?", timeout_s=10)
    assert (first.turn, first.transcript) == (1, "How much for a sword?")
    assert (second.turn, second.transcript) == (2, "And a shield?")
    assert first.ok and second.ok and second.reply_audio


async def test_the_greeting_is_turn_zero_and_not_the_players_turn(fake_talk_server: FakeTalkServer) -> None:
    async with await TalkSession.open(fake_talk_server.url, "greta_blacksmith") as session:
        greeting = await session.wait_greeting(timeout_s=10)
        result = await session.say("Hello", timeout_s=10)
    assert greeting is not None and greeting.turn == 0 and greeting.reply_text == "Mind the sparks."
    assert result.turn == 1 and result.transcript == "Hello"


async def test_push_to_talk_sends_end_of_turn_instead_of_silence(fake_talk_server: FakeTalkServer) -> None:
    async with await TalkSession.open(fake_talk_server.url, "greta_blacksmith", greeting=False) as session:
        result = await session.speak(tone(0.3), push_to_talk=True, timeout_s=10)
    assert result.ok and result.transcript == "heard turn 1"
    assert fake_talk_server.audio_bytes[0] == tone(0.3).size * 2  # no silence after the speech


async def test_an_unknown_npc_is_refused_with_its_code(fake_talk_server: FakeTalkServer) -> None:
    with pytest.raises(TalkError) as refused:
        await TalkSession.open(fake_talk_server.url, "nobody")
    assert refused.value.code == "unknown_npc"


async def test_an_unreachable_server_is_connect_failed(unused_tcp_port: int) -> None:
    with pytest.raises(TalkError) as failed:
        await TalkSession.open(f"ws://127.0.0.1:{unused_tcp_port}/v1/talk", "greta_blacksmith", timeout_s=2)
    assert failed.value.code == "connect_failed"


async def test_a_connection_closed_mid_turn_ends_the_turn_with_its_close_code(fake_talk_server: FakeTalkServer) -> None:
    fake_talk_server.close_after_speech = True
    async with await TalkSession.open(fake_talk_server.url, "greta_blacksmith", greeting=False) as session:
        result = await session.speak(tone(0.3), timeout_s=10)
    assert not result.ok
    assert result.close_code == 1011
    assert result.error_codes == ["connection_closed"]


async def test_cli_streams_a_wav_prints_the_turn_and_saves_the_reply(
    fake_talk_server: FakeTalkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    question, reply = tmp_path / "question.wav", tmp_path / "reply.wav"
    write_wav_mono16(question, np.concatenate([tone(0.4, 11025), quiet(0.1, 11025)]), 11025)
    args = build_parser().parse_args(
        [
            "--wav",
            str(question),
            "--npc",
            "greta_blacksmith",
            "--url",
            fake_talk_server.url,
            "--out",
            str(reply),
            "--turns",
            "2",
        ]
    )
    assert await talk(args) == 0
    out = capsys.readouterr().out
    assert "heard turn 1" in out and "heard turn 2" in out and "Mind the sparks." in out
    assert "voice-to-voice" in out
    assert fake_talk_server.starts[0]["audio"]["sample_rate"] == 16000  # 11025 is not a protocol rate
    samples, rate = read_wav_mono16(reply)
    assert rate == REPLY_RATE
    assert samples.size >= REPLY_RATE  # greeting + two 0.5 s replies


async def test_cli_asks_for_visemes_and_prints_them(
    fake_talk_server: FakeTalkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(
        ["--text", "Hello", "--npc", "greta_blacksmith", "--url", fake_talk_server.url, "--visemes", "--no-greeting",
         "--out", str(tmp_path / "reply.wav")]
    )
    assert await talk(args) == 0
    assert fake_talk_server.starts[0]["visemes"] is True
    out = capsys.readouterr().out
    assert "visemes: 2 over 0.50 s: FF oh" in out and "emote:  nod at 0.00 s" in out
    assert "action: sell_item(item='sword')" in out


async def test_scripted_lines_and_game_events_are_turns(fake_talk_server: FakeTalkServer) -> None:
    async with await TalkSession.open(fake_talk_server.url, "greta_blacksmith", greeting=False) as session:
        said = await session.scripted_line("Halt!", timeout_s=10)
        reacted = await session.game_event("The player drew a sword.", timeout_s=10)
    assert said.ok and reacted.ok and (said.turn, reacted.turn) == (1, 2)
    assert fake_talk_server.lines == [("say", "Halt!"), ("event", "The player drew a sword.")]


async def test_server_errors_end_or_mark_the_turn_and_the_session_goes_on(fake_talk_server: FakeTalkServer) -> None:
    async with await TalkSession.open(fake_talk_server.url, "greta_blacksmith", greeting=False) as session:
        refused = await session.say("refuse", timeout_s=10)  # no turn opened: the error alone ends it
        failed = await session.say("fail", timeout_s=10)  # error for turn 1, then its turn_end
        fine = await session.say("Hello", timeout_s=10)
    assert refused.error_codes == ["text_too_long"] and refused.turn is None and not refused.ok
    assert failed.error_codes == ["model_error"] and failed.turn == 1 and failed.turn_end_at is not None
    assert fine.ok and fine.turn == 2 and fine.transcript == "Hello"
