"""ASR micro-batching benchmark: N sessions hand in an utterance at the same instant.

Sequential is what the server does without batching: one ASR worker, the utterances decoded one
after another. Batched is `BatchingTranscriber` (one `transcribe_batch` per micro-batch) called from
`max_batch` threads, as the ASR executor does with batching on. Per mode it prints each utterance's
latency (from the common start to its transcript; p50 and max over utterances and repeats), the
wall time for all N, and throughput in utterances and audio-seconds per second. It also checks
that both modes produce the same texts.

`python -m loadtest.asr_batch_bench [--concurrency 1 4 8] [--repeats 3] [--model tiny.en]
 [--device auto|cpu|cuda] [--threads T] [--window-ms 15] [--max-batch 8]`
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from loadtest.corpus import load_utterances
from npcserver.audio import ASR_SAMPLE_RATE, pcm16_to_float, resample
from npcserver.backends.base import Transcriber


@dataclass(frozen=True, slots=True)
class RoundResult:
    latencies_s: list[float]  # per utterance, from the common start
    wall_s: float
    texts: list[str]


def run_round(transcriber: Transcriber, audios: list[np.ndarray], callers: int) -> RoundResult:
    """All utterances handed in at once by `callers` threads; each one's latency from that instant."""
    finished: list[float] = [0.0] * len(audios)
    texts: list[str] = [""] * len(audios)

    def one(index: int) -> None:
        texts[index] = transcriber.transcribe(audios[index]).text
        finished[index] = time.perf_counter()

    with ThreadPoolExecutor(max_workers=callers, thread_name_prefix="bench-session") as sessions:
        started = time.perf_counter()
        for future in [sessions.submit(one, index) for index in range(len(audios))]:
            future.result()
    return RoundResult([end - started for end in finished], max(finished) - started, texts)


def summarize(rounds: list[RoundResult], audios: list[np.ndarray]) -> dict[str, float]:
    latencies = sorted(latency for r in rounds for latency in r.latencies_s)
    wall = statistics.median(r.wall_s for r in rounds)
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "max_ms": 1000 * latencies[-1],
        "wall_ms": 1000 * wall,
        "utt_per_s": len(audios) / wall,
        "audio_s_per_s": sum(audio.size for audio in audios) / ASR_SAMPLE_RATE / wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.asr_batch_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8], help="N utterances at once")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="tiny.en", help="embedded ASR name or CTranslate2 folder")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for CTranslate2 (0 = all cores)")
    parser.add_argument("--window-ms", type=float, default=15.0)
    parser.add_argument("--max-batch", type=int, default=8)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ctranslate2

    from npcserver.backends.batched_asr import BatchingTranscriber
    from npcserver.backends.whisper_asr import WhisperTranscriber
    from npcserver.config import Settings
    from npcserver.models import resolve_asr_model

    device = args.device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute_type = "float16" if device == "cuda" else "int8"
    threads = args.threads or os.cpu_count() or 1
    whisper = WhisperTranscriber(
        resolve_asr_model(args.model, Settings().cache_dir),
        device=device,
        compute_type=compute_type,
        cpu_threads=threads,
    )
    corpus = [
        resample(pcm16_to_float(u.pcm), u.sample_rate, ASR_SAMPLE_RATE) for u in load_utterances()
    ]  # 1.7-3.2 s of Piper speech each
    whisper.transcribe(corpus[0])  # warm-up: first calls allocate
    whisper.transcribe_batch(corpus[:2])

    print(
        f"ASR micro-batching: model {args.model} on {device} ({compute_type}, {threads} CPU threads, "
        f"{os.cpu_count()} cores), window {args.window_ms:g} ms, max batch {args.max_batch}, "
        f"{args.repeats} repeats; latency from the instant all N are handed in"
    )
    header = f"{'N':>3} {'mode':<10} {'p50 ms':>8} {'max ms':>8} {'wall ms':>8} {'utt/s':>7} {'audio s/s':>9}  batches"
    print(header)
    print("-" * len(header))
    for n in args.concurrency:
        audios = [corpus[i % len(corpus)] for i in range(n)]
        sequential_rounds, batched_rounds = [], []
        with BatchingTranscriber(whisper, window_ms=args.window_ms, max_batch=args.max_batch) as batcher:
            for _ in range(args.repeats):  # alternated, so drift in a shared machine's load hits both alike
                sequential_rounds.append(run_round(whisper, audios, callers=1))
                batched_rounds.append(run_round(batcher, audios, callers=args.max_batch))
            sizes = batcher.batch_sizes()
        sequential, batched = summarize(sequential_rounds, audios), summarize(batched_rounds, audios)
        seq_texts, batch_texts = sequential_rounds[-1].texts, batched_rounds[-1].texts
        for mode, row, note in (
            ("sequential", sequential, ""),
            ("batched", batched, " ".join(f"{count}x{size}" for size, count in sorted(sizes.items()))),
        ):
            print(
                f"{n:>3} {mode:<10} {row['p50_ms']:>8.0f} {row['max_ms']:>8.0f} {row['wall_ms']:>8.0f} "
                f"{row['utt_per_s']:>7.2f} {row['audio_s_per_s']:>9.2f}  {note}"
            )
        if seq_texts != batch_texts:
            print(f"    texts differ: {sum(a != b for a, b in zip(seq_texts, batch_texts, strict=True))} of {n}")
        print(
            f"    N={n}: batched/sequential p50 latency {batched['p50_ms'] / sequential['p50_ms']:.2f}x, "
            f"throughput {batched['utt_per_s'] / sequential['utt_per_s']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
