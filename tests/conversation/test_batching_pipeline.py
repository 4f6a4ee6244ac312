"""Concurrent sessions' ASR calls and replies reach batching models together through the ModelRunner."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from npcserver.backends import Backends
from npcserver.backends.batched_asr import BatchingTranscriber
from npcserver.backends.fake import FakeDialogue, FakeSynthesizer
from npcserver.conversation.pipeline import ModelRunner
from tests.backends.test_batched_asr import FOREVER_MS, FakeBatchTranscriber


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


class FakeBatchingDialogue(FakeDialogue):
    """A fake dialogue model that, like BatchedDialogue, wants several callers at once: it counts them."""

    max_concurrent_calls = 4

    def __init__(self) -> None:
        super().__init__(token_delay_s=0.01, reply="one two three four five six")
        self.inside = 0
        self.most_inside = 0
        self.closed = False
        self._count_lock = threading.Lock()

    def generate(self, messages, options, should_stop):  # type: ignore[no-untyped-def]
        with self._count_lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            yield from super().generate(messages, options, should_stop)
        finally:
            with self._count_lock:
                self.inside -= 1

    def close(self, wait: bool = True) -> None:
        self.closed = True


async def test_concurrent_replies_reach_a_batching_dialogue_model_together() -> None:
    from npcserver.backends.base import ChatMessage, GenerationOptions

    dialogue = FakeBatchingDialogue()
    runner = ModelRunner(Backends(FakeBatchTranscriber(), dialogue, FakeSynthesizer()))

    async def reply(text: str) -> str:
        pieces = runner.stream_reply([ChatMessage("user", text)], GenerationOptions(max_new_tokens=10))
        return "".join([piece async for piece in pieces])

    try:
        replies = await asyncio.wait_for(asyncio.gather(*(reply(f"q{n}") for n in range(4))), 10)
    finally:
        runner.close()
    assert replies == ["one two three four five six"] * 4
    assert dialogue.most_inside == 4  # all four wrote at once, not one after another
    assert dialogue.closed
