"""The utterance corpus: short WAVs of real (Piper) speech in utterances/, with the exact text they say."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from game_client_demo.wav import read_wav_mono16
from loadtest.measure import speech_end_sample

UTTERANCES_DIR = Path(__file__).parent / "utterances"


@dataclass(frozen=True, slots=True)
class Utterance:
    name: str
    text: str
    pcm: np.ndarray  # mono int16
    sample_rate: int
    speech_end: int  # sample index just past the last speech sample

    @property
    def seconds(self) -> float:
        return self.pcm.size / self.sample_rate


def load_utterances(folder: Path = UTTERANCES_DIR) -> list[Utterance]:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    utterances = []
    for entry in manifest["utterances"]:
        pcm, rate = read_wav_mono16(folder / entry["file"])
        utterances.append(Utterance(Path(entry["file"]).stem, entry["text"], pcm, rate, speech_end_sample(pcm, rate)))
    if not utterances:
        raise ValueError(f"{folder}/manifest.json lists no utterances")
    return utterances
