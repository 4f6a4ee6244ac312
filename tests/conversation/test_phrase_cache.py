"""The phrase cache: a short phrase said again is not synthesized again; the cache stays within its bytes."""

from __future__ import annotations

import numpy as np
import pytest

from npcserver.backends import Backends
from npcserver.backends.base import Speech, VoiceSettings
from npcserver.backends.fake import FakeDialogue, FakeSynthesizer, FakeTranscriber
from npcserver.conversation.phrase_cache import PhraseAudioCache
from npcserver.conversation.pipeline import ModelRunner

VOICE = VoiceSettings()


def pcm(samples: int) -> Speech:
    return Speech(np.arange(samples, dtype=np.int16), (("a", samples),))


def test_a_kept_phrase_comes_back_read_only_and_counts_a_hit() -> None:
    cache = PhraseAudioCache(max_bytes=10_000)
    assert cache.get("Good day,", VOICE) is None
    speech = pcm(100)
    cache.put("Good day,", VOICE, speech)
    speech.audio[0] = 99  # the caller's array is not the kept one
    kept = cache.get("Good day,", VOICE)
    assert kept is not None and kept.audio[0] == 0 and not kept.audio.flags.writeable
    assert kept.phonemes == speech.phonemes  # a cached phrase keeps its lip-sync
    assert (cache.hits, cache.misses) == (1, 1)


def test_the_same_words_in_another_voice_are_another_phrase() -> None:
    cache = PhraseAudioCache(max_bytes=10_000)
    cache.put("Aye,", VOICE, pcm(10))
    assert cache.get("Aye,", VoiceSettings(pitch_semitones=3.0)) is None
    assert cache.get("Aye,", VOICE) is not None


def test_long_texts_are_not_kept_and_not_counted() -> None:
    cache = PhraseAudioCache(max_bytes=10_000, max_words=6)
    long_clause = "I have heard that the dragon sleeps in the eastern hills."
    cache.put(long_clause, VOICE, pcm(10))
    assert cache.get(long_clause, VOICE) is None
    assert len(cache) == 0 and cache.misses == 0


def test_the_phrase_used_longest_ago_goes_first_when_over_the_limit() -> None:
    cache = PhraseAudioCache(max_bytes=3 * 200)  # three phrases of 100 int16 samples
    for text in ("One.", "Two.", "Three."):
        cache.put(text, VOICE, pcm(100))
    assert cache.get("One.", VOICE) is not None  # now "Two." is the least recently used
    cache.put("Four.", VOICE, pcm(100))
    assert cache.get("Two.", VOICE) is None
    assert all(cache.get(text, VOICE) is not None for text in ("One.", "Three.", "Four."))
    assert cache.bytes == 600 and len(cache) == 3
    cache.put("Huge.", VOICE, pcm(1000))  # bigger than the whole cache: not kept, nothing pushed out
    assert len(cache) == 3 and cache.get("Huge.", VOICE) is None


def test_bad_size_is_refused() -> None:
    with pytest.raises(ValueError):
        PhraseAudioCache(max_bytes=0)


async def test_the_runner_synthesizes_a_repeated_opener_once() -> None:
    synthesizer = FakeSynthesizer()
    runner = ModelRunner(Backends(FakeTranscriber(), FakeDialogue(), synthesizer), phrase_cache=PhraseAudioCache(1 << 20))
    long_clause = "Leave it on the anvil and come back by sundown tomorrow."
    try:
        first = await runner.synthesize("Good day,", VOICE)
        again = await runner.synthesize("Good day,", VOICE)
        await runner.synthesize(long_clause, VOICE)
        await runner.synthesize(long_clause, VOICE)
    finally:
        runner.close()
    np.testing.assert_array_equal(first.audio, again.audio)
    assert [text for text, _ in synthesizer.calls] == ["Good day,", long_clause, long_clause]


async def test_without_a_cache_every_phrase_is_synthesized() -> None:
    synthesizer = FakeSynthesizer()
    runner = ModelRunner(Backends(FakeTranscriber(), FakeDialogue(), synthesizer))
    try:
        for _ in range(2):
            await runner.synthesize("Good day,", VOICE)
    finally:
        runner.close()
    assert len(synthesizer.calls) == 2
