"""Speculation, fillers and barge-in, on a real server with fake models and the fake (energy) VAD."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from npcserver.backends import Backends
from npcserver.backends.fake import FakeDialogue, FakeSentenceEnd, FakeSynthesizer, FakeTranscriber
from npcserver.config import Settings
from npcserver.edge.server import NpcServer
from tests.conftest import Conversation, fake_settings, silence, tone


async def _serve(backends: Backends, **settings: object) -> AsyncIterator[NpcServer]:
    async with NpcServer(fake_settings(**settings), backends) as server:
        await asyncio.wait_for(server.wait_ready(), 10)
        yield server


@pytest.fixture
def transcriber() -> FakeTranscriber:
    return FakeTranscriber()


@pytest.fixture
def synthesizer() -> FakeSynthesizer:
    return FakeSynthesizer()


async def test_speculative_turn_is_discarded_when_speech_resumes(transcriber: FakeTranscriber) -> None:
    backends = Backends(transcriber, FakeDialogue(), FakeSynthesizer())
    async for server in _serve(backends):
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            # speech, a 250 ms pause (long enough to start speculating, too short to end the turn), more speech
            await talk.send_audio(tone(1.0) + silence(0.25))
            await asyncio.sleep(0.3)  # the speculative turn runs (and finishes, held back) meanwhile
            await talk.send_audio(tone(0.6) + silence(1.0))
            end = await talk.until("turn_end")
    assert end["speculative"] is True and end["turn"] == 1
    transcripts = [m for m in talk.messages if m["type"] == "transcript"]
    assert len(transcripts) == 1  # the first, abandoned speculation never reached the client
    assert len(transcriber.calls) == 2  # ...but it did run: once at each pause
    heard = float(transcripts[0]["text"].split()[3])
    assert heard > 1.6  # the committed transcript covers both stretches of speech
    replies = [m for m in talk.messages if m["type"] == "reply"]
    assert all(m["turn"] == 1 for m in replies)


async def test_without_speculation_the_turn_starts_at_the_confirmed_end(transcriber: FakeTranscriber) -> None:
    backends = Backends(transcriber, FakeDialogue(), FakeSynthesizer())
    async for server in _serve(backends, speculative=False):
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await talk.send_audio(tone(1.0) + silence(0.25) + tone(0.6) + silence(1.0))
            end = await talk.until("turn_end")
    assert end["speculative"] is False and len(transcriber.calls) == 1


async def test_filler_plays_when_the_reply_is_late(synthesizer: FakeSynthesizer) -> None:
    # the greta persona's budget is 900 ms; a 1.5 s transcription makes the reply late
    backends = Backends(FakeTranscriber(delay_s=1.5), FakeDialogue(), synthesizer)
    async for server in _serve(backends, speculative=False):
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await asyncio.sleep(0.2)  # fillers are synthesized in the background at session start
            await talk.send_audio(tone(0.8) + silence(0.8))
            end = await talk.until("turn_end")
    persona = server.personas.get("greta_blacksmith")
    assert end["filler"] is True
    assert end["timings"]["voice_to_voice_ms"] < end["timings"]["reply_audio_ms"]
    spoken = [text for text, _ in synthesizer.calls]
    assert set(persona.fillers) <= set(spoken)
    # one audio block: filler first, reply after, no interleaving
    kinds = [m["type"] for m in talk.messages if m["type"] in ("audio_start", "audio_end")]
    assert kinds == ["audio_start", "audio_end"]


async def test_no_filler_when_the_reply_is_on_time() -> None:
    backends = Backends(FakeTranscriber(), FakeDialogue(), FakeSynthesizer())
    async for server in _serve(backends):
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await talk.send_audio(tone(0.8) + silence(0.8))
            end = await talk.until("turn_end")
    assert end["filler"] is False


async def test_player_speaking_over_the_npc_cuts_it_off() -> None:
    slow = FakeDialogue(token_delay_s=0.05, reply=" ".join(["Word."] * 300))
    backends = Backends(FakeTranscriber(), slow, FakeSynthesizer())
    async for server in _serve(backends):
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await talk.send_json(type="text", text="Tell me a long story.")
            await talk.until("audio_start")
            await talk.send_audio(tone(0.5))  # longer than barge_in_ms (300)
            end = await talk.until("turn_end", turn=1)
    assert end["interrupted"] is True
    words = "".join(m["text"] for m in talk.messages if m["type"] == "reply" and m["turn"] == 1).split()
    assert len(words) < 100


async def test_a_cough_does_not_cut_the_npc_off() -> None:
    slow = FakeDialogue(token_delay_s=0.01, reply=" ".join(["Word."] * 60))
    backends = Backends(FakeTranscriber(), slow, FakeSynthesizer())
    async for server in _serve(backends, min_speech_ms=200):
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await talk.send_json(type="text", text="Tell me a story.")
            await talk.until("audio_start")
            await talk.send_audio(tone(0.1) + silence(0.1))  # 100 ms: shorter than min speech
            end = await talk.until("turn_end", turn=1)
    assert end["interrupted"] is False


async def _barge_in_with(transcript: str, **settings: object) -> tuple[list[dict], dict, FakeDialogue]:
    transcriber = FakeTranscriber()
    transcriber.scripted = [transcript]
    slow = FakeDialogue(token_delay_s=0.03, reply="The forge is hot. " + " ".join(["Iron and fire."] * 40))
    async for server in _serve(Backends(transcriber, slow, FakeSynthesizer()), **settings):
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await talk.send_json(type="text", text="Tell me about your forge.")
            await talk.until("audio_start")
            await asyncio.sleep(0.3)
            await talk.send_audio(tone(0.5) + silence(0.8))
            assert (await talk.until("turn_end", turn=1))["interrupted"] is True
            end = await talk.until("turn_end", turn=2)
    return talk.messages, end, slow


async def test_false_interruption_resumes_the_cut_off_reply() -> None:
    messages, end, dialogue = await _barge_in_with("Uh-huh.")
    assert end["resumed"] is True
    assert len(dialogue.prompts) == 1  # no new reply was generated
    first = "".join(m["text"] for m in messages if m["type"] == "reply" and m["turn"] == 1)
    again = "".join(m["text"] for m in messages if m["type"] == "reply" and m["turn"] == 2)
    assert again and again in first  # the NPC picks up its own words, no new reply was generated


async def test_real_interruption_gets_a_new_reply() -> None:
    _, end, dialogue = await _barge_in_with("What about axes?")
    assert end["resumed"] is False
    assert len(dialogue.prompts) == 2 and dialogue.prompts[-1][-1].content.endswith("What about axes?")


async def test_drop_policy_never_resumes() -> None:
    _, end, _ = await _barge_in_with("Hmm.", false_interruption="drop")
    assert end["resumed"] is False


async def test_after_late_replies_the_filler_starts_at_once() -> None:
    # greta's budget is 900 ms: the fallback filler comes at 750 ms, an early one right at the turn's start
    backends = Backends(FakeTranscriber(delay_s=1.2), FakeDialogue(), FakeSynthesizer())
    async for server in _serve(backends, speculative=False):
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await asyncio.sleep(0.2)  # fillers are synthesized in the background at session start
            ends = []
            for turn in (1, 2):
                await talk.send_audio(tone(0.8) + silence(0.8))
                ends.append(await talk.until("turn_end", turn=turn))
    first, second = ends
    assert first["filler"] and second["filler"]
    assert first["timings"]["filler_ms"] >= 700  # nothing known yet: waited for the budget
    assert second["timings"]["filler_ms"] < first["timings"]["filler_ms"] - 150  # the forecast said late


async def test_push_to_talk_waits_for_the_key_not_for_silence(transcriber: FakeTranscriber) -> None:
    backends = Backends(transcriber, FakeDialogue(), FakeSynthesizer())
    async for server in _serve(backends):
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start(push_to_talk=True)
            # a long pause while the key is held must not end the turn
            await talk.send_audio(tone(0.8) + silence(1.2) + tone(0.6))
            await talk.send_json(type="end_of_turn")
            transcript = await talk.until("transcript")
            await talk.until("turn_end")
    assert transcript["turn"] == 1
    assert float(transcript["text"].split()[3]) > 2.4  # both stretches and the pause, in one turn
    assert [m["turn"] for m in talk.messages if m["type"] == "transcript"] == [1]


async def _end_silence_after(
    transcript: str, push_to_talk: bool = False, backends: Backends | None = None, open_mic_s: float = 0.8,
    **settings: object,
) -> dict:
    """Speak, then keep the mic open at real-time pace: the silence that ended the turn, as turn_end says."""
    backends = backends or Backends(FakeTranscriber(), FakeDialogue(), FakeSynthesizer())
    backends.transcriber.scripted = [transcript]  # type: ignore[attr-defined]
    async for server in _serve(backends, **settings):
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start(push_to_talk=push_to_talk)
            await talk.send_audio(tone(1.0))
            for _ in range(round(open_mic_s / 0.02)):  # open mic, 20 ms a frame
                await talk.send_audio(silence(0.02))
                await asyncio.sleep(0.02)
            if push_to_talk:
                await talk.send_json(type="end_of_turn")
            end = await talk.until("turn_end")
    return end


async def test_a_finished_sentence_ends_the_turn_after_a_shorter_silence() -> None:
    end = await _end_silence_after("How much for a steel sword?")
    assert end["speculative"] is True
    assert 300 <= end["timings"]["end_silence_ms"] < 450


async def test_an_unfinished_sentence_waits_the_whole_end_silence() -> None:
    end = await _end_silence_after("How much for a steel")
    assert end["timings"]["end_silence_ms"] >= 500


async def test_the_shorter_silence_can_be_turned_off_and_never_applies_to_push_to_talk() -> None:
    end = await _end_silence_after("How much for a steel sword?", end_silence_finished_ms=0)
    assert end["timings"]["end_silence_ms"] >= 500
    end = await _end_silence_after("How much for a steel sword?", push_to_talk=True)
    assert "end_silence_ms" not in end["timings"] or end["timings"]["end_silence_ms"] >= 500


UNFINISHED_WAIT_MS = Settings().end_silence_incomplete_ms


async def test_words_that_break_off_make_the_turn_wait_as_for_an_unfinished_thought() -> None:
    words = FakeSentenceEnd()
    backends = Backends(FakeTranscriber(), FakeDialogue(), FakeSynthesizer(), sentence_end=words)
    end = await _end_silence_after("How much for a", backends=backends, open_mic_s=1.3)
    assert words.calls == ["How much for a"]  # asked on the turn worker, the answer went to the core
    assert end["timings"]["end_silence_ms"] >= UNFINISHED_WAIT_MS
    end = await _end_silence_after("How much for a steel sword?", backends=backends)
    assert 300 <= end["timings"]["end_silence_ms"] < 450  # whole words: the finished-sentence wait holds


async def test_a_last_word_the_recogniser_guessed_makes_the_turn_wait_without_asking_the_words() -> None:
    words, transcriber = FakeSentenceEnd(), FakeTranscriber()
    backends = Backends(transcriber, FakeDialogue(), FakeSynthesizer(), sentence_end=words)
    transcriber.last_word_probability = 0.2  # "... four of c-" heard as "... four of course."
    end = await _end_silence_after("Eight of spades, four of course.", backends=backends, open_mic_s=1.3)
    assert words.calls == [] and end["timings"]["end_silence_ms"] >= UNFINISHED_WAIT_MS
    transcriber.last_word_probability = 0.9
    end = await _end_silence_after("Eight of spades, four of clubs.", backends=backends)
    assert words.calls == ["Eight of spades, four of clubs."] and end["timings"]["end_silence_ms"] < 450


@pytest.mark.parametrize("interleave", [True, False])
async def test_a_long_reply_does_not_hold_other_players_first_words(interleave: bool) -> None:
    slow = FakeDialogue(token_delay_s=0.05, reply=" ".join(["Word."] * 40))
    async for server in _serve(Backends(FakeTranscriber(), slow, FakeSynthesizer()), llm_interleave=interleave):
        async with connect(server.url) as a_ws, connect(server.url) as b_ws:
            a, b = Conversation(a_ws), Conversation(b_ws)
            await asyncio.gather(a.start(), b.start())
            await a.send_json(type="text", text="Tell me everything.")
            await a.until("reply")  # A's reply is being written
            await b.send_json(type="text", text="Quick question!")
            b_first_words = asyncio.create_task(b.until("reply"))
            a_done = asyncio.create_task(a.until("turn_end"))
            done, _ = await asyncio.wait({b_first_words, a_done}, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.gather(b_first_words, a_done)
    # interleaved, B hears its NPC while A's reply is still being written; otherwise only after it
    assert (b_first_words in done and a_done not in done) is interleave


class FakePrefillingDialogue(FakeDialogue):
    """A fake dialogue model that records the prompt starts it was asked to precompute."""

    def __init__(self) -> None:
        super().__init__()
        self.prefilled: list[list] = []

    def prefill(self, messages: list) -> None:
        self.prefilled.append(list(messages))


async def test_after_a_turn_the_next_prompt_start_is_prefilled_while_the_player_listens() -> None:
    dialogue = FakePrefillingDialogue()
    async for server in _serve(Backends(FakeTranscriber(), dialogue, FakeSynthesizer())):
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await talk.send_json(type="text", text="Do you shoe horses?")
            await talk.until("turn_end")
            for _ in range(100):  # the prefill is queued from the turn's done-callback
                if len(dialogue.prefilled) >= 2:
                    break
                await asyncio.sleep(0.01)
            await talk.send_json(type="text", text="How much?")
            await talk.until("turn_end")
    persona_start, next_start = dialogue.prefilled[0], dialogue.prefilled[1]
    next_prompt = dialogue.prompts[-1]
    assert next_prompt[: len(next_start)] == next_start  # the second turn's prompt starts with it...
    assert len(next_start) > len(persona_start)  # ...and it holds the first exchange, not only the persona
    assert next_start[-1].role == "assistant" and next_start[-2].content.endswith("Do you shoe horses?")


async def test_a_seeded_server_samples_turn_n_of_every_conversation_alike() -> None:
    async def seeds(**settings: object) -> list[int | None]:
        dialogue = FakeDialogue()
        async for server in _serve(Backends(FakeTranscriber(), dialogue, FakeSynthesizer()), **settings):
            for _ in range(2):  # two conversations of two typed turns each
                async with connect(server.url) as ws:
                    talk = Conversation(ws)
                    await talk.start()
                    for turn in (1, 2):
                        await talk.send_json(type="text", text="Hello there.")
                        await talk.until("turn_end", turn=turn)
        return [options.seed for options in dialogue.options]

    first, second, first_again, second_again = await seeds(llm_seed=5)
    assert first == first_again and second == second_again and first != second
    assert await seeds() == [None] * 4  # unseeded by default: fresh randomness every reply


@pytest.mark.parametrize("reply_over_first", [False, True])
async def test_a_player_who_goes_on_is_answered_as_a_whole_and_the_cut_off_reply_is_forgotten(reply_over_first: bool) -> None:
    """The player pauses long enough to end the turn, the NPC starts answering (or has finished a short
    reply), and the player goes on: one turn answers both parts, and the history holds only it."""
    long_reply = " ".join(["Iron and fire."] * 40)
    dialogue = FakeDialogue(token_delay_s=0.0 if reply_over_first else 0.03, reply="Aye." if reply_over_first else long_reply)
    async for server in _serve(Backends(FakeTranscriber(), dialogue, FakeSynthesizer())):
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await talk.send_audio(tone(1.0) + silence(0.6))
            await talk.until("audio_start", turn=1)
            if reply_over_first:
                await talk.until("turn_end", turn=1)
            await talk.send_audio(tone(0.7) + silence(0.8))
            await talk.until("turn_end", turn=2)
            await talk.send_json(type="text", text="And?")
            await talk.until("turn_end", turn=3)
    (whole,) = [m["text"] for m in talk.messages if m["type"] == "transcript" and m["turn"] == 2]
    assert float(whole.split()[3]) > 1.7  # one transcript of both parts
    first_reply = next(m for m in talk.messages if m["type"] == "turn_end" and m["turn"] == 1)
    assert first_reply["interrupted"] is not reply_over_first
    # what the NPC remembers when the player speaks next: the whole line and its answer, nothing of turn 1
    remembered = [m.content for m in dialogue.prompts[-1][1:-1]]
    assert [line for line in remembered if line.startswith("fake transcript")] == [whole]
