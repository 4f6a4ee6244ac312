"""Dialogue with a transformers causal LM, streamed token by token from our own decoding loop.

A hand-written loop (rather than `generate()` + a streamer thread) keeps everything in the caller's
worker thread, lets `should_stop` end a turn between any two tokens, and lets us reuse the KV state
of a prompt prefix: a persona's system prompt and example lines are the same every turn, and the
history of a conversation grows at its end, so most of each prompt was already prefilled once.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
)

from npcserver.backends.base import ChatMessage, GenerationOptions

# Tokens that end an assistant turn in common chat templates (those missing from a vocabulary are skipped).
_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")
# The cache keeps at most this many tokens in all: ~190 MB of fp32 keys and values for SmolLM2-135M
# (30 layers x 3 KV heads x 64 dims x 2 x 4 bytes = 46 KB a token). Least recently used go first.
# The server sizes it from its settings (llm_prefix_cache_tokens).
DEFAULT_PREFIX_CACHE_TOKENS = 4096
# Entries: about one per session (its prompt and last reply) plus one per persona.
DEFAULT_PREFIX_CACHE_ENTRIES = 64
# Sampling draws from the most likely tokens only: sorting the whole 49k vocabulary for top-p
# (transformers' TopPLogitsWarper) and drawing from it cost ~5 ms a token on one CPU thread, a
# fifth of a decoding step; the top 64 cost 0.1 ms and hold the nucleus of any sensible reply.
SAMPLING_CANDIDATES = 64
# precision name -> the dtype weights load in (int8 loads float32, then quantizes)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}


def _quantize_linear_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of every nn.Linear: ~3x faster decoding on CPU (MODELS.md snag 3)."""
    with warnings.catch_warnings():
        # torch 2.13 warns that torch.ao.quantization and quantized tensors are deprecated (torchao is
        # the successor, not installed); both still work. Silence only those two messages, so any
        # other warning still fails the tests.
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings(
            "ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel", category=UserWarning
        )
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class _PrefixCache:
    """A few KV caches, least recently used dropped first, keyed by the token ids they hold."""

    def __init__(self, max_entries: int, max_tokens: int) -> None:
        self._entries: OrderedDict[tuple[int, ...], DynamicCache] = OrderedDict()
        self._max_entries = max_entries
        self._max_tokens = max_tokens
        self._lock = threading.Lock()  # generators of two sessions may finish on different threads

    def take(self, ids: list[int]) -> tuple[DynamicCache | None, int]:
        """A private copy of the cache sharing the longest prefix with `ids` (less its last token)."""
        limit = len(ids) - 1  # at least one token must be fed to get the next token's logits
        with self._lock:
            best_key, best_len = None, 0
            for key in self._entries:
                shared = _common_prefix_length(key, ids, limit)
                if shared > best_len:
                    best_key, best_len = key, shared
            if best_key is None:
                return None, 0
            self._entries.move_to_end(best_key)
            cache = copy.deepcopy(self._entries[best_key])
        surplus = cache.get_seq_length() - best_len
        if surplus > 0:
            cache.crop(-surplus)  # transformers 5: a negative count removes that many trailing tokens
        return cache, best_len

    def keep(self, ids: tuple[int, ...], cache: DynamicCache) -> None:
        if self._max_entries <= 0 or not ids or len(ids) > self._max_tokens:
            return
        with self._lock:
            # An entry that is a prefix of this one is superseded: this one serves every prompt it served.
            for key in [key for key in self._entries if len(key) <= len(ids) and ids[: len(key)] == key]:
                del self._entries[key]
            self._entries[ids] = cache
            while len(self._entries) > self._max_entries or sum(map(len, self._entries)) > self._max_tokens:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def disabled(self) -> bool:
        return self._max_entries <= 0


def _common_prefix_length(a: tuple[int, ...], b: list[int], limit: int) -> int:
    # binary search on slice equality (compared in C): a few dozen entries of ~450 tokens are
    # looked through at every turn's start, on the LLM worker
    b_head = tuple(b[: min(len(a), limit)])
    low, high = 0, len(b_head)
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b_head[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


class TransformersDialogue:
    """Implements `DialogueModel`. `precision`: "fp32", "bf16", "fp16" or "int8" (dynamic, CPU only)."""

    def __init__(
        self,
        model_path: Path | str,
        device: str = "cpu",
        threads: int = 1,
        *,
        precision: str = "fp32",
        prefix_cache: bool = True,
        prefix_cache_entries: int = DEFAULT_PREFIX_CACHE_ENTRIES,
        prefix_cache_tokens: int = DEFAULT_PREFIX_CACHE_TOKENS,
    ) -> None:
        self._device = torch.device(device)
        self._threads = threads
        if self._device.type == "cpu":
            torch.set_num_threads(threads)
        else:
            # cuDNN's attention spends ~1.5 ms of CPU per call planning for a KV length it has not
            # seen, and decoding grows that length every step: 59 ms a step on an H200, 17 without it.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {', '.join(DTYPES)}, not {precision!r}")
        if precision == "int8" and self._device.type != "cpu":
            raise ValueError("int8 dynamic quantization runs on the CPU only")
        self.precision = precision
        model: Any = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=DTYPES[precision], local_files_only=True)
        model.eval()
        if precision == "int8":
            model = _quantize_linear_int8(model)
        self._model: Any = model.to(self._device)
        self._end_ids = self._end_of_turn_ids()
        self._prefix_cache = _PrefixCache(prefix_cache_entries if prefix_cache else 0, prefix_cache_tokens)

    def _end_of_turn_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        configured = self._model.generation_config.eos_token_id
        ids.update(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[token] for token in _END_OF_TURN_TOKENS if token in vocab)
        return frozenset(ids)

    def prompt_ids(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> list[int]:
        chat = [{"role": message.role, "content": message.content} for message in messages]
        # a last assistant message is the start of the reply (a fact already said): the model goes on from it
        go_on = add_generation_prompt and bool(messages) and messages[-1].role == "assistant"
        ids = self.tokenizer.apply_chat_template(
            chat,
            add_generation_prompt=add_generation_prompt and not go_on,
            continue_final_message=go_on,
            tokenize=True,
            return_dict=False,
        )
        return list(ids)

    def prefill(self, messages: list[ChatMessage]) -> None:
        """Compute and keep the KV state of messages every turn starts with (a persona's system
        prompt and example lines), so even a persona's first turn only prefills the new text.
        Blocking; a no-op when the prefix cache is off."""
        if self._prefix_cache.disabled:
            return
        if self._device.type == "cpu":
            torch.set_num_threads(self._threads)
        ids = self.prompt_ids(messages, add_generation_prompt=False)
        if not ids:
            return
        cache, reused = self._prefix_cache.take(ids)
        cache = cache if cache is not None else DynamicCache()
        with torch.inference_mode():
            inputs = torch.tensor([ids[reused:]], dtype=torch.long, device=self._device)
            self._model(input_ids=inputs, cache=cache, use_cache=True, logits_to_keep=1)
        self._prefix_cache.keep(tuple(ids), cache)

    def generate(
        self,
        messages: list[ChatMessage],
        options: GenerationOptions,
        should_stop: Callable[[], bool],
    ) -> Iterator[str]:
        for _token_id, piece in self.generate_tokens(messages, options, should_stop):
            if piece:
                yield piece

    def generate_tokens(
        self,
        messages: list[ChatMessage],
        options: GenerationOptions,
        should_stop: Callable[[], bool],
    ) -> Iterator[tuple[int, str]]:
        """Like `generate`, with each token id beside the text it completed (often '')."""
        if self._device.type == "cpu":
            torch.set_num_threads(self._threads)  # cheap; the setting is per process but set lazily per thread
        reply = self.start_reply(messages, options)
        try:
            while not reply.exhausted and not should_stop():
                token = self.feed_pending(reply)
                piece = reply.accept(token)
                if piece is None:
                    break
                yield token, piece
        finally:
            self.keep_prefix(reply.fed, reply.cache)

    def start_reply(self, messages: list[ChatMessage], options: GenerationOptions) -> Reply:
        """A reply to `messages`, its KV cache primed from the longest cached prefix of its prompt."""
        prompt = self.prompt_ids(messages)
        cache, reused = self._prefix_cache.take(prompt)
        return Reply(self, prompt, reused, cache if cache is not None else DynamicCache(), options)

    def feed_pending(self, reply: Reply) -> int:
        """Run the model on the reply's pending tokens (alone, into its own cache); the next token."""
        with torch.inference_mode():
            inputs = torch.tensor([reply.pending], dtype=torch.long, device=self._device)
            output = self._model(input_ids=inputs, cache=reply.cache, use_cache=True, logits_to_keep=1)
            reply.fed.extend(reply.pending)
            return reply.choose(output.logits[:, -1, :].float())

    def keep_prefix(self, fed: list[int], cache: DynamicCache) -> None:
        """Offer a reply's KV state to the prefix cache (it holds exactly the keys of `fed`)."""
        if cache.get_seq_length() == len(fed):
            self._prefix_cache.keep(tuple(fed), cache)

    def _processors(self, options: GenerationOptions) -> LogitsProcessorList:
        processors = LogitsProcessorList()
        if options.repetition_penalty and options.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(options.repetition_penalty))
        if options.temperature > 0:
            processors.append(TemperatureLogitsWarper(options.temperature))
        return processors

    @property
    def model(self) -> Any:
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def threads(self) -> int:
        return self._threads

    def clear_prefix_cache(self) -> None:
        """Forget every kept prefix, so the next prompt is prefilled from its first token."""
        self._prefix_cache.clear()

    @property
    def cached_prefixes(self) -> int:
        """How many KV prefixes are held (for tests and metrics)."""
        return len(self._prefix_cache)


def sample_nucleus(scores: torch.Tensor, top_p: float, generator: torch.Generator) -> int:
    """A token drawn from [vocab] float scores by nucleus sampling (top-p; 1 = all) among the
    `SAMPLING_CANDIDATES` likeliest. Scores may be on a GPU: only the candidates come to the host,
    where `generator` (a CPU one) draws, so a seeded reply repeats itself."""
    values, candidates = torch.topk(scores, min(SAMPLING_CANDIDATES, scores.numel()))
    shares = torch.exp(values - torch.logsumexp(scores, dim=0))  # each one's share of the whole vocabulary
    # token ids < 2**24 are exact in float32: one transfer brings both
    probs, candidates = torch.stack([shares, candidates.to(shares.dtype)]).cpu()
    if 0 < top_p < 1:  # the fewest likeliest tokens whose shares reach top_p (at least one)
        probs = probs * ((probs.cumsum(0) - probs) < top_p)
    pick = torch.multinomial(probs, num_samples=1, generator=generator)
    return int(candidates[pick].item())


class Reply:
    """One reply being written: its KV cache, the tokens fed so far and its own sampling state.

    The caller runs the model: it feeds `pending` (the prompt's uncached part, then each new token),
    appends it to `fed`, and hands the next-token scores to `choose`, then the token to `accept`.
    """

    def __init__(
        self, dialogue: TransformersDialogue, prompt: list[int], reused: int, cache: DynamicCache, options: GenerationOptions
    ) -> None:
        self._dialogue = dialogue
        self.options = options
        self.cache = cache
        self.fed: list[int] = prompt[:reused]  # token ids whose keys and values are in `cache`
        self.pending: list[int] = prompt[reused:]  # token ids to feed next
        self.generated: list[int] = []
        self._emitted = ""
        self._processors = dialogue._processors(options)
        self._generator = torch.Generator(device="cpu")
        if options.seed is not None:
            self._generator.manual_seed(options.seed)
        else:
            self._generator.seed()

    @property
    def exhausted(self) -> bool:
        return len(self.generated) >= self.options.max_new_tokens

    def choose(self, scores: torch.Tensor) -> int:
        """The next token from this reply's [1, vocab] scores (greedy at temperature 0, else sampled)."""
        # the repetition penalty looks at the reply only: over the ~350-token persona prompt it
        # pushed down common words ("I", "a") and the NPC stopped naming itself
        ids = cast(torch.LongTensor, torch.tensor([self.generated], dtype=torch.long, device=scores.device))
        scores = self._processors(ids, scores)
        if self.options.temperature <= 0:
            return int(scores.argmax(dim=-1).item())
        return sample_nucleus(scores[0].float(), self.options.top_p, self._generator)

    def accept(self, token: int) -> str | None:
        """Take the chosen token: the text it completes ('' while a character is incomplete), or
        None when it ends the reply."""
        if token in self._dialogue._end_ids:
            return None
        self.generated.append(token)
        self.pending = [token]
        text = str(self._dialogue.tokenizer.decode(self.generated, skip_special_tokens=True))
        if text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            return ""
        piece, self._emitted = text[len(self._emitted) :], text
        return piece
