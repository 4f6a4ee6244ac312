"""Speech synthesis with Piper voices (onnxruntime), with per-NPC speed and pitch, and phoneme timing."""

from __future__ import annotations

import contextlib
import json
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from piper import AudioChunk, PiperVoice, SynthesisConfig
from piper.config import PiperConfig
from piper.patch_voice_with_alignment import add_alignment_output

from npcserver.audio import float_to_pcm16, resample
from npcserver.backends.base import Speech, VoiceSettings
from npcserver.models import resolve_piper_voice

# Resampling ratios are rounded to a fraction with at most this denominator: the polyphase filter
# stays short, and the pitch error stays far below what an ear can hear (under 1 cent; ~5 are audible).
_MAX_RATIO_DENOMINATOR = 100

# Piper rounds every phoneme's duration up to whole frames, and the short gaps between phonemes get
# at least one frame: a part of each clause that length_scale does not stretch. Measured on
# en_US-joe-medium: duration ~ fixed + stretchable * length_scale, fixed ~ 0.35 * stretchable (noise
# on). The pitch shift needs the whole clause r times longer, so it stretches the rest that much more.
_UNSTRETCHED_SHARE = 0.35


def _session_options(threads: int) -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle onnxruntime threads spin by default, burning the cores the LLM needs between clauses.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _with_alignment_output(model_path: Path) -> bytes:
    """The voice model with the samples of each phoneme id as a second output (lip-sync needs them).

    It is the model's own rounded phoneme durations (its Ceil tensor), computed anyway: exposing it
    costs no synthesis time. piper-tts patches it the same way for `include_alignments`.
    """
    model = onnx.load(str(model_path))
    with contextlib.suppress(ValueError):  # patched already (or no such tensor: its clauses carry no phonemes)
        add_alignment_output(model)
    return model.SerializeToString()  # type: ignore[no-any-return]


def load_piper_voice(model_path: Path, threads: int, use_cuda: bool = False) -> PiperVoice:
    """Like `PiperVoice.load(..., include_alignments=True)`, but with our thread budget.

    piper-tts 1.8's `PiperVoice.load` always passes a default `SessionOptions()` (no way to set
    threads), so we build the onnxruntime session ourselves and hand it to the `PiperVoice` dataclass.
    """
    config = PiperConfig.from_dict(
        json.loads(model_path.with_name(model_path.name + ".json").read_text(encoding="utf-8"))
    )
    providers: list[str] = ["CPUExecutionProvider"]
    if use_cuda and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = onnxruntime.InferenceSession(
        _with_alignment_output(model_path), sess_options=_session_options(threads), providers=providers
    )
    return PiperVoice(session=session, config=config)


def _phonemes_of(chunks: list[AudioChunk]) -> list[tuple[str, int]]:
    """(phoneme, samples at the voice's rate) of every sentence in order; [] if one has no alignment."""
    phonemes: list[tuple[str, int]] = []
    for chunk in chunks:
        if not chunk.phoneme_alignments:
            return []
        phonemes.extend((a.phoneme, int(a.num_samples)) for a in chunk.phoneme_alignments)
    return phonemes


def _rescaled(phonemes: list[tuple[str, int]], factor: float) -> tuple[tuple[str, int], ...]:
    """Phoneme lengths after the audio was resampled to `factor` times as many samples.

    Phoneme ends are scaled and rounded, not each length, so rounding errors never add up.
    """
    scaled: list[tuple[str, int]] = []
    end = start = 0
    for phoneme, samples in phonemes:
        end += samples
        scaled_end = round(end * factor)
        scaled.append((phoneme, scaled_end - start))
        start = scaled_end
    return tuple(scaled)


def _retime(samples: np.ndarray, factor: float) -> np.ndarray:
    """Make audio play `factor` times faster (fewer samples), by resampling: pitch rises by `factor`."""
    if abs(factor - 1.0) < 1e-6:
        return samples
    ratio = Fraction(factor).limit_denominator(_MAX_RATIO_DENOMINATOR)
    return resample(samples, from_rate=ratio.numerator, to_rate=ratio.denominator)


class PiperSynthesizer:
    """Implements `Synthesizer`. Voices load on first use and stay loaded.

    Every clause comes back at the default voice's sample rate, whatever voice a persona uses.
    """

    def __init__(
        self, default_voice_path: Path, threads: int = 1, voices_dir: Path | None = None, *, use_cuda: bool = False
    ) -> None:
        self._threads = threads
        self._voices_dir = voices_dir
        self._use_cuda = use_cuda
        self._voices: dict[Path, PiperVoice] = {}
        self._lock = threading.Lock()  # voice loading only; synthesis itself is thread safe in onnxruntime
        self._default_path = Path(default_voice_path)
        self._sample_rate = self._voice(self._default_path).config.sample_rate

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    def _voice(self, path: Path) -> PiperVoice:
        with self._lock:
            voice = self._voices.get(path)
            if voice is None:
                voice = self._voices[path] = load_piper_voice(path, self._threads, self._use_cuda)
            return voice

    def voice_path(self, name_or_path: str) -> Path:
        if not name_or_path.strip():
            return self._default_path
        path = resolve_piper_voice(name_or_path, self._voices_dir)
        if path is None:
            raise FileNotFoundError(
                f"Piper voice {name_or_path!r} not found (no such embedded voice or .onnx file with its .onnx.json)"
            )
        return path

    def synthesize(self, text: str, voice: VoiceSettings) -> Speech:
        piper_voice = self._voice(self.voice_path(voice.model))
        # Pitch: speak slower by r, then play r times faster; pitch moves by r, duration comes back.
        pitch_ratio = 2.0 ** (voice.pitch_semitones / 12.0)
        speed = voice.speed if voice.speed > 0 else 1.0
        config = SynthesisConfig(
            speaker_id=voice.speaker_id,
            length_scale=piper_voice.config.length_scale / speed * pitch_ratio
            + (pitch_ratio - 1.0) * _UNSTRETCHED_SHARE,
        )
        chunks = list(piper_voice.synthesize(text, syn_config=config, include_alignments=True))
        if not chunks:
            return Speech(np.zeros(0, dtype=np.int16))
        spoken = np.concatenate([chunk.audio_float_array for chunk in chunks])
        voice_rate = piper_voice.config.sample_rate
        if pitch_ratio == 1.0:
            audio = resample(spoken, voice_rate, self._sample_rate)
        else:  # one resampling does both the pitch shift and the conversion to the default rate
            audio = _retime(spoken, pitch_ratio * voice_rate / self._sample_rate)
        # scaled by how much the audio really grew, never fitted to it: a wrong alignment stays visible
        phonemes = _rescaled(_phonemes_of(chunks), audio.size / spoken.size)
        return Speech(float_to_pcm16(audio).astype(np.int16, copy=False), phonemes)
