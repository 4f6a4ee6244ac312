"""Continuous batching of replies on the real SmolLM2 weights (marked `real`).

Equality is checked in float32: there a reply decoded in a batch is the reply decoded alone. (With
int8 dynamic quantization the rows of a step share one activation scale; see batched_llm.py.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from npcserver.backends.base import ChatMessage, GenerationOptions
from npcserver.backends.batched_llm import BatchedDialogue
from npcserver.backends.transformers_llm import TransformersDialogue
from npcserver.config import Settings
from npcserver.models import prepare_models, resolve_llm_model

pytestmark = pytest.mark.real

SYSTEM = ChatMessage("system", "You are Brom, a gruff dwarf blacksmith in the village of Oakvale. Answer in one short sentence.")
QUESTIONS = ["Hello! What do you sell?", "Have you heard about the dragon?", "How much for a steel sword?", "Can you fix my shield?"]
GREEDY = GenerationOptions(max_new_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def alone() -> TransformersDialogue:
    settings = Settings()
    prepare_models(settings)
    return TransformersDialogue(resolve_llm_model(settings.llm_model, settings), threads=1, precision="fp32")


@pytest.fixture
def batched(alone: TransformersDialogue) -> Iterator[BatchedDialogue]:
    with BatchedDialogue(alone, max_batch=4) as model:
        yield model


def _prompt(question: str) -> list[ChatMessage]:
    return [SYSTEM, ChatMessage("user", question)]


def _concurrently(model: BatchedDialogue, questions: list[str], stop_after: dict[int, int] | None = None) -> list[str]:
    """Ask every question from its own thread, 30 ms apart (so replies join a batch already running)."""
    replies = [""] * len(questions)

    def ask(index: int) -> None:
        time.sleep(0.03 * index)
        pieces: list[str] = []
        limit = (stop_after or {}).get(index)
        for piece in model.generate(_prompt(questions[index]), GREEDY, lambda: limit is not None and len(pieces) >= limit):
            pieces.append(piece)  # noqa: PERF402 (the stop condition watches the list grow)
        replies[index] = "".join(pieces)

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return replies


def test_replies_decoded_together_are_the_replies_decoded_alone(alone: TransformersDialogue, batched: BatchedDialogue) -> None:
    expected = ["".join(alone.generate(_prompt(question), GREEDY, lambda: False)) for question in QUESTIONS]
    assert _concurrently(batched, QUESTIONS) == expected
    sizes = batched.batch_sizes()
    assert max(sizes) >= 3, sizes  # they really were decoded together
    assert all(size <= 4 for size in sizes)


def test_stopping_one_reply_leaves_the_others_whole(alone: TransformersDialogue, batched: BatchedDialogue) -> None:
    expected = ["".join(alone.generate(_prompt(question), GREEDY, lambda: False)) for question in QUESTIONS]
    replies = _concurrently(batched, QUESTIONS, stop_after={1: 3})
    assert replies[0] == expected[0] and replies[2:] == expected[2:]
    assert expected[1].startswith(replies[1]) and len(replies[1]) < len(expected[1])


def test_a_reply_decoded_in_a_batch_is_kept_in_the_prefix_cache(alone: TransformersDialogue, batched: BatchedDialogue) -> None:
    questions = ["Do you sell horseshoes?", "Is the old mine still open?"]
    replies = _concurrently(batched, questions)
    # the next turn of the first conversation starts with its question and the reply as it was written
    follow_up = [*_prompt(questions[0]), ChatMessage("assistant", replies[0]), ChatMessage("user", "And nails?")]
    cache, reused = alone._prefix_cache.take(alone.prompt_ids(follow_up))
    assert cache is not None and cache.get_seq_length() == reused
    assert reused > len(alone.prompt_ids(_prompt(questions[0])))  # past the question, into the batched reply


def test_more_callers_than_places_wait_their_turn(alone: TransformersDialogue) -> None:
    with BatchedDialogue(alone, max_batch=2) as narrow:
        expected = ["".join(alone.generate(_prompt(question), GREEDY, lambda: False)) for question in QUESTIONS]
        assert _concurrently(narrow, QUESTIONS) == expected
        assert max(narrow.batch_sizes()) == 2


def test_a_closed_model_refuses_new_replies(alone: TransformersDialogue) -> None:
    model = BatchedDialogue(alone)
    assert "".join(model.generate(_prompt("Hello"), GenerationOptions(max_new_tokens=2, temperature=0.0), lambda: False))
    model.close()
    with pytest.raises(RuntimeError, match="closed"):
        list(model.generate(_prompt("Hello"), GREEDY, lambda: False))


def test_an_idle_prefill_readies_the_next_prompt_without_blocking(alone: TransformersDialogue, batched: BatchedDialogue) -> None:
    next_prompt_start = [*_prompt("Do you shoe horses?"), ChatMessage("assistant", "Aye, every morning.")]
    batched.prefill_when_idle(next_prompt_start)  # returns at once; runs while no reply is written
    follow_up = alone.prompt_ids([*next_prompt_start, ChatMessage("user", "How much?")])
    start_ids = alone.prompt_ids(next_prompt_start, add_generation_prompt=False)
    deadline = time.monotonic() + 20
    reused = 0
    while time.monotonic() < deadline and reused < len(start_ids):
        time.sleep(0.05)
        _cache, reused = alone._prefix_cache.take(follow_up)
    assert reused >= len(start_ids)  # the next turn only prefills "How much?"
