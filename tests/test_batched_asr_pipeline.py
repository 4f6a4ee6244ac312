"""Concurrent sessions' ASR calls reach a batching transcriber together through the ModelRunner."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from npcserver.backends import Backends
from npcserver.backends.batched_asr import BatchingTranscriber
from npcserver.backends.fake import FakeDialogue, FakeSynthesizer
from npcserver.pipeline import ModelRunner
from tests.test_batched_asr import FOREVER_MS, FakeBatchTranscriber


async def test_concurrent_sessions_asr_calls_form_one_batch_through_the_model_runner() -> None:
    fake = FakeBatchTranscriber()
    batcher = BatchingTranscriber(fake, window_ms=FOREVER_MS, max_batch=4)
    runner = ModelRunner(Backends(batcher, FakeDialogue(), FakeSynthesizer()))
    try:
        utterances = [np.zeros(n, dtype=np.float32) for n in (1, 2, 3, 4)]
        transcripts = await asyncio.wait_for(asyncio.gather(*(runner.transcribe(u) for u in utterances)), 10)
    finally:
        runner.close()
    assert [t.text for t in transcripts] == ["utterance 1", "utterance 2", "utterance 3", "utterance 4"]
    assert len(fake.batches) == 1
    await asyncio.to_thread(batcher.close)  # waits for the worker thread
    assert not any(thread.name == "asr-batcher" for thread in threading.enumerate())
