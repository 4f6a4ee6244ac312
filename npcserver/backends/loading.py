"""Loading the real backends: which device, how many threads, which precision, then each model warmed.

Where the weights come from is `npcserver.models` (resolve, prepare); this module only loads them,
so imports go one way: backends -> models. Heavy libraries (torch, transformers, faster-whisper,
piper) are imported inside the functions that need them.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from npcserver.models import (
    ModelError,
    available_voice_names,
    knowledge_model_names,
    prepare_knowledge_models,
    prepare_models,
    resolve_asr_model,
    resolve_knowledge_models,
    resolve_llm_model,
    resolve_piper_voice,
    resolve_turn_detector,
)

if TYPE_CHECKING:
    from npcserver.backends import Backends
    from npcserver.backends.base import SentenceEmbedder
    from npcserver.backends.sentence_end import SentenceEndScorer
    from npcserver.backends.whisper_asr import WhisperTranscriber
    from npcserver.config import Settings

log = logging.getLogger(__name__)

Device = Literal["cpu", "cuda"]


def pick_device(setting: str) -> Device:
    if setting == "cpu":
        return "cpu"
    import torch

    if setting == "cuda":
        if not torch.cuda.is_available():
            raise ModelError("device 'cuda' was asked for but torch sees no CUDA device")
        return "cuda"
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True, slots=True)
class ThreadBudget:
    asr: int
    llm: int
    tts: int


def thread_budget(settings: Settings, cores: int | None = None) -> ThreadBudget:
    """CPU threads per stage: automatic from the core count, each overridable (0 = automatic).

    The rule comes from measurements on a 2-core machine shared with other work (see the report):
    - torch decodes one token per step with an OpenMP team that waits at a barrier after every
      operation: when any of its threads is descheduled, all of them stall. With 2 threads on 2 busy
      cores SmolLM2 fell from ~37 to 2-6 tokens/s; with 1 thread it kept 35-38 tokens/s, also right
      after faster-whisper ran with 2 threads (MODELS.md snag 5 was torch at 2 threads). So on small
      machines the LLM gets 1 thread, and on larger ones never more than half the cores.
    - ASR runs at the start of a turn while that session's LLM and TTS are idle, and CTranslate2
      degrades gracefully when shared: up to 4 threads, but at most half the cores past 3 cores.
      (tiny.en, 3.8 s utterance: 1 thread 0.78 s, 2 threads 0.55 s.)
    - TTS speaks a clause while the LLM writes the next one; with 2 threads it only took cores from
      the LLM (clause 0.5-1.3 s vs 0.7-0.9 s with 1 thread while decoding), so 1 thread on small
      machines, a quarter of the cores (at most 4) on larger ones. onnxruntime spinning is off.
    """
    cores = max(1, cores if cores is not None else (os.cpu_count() or 1))
    if cores <= 3:
        auto = ThreadBudget(asr=cores, llm=1, tts=1)
    else:
        auto = ThreadBudget(asr=min(4, cores // 2), llm=min(8, cores // 2), tts=min(4, cores // 4))
    return ThreadBudget(
        asr=settings.asr_threads or auto.asr,
        llm=settings.llm_threads or auto.llm,
        tts=settings.tts_threads or auto.tts,
    )


def resolve_llm_precision(setting: str, device: Device) -> str:
    """The number format the dialogue model runs in: the setting, or for 'auto' the best for this machine.

    On a CPU, int8 (torch dynamic quantization), AMX or not. bfloat16 prefills a 300-token prompt
    faster on AMX (133-232 ms), but in the server, one LLM thread beside ASR and TTS, it was slower:
    real speech, one player, voice to voice p50 680 ms against int8's 544 ms (reply audio 744 vs 511
    ms), for the same recall once facts are looked up and checked (85 % on the unseen set, README
    "Grounded replies"). Without AMX bfloat16 is emulated (AVX2: prefill 8 s), and float32 decodes at
    half int8's speed for no recall gained (83 vs 85 %).
    """
    if setting != "auto":
        if setting == "int8" and device == "cuda":
            raise ModelError("llm_precision 'int8' is torch dynamic quantization, CPU only: use fp16 or bf16 on CUDA")
        return setting
    if device == "cuda":
        return "fp16"
    return "int8"


def resolve_sentence_end_precision(device: Device) -> str:
    """The sentence-end model's number format: never int8 (AUC 0.92 -> 0.86). On a CPU, bfloat16 where
    it is computed natively (AVX512-BF16 or AMX: ~70 ms a call against float32's ~130 on one EPYC
    thread), else float32 (emulated bfloat16 is many times slower)."""
    if device == "cuda":
        return "fp16"
    import torch

    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if native_bf16 else "fp32"


def load_sentence_end_model(settings: Settings, device: Device) -> SentenceEndScorer:
    """The model that reads whether a pause's words end a sentence, loaded and warmed (prepared models)."""
    from npcserver.backends.sentence_end import SentenceEndScorer

    model = SentenceEndScorer(
        resolve_llm_model(settings.sentence_end_model, settings), device=device,
        precision=resolve_sentence_end_precision(device),
    )
    model.sentence_end_probability("Hello there")
    return model




# CTranslate2's CUDA build (faster-whisper's engine) loads CUDA 12's cuBLAS and cuDNN 9 when it first
# computes; a machine whose torch brings CUDA 13 may have neither.
_CT2_CUDA_HINT = (
    "CTranslate2's CUDA build runs on CUDA 12's cuBLAS and cuDNN 9 (pip install nvidia-cublas-cu12 "
    "'nvidia-cudnn-cu12==9.*', their lib folders on LD_LIBRARY_PATH)"
)


def load_transcriber(settings: Settings, device: Device, cpu_threads: int) -> tuple[WhisperTranscriber, Device]:
    """faster-whisper on `device`, warmed by one second of silence, and the device it really runs on.

    With `device = "auto"` a CUDA machine where CTranslate2 cannot run (see `_CT2_CUDA_HINT`) still
    serves: ASR falls back to the CPU with a warning, the LLM and TTS keep the GPU. With
    `device = "cuda"` that is an error, since the operator asked for the GPU.
    """
    import numpy as np

    from npcserver.backends.whisper_asr import WhisperTranscriber

    def load(on: Device) -> WhisperTranscriber:
        transcriber = WhisperTranscriber(
            resolve_asr_model(settings.asr_model, settings.cache_dir),
            device=on,
            compute_type="float16" if on == "cuda" else "int8",
            cpu_threads=cpu_threads,
            window_s=settings.asr_window_s,
        )
        transcriber.transcribe(np.zeros(16_000, dtype=np.float32))
        return transcriber

    if device == "cpu":
        return load("cpu"), "cpu"
    try:
        return load("cuda"), "cuda"
    except (RuntimeError, OSError, ValueError) as error:
        if settings.device == "cuda":
            raise ModelError(f"speech recognition could not run on CUDA ({error}). {_CT2_CUDA_HINT}") from error
        log.warning("speech recognition runs on the CPU: CTranslate2 could not use CUDA (%s). %s", error, _CT2_CUDA_HINT)
        return load("cpu"), "cpu"


def load_sentence_embedder(settings: Settings, device: str = "cpu", spec: str | None = None) -> SentenceEmbedder:
    """The fact lookup's encoders (`spec`, default `settings.knowledge_model`, not 'none'), prepared and
    warmed, on one thread: the lookup runs on its own worker beside the ASR and LLM threads."""
    from npcserver.backends.sentence_embedders import open_embedder

    prepare_knowledge_models(settings)
    embedder = open_embedder(resolve_knowledge_models(spec or settings.knowledge_model, settings.cache_dir), device, threads=1)
    embedder.embed(["Hello."])
    return embedder


def load_real_backends(settings: Settings) -> Backends:
    """Prepare, load and warm the three real models (blocking: seconds)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import numpy as np

    from npcserver.backends import Backends
    from npcserver.backends.base import ChatMessage, DialogueModel, GenerationOptions, Transcriber, VoiceSettings
    from npcserver.backends.batched_asr import BatchingTranscriber, batching_wanted
    from npcserver.backends.batched_llm import BatchedDialogue
    from npcserver.backends.piper_tts import PiperSynthesizer
    from npcserver.backends.transformers_llm import TransformersDialogue

    prepare_models(settings)
    device = pick_device(settings.device)
    threads = thread_budget(settings)
    log.info("models on %s, threads asr=%d llm=%d tts=%d", device, threads.asr, threads.llm, threads.tts)

    default_voice = resolve_piper_voice(settings.tts_voice, settings.voices)
    if default_voice is None:
        raise ModelError(
            f"TTS voice {settings.tts_voice!r}: not an embedded voice ({', '.join(available_voice_names()) or 'none installed'}) "
            f"nor a .onnx file (with its .onnx.json) in {settings.voices} or at that path"
        )

    start = time.monotonic()
    transcriber, asr_device = load_transcriber(settings, device, threads.asr)
    asr: Transcriber = transcriber
    if batching_wanted(settings.asr_batching, asr_device):
        transcriber.transcribe_batch([np.zeros(16_000, dtype=np.float32)] * 2)  # warm the batched shapes too
        asr = BatchingTranscriber(transcriber, window_ms=settings.asr_batch_window_ms, max_batch=settings.asr_batch_max)
        log.info("ASR batching on: window %d ms, up to %d utterances", settings.asr_batch_window_ms, settings.asr_batch_max)
    log.info("ASR %s loaded and warmed in %.2f s", settings.asr_model, time.monotonic() - start)

    start = time.monotonic()
    dialogue = TransformersDialogue(
        resolve_llm_model(settings.llm_model, settings),
        device=device,
        threads=threads.llm,
        precision=resolve_llm_precision(settings.llm_precision, device),
        prefix_cache=settings.llm_prefix_cache,
        prefix_cache_tokens=settings.llm_prefix_cache_tokens,
    )
    for _piece in dialogue.generate(
        [ChatMessage("user", "Hello")], GenerationOptions(max_new_tokens=1, temperature=0.0), lambda: False
    ):
        pass
    llm: DialogueModel = dialogue
    if settings.llm_batching:
        llm = BatchedDialogue(dialogue, max_batch=settings.llm_batch_max)
        log.info("LLM batching on: up to %d replies per forward pass", settings.llm_batch_max)
    log.info("LLM %s (%s) loaded and warmed in %.2f s", settings.llm_model, dialogue.precision, time.monotonic() - start)

    embedder = action_embedder = None
    if settings.knowledge_model != "none":
        start = time.monotonic()
        embedder = load_sentence_embedder(settings, device)
        if knowledge_model_names(settings.action_model) != knowledge_model_names(settings.knowledge_model)[:1]:
            action_embedder = load_sentence_embedder(settings, device, settings.action_model)
        log.info("knowledge lookup %s (actions: %s) loaded in %.2f s", settings.knowledge_model, settings.action_model,
                 time.monotonic() - start)

    turn_detector = None
    if settings.turn_detector != "none":
        from npcserver.backends.smart_turn import SmartTurnDetector

        start = time.monotonic()
        turn_detector = SmartTurnDetector(resolve_turn_detector(settings.turn_detector))
        turn_detector.turn_complete_probability(np.zeros(16_000, dtype=np.float32))
        log.info("turn detector %s loaded in %.2f s", settings.turn_detector, time.monotonic() - start)

    sentence_end = None
    if settings.sentence_end_model != "none":
        start = time.monotonic()
        sentence_end = load_sentence_end_model(settings, device)
        log.info("sentence-end model %s (%s) loaded in %.2f s", settings.sentence_end_model, sentence_end.precision,
                 time.monotonic() - start)

    start = time.monotonic()
    synthesizer = PiperSynthesizer(
        default_voice, threads=threads.tts, voices_dir=settings.voices, use_cuda=device == "cuda"
    )
    synthesizer.synthesize("Hello.", VoiceSettings(model=str(default_voice)))
    log.info("TTS %s loaded and warmed in %.2f s", settings.tts_voice, time.monotonic() - start)
    return Backends(asr, llm, synthesizer, embedder, turn_detector, sentence_end, action_embedder)
