"""Micro-batching of speech recognition across concurrent sessions (worth it on a GPU).

Utterances from several sessions that arrive within a few milliseconds of each other are
transcribed by one batched model call. On a GPU a batch of 8 short utterances costs little more
than one, so queued sessions wait less; WhisperLive batches its clients the same way. On a small
CPU a batch costs about the sum of its parts, so the server leaves this off there by default.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from npcserver.backends.base import Transcriber, Transcript
from npcserver.backends.inbox import Inbox, ServedByInbox


def batching_wanted(setting: str, device: str) -> bool:
    """The `asr_batching` setting ('auto', 'on', 'off') for models on `device` ('cpu' or 'cuda').

    'auto' batches on CUDA only: on a CPU a batch costs about the sum of its utterances, so batching
    only delays each one by the window and by its batch-mates (see loadtest/asr_batch_bench.py).
    """
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"asr_batching must be auto, on or off; got {setting!r}")
    return setting == "on" or (setting == "auto" and device == "cuda")


class BatchTranscriber(Transcriber, Protocol):
    """A transcriber that can also decode several utterances in one call, results in input order."""

    def transcribe_batch(self, audios: list[np.ndarray]) -> list[Transcript]: ...


@dataclass(slots=True)
class _Request:
    audio: np.ndarray
    arrived: float  # time.monotonic() when the caller handed it in
    result: Future[Transcript] = field(default_factory=Future)


class BatchingTranscriber(ServedByInbox):
    """Implements `Transcriber` for many threads at once, batching their calls.

    Each `transcribe` call queues its utterance and waits. One worker thread (started by the first
    call, stopped by `close()`) takes the first waiting utterance, collects more for up to
    `window_ms` after that one arrived or until `max_batch` are together, runs
    `inner.transcribe_batch` once and hands every caller its own transcript. A failure of the
    batch is raised to every caller of that batch; the worker goes on with the next one.
    Utterances that queued while a batch ran were already waiting their window: they are taken
    together at once. The inner model is only ever called from the worker thread.

    Callers must be allowed to wait concurrently (`max_concurrent_calls` threads, e.g. the ASR
    executor's workers), or there is never more than one utterance to batch.
    """

    def __init__(self, inner: BatchTranscriber, window_ms: float = 15.0, max_batch: int = 8) -> None:
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._inner = inner
        self._window_s = window_ms / 1000.0
        self._max_batch = max_batch
        self._inbox: Inbox[_Request] = Inbox(self._serve_forever, "asr-batcher", "the batching transcriber is closed")
        self._queue = self._inbox.queue  # None on it is close()'s mark: serve what was collected, then stop
        self._lock = threading.Lock()  # guards the count below
        self._waiting = 0
        self._batch_sizes: Counter[int] = Counter()  # written by the worker only

    @property
    def max_concurrent_calls(self) -> int:
        """How many threads should be able to call `transcribe` at once for full batches to form."""
        return self._max_batch

    @property
    def waiting_calls(self) -> int:
        """Callers that handed in an utterance and wait for its transcript (queued or being decoded)."""
        with self._lock:
            return self._waiting

    def batch_sizes(self) -> dict[int, int]:
        """How many batches of each size ran so far (for metrics and benchmarks)."""
        return dict(self._batch_sizes)

    def transcribe(self, audio: np.ndarray) -> Transcript:
        request = _Request(audio, time.monotonic())
        self._inbox.put(request)  # counted once queued: a waiting call is one close() will still answer
        with self._lock:
            self._waiting += 1
        try:
            return request.result.result()
        finally:
            with self._lock:
                self._waiting -= 1

    # ------------------------------------------------------------------ the worker thread

    def _serve_forever(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            closing = self._collect(batch)
            self._run(batch)
            if closing:
                return

    def _collect(self, batch: list[_Request]) -> bool:
        """Add requests until the first one's window ends or the batch is full; True when closing."""
        deadline = batch[0].arrived + self._window_s
        while len(batch) < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                # Past the window, take only what is already waiting.
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _run(self, batch: list[_Request]) -> None:
        self._batch_sizes[len(batch)] += 1
        try:
            transcripts = self._inner.transcribe_batch([request.audio for request in batch])
            if len(transcripts) != len(batch):
                raise RuntimeError(f"transcribe_batch returned {len(transcripts)} results for {len(batch)} utterances")
        except BaseException as exc:  # every waiting caller must hear of it, or it would wait forever
            for request in batch:
                request.result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for request, transcript in zip(batch, transcripts, strict=True):
            request.result.set_result(transcript)
