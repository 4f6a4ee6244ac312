"""What lip-sync costs and how well it is timed, on the real Piper voice.

Cost: the same clauses synthesized by Piper's plain model and by the model with its alignment output
(what the server loads), alternating, one thread; plus the phoneme -> viseme mapping. Timing: where
the voice starts and stops being audible in each clause against where the first and last non-silent
viseme starts and ends.

`python -m loadtest.visemes [--repeats N]`
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime
from piper import PiperVoice
from piper.config import PiperConfig

from npcserver.backends.base import VoiceSettings
from npcserver.backends.piper_tts import PiperSynthesizer, load_piper_voice
from npcserver.conversation.visemes import visemes_of
from npcserver.models import embedded_voice_path

# Clauses as the server cuts them: openers, facts, a deflection, fillers.
CLAUSES = (
    "Aye,",
    "Good day,",
    "Hmph.",
    "Leave it on the anvil.",
    "A plain sword costs 40 silver; repairs cost 5 silver.",
    "Five silver, ready by sundown.",
    "The mine's none of your business. Buying or not?",
    "My late husband Ulf built the forge with his own hands, thirty years ago.",
    "Let me see.",
    "Rooms are three silver a night, and the stew comes with it.",
)
AUDIBLE_DBFS = -40.0  # a 5 ms window louder than this is the voice (the client's speech threshold)
WINDOW_MS = 5


def _plain_voice(threads: int) -> PiperVoice:
    """The embedded voice as Piper loads it by default: no alignment output."""
    path = embedded_voice_path()
    assert path is not None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    config = PiperConfig.from_dict(json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8")))
    return PiperVoice(session=onnxruntime.InferenceSession(str(path), sess_options=options), config=config)


def _audible_span(audio: np.ndarray, rate: int) -> tuple[int, int]:
    """First and last sample of the 5 ms windows where the voice is audible."""
    window = rate * WINDOW_MS // 1000
    frames = audio[: audio.size // window * window].astype(np.float64).reshape(-1, window) / 32768.0
    loud = np.flatnonzero(20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-12) > AUDIBLE_DBFS)
    return int(loud[0] * window), int((loud[-1] + 1) * window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="times each clause is synthesized per model")
    args = parser.parse_args()
    path = embedded_voice_path()
    assert path is not None
    plain, aligned = _plain_voice(1), load_piper_voice(path, threads=1)
    synthesizer = PiperSynthesizer(path, threads=1)
    rate = synthesizer.sample_rate
    for voice in (plain, aligned):  # first runs are slower
        list(voice.synthesize("Warm up."))
    plain_ms, aligned_ms, mapping_ms, onset_ms, offset_ms = [], [], [], [], []
    for _ in range(args.repeats):
        for clause in CLAUSES:
            started = time.perf_counter()
            list(plain.synthesize(clause))
            plain_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            list(aligned.synthesize(clause, include_alignments=True))
            aligned_ms.append((time.perf_counter() - started) * 1000)
    for clause in CLAUSES:
        speech = synthesizer.synthesize(clause, VoiceSettings())
        started = time.perf_counter()
        visemes = visemes_of(speech.phonemes)
        mapping_ms.append((time.perf_counter() - started) * 1000)
        spoken = [v for v in visemes if v.name != "sil"]
        audible_from, audible_to = _audible_span(speech.audio, rate)
        onset_ms.append((spoken[0].start - audible_from) * 1000 / rate)
        offset_ms.append((spoken[-1].start + spoken[-1].duration - audible_to) * 1000 / rate)

    def spread(values: list[float]) -> str:
        return f"median {statistics.median(values):.1f} ms, p95 {np.percentile(values, 95):.1f} ms"

    print(f"{len(CLAUSES)} clauses x {args.repeats}, one thread")
    print(f"Piper synthesis, plain model:           {spread(plain_ms)}")
    print(f"Piper synthesis, with alignment output: {spread(aligned_ms)}")
    print(f"extra per clause (median of the differences): "
          f"{statistics.median(a - p for a, p in zip(aligned_ms, plain_ms, strict=True)):+.2f} ms")
    print(f"phonemes -> visemes: {spread(mapping_ms)}")
    print(f"speech onset, first viseme - audible: median {statistics.median(onset_ms):+.1f} ms, "
          f"max |{max(onset_ms, key=abs):+.1f}| ms")
    print(f"speech end, last viseme - audible:    median {statistics.median(offset_ms):+.1f} ms, "
          f"max |{max(offset_ms, key=abs):+.1f}| ms  ({WINDOW_MS} ms windows, {AUDIBLE_DBFS:g} dBFS)")


if __name__ == "__main__":
    main()
