"""Speech recognition with faster-whisper (CTranslate2), from a local model folder only."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio

from npcserver.audio import ASR_SAMPLE_RATE
from npcserver.backends.base import Transcript

# faster-whisper's own defaults for the "is this silence?" check, so a batch drops the same
# non-speech windows that `transcribe` drops.
_NO_SPEECH_THRESHOLD = 0.6
_LOG_PROB_THRESHOLD = -1.0
_MAX_INITIAL_TIMESTAMP_INDEX = 50  # faster-whisper's max_initial_timestamp (1 s) in 20 ms steps
# faster-whisper's test for a decode stuck in a loop ("how much, how much, how much..."): its text
# compresses too well. A short window is redone with the full one when a decode loops.
_COMPRESSION_RATIO_THRESHOLD = 2.4
_FRAMES_PER_SECOND = 100  # whisper's mel frames: 10 ms each
# Speech is 3-5 tokens a second; a decode longer than this many per second of audio is looping.
_MAX_TOKENS_PER_SECOND = 12
_MIN_TOKEN_ALLOWANCE = 16


class WhisperTranscriber:
    """Implements `Transcriber` for one short, already end-pointed utterance at a time.

    `language=None` means English for English-only models ('*.en') and detection otherwise.

    `window_s` < 30 encodes a short utterance in a window of that many seconds instead of whisper's
    full 30 s: the encoder's cost grows with the window, so 10 s makes ASR ~5x faster on a CPU
    (tiny.en: ~500 -> ~100 ms). Whisper was trained on 30 s windows; in a short one it sometimes
    loops ("how much, how much, ...") or gets a word or punctuation mark wrong. A looping decode
    (faster-whisper's compression-ratio test, or more tokens than speech can hold) is redone with
    the full window, so only the small accuracy cost remains (measured: loadtest's WER).
    """

    def __init__(
        self,
        model_path: Path | str,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 1,
        language: str | None = None,
        window_s: float = 30.0,
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
        full_window = self._model.feature_extractor.nb_max_frames
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        # the encoder halves the frames with a stride-2 convolution: keep the count even
        self._window_frames = min(full_window, int(window_s * _FRAMES_PER_SECOND) // 2 * 2)

    @property
    def short_window(self) -> bool:
        return self._window_frames < self._model.feature_extractor.nb_max_frames

    def transcribe(self, audio: np.ndarray) -> Transcript:
        if self.short_window:
            return self.transcribe_batch([audio])[0]
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        if samples.size == 0:
            return Transcript(text="", language=self._language or "en", audio_seconds=0.0)
        return self._transcribe_whole(samples)

    def transcribe_batch(self, audios: list[np.ndarray]) -> list[Transcript]:
        """Transcribe several utterances with one encoder pass and one greedy decode over the batch.

        With the full window this gives the same text as faster-whisper's `transcribe` for each
        utterance: the features are cut and padded exactly as faster-whisper does, and the prompt, suppressed tokens and
        silence check are the same. A multilingual model with no language set detects each one's
        language from the same encoder pass (`transcribe` encodes the window again with its last
        10 ms frame, so only a borderline detection could differ). Utterances longer than one
        window, which faster-whisper decodes window by window, go through `transcribe` alone.
        """
        samples = [np.ascontiguousarray(audio, dtype=np.float32) for audio in audios]
        results: list[Transcript | None] = [None] * len(samples)
        full_window = self._model.feature_extractor.nb_max_frames
        batch: list[int] = []
        mels: list[np.ndarray] = []
        for index, utterance in enumerate(samples):
            seconds = utterance.size / ASR_SAMPLE_RATE
            mel = self._model.feature_extractor(utterance) if utterance.size else None
            content_frames = 0 if mel is None else mel.shape[-1] - 1  # faster-whisper leaves out the last frame
            if mel is None or content_frames <= 0:  # (almost) no audio: faster-whisper decodes nothing either
                results[index] = Transcript(text="", language=self._language or "en", audio_seconds=seconds)
            elif content_frames > full_window:  # faster-whisper decodes it window by window
                results[index] = self._transcribe_whole(utterance)
            else:
                batch.append(index)
                mels.append(mel[:, :content_frames])
        if not batch:
            return [result for result in results if result is not None]
        longest = max(mel.shape[-1] for mel in mels)
        window = min(full_window, max(self._window_frames, (longest + 1) // 2 * 2))
        decoded = self._decode_windows(_padded(mels, window), _token_cap(longest) if window < full_window else None)
        if window < full_window:
            redo = [i for i, (text, _language, capped, _last_word) in enumerate(decoded) if capped or _looping(text)]
            if redo:
                again = self._decode_windows(_padded([mels[i] for i in redo], full_window), None)
                for i, retry in zip(redo, again, strict=True):
                    decoded[i] = retry
        for index, (text, language, _capped, last_word) in zip(batch, decoded, strict=True):
            seconds = samples[index].size / ASR_SAMPLE_RATE
            results[index] = Transcript(text, language, seconds, last_word_probability=last_word)
        return [result for result in results if result is not None]

    def _transcribe_whole(self, samples: np.ndarray) -> Transcript:
        """faster-whisper's own transcription: full 30 s windows, one after another."""
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
        return Transcript(text=text, language=info.language, audio_seconds=samples.size / ASR_SAMPLE_RATE)

    def _decode_windows(
        self, features: np.ndarray, max_tokens: int | None
    ) -> list[tuple[str, str, bool, float | None]]:
        """Greedy decode of a [batch, mels, frames] feature stack: (text, language, stopped at
        max_tokens, the last word's probability) per window. `max_tokens=None`: up to the model's
        length limit."""
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
        prompt_length = len(prompts[0])
        # The last word's probability comes from each step's logits over the whole vocabulary (51,864
        # floats a token). Kept on a CPU, not on a GPU, where a batch's steps would all stay in GPU
        # memory: there the transcripts carry no probability and the guessed-word rule is off.
        word_probabilities = model.model.device == "cpu"
        max_length = model.max_length if max_tokens is None else min(model.max_length, prompt_length + max_tokens)
        outputs = model.model.generate(
            encoded,
            prompts,
            beam_size=1,
            max_length=max_length,
            return_scores=True,
            return_logits_vocab=word_probabilities,  # the same decode, no second pass
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
            capped = max_tokens is not None and len(tokens) >= max_tokens
            text = "" if silent else tokenizer.decode(tokens).strip()
            last_word = None
            if text and word_probabilities:
                last_word = _last_word_probability(model.hf_tokenizer, tokens, output.logits[0])
            decoded.append((text, language, capped, last_word))
        return decoded


def _padded(mels: list[np.ndarray], frames: int) -> np.ndarray:
    """Stack mel spectrograms into a [batch, mels, frames] array, zero-padded as faster-whisper pads."""
    stacked = np.zeros((len(mels), mels[0].shape[0], frames), dtype=np.float32)
    for row, mel in zip(stacked, mels, strict=True):
        row[:, : mel.shape[-1]] = mel[:, :frames]
    return stacked


def _last_word_probability(hf_tokenizer: Any, tokens: list[int], logits: list[ctranslate2.StorageView]) -> float | None:
    """The probability greedy decoding gave the last word's least likely token (trailing punctuation
    left out): whisper's own confidence that the audio holds that word, not a guess from the words before."""
    last_word: list[int] = []  # positions in `tokens`, last first
    for position in range(len(tokens) - 1, -1, -1):
        piece = hf_tokenizer.decode([tokens[position]])
        if not any(character.isalnum() for character in piece):
            if last_word:
                break
            continue  # "." or "?" after the word
        last_word.append(position)
        if piece.startswith(" "):  # the word's first token
            break
    if not last_word:
        return None
    return min(_token_probability(logits[position], tokens[position]) for position in last_word)


def _token_probability(step_logits: ctranslate2.StorageView, token: int) -> float:
    scores = np.asarray(step_logits, dtype=np.float64).reshape(-1)
    shifted = np.exp(scores - scores.max())
    return float(shifted[token] / shifted.sum())


def _token_cap(frames: int) -> int:
    """The most tokens speech of this many mel frames can hold; a longer decode is looping."""
    return _MIN_TOKEN_ALLOWANCE + int(frames / _FRAMES_PER_SECOND * _MAX_TOKENS_PER_SECOND)


def _looping(text: str) -> bool:
    """Whether a decode looks stuck in a loop: a phrase of 2+ words said twice in a row, or
    faster-whisper's compression-ratio test. A false alarm only costs a full-window decode."""
    if not text:
        return False
    words = re.findall(r"[a-z0-9']+", text.lower())
    for size in range(2, len(words) // 2 + 1):
        for start in range(len(words) - 2 * size + 1):
            if words[start : start + size] == words[start + size : start + 2 * size]:
                return True
    return get_compression_ratio(text) > _COMPRESSION_RATIO_THRESHOLD
