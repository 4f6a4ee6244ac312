"""LLM batching benchmark: what one decoding step costs for 1, 2, 4, 8 replies at once, and N replies
written one after another versus together through `BatchedDialogue`.

Step cost: every reply has a context of `--context` tokens (about a persona prompt and a little
history); the step feeds one token per reply. Replies: N questions asked at the same instant, greedy,
`--tokens` tokens each; prints wall time and tokens per second for sequential and batched decoding.
Agreement: how many greedy replies are token for token the same when the prompt's start comes from the
prefix cache, and when the reply is decoded in a batch, as the reply decoded alone without a cache
(equal by construction in float32; int8 and float16 round differently with the shapes of a step).

`python -m loadtest.llm_batch_bench [--device auto] [--batch-sizes 1 2 4 8] [--replies 4] [--tokens 40] [--no-int8]`
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import torch
from transformers import DynamicCache

from npcserver.backends.base import ChatMessage, GenerationOptions
from npcserver.backends.batched_llm import BatchedDialogue
from npcserver.backends.loading import pick_device
from npcserver.backends.transformers_llm import TransformersDialogue
from npcserver.config import Settings
from npcserver.models import prepare_models, resolve_llm_model

QUESTIONS = [
    "Hello! What do you sell?", "Have you heard about the dragon?", "How much for a steel sword?",
    "Can you fix my shield?", "Where is the inn?", "Do you have armor for sale?", "Who runs the mine?",
    "What news from the capital?",
]  # fmt: skip
SYSTEM = ChatMessage("system", "You are Brom, a gruff dwarf blacksmith in the village of Oakvale.")


def _wait_for_device(dialogue: TransformersDialogue) -> None:
    if dialogue.device.type == "cuda":  # CUDA work is asynchronous: read the clock once it is done
        torch.cuda.synchronize(dialogue.device)


def step_cost_ms(dialogue: TransformersDialogue, batch: int, context: int, steps: int = 20) -> float:
    device = dialogue.device
    ids = torch.randint(100, 20_000, (batch, context), device=device)
    cache = DynamicCache()
    with torch.inference_mode():
        dialogue.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        token = torch.randint(100, 20_000, (batch, 1), device=device)
        for _ in range(3):  # warm up
            dialogue.model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
        _wait_for_device(dialogue)
        started = time.perf_counter()
        for _ in range(steps):
            dialogue.model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
        _wait_for_device(dialogue)
    return (time.perf_counter() - started) / steps * 1000.0


def prefill_ms(dialogue: TransformersDialogue, context: int, repeats: int = 5) -> float:
    """Median time to feed a `context`-token prompt with an empty cache (a turn's first token, uncached)."""
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            ids = torch.randint(100, 20_000, (1, context), device=dialogue.device)
            _wait_for_device(dialogue)
            started = time.perf_counter()
            dialogue.model(input_ids=ids, cache=DynamicCache(), use_cache=True, logits_to_keep=1)
            _wait_for_device(dialogue)
            times.append(time.perf_counter() - started)
    return sorted(times[1:])[repeats // 2] * 1000.0  # the first run warms up


def _prompt(index: int) -> list[ChatMessage]:
    return [SYSTEM, ChatMessage("user", QUESTIONS[index % len(QUESTIONS)])]


def agreement(dialogue: TransformersDialogue, count: int, options: GenerationOptions) -> tuple[int, int]:
    """(replies equal with a cached prompt start, replies equal when decoded in a batch), out of `count`.

    The reference is each reply decoded alone with the prefix cache emptied first.
    """
    def alone(index: int) -> str:
        return "".join(dialogue.generate(_prompt(index), options, lambda: False))

    reference, cached = [], []
    for index in range(count):
        dialogue.clear_prefix_cache()
        reference.append(alone(index))
        cached.append(alone(index))  # the whole prompt but its last token now comes from the cache
    dialogue.clear_prefix_cache()
    together = [""] * count
    with BatchedDialogue(dialogue, max_batch=max(count, 1)) as batched:
        def ask(index: int) -> None:
            together[index] = "".join(batched.generate(_prompt(index), options, lambda: False))

        threads = [threading.Thread(target=ask, args=(index,)) for index in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    def equal(replies: list[str]) -> int:
        return sum(reply == expected for reply, expected in zip(replies, reference, strict=True))

    return equal(cached), equal(together)


def replies_wall_s(generate: object, count: int, options: GenerationOptions, together: bool) -> float:
    def ask(index: int) -> None:
        for _piece in generate(_prompt(index), options, lambda: False):  # type: ignore[operator]
            pass

    started = time.perf_counter()
    if together:
        threads = [threading.Thread(target=ask, args=(index,)) for index in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for index in range(count):
            ask(index)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.llm_batch_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="Where the model runs: 'auto' picks CUDA (float16) when torch sees it, as the server does.")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8], help="Replies per step to time.")
    parser.add_argument("--context", type=int, default=400, help="Tokens already in each reply's KV cache.")
    parser.add_argument("--replies", type=int, default=4, help="Replies asked at once for the wall-time comparison.")
    parser.add_argument("--tokens", type=int, default=40, help="Tokens per reply (greedy, no early stop).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the server gives the LLM 1 on 2 cores).")
    parser.add_argument("--no-int8", action="store_true", help="CPU: float32 weights instead of int8 dynamic quantization.")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    settings = Settings()
    prepare_models(settings)
    device = pick_device(args.device)
    dialogue = TransformersDialogue(
        resolve_llm_model(settings.llm_model, settings), device=device, threads=args.threads,
        precision="fp32" if args.no_int8 else "int8",
    )  # fmt: skip
    weights = "float16" if device == "cuda" else "fp32" if args.no_int8 else "int8"
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"SmolLM2-135M {weights} on {where}, {args.context}-token contexts")
    print(f"prefill of a {args.context}-token prompt: {prefill_ms(dialogue, args.context):.1f} ms")
    print("replies/step   ms/step   ms/token")
    for batch in args.batch_sizes:
        cost = step_cost_ms(dialogue, batch, args.context)
        print(f"{batch:>12}   {cost:7.1f}   {cost / batch:8.1f}")

    # ignore end-of-turn tokens: every reply writes exactly --tokens tokens, so both modes do equal work
    options = GenerationOptions(max_new_tokens=args.tokens, temperature=0.0)
    dialogue._end_ids = frozenset()
    from_cache, in_batch = agreement(dialogue, args.replies, options)
    print(f"greedy replies equal to the reply alone without a cache: with a cached prompt start "
          f"{from_cache}/{args.replies}, decoded in a batch {in_batch}/{args.replies}")
    dialogue.clear_prefix_cache()
    sequential = replies_wall_s(dialogue.generate, args.replies, options, together=False)
    dialogue.clear_prefix_cache()
    with BatchedDialogue(dialogue, max_batch=max(args.replies, 1)) as batched:
        together = replies_wall_s(batched.generate, args.replies, options, together=True)
        sizes = batched.batch_sizes()
    total = args.replies * args.tokens
    print(f"{args.replies} replies x {args.tokens} tokens: one after another {sequential:.2f} s "
          f"({total / sequential:.0f} tokens/s); batched {together:.2f} s ({total / together:.0f} tokens/s), "
          f"{sequential / together:.2f}x; steps by batch size {dict(sorted(sizes.items()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
