"""Lip-sync: phonemes to OVR visemes, and visemes on the wire timed to the NPC's audio."""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect

from npcserver.backends import Backends
from npcserver.backends.base import VoiceSettings
from npcserver.backends.fake import FakeDialogue, FakeSynthesizer, FakeTranscriber
from npcserver.conversation.visemes import PHONEME_VISEMES, VISEMES, visemes_of
from npcserver.edge.server import NpcServer
from npcserver.protocol import Viseme
from tests.conftest import REPO, Conversation, fake_settings, silence, tone


def test_each_phoneme_becomes_its_mouth_shape_and_equal_neighbours_merge() -> None:
    # "mob": m and b are both lips closed (PP), one viseme held over both would be wrong here: o is between
    assert visemes_of([("m", 100), ("ɑ", 200), ("b", 50)]) == (
        Viseme("PP", 0, 100), Viseme("aa", 100, 200), Viseme("PP", 300, 50)
    )
    assert visemes_of([("m", 100), ("b", 50)], first_sample=1000) == (Viseme("PP", 1000, 150),)


def test_stress_marks_go_with_the_sound_after_them_and_length_marks_with_the_one_before() -> None:
    # k, stress mark, ɔ, length mark: the stress mark's samples belong to ɔ, the length mark's too
    assert visemes_of([("k", 100), ("ˈ", 40), ("ɔ", 200), ("ː", 60)]) == (Viseme("kk", 0, 100), Viseme("oh", 100, 300))
    # a word gap holds the shape before it; an unknown symbol at the very start is silence
    assert visemes_of([("ʘ", 10), ("s", 100), (" ", 30), ("ð", 50)]) == (
        Viseme("sil", 0, 10), Viseme("SS", 10, 130), Viseme("TH", 140, 50)
    )


def test_visemes_lie_back_to_back_over_exactly_the_phonemes_samples() -> None:
    phonemes = FakeSynthesizer().synthesize("Leave it on the anvil, traveller.", VoiceSettings()).phonemes
    visemes = visemes_of(phonemes, first_sample=500)
    assert visemes[0].start == 500
    assert all(a.start + a.duration == b.start for a, b in itertools.pairwise(visemes))
    assert sum(v.duration for v in visemes) == sum(samples for _, samples in phonemes)
    assert {v.name for v in visemes} <= set(VISEMES)


def test_the_table_in_the_protocol_docs_is_the_one_the_server_uses() -> None:
    docs = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = docs.split("## Lip-sync (visemes)")[1].split("\n## ")[0]
    documented = {}
    for row in re.findall(r"^\| `(\w+)` \|[^|]*\|(.*)\|$", section, re.MULTILINE):
        viseme, symbols = row
        documented.update({symbol: viseme for symbol in re.findall(r"`([^`]+)`", symbols)})
    assert documented == PHONEME_VISEMES
    assert set(PHONEME_VISEMES.values()) == set(VISEMES)


def clause_visemes(talk: Conversation, turn: int) -> list[tuple[int, list[dict[str, Any]]]]:
    """(samples of the turn's audio sent before it, visemes) for each visemes message of the turn."""
    found, sent, in_turn = [], 0, False
    for item in talk.order:
        if isinstance(item, int):
            sent += item if in_turn else 0
        elif item.get("turn") == turn:
            in_turn = item["type"] != "audio_end" and (in_turn or item["type"] == "audio_start")
            if item["type"] == "visemes":
                found.append((sent, item["visemes"]))
    return found


def assert_visemes_cover_the_audio(talk: Conversation, turn: int) -> None:
    clauses = clause_visemes(talk, turn)
    assert clauses, f"no visemes in turn {turn}"
    covered = 0
    for sent_before, visemes in clauses:
        assert visemes[0]["start"] == sent_before == covered  # sent before the clause's first audio frame
        for viseme in visemes:
            assert viseme["start"] == covered and viseme["duration"] > 0 and viseme["name"] in VISEMES
            covered += viseme["duration"]
    assert covered == len(talk.audio[turn]) // 2  # every sample of the turn's audio has its shape


async def test_with_visemes_on_every_clause_comes_with_its_mouth_shapes(talk: Conversation) -> None:
    await talk.start(visemes=True, greeting=True)
    await talk.until("turn_end", turn=0)
    await talk.send_json(type="text", text="Can you mend my sword?")
    await talk.until("turn_end", turn=1)
    assert_visemes_cover_the_audio(talk, 0)  # the greeting
    assert_visemes_cover_the_audio(talk, 1)
    assert len(clause_visemes(talk, 1)) > 1  # one message per clause


async def test_a_phrase_from_the_cache_brings_its_visemes(fake_server: NpcServer, talk: Conversation) -> None:
    await talk.start(visemes=True)
    for turn in (1, 2):  # the fake model answers alike: the second reply's opener comes from the cache
        await talk.send_json(type="text", text="Good day.")
        await talk.until("turn_end", turn=turn)
    assert fake_server.runner is not None and fake_server.runner.phrase_cache is not None
    assert fake_server.runner.phrase_cache.hits >= 1
    assert_visemes_cover_the_audio(talk, 2)
    assert clause_visemes(talk, 1)[0][1] == clause_visemes(talk, 2)[0][1]


async def test_a_filler_brings_its_visemes() -> None:
    # greta's budget is 900 ms; a 1.5 s transcription makes the reply late, so a filler plays first
    backends = Backends(FakeTranscriber(delay_s=1.5), FakeDialogue(), FakeSynthesizer())
    async with NpcServer(fake_settings(speculative=False), backends) as server:
        await asyncio.wait_for(server.wait_ready(), 10)
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start(visemes=True)
            await asyncio.sleep(0.2)  # fillers are synthesized in the background at session start
            await talk.send_audio(tone(0.8) + silence(0.8))
            end = await talk.until("turn_end")
    assert end["filler"] is True
    assert_visemes_cover_the_audio(talk, 1)  # the filler's shapes first, then the reply's, on one timeline


async def test_without_visemes_none_are_sent(talk: Conversation) -> None:
    await talk.start()
    await talk.send_json(type="text", text="Can you mend my sword?")
    await talk.until("turn_end")
    assert talk.audio[1] and not [m for m in talk.messages if m["type"] == "visemes"]


@pytest.mark.real
@pytest.mark.parametrize(
    "voice", [VoiceSettings(), VoiceSettings(speed=0.92, pitch_semitones=-2.0), VoiceSettings(pitch_semitones=3.0)],
    ids=["plain", "slower-deeper", "higher"],
)
def test_piper_alignment_times_the_visemes_within_one_percent(voice: VoiceSettings) -> None:
    from npcserver.backends.piper_tts import PiperSynthesizer
    from npcserver.models import embedded_voice_path

    path = embedded_voice_path()
    assert path is not None
    synthesizer = PiperSynthesizer(path, threads=1)
    for clause in ("Leave it on the anvil.", "Five silver, ready by sundown. Not a moment sooner!", "Hmph."):
        speech = synthesizer.synthesize(clause, voice)
        visemes = visemes_of(speech.phonemes)
        assert visemes and all(v.start >= 0 and v.start + v.duration <= speech.audio.size for v in visemes)
        total = sum(v.duration for v in visemes)
        assert abs(total - speech.audio.size) <= 0.01 * speech.audio.size
        # the alignment is real timing: the voice is much louder where the mouth moves than in the pauses
        audio = speech.audio.astype(np.float64)
        loudness = {
            silent: np.sqrt(np.mean(np.concatenate(
                [audio[v.start : v.start + v.duration] for v in visemes if (v.name == "sil") == silent]
            ) ** 2))
            for silent in (True, False)
        }
        assert loudness[False] > 3 * loudness[True], (clause, loudness)
