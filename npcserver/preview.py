"""Preview tools for designers: `npcserver chat NPC_ID` and `npcserver say NPC_ID "text"`.

They use the real models and the same prompt, reply limits and voice settings as the server,
without a game client or audio devices.
"""

from __future__ import annotations

import sys
import time
import wave
from pathlib import Path

from npcserver.backends import Backends, create_backends
from npcserver.config import Settings
from npcserver.persona_store import PersonaStore
from npcserver.personas import Persona
from npcserver.prompt import build_messages
from npcserver.text import ReplyLimiter


def _persona_or_explain(settings: Settings, npc: str) -> Persona | None:
    store = PersonaStore(settings.voices)
    store.reload_changed()
    persona = store.get(npc)
    if persona is None:
        known = ", ".join(sorted(store.ids())) or "none"
        print(f"npcserver: no persona {npc!r} in {settings.voices} (known: {known}); "
              f"`npcserver personas check` explains broken files", file=sys.stderr)
    return persona


def reply_once(backends: Backends, persona: Persona, history: list[tuple[str, str]], context: dict[str, object],
               line: str, out=sys.stdout) -> tuple[str, dict[str, float]]:
    """Stream one reply to `out` as it is written; return it with its timings in ms."""
    messages = build_messages(persona, history, context, line)
    limiter = ReplyLimiter(persona.max_reply_words)
    started = time.perf_counter()
    first_token_ms = None
    reply = ""
    for piece in backends.dialogue.generate(messages, persona.generation_options(), lambda: limiter.done):
        if first_token_ms is None:
            first_token_ms = (time.perf_counter() - started) * 1000
        kept, done = limiter.accept(piece)
        reply += kept
        out.write(kept)
        out.flush()
        if done:
            break
    rest = limiter.flush()
    reply += rest
    out.write(rest + "\n")
    timings = {"first_token_ms": round(first_token_ms or 0.0, 1), "total_ms": round((time.perf_counter() - started) * 1000, 1)}
    return reply.strip(), timings


def chat_command(settings: Settings, npc: str) -> int:
    persona = _persona_or_explain(settings, npc)
    if persona is None:
        return 1
    print(f"loading models for {persona.name}...", file=sys.stderr)
    backends = create_backends(settings)
    history: list[tuple[str, str]] = []
    print(f"Talking to {persona.name} ({persona.role}). Empty line or Ctrl-D to leave.\n")
    if persona.greeting:
        print(f"{persona.name}: {persona.greeting}")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            return 0
        sys.stdout.write(f"{persona.name}: ")
        reply, timings = reply_once(backends, persona, history, {}, line)
        history.append((line, reply))
        print(f"  [first token {timings['first_token_ms']:.0f} ms, reply {timings['total_ms']:.0f} ms, "
              f"{len(reply.split())} words]")


def say_command(settings: Settings, npc: str, text: str, out: Path | None) -> int:
    persona = _persona_or_explain(settings, npc)
    if persona is None:
        return 1
    backends = create_backends(settings)
    started = time.perf_counter()
    audio = backends.synthesizer.synthesize(text, persona.voice)
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
