"""Preview tools for designers: `npcserver chat NPC_ID` and `npcserver say NPC_ID "text"`.

They use the real models and the server's own turn code (`persona_turn`: prompt, fact lookup and
check, forbidden-topic deflection, reply limits, voice), without a game client or audio devices.
"""

from __future__ import annotations

import asyncio
import sys
import time
import wave
from pathlib import Path
from typing import TextIO

from npcserver.backends import create_backends
from npcserver.config import Settings
from npcserver.conversation.persona_turn import reply_to_text
from npcserver.conversation.pipeline import ModelRunner
from npcserver.personas import Persona
from npcserver.personas.cli import find_persona
from npcserver.personas.store import PersonaStore
from npcserver.protocol import Reply


def _persona_or_explain(settings: Settings, npc: str) -> Persona | None:
    return find_persona(PersonaStore(settings.voices), npc)  # the store loads the folder


def reply_once(runner: ModelRunner, persona: Persona, history: list[tuple[str, str]], line: str,
               out: TextIO = sys.stdout) -> tuple[str, dict[str, float]]:
    """One reply through the server's own turn code (fact lookup, check, deflection, TTS), its text
    streamed to `out` as the server would send it; return it with its timings in ms."""

    async def show(message: object) -> None:
        if isinstance(message, Reply):
            out.write(message.text)
            out.flush()

    result = asyncio.run(reply_to_text(runner, persona, line, history, emit=show))
    out.write("\n")
    return result.reply_text.strip(), result.timings


def chat_command(settings: Settings, npc: str) -> int:
    persona = _persona_or_explain(settings, npc)
    if persona is None:
        return 1
    print(f"loading models for {persona.name}...", file=sys.stderr)
    runner = ModelRunner(create_backends(settings))
    history: list[tuple[str, str]] = []
    print(f"Talking to {persona.name} ({persona.role}). Empty line or Ctrl-D to leave.\n")
    if persona.greeting:
        print(f"{persona.name}: {persona.greeting}")
    try:
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                print()
                return 0
            if not line:
                return 0
            sys.stdout.write(f"{persona.name}: ")
            reply, timings = reply_once(runner, persona, history, line)
            history.append((line, reply))
            first_audio = timings.get("reply_audio_ms") or timings.get("voice_to_voice_ms") or 0.0
            print(f"  [first token {timings.get('llm_first_token_ms', 0):.0f} ms, first audio {first_audio:.0f} ms, "
                  f"{len(reply.split())} words]")
    finally:
        runner.close(wait=True)


def say_command(settings: Settings, npc: str, text: str, out: Path | None) -> int:
    persona = _persona_or_explain(settings, npc)
    if persona is None:
        return 1
    backends = create_backends(settings)
    started = time.perf_counter()
    audio = backends.synthesizer.synthesize(text, persona.voice).audio
    elapsed_ms = (time.perf_counter() - started) * 1000
    path = out or Path(f"{persona.id}.wav")
    rate = backends.synthesizer.sample_rate
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(audio.astype("<i2").tobytes())
    print(f"wrote {path}: {len(audio) / rate:.2f} s of {persona.name}'s voice "
          f"(pitch {persona.voice.pitch_semitones:+g} st, speed {persona.voice.speed:g}x) in {elapsed_ms:.0f} ms")
    return 0
