"""The naive sequential chain, for comparison: ASR, then the whole reply, then TTS of the whole reply.

Same utterances, same models (`create_backends(settings)`), same persona prompt, one process, no streaming
and no overlap. Its voice-to-voice is the end-of-speech silence the server waits (`end_silence_ms`, a
naive system must wait for it too) plus ASR, full generation and full synthesis. A load-test report
divides this by the pipeline's client-measured voice-to-voice to state the gain measured in the same run.

`python -m loadtest.baseline [--backend real|fake] [--npc ID] [--repeats N] [--json FILE]`
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.corpus import Utterance, load_utterances
from loadtest.metrics import corpus_word_error_rate, histogram_of
from npcserver.audio import ASR_SAMPLE_RATE, pcm16_to_float, resample
from npcserver.backends.base import ChatMessage, GenerationOptions, VoiceSettings
from npcserver.config import Settings

STAGES = ("asr_ms", "llm_ms", "tts_ms", "compute_ms", "voice_to_voice_ms")


def _prompt_builder(
    settings: Settings, npc: str
) -> tuple[Callable[[str], list[ChatMessage]], GenerationOptions, VoiceSettings, str]:
    """The server's persona prompt when the modules are there, else a minimal one (and say which)."""
    try:
        from npcserver.conversation.prompt import build_messages
        from npcserver.personas import load_persona_file

        loaded = load_persona_file(settings.voices / f"{npc}.toml", voices_dir=settings.voices)
        if loaded.persona is None:
            raise ValueError("; ".join(str(p) for p in loaded.problems))
        persona = loaded.persona
        return (
            (lambda text: build_messages(persona, [], {}, text)),
            persona.generation_options(seed=0),
            persona.voice,
            "persona prompt (npcserver.conversation.prompt)",
        )
    except (ImportError, OSError, ValueError) as exc:
        system = ChatMessage(
            "system", "You are a village blacksmith in a fantasy game. Answer in one or two short sentences."
        )
        note = f"minimal system prompt (persona prompt unavailable: {exc})"
        return (
            (lambda text: [system, ChatMessage("user", text)]),
            GenerationOptions(max_new_tokens=40, seed=0),
            VoiceSettings(model=settings.tts_voice),
            note,
        )


def run_baseline(
    settings: Settings,
    utterances: list[Utterance],
    *,
    npc: str = "greta_blacksmith",
    repeats: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every utterance `repeats` times through the naive chain (blocking; seconds per utterance)."""
    from npcserver.backends import create_backends

    backends = create_backends(settings)
    messages_for, options, voice, prompt_note = _prompt_builder(settings, npc)
    audio = [resample(pcm16_to_float(u.pcm), u.sample_rate, ASR_SAMPLE_RATE) for u in utterances]

    def one_turn(index: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        transcript = backends.transcriber.transcribe(audio[index]).text
        t1 = time.perf_counter()
        reply = "".join(backends.dialogue.generate(messages_for(transcript), options, lambda: False)).strip()
        t2 = time.perf_counter()
        pcm = backends.synthesizer.synthesize(reply or "Hm.", voice).audio
        t3 = time.perf_counter()
        compute_ms = (t3 - t0) * 1000.0
        return {
            "utterance": utterances[index].name,
            "transcript": transcript,
            "reference_text": utterances[index].text,
            "reply_text": reply,
            "reply_audio_s": round(len(pcm) / backends.synthesizer.sample_rate, 3),
            "asr_ms": (t1 - t0) * 1000.0,
            "llm_ms": (t2 - t1) * 1000.0,
            "tts_ms": (t3 - t2) * 1000.0,
            "compute_ms": compute_ms,
            "voice_to_voice_ms": settings.end_silence_ms + compute_ms,
        }

    one_turn(0)  # warm-up: first calls pay one-off costs the warm server has already paid
    turns = []
    for repeat in range(max(1, repeats)):
        for index in range(len(utterances)):
            turn = one_turn(index)
            turns.append(turn)
            log(
                f"baseline {repeat + 1}.{index + 1}: {turn['voice_to_voice_ms']:.0f} ms  ({turn['transcript']!r} -> {turn['reply_text'][:60]!r})"
            )
    return {
        "description": "naive chain: end_silence_ms + ASR + whole reply + TTS of the whole reply, sequential, one process",
        "backend": settings.backend,
        "end_silence_ms": settings.end_silence_ms,
        "prompt": prompt_note,
        **{stage: histogram_of(t[stage] for t in turns).summary().as_dict() for stage in STAGES},
        "wer": corpus_word_error_rate([(t["reference_text"], t["transcript"]) for t in turns]),
        "turns": turns,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.baseline", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        choices=("real", "fake"),
        default="real",
        help="Model backend (default: real, the embedded models).",
    )
    parser.add_argument(
        "--npc", default="greta_blacksmith", help="Persona id whose prompt and voice to use (from --voices)."
    )
    parser.add_argument("--voices", type=Path, default=Path("voices"), help="Folder of persona files.")
    parser.add_argument("--repeats", type=int, default=1, help="Passes over the utterances (default 1).")
    parser.add_argument("--json", type=Path, help="Write the result as JSON here.")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from npcserver.config import load_settings

    settings = load_settings({"backend": args.backend, "voices": args.voices})
    result = run_baseline(
        settings, load_utterances(), npc=args.npc, repeats=args.repeats, log=lambda line: print(line, file=sys.stderr)
    )
    v2v = result["voice_to_voice_ms"]
    print(
        f"naive chain voice-to-voice: p50 {v2v['p50_ms']:.0f} ms, p95 {v2v['p95_ms']:.0f} ms, max {v2v['max_ms']:.0f} ms ({v2v['count']} turns; {result['prompt']})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
