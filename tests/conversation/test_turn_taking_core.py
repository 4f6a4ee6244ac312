"""The turn-taking core on literal event sequences: audio from the energy VAD, no server, no model, no sleep.

The stream position is the clock: `feed(core, speech=1.0)` is one second of a tone the fake VAD
takes for speech, `feed(core, silence=0.3)` 300 ms of digital silence.
"""

from __future__ import annotations

import numpy as np
import pytest

from npcserver.conversation.endpoint import Endpointer, FakeVad
from npcserver.conversation.turn_taking import (
    Command,
    CommitSpeculation,
    DropSpeculation,
    PauseRule,
    ScoreSentenceEnd,
    ScoreTurnEnd,
    StartSpeculation,
    StartTurn,
    StopSpeaking,
    TurnTaking,
    TurnTakingRules,
)

RATE = 16_000


def core(push_to_talk: bool = False, max_utterance_s: float = 30, **rules: object) -> TurnTaking:
    endpointer = Endpointer(FakeVad(), end_silence_ms=30_000 if push_to_talk else 500, max_utterance_s=max_utterance_s)
    turns = TurnTaking(endpointer, TurnTakingRules(**rules), push_to_talk=push_to_talk)  # type: ignore[arg-type]
    turns.clock = Clock()  # type: ignore[attr-defined]
    return turns


def speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


class Clock:
    """The fake clock: audio arrives in real time unless a test moves the clock on."""

    now_ms = 0.0


def feed(
    turns: TurnTaking, *, speech_s: float = 0.0, silence_s: float = 0.0, busy: bool = False, clock: Clock | None = None
) -> list[Command]:
    """Feed speech then silence in 20 ms chunks, as a client streams; all the commands, in order."""
    clock = clock or turns.clock  # type: ignore[attr-defined]
    commands: list[Command] = []
    audio = np.concatenate([speech(speech_s), quiet(silence_s)])
    step = int(0.02 * RATE)
    for start in range(0, audio.size, step):
        chunk = audio[start : start + step]
        clock.now_ms += chunk.size * 1000 / RATE
        commands += turns.on_audio(chunk, clock.now_ms, models_busy=busy)
    return commands


def kinds(commands: list[Command]) -> list[str]:
    return [type(c).__name__ for c in commands]


def only(commands: list[Command], kind: type) -> list:
    return [c for c in commands if isinstance(c, kind)]


def test_a_pause_is_speculated_and_the_speculation_committed_when_the_pause_ends_the_turn() -> None:
    turns = core()
    commands = feed(turns, speech_s=1.0, silence_s=0.8)
    assert kinds(commands) == ["StartSpeculation", "CommitSpeculation"]
    started, committed = commands
    assert started.turn == committed.turn == 1 and committed.replaces is None
    assert committed.ended.speech_end_sample == started.at_sample
    assert 480 <= committed.ended.endpoint_delay_ms <= 560


def test_speech_resuming_drops_the_speculation_and_the_turn_holds_both_stretches() -> None:
    turns = core()
    commands = feed(turns, speech_s=1.0, silence_s=0.25) + feed(turns, speech_s=0.6, silence_s=0.8)
    assert kinds(commands) == ["StartSpeculation", "DropSpeculation", "StartSpeculation", "CommitSpeculation"]
    assert commands[2].turn == 1  # the number is not used up by the dropped guess
    assert commands[2].audio.size / RATE > 1.8


def test_without_speculation_the_turn_starts_at_the_end_of_the_pause() -> None:
    commands = feed(core(speculative=False), speech_s=1.0, silence_s=0.8)
    assert kinds(commands) == ["StartTurn"]
    assert commands[0].audio.size / RATE > 1.0 and commands[0].ended.reason == "silence"


def test_busy_models_get_no_speculation() -> None:
    turns = core()
    commands = feed(turns, speech_s=1.0, silence_s=0.1, busy=True) + feed(turns, silence_s=0.7)
    assert kinds(commands) == ["StartTurn"]


def test_a_finished_sentence_ends_the_turn_after_a_shorter_pause() -> None:
    turns = core()
    (started,) = feed(turns, speech_s=1.0, silence_s=0.1)
    turns.on_transcript(started.turn, "How much for a steel sword?")
    (committed,) = feed(turns, silence_s=0.7)
    assert 280 <= committed.ended.endpoint_delay_ms < 350


@pytest.mark.parametrize("transcript", ["How much for a steel", "How much for the.", "Uh-huh."])
def test_an_unfinished_sentence_waits_the_whole_end_silence(transcript: str) -> None:
    turns = core()
    (started,) = feed(turns, speech_s=1.0, silence_s=0.1)
    turns.on_transcript(started.turn, transcript)
    (committed,) = feed(turns, silence_s=0.7)
    assert committed.ended.endpoint_delay_ms >= 500


def test_a_late_transcript_of_an_abandoned_pause_changes_nothing() -> None:
    turns = core()
    (first,) = feed(turns, speech_s=1.0, silence_s=0.1)
    feed(turns, speech_s=0.5, silence_s=0.1)
    turns.on_transcript(first.turn - 1, "Done.")  # not the speculation in flight
    (committed,) = feed(turns, silence_s=0.7)
    assert committed.ended.endpoint_delay_ms >= 500


def test_push_to_talk_ignores_pauses_and_ends_at_the_key() -> None:
    turns = core(push_to_talk=True)
    commands = feed(turns, speech_s=0.8, silence_s=1.2) + feed(turns, speech_s=0.6)
    assert "StartTurn" not in kinds(commands) and "CommitSpeculation" not in kinds(commands)
    (start,) = turns.on_end_of_turn()
    assert isinstance(start, StartTurn) and start.ended is not None and start.ended.reason == "forced"
    assert start.audio.size / RATE > 2.4


# --------------------------------------------------------------------------- the turn detector


def detector_rules() -> PauseRule:
    return PauseRule(finished_ms=300, complete_at=0.5, complete_ms=250, incomplete_below=0.5, incomplete_ms=1200)


def paused(rule: PauseRule) -> tuple[TurnTaking, ScoreTurnEnd, StartSpeculation]:
    """A 1 s utterance, 100 ms into its pause: the detector is asked and a speculation runs."""
    turns = core(pause=rule)
    commands = feed(turns, speech_s=1.0, silence_s=0.1)
    (score,), (started,) = only(commands, ScoreTurnEnd), only(commands, StartSpeculation)
    return turns, score, started


def test_every_pause_is_scored_and_a_finished_turn_ends_after_the_short_pause() -> None:
    turns = core(pause=detector_rules())
    commands = feed(turns, speech_s=1.0, silence_s=0.1)
    (score,) = only(commands, ScoreTurnEnd)
    assert score.audio.size / RATE > 1.0
    turns.on_turn_score(score.at_sample, 0.9)
    (committed,) = feed(turns, silence_s=0.7)
    assert 230 <= committed.ended.endpoint_delay_ms < 300


def test_an_unfinished_turn_waits_longer_even_when_the_transcript_looks_finished() -> None:
    turns, score, started = paused(detector_rules())
    turns.on_transcript(started.turn, "And Mister John Dashwood had then leisure to consider.")
    turns.on_turn_score(score.at_sample, 0.2)
    assert feed(turns, silence_s=1.0) == []  # a 1 s pause mid-thought: the NPC still waits
    (committed,) = feed(turns, silence_s=0.3)
    assert 1200 <= committed.ended.endpoint_delay_ms < 1260


def test_a_score_for_a_pause_the_player_already_ended_changes_nothing() -> None:
    turns = core(pause=detector_rules())
    (score,) = only(feed(turns, speech_s=1.0, silence_s=0.1), ScoreTurnEnd)
    feed(turns, speech_s=0.5, silence_s=0.1)
    turns.on_turn_score(score.at_sample, 0.0)  # the answer for the first pause comes late
    (committed,) = only(feed(turns, silence_s=0.7), CommitSpeculation)
    assert committed.ended.endpoint_delay_ms < 600


def test_the_rule_between_the_thresholds_falls_back_on_the_transcript() -> None:
    rule = PauseRule(finished_ms=300, complete_at=0.8, complete_ms=200, incomplete_below=0.2, incomplete_ms=1200)
    assert rule.wait_ms(500, 0.5, "Where is the inn?") == 300
    assert rule.wait_ms(500, 0.5, "Where is the") == 500
    assert rule.wait_ms(500, 0.9, "Where is the") == 200
    assert rule.wait_ms(500, 0.1, "Where is the inn?") == 1200
    assert not PauseRule().uses_detector and rule.uses_detector


# --------------------------------------------------------------------------- the sentence-end model


def words_rules() -> PauseRule:
    return PauseRule(
        finished_ms=300, complete_at=0.5, complete_ms=250, incomplete_below=0.5, incomplete_ms=900,
        sentence_end_below=0.02, sentence_end_at=0.25,
    )


def paused_with_words(detector: float, text: str) -> tuple[TurnTaking, list[Command]]:
    """As `paused`, and then Smart Turn has answered and the transcript is in."""
    turns, score, started = paused(words_rules())
    turns.on_turn_score(score.at_sample, detector)
    return turns, turns.on_transcript(started.turn, text)


def test_the_transcript_of_a_pause_is_sent_to_the_sentence_end_model() -> None:
    turns, asked = paused_with_words(0.9, "He might even.")
    (question,) = asked
    assert isinstance(question, ScoreSentenceEnd) and question.text == "He might even."
    assert question.at_sample == turns.endpointer.paused_at


def test_words_that_break_off_mid_sentence_overrule_a_voice_that_sounds_finished() -> None:
    turns, (question,) = paused_with_words(0.9, "He might even.")
    turns.on_sentence_end_score(question.at_sample, 0.001)
    assert feed(turns, silence_s=0.8) == []  # a 700 ms pause after "he might even" is not the end
    (committed,) = feed(turns, silence_s=0.2)
    assert 900 <= committed.ended.endpoint_delay_ms < 960


def test_a_finished_voice_waits_for_the_words_to_agree_before_the_short_pause() -> None:
    turns, score, started = paused(words_rules())
    turns.on_turn_score(score.at_sample, 0.9)
    assert feed(turns, silence_s=0.2) == []  # 300 ms of silence and the words not in yet: no end
    (question,) = turns.on_transcript(started.turn, "Where is the inn?")
    turns.on_sentence_end_score(question.at_sample, 0.6)
    (committed,) = feed(turns, silence_s=0.04)  # already past 250 ms: it ends with the next frame
    assert 260 <= committed.ended.endpoint_delay_ms < 360


def test_words_that_read_finished_shorten_the_wait_of_a_voice_that_sounds_unfinished() -> None:
    turns, (question,) = paused_with_words(0.1, "He might even have been made amiable himself.")
    turns.on_sentence_end_score(question.at_sample, 0.45)
    (committed,) = feed(turns, silence_s=0.6)
    assert 500 <= committed.ended.endpoint_delay_ms < 560


def test_the_sentence_end_rule_on_its_own() -> None:
    rule = words_rules()
    assert rule.uses_sentence_end and not detector_rules().uses_sentence_end
    assert rule.wait_ms(500, 0.9, "Where is the inn?", 0.5) == 250
    assert rule.wait_ms(500, 0.9, "Where is the inn?", None) == 500  # the words are on their way
    assert rule.wait_ms(500, 0.9, "Where is the inn?", None, words_coming=False) == 250  # no speculation: none come
    assert rule.wait_ms(500, 0.9, "He might even.", 0.001) == 900
    assert rule.wait_ms(500, None, "He might even.", 0.001) == 900
    assert rule.wait_ms(500, 0.1, "He was not an ill disposed young man.", 0.3) == 500
    assert rule.wait_ms(500, 0.1, "He was not an ill", 0.1) == 900
    assert rule.wait_ms(500, 0.9, "He was", 0.1) == 250  # the words unsure, not against: the voice decides


def test_the_words_are_not_scored_once_the_voice_sounds_unfinished_and_they_could_only_agree() -> None:
    only_veto = PauseRule(complete_at=0.5, incomplete_below=0.5, incomplete_ms=900, sentence_end_below=0.02)
    assert only_veto.words_may_matter(None) and only_veto.words_may_matter(0.9)
    assert not only_veto.words_may_matter(0.1)
    assert words_rules().words_may_matter(0.1)  # confident words may shorten that wait
    turns, score, started = paused(only_veto)
    turns.on_turn_score(score.at_sample, 0.1)
    assert turns.on_transcript(started.turn, "He might even.") == []


def test_without_a_sentence_end_model_the_core_asks_nothing_of_the_words() -> None:
    turns = core(pause=detector_rules())
    (started,) = only(feed(turns, speech_s=1.0, silence_s=0.1), StartSpeculation)
    assert turns.on_transcript(started.turn, "He might even.") == []


# --------------------------------------------------------------------------- the last word's probability


def guessing_rules() -> PauseRule:
    return PauseRule(
        finished_ms=300, complete_at=0.5, complete_ms=250, incomplete_below=0.5, incomplete_ms=900,
        sentence_end_below=0.02, guessed_word_below=0.4,
    )


def test_a_last_word_the_recogniser_guessed_makes_a_finished_voice_wait_without_asking_the_words() -> None:
    turns, score, started = paused(guessing_rules())
    turns.on_turn_score(score.at_sample, 0.98)  # "eight of spades, four of c-" sounds finished
    assert turns.on_transcript(started.turn, "Eight of spades, four of course.", 0.2) == []
    assert feed(turns, silence_s=0.8) == []  # a 700 ms pause there is not the end
    (committed,) = feed(turns, silence_s=0.2)
    assert 900 <= committed.ended.endpoint_delay_ms < 960


def test_a_last_word_heard_with_confidence_leaves_the_decision_to_the_voice_and_the_words() -> None:
    turns, score, started = paused(guessing_rules())
    turns.on_turn_score(score.at_sample, 0.98)
    (question,) = turns.on_transcript(started.turn, "Eight of spades.", 0.9)
    turns.on_sentence_end_score(question.at_sample, 0.3)
    (committed,) = feed(turns, silence_s=0.3)
    assert 250 <= committed.ended.endpoint_delay_ms < 300  # the short pause


def test_the_guessed_word_rule_on_its_own() -> None:
    rule = guessing_rules()
    assert rule.wait_ms(500, 0.9, "Ten of course.", 0.3, last_word_probability=0.39) == 900
    assert rule.wait_ms(500, 0.9, "Ten of course.", 0.3, last_word_probability=0.4) == 250
    assert rule.wait_ms(500, 0.9, "Ten of course.", 0.3, last_word_probability=None) == 250  # not known: not used
    assert rule.wait_ms(500, None, "Ten of course.", None, last_word_probability=0.1) == 900
    off = PauseRule(complete_at=0.5, complete_ms=250, incomplete_below=0.5, incomplete_ms=900)
    assert off.wait_ms(500, 0.9, "Ten of course.", None, last_word_probability=0.01) == 250


# --------------------------------------------------------------------------- barge-in


def test_the_player_speaking_over_the_npc_stops_it_and_the_cut_off_reply_may_be_resumed() -> None:
    turns = core()
    (start,) = turns.on_text("Tell me a story.")
    assert start.turn == 1 and turns.npc_turn == 1
    commands = feed(turns, speech_s=0.5)
    assert only(commands, StopSpeaking) == [StopSpeaking(1, resumable=True)]
    commands = feed(turns, silence_s=0.8)
    (committed,) = only(commands, CommitSpeculation)
    speculated = only(commands, StartSpeculation)[0]
    assert committed.turn == 2 and speculated.resume and committed.replaces is None  # a typed line is not continued


def test_a_cough_does_not_stop_the_npc() -> None:
    turns = core()
    turns.on_text("Tell me a story.")
    commands = feed(turns, speech_s=0.1, silence_s=0.1)
    assert only(commands, StopSpeaking) == [] and turns.npc_turn == 1


def test_with_the_drop_policy_a_cut_off_reply_is_never_resumed() -> None:
    turns = core(resume_after_false_interruption=False)
    turns.on_text("Tell me a story.")
    commands = feed(turns, speech_s=0.5, silence_s=0.1)
    assert only(commands, StopSpeaking) == [StopSpeaking(1, resumable=False)]
    assert not only(commands, StartSpeculation)[0].resume


def test_no_barge_in_once_the_npc_turn_is_over() -> None:
    turns = core()
    turns.on_text("Hello.")
    turns.on_npc_turn_done(1)
    assert only(feed(turns, speech_s=0.5), StopSpeaking) == []


# --------------------------------------------------------------------------- continuations


def test_going_on_within_the_window_answers_the_whole_utterance_and_replaces_the_first_turn() -> None:
    turns = core()
    first = feed(turns, speech_s=1.0, silence_s=0.6)
    assert [c.turn for c in only(first, CommitSpeculation)] == [1]
    assert turns.npc_turn == 1  # the NPC answers the first part...
    second = feed(turns, speech_s=0.7, silence_s=0.8)  # ...and the player goes on 600 ms after the end of speech
    assert only(second, StopSpeaking) == [StopSpeaking(1, resumable=False)]  # cut, and not to be resumed
    speculated, whole = only(second, StartSpeculation)[0], only(second, CommitSpeculation)[0]
    assert whole.turn == 2 and whole.replaces == 1
    assert speculated.replaces == 1 and not speculated.resume
    assert speculated.audio.size / RATE > 1.0 + 0.7  # both parts in one utterance, for one transcript


def test_a_continuation_after_the_reply_ended_still_replaces_it() -> None:
    turns = core()
    feed(turns, speech_s=1.0, silence_s=0.6)
    turns.on_npc_turn_done(1)  # a short reply, already over
    (whole,) = only(feed(turns, silence_s=1.0, speech_s=0.0) + feed(turns, speech_s=0.7, silence_s=0.8), CommitSpeculation)
    assert whole.replaces == 1


def test_speech_after_the_window_is_a_new_turn() -> None:
    turns = core(continuation_ms=2000)
    feed(turns, speech_s=1.0, silence_s=0.6)
    feed(turns, silence_s=2.2)
    (committed,) = only(feed(turns, speech_s=0.7, silence_s=0.8), CommitSpeculation)
    assert committed.replaces is None and committed.turn == 2


def test_a_client_that_streamed_nothing_for_a_while_starts_a_new_turn() -> None:
    turns = core()
    feed(turns, speech_s=1.0, silence_s=0.6)
    turns.clock.now_ms += 5000  # type: ignore[attr-defined]  # no audio sent while the NPC spoke
    (committed,) = only(feed(turns, speech_s=0.7, silence_s=0.8), CommitSpeculation)
    assert committed.replaces is None


def test_continuations_can_be_turned_off() -> None:
    turns = core(continuation_ms=0)
    feed(turns, speech_s=1.0, silence_s=0.6)
    (committed,) = only(feed(turns, speech_s=0.7, silence_s=0.8), CommitSpeculation)
    assert committed.replaces is None


def test_three_parts_make_one_turn_and_each_replaces_the_one_before() -> None:
    turns = core()
    feed(turns, speech_s=1.0, silence_s=0.6)
    (second,) = only(feed(turns, speech_s=0.7, silence_s=0.6), CommitSpeculation)
    third_commands = feed(turns, speech_s=0.5, silence_s=0.8)
    (third,) = only(third_commands, CommitSpeculation)
    assert (second.replaces, third.replaces) == (1, 2)
    assert only(third_commands, StartSpeculation)[0].audio.size / RATE > 2.2


def test_a_typed_line_is_never_joined_to_the_voice_turn_before() -> None:
    turns = core()
    feed(turns, speech_s=1.0, silence_s=0.6)
    turns.on_text("Never mind.")
    (committed,) = only(feed(turns, speech_s=0.7, silence_s=0.8), CommitSpeculation)
    assert committed.replaces is None and committed.turn == 3


def test_a_turn_cut_by_the_length_limit_is_not_continued() -> None:
    turns = core(max_utterance_s=1.0)
    commands = feed(turns, speech_s=1.5, silence_s=0.8)
    starts = only(commands, StartTurn) + only(commands, CommitSpeculation)
    assert [c.replaces for c in starts] == [None, None]


def test_dropped_speculation_for_a_typed_line() -> None:
    turns = core()
    feed(turns, speech_s=1.0, silence_s=0.1)
    commands = turns.on_text("Hello?")
    assert kinds(commands) == ["DropSpeculation", "StartTurn"] and commands[1].turn == 1
    assert isinstance(commands[0], DropSpeculation)
