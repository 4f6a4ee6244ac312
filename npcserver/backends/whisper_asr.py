"""Speech recognition with faster-whisper (CTranslate2), from a local model folder only."""

from __future__ import annotations

import logging
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

from npcserver.audio import ASR_SAMPLE_RATE
from npcserver.backends.base import Transcript

# faster-whisper's own defaults for the "is this silence?" check, so a batch drops the same
# non-speech windows that `transcribe` drops.
_NO_SPEECH_THRESHOLD = 0.6
_LOG_PROB_THRESHOLD = -1.0
_MAX_INITIAL_TIMESTAMP_INDEX = 50  # faster-whisper's max_initial_timestamp (1 s) in 20 ms steps


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

    def transcribe_batch(self, audios: list[np.ndarray]) -> list[Transcript]:
        """Transcribe several utterances with one encoder pass and one greedy decode over the batch.

        Gives the same text as `transcribe` for each utterance: the features are cut and padded to
        whisper's 30 s window exactly as faster-whisper does, and the prompt, suppressed tokens and
        silence check are the same. A multilingual model with no language set detects each one's
        language from the same encoder pass (`transcribe` encodes the window again with its last
        10 ms frame, so only a borderline detection could differ). Utterances longer than one
        window, which faster-whisper decodes window by window, go through `transcribe` alone.
        """
        samples = [np.ascontiguousarray(audio, dtype=np.float32) for audio in audios]
        results: list[Transcript | None] = [None] * len(samples)
        window = self._model.feature_extractor.nb_max_frames
        batch: list[int] = []
        features: list[np.ndarray] = []
        for index, utterance in enumerate(samples):
            seconds = utterance.size / ASR_SAMPLE_RATE
            mel = self._model.feature_extractor(utterance) if utterance.size else None
            content_frames = 0 if mel is None else mel.shape[-1] - 1  # faster-whisper leaves out the last frame
            if mel is None or content_frames <= 0:  # (almost) no audio: faster-whisper decodes nothing either
                results[index] = Transcript(text="", language=self._language or "en", audio_seconds=seconds)
            elif content_frames > window:
                results[index] = self.transcribe(utterance)
            else:
                padded = np.zeros((mel.shape[0], window), dtype=np.float32)
                padded[:, :content_frames] = mel[:, :content_frames]
                batch.append(index)
                features.append(padded)
        if batch:
            decoded = self._decode_windows(np.stack(features))
            for index, (text, language) in zip(batch, decoded, strict=True):
                seconds = samples[index].size / ASR_SAMPLE_RATE
                results[index] = Transcript(text=text, language=language, audio_seconds=seconds)
        return [result for result in results if result is not None]

    def _decode_windows(self, features: np.ndarray) -> list[tuple[str, str]]:
        """Greedy decode of a [batch, mels, 3000] feature stack: (text, language) per window."""
        model = self._model
        encoded = model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)))
        if self._language is not None:
            languages = [self._language] * features.shape[0]
        else:  # ranked (token, probability) pairs per window; the token looks like '<|de|>'
            languages = [ranked[0][0][2:-2] for ranked in model.model.detect_language(encoded)]
        tokenizers = {
            language: Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
            for language in set(languages)
        }
        tokenizer = tokenizers[languages[0]]  # decoding and suppression do not depend on the language
        suppressed = sorted(
            {
                *tokenizer.non_speech_tokens,
                tokenizer.transcribe,
                tokenizer.translate,
                tokenizer.sot,
                tokenizer.sot_prev,
                tokenizer.sot_lm,
                tokenizer.no_speech,
            }
        )
        prompts = [[*tokenizers[language].sot_sequence, tokenizer.no_timestamps] for language in languages]
        outputs = model.model.generate(
            encoded,
            prompts,
            beam_size=1,
            max_length=model.max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppressed,
            max_initial_timestamp_index=_MAX_INITIAL_TIMESTAMP_INDEX,
        )
        decoded = []
        for output, language in zip(outputs, languages, strict=True):
            tokens = output.sequences_ids[0]
            # faster-whisper's average log-probability, used with no_speech_prob to skip silence.
            average_logprob = output.scores[0] * len(tokens) / (len(tokens) + 1)
            silent = output.no_speech_prob > _NO_SPEECH_THRESHOLD and average_logprob <= _LOG_PROB_THRESHOLD
            decoded.append(("" if silent else tokenizer.decode(tokens).strip(), language))
        return decoded
