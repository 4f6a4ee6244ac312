"""Talk to an NPC from the command line: the reference client for docs/protocol.md.

    python -m game_client_demo.cli --wav question.wav --npc greta_blacksmith [--out reply.wav]
    python -m game_client_demo.cli --text "How much for a sword?" --npc greta_blacksmith
    python -m game_client_demo.cli --mic --npc greta_blacksmith        (needs: pip install sounddevice)
    python -m game_client_demo.cli --event "The player drew a sword." --npc rolf_guard --visemes

A WAV is streamed like a live microphone: 20 ms frames at real-time pace, then silence (an open mic) until
the NPC's turn ends. The reply audio is saved to a WAV. For every turn it prints what the server heard,
what the NPC said, the server's stage timings, and voice-to-voice measured here: from the moment the last
speech sample was sent to the moment the first reply audio frame arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

from game_client_demo.wav import read_wav_mono16, write_wav_mono16
from loadtest.measure import speech_end_sample, turn_playback_end, turn_underruns
from npcserver.audio import float_to_pcm16, pcm16_to_float, resample
from npcserver.client import FRAME_MS, PROTOCOL_SAMPLE_RATES, HeardTurn, TalkError, TalkSession

DEFAULT_URL = "ws://127.0.0.1:8765/v1/talk"
FALLBACK_RATE = 16_000
TIMING_LABELS = {
    "endpoint_ms": "endpoint",
    "asr_ms": "ASR",
    "llm_first_token_ms": "LLM first token",
    "llm_total_ms": "LLM total",
    "tts_first_audio_ms": "TTS first audio",
    "voice_to_voice_ms": "voice-to-voice",
}


def mic_audio(path: Path) -> tuple[np.ndarray, int]:
    """The WAV as the protocol accepts it: mono int16 at its own rate if allowed, else resampled to 16 kHz."""
    pcm, rate = read_wav_mono16(path)
    if rate in PROTOCOL_SAMPLE_RATES:
        return pcm, rate
    return float_to_pcm16(resample(pcm16_to_float(pcm), rate, FALLBACK_RATE)), FALLBACK_RATE


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def describe_turn(number: int, result: HeardTurn, npc_name: str, typed: str | None = None) -> str:
    lines = [f"turn {result.turn if result.turn is not None else number}"]
    lines.append(
        f"  typed:  {typed!r}" if typed is not None and not result.transcript else f"  heard:  {result.transcript!r}"
    )
    lines.append(f"  {npc_name}: {result.reply_text.strip()!r}{'  (interrupted)' if result.interrupted else ''}")
    if result.server_timings:
        known = [
            f"{label} {result.server_timings[key]:.0f} ms"
            for key, label in TIMING_LABELS.items()
            if key in result.server_timings
        ]
        extra = [f"{key} {value:.0f}" for key, value in result.server_timings.items() if key not in TIMING_LABELS]
        lines.append("  server: " + ", ".join(known + extra))
    lines.extend(f"  emote:  {e.name} at {e.at_sample / result.reply_sample_rate:.2f} s" for e in result.emotes)
    lines.extend(f"  action: {a.id}({', '.join(f'{k}={v!r}' for k, v in a.args.items())})" for a in result.actions)
    if result.visemes:
        last = result.visemes[-1]
        names = " ".join(v.name for v in result.visemes[:12])
        lines.append(
            f"  visemes: {len(result.visemes)} over {(last.start + last.duration) / result.reply_sample_rate:.2f} s: "
            f"{names}{' ...' if len(result.visemes) > 12 else ''}"
        )
    underruns = turn_underruns(result)
    lines.append(
        f"  client: voice-to-voice {_ms(result.voice_to_voice_ms)}, transcript {_ms(result.transcript_ms)}, "
        f"first reply text {_ms(result.first_reply_text_ms)}, turn end {_ms(result.turn_end_ms)}; "
        f"reply audio {result.reply_audio_seconds:.2f} s, {len(underruns)} stutter(s)"
    )
    for code in result.error_codes:
        message = next((e.message for e in result.errors if e.code == code), "")
        lines.append(f"  error: {code} {message}".rstrip())
    if result.close_code is not None:
        lines.append(f"  connection closed (code {result.close_code})")
    return "\n".join(lines)


async def _until_heard(result: HeardTurn, limit_s: float = 30.0) -> None:
    """Wait until the reply would have finished playing, as a player would before speaking again."""
    end = turn_playback_end(result)
    if end is not None:
        await asyncio.sleep(min(limit_s, max(0.0, end - time.perf_counter())))


async def _mic_turns(session: TalkSession, turns: int, timeout_s: float) -> list[HeardTurn]:
    """Stream the default microphone until `turns` turns have ended (sounddevice is optional)."""
    try:
        import sounddevice  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit("--mic needs the optional package sounddevice: pip install sounddevice") from None
    loop = asyncio.get_running_loop()
    frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=250)  # 5 s of 20 ms frames; beyond that new audio is dropped

    def enqueue(chunk: bytes) -> None:
        if not frames.full():  # a stalled connection drops mic audio rather than growing without bound
            frames.put_nowait(chunk)

    def on_audio(data: object, _frames: int, _time: object, _status: object) -> None:
        loop.call_soon_threadsafe(enqueue, bytes(data))  # type: ignore[call-overload]

    async def pump() -> None:
        while True:
            await session.send_audio(await frames.get())

    frame = session.sample_rate * FRAME_MS // 1000
    results = []
    with sounddevice.RawInputStream(
        samplerate=session.sample_rate, channels=1, dtype="int16", blocksize=frame, callback=on_audio
    ):
        sender = asyncio.create_task(pump())
        try:
            print("listening: speak, then pause", file=sys.stderr)
            for number in range(1, turns + 1):
                result = await session.await_turn(timeout_s=timeout_s)
                print(describe_turn(number, result, session.info.npc_name))
                results.append(result)
                if result.close_code is not None:
                    break
        finally:
            sender.cancel()
    return results


async def talk(args: argparse.Namespace) -> int:
    pcm, rate = mic_audio(args.wav) if args.wav else (np.zeros(0, np.int16), FALLBACK_RATE)
    speech_end = speech_end_sample(pcm, rate)  # voice-to-voice runs from the last speech, not the file's end
    try:
        session = await TalkSession.open(
            args.url, args.npc, sample_rate=rate, player=args.player, greeting=args.greeting, visemes=args.visemes,
            timeout_s=args.timeout,
        )
    except TalkError as exc:
        print(f"could not start a session: {exc}", file=sys.stderr)
        return 2
    results: list[HeardTurn] = []
    async with session:
        print(f"talking to {session.info.npc_name} ({session.info.npc_id}), session {session.info.session}")
        greeting = await session.wait_greeting(timeout_s=args.timeout) if args.greeting else None
        if greeting is not None:
            print(f"greeting: {session.info.npc_name}: {greeting.reply_text.strip()!r}")
            await _until_heard(greeting)
        if args.mic:
            results = await _mic_turns(session, args.turns, args.timeout)
        else:
            for number in range(1, args.turns + 1):
                if args.text:
                    result = await session.say(args.text, timeout_s=args.timeout)
                elif args.say:
                    result = await session.scripted_line(args.say, timeout_s=args.timeout)
                elif args.event:
                    result = await session.game_event(args.event, timeout_s=args.timeout)
                else:
                    result = await session.speak(
                        pcm, speech_end=speech_end, push_to_talk=args.push_to_talk, timeout_s=args.timeout
                    )
                print(describe_turn(number, result, session.info.npc_name, typed=args.text or args.say or args.event))
                results.append(result)
                if result.close_code is not None:
                    break
                await _until_heard(result)
    audio = [r.reply_audio for r in ([greeting] if greeting else []) + results if r.reply_audio]
    if args.out and audio:
        reply_rate = session.info.reply_sample_rate
        gap = bytes(2 * reply_rate * 3 // 10)  # 300 ms between turns
        write_wav_mono16(args.out, gap.join(audio), reply_rate)
        print(f"reply audio saved to {args.out} ({reply_rate} Hz)")
    return 0 if results and all(r.ok for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m game_client_demo.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--wav",
        type=Path,
        help="16-bit PCM WAV to speak (any rate: sent as it is if the protocol accepts it, else resampled to 16 kHz).",
    )
    source.add_argument("--text", help="Type this line instead of speaking.")
    source.add_argument("--say", help="Have the NPC say this line as it is (a scripted line: the say message).")
    source.add_argument("--event", help='Tell the NPC what happened, e.g. "The player drew a sword." (the event message).')
    source.add_argument(
        "--mic", action="store_true", help="Speak into the default microphone (needs the optional package sounddevice)."
    )
    parser.add_argument("--npc", required=True, help="Persona id, e.g. greta_blacksmith.")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Server endpoint (default {DEFAULT_URL}).")
    parser.add_argument(
        "--out", type=Path, default=Path("reply.wav"), help="Where to save the NPC's reply audio (default reply.wav)."
    )
    parser.add_argument(
        "--turns", type=int, default=1, help="How many times to say it (one session; the NPC remembers)."
    )
    parser.add_argument(
        "--push-to-talk", action="store_true", help="Send end_of_turn after the WAV instead of trailing silence."
    )
    parser.add_argument("--no-greeting", dest="greeting", action="store_false", help="Ask the NPC not to greet first.")
    parser.add_argument("--visemes", action="store_true", help="Ask for mouth shapes with the audio and print them.")
    parser.add_argument("--player", help="Player id sent in start.")
    parser.add_argument("--timeout", type=float, default=60.0, help="Seconds to wait for each turn to end.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.turns < 1:
        raise SystemExit("--turns must be at least 1")
    return asyncio.run(talk(args))


if __name__ == "__main__":
    raise SystemExit(main())
