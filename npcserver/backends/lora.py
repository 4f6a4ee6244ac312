"""Low-rank adapters (LoRA) for the fact lookup's sentence encoders: trained centrally, merged at prepare.

An adapter adds `scale * B @ A` to a Linear layer's weight, with A (rank x in) and B (out x rank)
small. `training/lookup_adapter.py` trains them on invented NPCs; `npcserver prepare` merges the
committed ones (npcserver/backends/lookup_adapters/*.npz, fp16, a few MB) into the encoder's weights
before it exports the encoder to ONNX, so a lookup costs what it cost without one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

# the Linear layers adapted: attention and feed-forward of BERT (MiniLM) and MPNet
TARGET_SUFFIXES = ("query", "key", "value", "attn.q", "attn.k", "attn.v", "attn.o",
                   "attention.output.dense", "intermediate.dense", "output.dense")
ADAPTERS = Path(__file__).parent / "lookup_adapters"


class LoRALinear(torch.nn.Module):
    """A frozen Linear plus a trainable low-rank update, which starts at zero."""

    def __init__(self, linear: torch.nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.linear = linear
        self.scale = alpha / rank
        self.a = torch.nn.Parameter(torch.randn(rank, linear.in_features) / math.sqrt(linear.in_features))
        self.b = torch.nn.Parameter(torch.zeros(linear.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + (x @ self.a.T @ self.b.T) * self.scale


def _adaptable(model: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str, torch.nn.Linear]]:
    """Every adapted Linear of the encoder by its full name, with its parent module and attribute."""
    found = {}
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, torch.nn.Linear) and name.endswith(TARGET_SUFFIXES):
                found[name] = (parent, child_name, child)
    return found


def add_adapters(model: torch.nn.Module, rank: int, alpha: float) -> dict[str, LoRALinear]:
    """Freeze the encoder and put a LoRALinear in place of every adapted Linear; returns them by name."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    adapters = {}
    for name, (parent, attribute, linear) in _adaptable(model).items():
        adapters[name] = LoRALinear(linear, rank, alpha)
        setattr(parent, attribute, adapters[name])
    return adapters


def save_adapters(adapters: dict[str, LoRALinear], path: Path) -> None:
    """The A and B of every adapter, in fp16 (the merged weights differ from fp32's by ~1e-4)."""
    arrays: dict[str, Any] = {"scale": np.float32(next(iter(adapters.values())).scale)}
    for name, adapter in adapters.items():
        arrays[f"{name}.a"] = adapter.a.detach().numpy().astype(np.float16)
        arrays[f"{name}.b"] = adapter.b.detach().numpy().astype(np.float16)
    np.savez_compressed(path, **arrays)


def merge_adapters(model: torch.nn.Module, path: Path) -> None:
    """Add a saved adapter's updates into the encoder's own weights (in place)."""
    with np.load(path) as saved:
        scale = float(saved["scale"])
        layers = _adaptable(model)
        names = {key.rsplit(".", 1)[0] for key in saved.files if key != "scale"}
        if missing := names - layers.keys():
            raise ValueError(f"{path.name} adapts layers this encoder lacks: {sorted(missing)[:3]}")
        with torch.no_grad():
            for name in names:
                a = torch.from_numpy(saved[f"{name}.a"].astype(np.float32))
                b = torch.from_numpy(saved[f"{name}.b"].astype(np.float32))
                layers[name][2].weight += scale * (b @ a)
