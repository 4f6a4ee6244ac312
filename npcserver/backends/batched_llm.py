"""Continuous batching of replies: one forward pass writes the next token of every reply in flight.

A decoding step of a small model is mostly fixed cost (reading the weights, Python and kernel
overhead), so several replies decoded together cost little more than one. Measured on the 2-core
CPU with SmolLM2-135M int8, 1 thread, 400-token contexts: one step takes 22 ms for 1 reply, 25 ms for
2, 32 ms for 4 and 51 ms for 8 (`python -m loadtest.llm_batch_bench`). With many players the LLM is
the busiest model, so this is where capacity comes from; vLLM and TGI batch the same way.

One worker thread owns the model. A reply joins the batch as soon as its prompt is prefilled (alone,
from the longest cached prefix) and leaves it when it ends, is stopped or runs out of tokens; the
others never wait for it to finish. The batch's KV cache is left-padded to the longest reply, with
an attention mask over the padding and each reply's own position ids, and is rebuilt only when a
reply joins or leaves.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from npcserver.backends.base import ChatMessage, GenerationOptions
from npcserver.backends.inbox import Inbox, ServedByInbox
from npcserver.backends.transformers_llm import Reply, TransformersDialogue

_Piece = str | BaseException | None  # text, a failure, or the end of the reply
log = logging.getLogger(__name__)
_WAKE = object()  # queued to wake an idle worker for the idle prefills
IDLE_PREFILLS_KEPT = 16


@dataclass(eq=False)
class _Job:
    """A reply asked for by one caller, and where its pieces go."""

    messages: list[ChatMessage]
    options: GenerationOptions
    should_stop: Callable[[], bool]
    pieces: queue.SimpleQueue[_Piece] = field(default_factory=queue.SimpleQueue)
    abandoned: bool = False  # the caller stopped reading

    def over(self) -> bool:
        return self.abandoned or self.should_stop()


@dataclass(eq=False)
class _Prefill:
    messages: list[ChatMessage]
    done: Future[None] = field(default_factory=Future)


@dataclass(eq=False)
class _Row:
    """A reply in the batch: its job, its decoding state and how many tokens it has in the cache."""

    job: _Job
    reply: Reply
    length: int  # real (unpadded) tokens of this reply in the cache
    next_token: int  # chosen, not yet fed


class BatchedDialogue(ServedByInbox):
    """Implements `DialogueModel` for many threads at once, decoding their replies together.

    `generate` may be called from up to `max_concurrent_calls` threads; each call blocks its thread
    and yields its own reply's pieces as the shared worker writes them. Greedy replies are the
    tokens `TransformersDialogue` would write alone, up to float rounding (with int8 dynamic
    quantization the activations' scale is shared by the rows of a step, so a near tie may break
    differently).
    """

    def __init__(self, inner: TransformersDialogue, max_batch: int = 8) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._inner = inner
        self._max_batch = max_batch
        # None on the queue is close()'s mark; _WAKE only wakes an idle worker (idle prefills wait).
        self._inbox: Inbox[_Job | _Prefill | object] = Inbox(
            self._serve_forever, "llm-batcher", "the batched dialogue model is closed"
        )
        self._queue = self._inbox.queue
        self._lock = threading.Lock()  # guards the idle prefills
        self._batch_sizes: Counter[int] = Counter()  # decoding steps by batch size (worker only)
        self._idle_prefills: deque[list[ChatMessage]] = deque(maxlen=IDLE_PREFILLS_KEPT)
        # the batch: rows, their KV cache left-padded to the longest, and the mask over the padding
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None

    @property
    def max_concurrent_calls(self) -> int:
        """How many threads should be able to call `generate` at once for full batches to form."""
        return self._max_batch

    def batch_sizes(self) -> dict[int, int]:
        """How many decoding steps ran with each batch size so far (for metrics and benchmarks)."""
        return dict(self._batch_sizes)

    def generate(
        self, messages: list[ChatMessage], options: GenerationOptions, should_stop: Callable[[], bool]
    ) -> Iterator[str]:
        job = _Job(messages, options, should_stop)
        self._inbox.put(job)
        try:
            while (item := job.pieces.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.abandoned = True

    def prefill(self, messages: list[ChatMessage]) -> None:
        """Prefill a prompt prefix into the prefix cache, on the worker (blocking)."""
        job = _Prefill(messages)
        self._inbox.put(job)
        job.done.result()

    def prefill_when_idle(self, messages: list[ChatMessage]) -> None:
        """Queue a prefill that runs only while no reply is being written, so it never slows one down;
        returns at once. Only the latest few wait: an old one is dropped for a new one."""
        with self._lock:
            self._idle_prefills.append(messages)
        self._inbox.put(_WAKE)

    # ------------------------------------------------------------------ the worker thread

    def _serve_forever(self) -> None:
        if self._inner.device.type == "cpu":
            torch.set_num_threads(self._inner.threads)
        closing = False
        while not closing or self._rows:
            waiting: list[_Job | _Prefill | object | None] = []
            if not self._rows and not closing:
                if self._queue.empty() and (idle_work := self._next_idle_prefill()) is not None:
                    prefill = _Prefill(idle_work)
                    self._run_prefill(prefill)
                    if (failure := prefill.done.exception()) is not None:
                        log.warning("background prefill failed: %s", failure)
                    continue
                waiting.append(self._queue.get())  # idle: sleep until there is work
            while len(self._rows) + len(waiting) < self._max_batch and not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            joining: list[_Row] = []
            for item in waiting:
                if item is None:
                    closing = True
                elif item is _WAKE:
                    continue
                elif isinstance(item, _Prefill):
                    self._run_prefill(item)
                elif isinstance(item, _Job) and (row := self._start(item)) is not None:
                    joining.append(row)
            if joining:
                self._regroup(self._rows, joining)
            if self._rows:
                self._step()

    def _next_idle_prefill(self) -> list[ChatMessage] | None:
        with self._lock:
            return self._idle_prefills.pop() if self._idle_prefills else None  # the newest first

    def _run_prefill(self, job: _Prefill) -> None:
        try:
            self._inner.prefill(job.messages)
        except Exception as exc:  # noqa: BLE001 (the caller hears of it)
            job.done.set_exception(exc)
        else:
            job.done.set_result(None)

    def _start(self, job: _Job) -> _Row | None:
        """Prefill a new reply's prompt alone and choose its first token; None if it is over already."""
        try:
            reply = self._inner.start_reply(job.messages, job.options)
            if reply.exhausted or job.over():
                self._finish(job, reply)
                return None
            token = self._inner.feed_pending(reply)
        except Exception as exc:  # noqa: BLE001 (the caller hears of it; the batch goes on)
            job.pieces.put(exc)
            return None
        row = _Row(job, reply, len(reply.fed), token)
        if not self._hand_on(row):
            self._finish(job, reply)
            return None
        return row

    @staticmethod
    def _hand_on(row: _Row) -> bool:
        """Give the row's chosen token to its caller; False when that ends the reply."""
        piece = row.reply.accept(row.next_token)
        if piece:
            row.job.pieces.put(piece)
        return piece is not None and not row.reply.exhausted and not row.job.over()

    def _finish(self, job: _Job, reply: Reply) -> None:
        self._inner.keep_prefix(reply.fed, reply.cache)
        job.pieces.put(None)

    def _step(self) -> None:
        """One forward pass: the next token of every reply in the batch."""
        rows, cache, mask = self._rows, self._cache, self._mask
        assert cache is not None and mask is not None
        device = self._inner.device
        self._batch_sizes[len(rows)] += 1
        try:
            with torch.inference_mode():
                inputs = torch.tensor([[row.next_token] for row in rows], dtype=torch.long, device=device)
                positions = torch.tensor([[row.length] for row in rows], dtype=torch.long, device=device)
                mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], dim=1)
                output = self._inner.model(
                    input_ids=inputs, attention_mask=mask, position_ids=positions,
                    cache=cache, use_cache=True, logits_to_keep=1,
                )  # fmt: skip
                scores = output.logits[:, -1, :].float()
            self._mask = mask
            finished: list[_Row] = []
            for index, row in enumerate(rows):
                row.reply.fed.append(row.next_token)
                row.length += 1
                row.next_token = row.reply.choose(scores[index : index + 1])
                if not self._hand_on(row):
                    self._finish(row.job, self._own_cache(row, index))
                    finished.append(row)
        except Exception as exc:  # noqa: BLE001 (every reply in the batch hears of it; the worker goes on)
            for row in rows:
                row.job.pieces.put(exc)
            self._rows, self._cache, self._mask = [], None, None
            return
        if finished:
            self._regroup([row for row in rows if row not in finished], [])

    def _own_cache(self, row: _Row, index: int) -> Reply:
        """The row's reply with a copy of its unpadded part of the batch cache (for the prefix cache)."""
        row.reply.cache = _cache_of([[(k.clone(), v.clone()) for k, v in self._row_kv(index, row)]])
        return row.reply

    def _row_kv(self, index: int, row: _Row) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the row's keys and values without its left padding."""
        assert self._cache is not None
        start = self._cache.get_seq_length() - row.length
        return [
            (keys[index : index + 1, :, start:, :], values[index : index + 1, :, start:, :])
            for keys, values in map(_layer_kv, self._cache.layers)
        ]

    def _regroup(self, staying: list[_Row], joining: list[_Row]) -> None:
        """Rebuild the batch cache and mask for a new set of rows (left-padded to the longest)."""
        parts = [self._row_kv(self._rows.index(row), row) for row in staying]
        parts += [[_layer_kv(layer) for layer in row.reply.cache.layers] for row in joining]
        rows = staying + joining
        for row in joining:
            row.reply.cache = DynamicCache()  # its keys now live in the batch cache
        self._rows = rows
        if not rows:
            self._cache, self._mask = None, None
            return
        longest = max(row.length for row in rows)
        self._cache = _cache_of(parts, longest)
        device = self._inner.device
        self._mask = torch.stack([
            torch.cat([torch.zeros(longest - row.length, dtype=torch.long, device=device),
                       torch.ones(row.length, dtype=torch.long, device=device)])
            for row in rows
        ])  # fmt: skip


def _layer_kv(layer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's keys and values (every layer of the models served here is full attention)."""
    return layer.keys, layer.values


def _cache_of(rows: list[list[tuple[torch.Tensor, torch.Tensor]]], length: int | None = None) -> DynamicCache:
    """A cache holding the given rows' per-layer keys and values, left-padded with zeros to `length`."""
    length = length if length is not None else max(layers[0][0].shape[-2] for layers in rows)
    layers = []
    for layer in range(len(rows[0])):
        keys = [F.pad(row[layer][0], (0, 0, length - row[layer][0].shape[-2], 0)) for row in rows]
        values = [F.pad(row[layer][1], (0, 0, length - row[layer][1].shape[-2], 0)) for row in rows]
        layers.append((torch.cat(keys), torch.cat(values)))
    return DynamicCache(ddp_cache_data=layers)
