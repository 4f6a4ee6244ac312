"""Whether a transcript reads as a whole sentence: a small LM's probability that the sentence ends here.

Smart Turn hears the end of a turn in the voice; read speech often sounds finished mid-clause
("he might even | have been made amiable himself"). The words say it more plainly: after "he might
even" a language model all but rules out a full stop. SmolLM2-135M (the embedded dialogue model's
weights, its own copy) reads the transcript lower-cased and stripped of punctuation, since whisper
ends almost every segment with a full stop, and returns P(next token is ". ? !").

Measured on 398 player lines and as many of their prefixes cut at a random word (loadtest.turn_taking
--text-only): AUC 0.92 in float32 or bfloat16; int8 dynamic quantization drops it to 0.86, so
this copy is never quantized (its precision is chosen in loading.py). ~70 ms a call on one EPYC
thread in bfloat16 (130 in float32): run it on a worker, never on the event loop.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from npcserver.backends.transformers_llm import DTYPES

SENTENCE_ENDS = (".", "?", "!")
_NOT_WORDS = re.compile(r"[^\w' ]+")


def plain_words(text: str) -> str:
    """Lower case, apostrophes kept, every other mark a space: what was said, not how ASR punctuated it."""
    return " ".join(_NOT_WORDS.sub(" ", text.lower().replace("\u2019", "'")).split())


class SentenceEndScorer:
    """Implements `SentenceEndModel` with a causal LM folder (SmolLM2-135M-Instruct by default).
    `precision`: "fp32", "bf16" or "fp16" (never int8: it blurs the very probability read here)."""

    def __init__(self, model_path: Path | str, device: str = "cpu", precision: str = "fp32") -> None:
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, not {precision!r}")
        self._device = torch.device(device)
        self.precision = precision
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=DTYPES[precision], local_files_only=True)
        self._model = model.eval().to(self._device)
        self._end_ids = sorted({self._tokenizer.encode(mark)[0] for mark in SENTENCE_ENDS})
        self._lock = threading.Lock()  # one forward pass at a time: the module is shared

    def sentence_end_probability(self, text: str) -> float:
        words = plain_words(text)
        if not words:
            return 1.0  # nothing heard: no evidence that the player is mid-sentence
        ids = torch.tensor([self._tokenizer.encode(words)], device=self._device)
        with self._lock, torch.inference_mode():
            logits = self._model(ids, logits_to_keep=1).logits[0, -1].float()
        return float(torch.softmax(logits, dim=-1)[self._end_ids].sum())
