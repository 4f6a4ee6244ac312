"""Speech recognition with faster-whisper (CTranslate2), from a local model folder only."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel

from npcserver.audio import ASR_SAMPLE_RATE
from npcserver.backends.base import Transcript


class WhisperTranscriber:
    """Implements `Transcriber` for one short, already end-pointed utterance at a time.

    `language=None` means English for English-only models ('*.en') and detection otherwise.
    """

    def __init__(
        self,
        model_path: Path | str,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 1,
        language: str | None = None,
    ) -> None:
        # faster-whisper logs two INFO lines per call ("Processing audio with duration ..."): one per
        # player utterance would drown the server's own log.
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        path = Path(model_path)
        if not (path / "model.bin").is_file():
            # A bare name would make faster-whisper download from a hub: refuse instead.
            raise FileNotFoundError(f"{path} is not a faster-whisper model folder (no model.bin)")
        self._model = WhisperModel(
            str(path),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=1,
            local_files_only=True,
        )
        self._language = language if language is not None else (None if self._model.model.is_multilingual else "en")

    def transcribe(self, audio: np.ndarray) -> Transcript:
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        seconds = samples.size / ASR_SAMPLE_RATE
        if samples.size == 0:
            return Transcript(text="", language=self._language or "en", audio_seconds=0.0)
        segments, info = self._model.transcribe(
            samples,
            language=self._language,
            beam_size=1,
            temperature=0.0,  # no fallback re-decoding: predictable latency for short turns
            vad_filter=False,  # the endpointer already cut the utterance
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        # The segments are a lazy generator: decoding happens here, inside this worker thread.
        text = " ".join(segment.text.strip() for segment in segments).strip()
        return Transcript(text=text, language=info.language, audio_seconds=seconds)
