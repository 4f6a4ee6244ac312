"""The fact lookup's adapters: what is trained is what `npcserver prepare` merges (no model weights needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from npcserver.backends import lora
from npcserver.models import _knowledge_target


class _Block(torch.nn.Module):
    """Named like a BERT layer, so the adapters find their Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.query = torch.nn.Linear(6, 6)
        self.intermediate = torch.nn.Module()
        self.intermediate.dense = torch.nn.Linear(6, 12)
        self.pooler = torch.nn.Module()
        self.pooler.dense = torch.nn.Linear(12, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate.dense(self.query(x))


def _trained_block() -> tuple[_Block, dict[str, lora.LoRALinear]]:
    torch.manual_seed(0)
    block = _Block()
    adapters = lora.add_adapters(block, rank=2, alpha=4.0)
    with torch.no_grad():
        for adapter in adapters.values():
            adapter.b.normal_()  # as if trained: B starts at zero
    return block, adapters


def test_only_the_attention_and_feed_forward_layers_get_adapters() -> None:
    block, adapters = _trained_block()
    assert sorted(adapters) == ["intermediate.dense", "query"]  # not the pooler
    assert all(not parameter.requires_grad for parameter in block.pooler.parameters())
    assert all(adapter.a.requires_grad and adapter.b.requires_grad for adapter in adapters.values())


def test_a_fresh_adapter_changes_nothing() -> None:
    torch.manual_seed(0)
    plain = _Block()
    x = torch.randn(3, 6)
    before = plain(x)
    lora.add_adapters(plain, rank=2, alpha=4.0)
    assert torch.allclose(plain(x), before)


def test_merging_a_saved_adapter_gives_what_the_adapted_encoder_computed(tmp_path: Path) -> None:
    block, adapters = _trained_block()
    x = torch.randn(3, 6)
    with torch.no_grad():
        adapted = block(x)
    lora.save_adapters(adapters, tmp_path / "block.npz")

    torch.manual_seed(0)
    fresh = _Block()  # the same initial weights, no adapters
    lora.merge_adapters(fresh, tmp_path / "block.npz")
    with torch.no_grad():
        merged = fresh(x)
    assert np.abs((merged - adapted).numpy()).max() < 5e-3  # A and B are kept in fp16


def test_an_adapter_for_other_layers_is_refused(tmp_path: Path) -> None:
    _, adapters = _trained_block()
    lora.save_adapters(adapters, tmp_path / "block.npz")
    other = torch.nn.Module()
    other.key = torch.nn.Linear(6, 6)
    with pytest.raises(ValueError, match="lacks"):
        lora.merge_adapters(other, tmp_path / "block.npz")


@pytest.mark.parametrize("base", ["all-minilm-l6-v2", "all-mpnet-base-v2"])
def test_each_embedded_encoder_has_its_committed_adapter(base: str) -> None:
    with np.load(lora.ADAPTERS / f"{base}-npc.npz") as saved:
        assert float(saved["scale"]) > 0
        assert any(key.endswith(".a") for key in saved.files)


def test_a_new_adapter_is_merged_into_a_new_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The prepared folder's name holds the adapter's key, so a retrained adapter is merged again."""
    adapter = tmp_path / "adapter.npz"
    adapter.write_bytes(b"one")
    monkeypatch.setattr("npcserver.models._minilm_source", lambda: tmp_path)
    monkeypatch.setattr("npcserver.models._adapter_file", lambda name: adapter)
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    plain = _knowledge_target("all-minilm-l6-v2", tmp_path)
    first = _knowledge_target("all-minilm-l6-v2-npc", tmp_path)
    adapter.write_bytes(b"two")
    assert len({plain, first, _knowledge_target("all-minilm-l6-v2-npc", tmp_path)}) == 3
