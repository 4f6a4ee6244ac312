"""Smart Turn v3.2 (pipecat's semantic end-of-turn model, BSD-2) through onnxruntime.

Input: whisper log-mel features of the last 8 s of 16 kHz audio, left-padded with zeros when
shorter ([1, 80, 800]); output: the probability that the turn is complete. ~50 ms a call on one
CPU thread: run it on its own worker, never on the event loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WINDOW_SAMPLES = 8 * 16_000


class SmartTurnDetector:
    def __init__(self, model_path: Path, threads: int = 1) -> None:
        import onnxruntime
        from transformers import WhisperFeatureExtractor

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self._features = WhisperFeatureExtractor(chunk_length=8)

    def turn_complete_probability(self, audio: np.ndarray) -> float:
        audio = np.asarray(audio, dtype=np.float32)[-WINDOW_SAMPLES:]
        audio = np.pad(audio, (WINDOW_SAMPLES - audio.size, 0))  # the model was trained on left-padded windows
        features = self._features(
            audio, sampling_rate=16_000, padding="max_length", max_length=WINDOW_SAMPLES,
            truncation=True, do_normalize=True, return_tensors="np",
        ).input_features.astype(np.float32)
        (probability,) = self._session.run(None, {"input_features": features})
        return float(np.asarray(probability).reshape(-1)[0])
