"""Who speaks when: the player's audio and the NPC's progress in, commands out. No I/O.

`TurnTaking` is the conversation's turn-taking core, built like python-websockets' protocol: the
session feeds it events (audio samples, which place their own position in the stream; a push-to-talk
release; a typed line; a speculative transcript; a turn detector's score; an NPC turn ending) and
runs the commands it returns (start, commit or drop a speculative turn, start a turn, stop the NPC,
ask the turn detector). It holds no asyncio, sockets, threads or clocks: time is the stream position,
and where wall time matters (a client may stop streaming between turns) the reading comes in with
the audio, so every rule is a unit test of literal events and a fake clock.

The rules:
- speculation: at a pause the whole turn starts with its output held; it is committed if the pause
  ends the turn, dropped if the player goes on;
- how long a pause must be to end the turn (`PauseRule`): the endpointer's end silence, shorter when
  the pause's transcript reads as a finished sentence, and with a turn detector (Smart Turn) shorter
  when it hears a finished turn and longer when it hears an unfinished one; a sentence-end model
  reading the transcript can overrule it both ways;
- barge-in: the player speaking `barge_in_ms` over the NPC stops it (a cough is too short);
- continuations: a player who goes on within `continuation_ms` of the end of their turn was cut off
  mid-thought: the next turn answers the whole utterance (the earlier audio and the new, transcribed
  as one), and the turn it replaces leaves no trace in the history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npcserver.audio import ASR_SAMPLE_RATE
from npcserver.conversation.endpoint import (
    Endpointer,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TurnEnded,
)
from npcserver.conversation.text import sounds_finished

TURN_DETECTOR_SECONDS = 8  # Smart Turn hears the last 8 s of the utterance


def _samples(ms: float) -> int:
    return round(ms * ASR_SAMPLE_RATE / 1000.0)


# ------------------------------------------------------------------------------------------ commands
@dataclass(frozen=True, slots=True, eq=False)
class StartSpeculation:
    """Run turn `turn` on `audio` now, output held back: the pause at `at_sample` may end the turn.

    `replaces`, here and in the commands below: the turn this one answers again as a whole (the player
    went on after it); it must leave no trace in the history.
    """

    turn: int
    audio: np.ndarray
    at_sample: int
    resume: bool  # a cut-off reply may be said again if the player only said "uh-huh"
    replaces: int | None


@dataclass(frozen=True, slots=True)
class DropSpeculation:
    turn: int


@dataclass(frozen=True, slots=True, eq=False)
class CommitSpeculation:
    """The pause became the end of the turn: release the speculative turn's output."""

    turn: int
    ended: TurnEnded
    replaces: int | None


@dataclass(frozen=True, slots=True, eq=False)
class StartTurn:
    """Run turn `turn` and let the player hear it: on `audio` (with `ended`, where speech ended) or on typed `text`."""

    turn: int
    audio: np.ndarray | None = None
    text: str | None = None
    ended: TurnEnded | None = None
    resume: bool = False
    replaces: int | None = None
    scripted: bool = False  # `text` is the game's own line for the NPC to say (a "say"), not the player's


@dataclass(frozen=True, slots=True)
class StopSpeaking:
    """Stop the NPC's turn `turn` now. `resumable`: the player's voice cut it, remember what was unsaid."""

    turn: int
    resumable: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class ScoreTurnEnd:
    """Ask the turn detector whether `audio` (the utterance up to the pause at `at_sample`) is a finished turn."""

    at_sample: int
    audio: np.ndarray


@dataclass(frozen=True, slots=True)
class ScoreSentenceEnd:
    """Ask the sentence-end model whether `text` (the transcript up to the pause at `at_sample`) is a whole sentence."""

    at_sample: int
    text: str


Command = (
    StartSpeculation | DropSpeculation | CommitSpeculation | StartTurn | StopSpeaking | ScoreTurnEnd | ScoreSentenceEnd
)


# ------------------------------------------------------------------------------------------- rules
@dataclass(frozen=True, slots=True)
class PauseRule:
    """How much silence a pause needs to end the turn, from what is known about it.

    Without a score (no turn detector, or its answer not in yet) the endpointer's end silence holds,
    or `finished_ms` once the transcript reads as a finished sentence. A score at or above
    `complete_at` lets `complete_ms` end the turn; one below `incomplete_below` makes the turn wait
    `incomplete_ms`; in between the transcript decides as without a score.

    With a sentence-end model (`sentence_end_below` > 0) the words get a say too, since read speech
    often sounds finished mid-clause: below `sentence_end_below` the turn waits `incomplete_ms`
    whatever the detector heard, and the detector's short wait needs the words' answer first; at
    `sentence_end_at` or above, a pause the detector hears as unfinished waits only the end silence.

    A transcript whose last word the recogniser wrote with a probability below `guessed_word_below`
    waits `incomplete_ms` too: the recogniser guessed a word the pause cut off ("ten of c-" as "ten
    of course"), a whole sentence that the words and the voice both take for finished.
    """

    finished_ms: float = 300  # 0: a finished-looking transcript changes nothing
    complete_at: float = 1.1  # > 1: the detector's score is not used
    complete_ms: float = 250
    incomplete_below: float = 0.0
    incomplete_ms: float = 1200
    sentence_end_below: float = 0.0  # 0: no sentence-end model
    sentence_end_at: float = 1.1
    guessed_word_below: float = 0.0  # 0: the last word's probability is not used

    def wait_ms(
        self,
        end_silence_ms: float,
        score: float | None,
        transcript: str | None,
        sentence_end: float | None = None,
        *,
        words_coming: bool = True,
        last_word_probability: float | None = None,
    ) -> float:
        """`words_coming`: a transcript of this pause is on its way (a speculation runs on it)."""
        unfinished_wait = max(self.incomplete_ms, end_silence_ms)
        if sentence_end is not None and sentence_end < self.sentence_end_below:
            return unfinished_wait
        if self.guessed_last_word(last_word_probability):
            return unfinished_wait
        if score is not None and score >= self.complete_at:
            if self.uses_sentence_end and sentence_end is None and words_coming:
                return end_silence_ms  # not before the words agree
            return min(self.complete_ms, end_silence_ms)
        if score is not None and score < self.incomplete_below:
            if sentence_end is not None and sentence_end >= self.sentence_end_at:
                return end_silence_ms
            return unfinished_wait
        finished = transcript is not None and bool(self.finished_ms) and sounds_finished(transcript)
        return self.finished_ms if finished else end_silence_ms

    @property
    def uses_detector(self) -> bool:
        return self.complete_at <= 1.0 or self.incomplete_below > 0.0

    @property
    def uses_sentence_end(self) -> bool:
        return self.sentence_end_below > 0.0

    def guessed_last_word(self, last_word_probability: float | None) -> bool:
        return last_word_probability is not None and last_word_probability < self.guessed_word_below

    def words_may_matter(self, score: float | None) -> bool:
        """Whether the sentence-end model's answer could change the wait (a CPU call spared where not):
        not once the detector has heard an unfinished turn, unless confident words may shorten that."""
        if not self.uses_sentence_end:
            return False
        heard_unfinished = score is not None and score < self.incomplete_below
        return not heard_unfinished or self.sentence_end_at <= 1.0


@dataclass(frozen=True, slots=True)
class TurnTakingRules:
    speculative: bool = True
    barge_in_ms: float = 300
    resume_after_false_interruption: bool = True
    continuation_ms: float = 2000  # 0: every utterance is a turn of its own
    pause: PauseRule = PauseRule()


@dataclass(slots=True)
class _Pause:
    """The pause in progress: where it began, and what has been learnt about it."""

    at_sample: int
    score: float | None = None
    transcript: str | None = None
    sentence_end: float | None = None
    last_word_probability: float | None = None


@dataclass(slots=True)
class _VoiceTurn:
    """The player's last voice turn: what a continuation is joined to."""

    number: int
    utterance: np.ndarray
    ended_at_ms: float  # when the end-of-turn decision was taken


class TurnTaking:
    """One player's turn-taking state. `endpointer` is the player's own (it is fed here)."""

    def __init__(self, endpointer: Endpointer, rules: TurnTakingRules, *, push_to_talk: bool = False) -> None:
        self.endpointer = endpointer
        self.rules = rules
        self.push_to_talk = push_to_talk
        self.turn = 0  # the last turn number handed out
        self.npc_turn: int | None = None  # the NPC turn the player hears, while it runs
        self._speculation: tuple[int, int] | None = None  # (turn, pause sample)
        self._pause: _Pause | None = None
        self._speech_started_at: int | None = None  # while the player speaks
        self._cut_off = False  # the player's voice cut the NPC off: the next voice turn may resume it
        self._last_voice_turn: _VoiceTurn | None = None
        self._continuing: _VoiceTurn | None = None  # the turn the speech in progress goes on from
        self._now_ms = 0.0  # the clock reading of the audio being fed

    # --------------------------------------------------------------------------------- events
    def on_audio(self, samples: np.ndarray, now_ms: float, *, models_busy: bool = False) -> list[Command]:
        """16 kHz float samples, the next ones of the stream, arrived at `now_ms` (any monotonic clock).
        `models_busy`: other players' work is queued on the ASR, so a guess that may be thrown away
        would only add to the queue."""
        commands: list[Command] = []
        self._now_ms = now_ms
        for event in self.endpointer.feed(samples):
            if isinstance(event, SpeechStarted):
                self._speech_started(event.at_sample)
            elif isinstance(event, SpeechPaused):
                self._paused(event, models_busy, commands)
            elif isinstance(event, SpeechResumed):
                self._pause = None
                self._drop_speculation(commands)
            elif isinstance(event, TurnEnded):
                self._speech_started_at = None
                self._turn_ended(event, commands)
        self._maybe_barge_in(commands)
        return commands

    def on_end_of_turn(self) -> list[Command]:
        """Push-to-talk released: the turn ends with whatever speech was collected."""
        commands: list[Command] = []
        ended = self.endpointer.end_of_turn()
        if ended is not None:
            self._speech_started_at = None
            self._turn_ended(ended, commands)
        return commands

    def on_text(self, text: str, *, scripted: bool = False) -> list[Command]:
        """A typed line is a turn of its own, at once; so is a line the game has the NPC say (`scripted`)."""
        commands: list[Command] = []
        self._drop_speculation(commands)
        self._stop_npc(commands)
        self._last_voice_turn = self._continuing = None
        self._cut_off = False
        self.turn += 1
        commands.append(StartTurn(self.turn, text=text, scripted=scripted))
        self.npc_turn = self.turn
        return commands

    def on_interrupt(self) -> list[Command]:
        """The client asked the NPC to stop."""
        commands: list[Command] = []
        self._stop_npc(commands)
        return commands

    def on_transcript(self, turn: int, text: str, last_word_probability: float | None = None) -> list[Command]:
        """A speculative turn's transcript is in: it may change how long the pause must last (the turn
        ends, or not, with the audio that follows), and the sentence-end model may be asked about it.
        `last_word_probability`: the recogniser's confidence in the transcript's last word."""
        pause = self._pause
        if self._speculation is None or self._speculation[0] != turn or pause is None:
            return []
        pause.transcript, pause.last_word_probability = text, last_word_probability
        self._apply_pause_rule()
        rule = self.rules.pause
        if rule.guessed_last_word(last_word_probability):
            return []  # unfinished already: the sentence-end model could only agree
        if rule.words_may_matter(pause.score) and not self.push_to_talk:
            return [ScoreSentenceEnd(pause.at_sample, text)]
        return []

    def on_sentence_end_score(self, at_sample: int, probability: float) -> None:
        """The sentence-end model's probability that the transcript up to the pause at `at_sample` is a whole sentence."""
        if self._pause is not None and self._pause.at_sample == at_sample:
            self._pause.sentence_end = probability
            self._apply_pause_rule()

    def on_turn_score(self, at_sample: int, probability: float) -> None:
        """The turn detector's probability that the utterance up to the pause at `at_sample` is a finished turn."""
        if self._pause is not None and self._pause.at_sample == at_sample:
            self._pause.score = probability
            self._apply_pause_rule()

    @property
    def player_speaking(self) -> bool:
        return self._speech_started_at is not None

    def on_npc_turn_started(self, turn: int) -> None:
        """An NPC turn the player hears has begun (a greeting, a typed line's or a voice turn's reply)."""
        self.npc_turn = turn

    def on_npc_turn_done(self, turn: int) -> None:
        if self.npc_turn == turn:
            self.npc_turn = None

    # --------------------------------------------------------------------------------- rules
    def _speech_started(self, at_sample: int) -> None:
        self._speech_started_at = at_sample
        last = self._last_voice_turn
        # wall time, not stream position: a client may send nothing while the NPC speaks
        window = self.rules.continuation_ms
        within = last is not None and window > 0 and self._now_ms - last.ended_at_ms <= window
        self._continuing = last if within else None

    def _paused(self, paused: SpeechPaused, models_busy: bool, commands: list[Command]) -> None:
        self._pause = _Pause(paused.at_sample)
        audio = self._with_continued(paused.utterance_so_far)
        if self.rules.pause.uses_detector and not self.push_to_talk:
            commands.append(ScoreTurnEnd(paused.at_sample, audio[-TURN_DETECTOR_SECONDS * ASR_SAMPLE_RATE :]))
        if not self.rules.speculative or self._speculation is not None or models_busy:
            return
        number = self.turn + 1
        self._speculation = (number, paused.at_sample)
        commands.append(StartSpeculation(number, audio, paused.at_sample, self._resume(), self._replaces()))

    def _apply_pause_rule(self) -> None:
        pause = self._pause
        if pause is None or self.push_to_talk or self.endpointer.paused_at != pause.at_sample:
            return
        base = self.endpointer.end_silence_ms
        words_coming = self._speculation is not None and self._speculation[1] == pause.at_sample
        wait = self.rules.pause.wait_ms(
            base, pause.score, pause.transcript, pause.sentence_end, words_coming=words_coming,
            last_word_probability=pause.last_word_probability,
        )
        if wait < base:
            self.endpointer.end_pause_early(wait)
        else:
            self.endpointer.wait_longer(wait)

    def _turn_ended(self, ended: TurnEnded, commands: list[Command]) -> None:
        self._pause = None
        replaces = self._replaces()
        speculation, self._speculation = self._speculation, None
        whole = self._with_continued(ended.utterance)
        self._stop_npc(commands)
        if speculation is not None and speculation[1] == ended.speech_end_sample:
            self.turn = speculation[0]
            commands.append(CommitSpeculation(self.turn, ended, replaces))
        else:
            if speculation is not None:
                commands.append(DropSpeculation(speculation[0]))
            self.turn += 1
            commands.append(StartTurn(self.turn, audio=whole, ended=ended, resume=self._resume(), replaces=replaces))
        self.npc_turn = self.turn
        self._cut_off = False
        # only a pause can have cut the player off: not the key, not the length limit
        ended_by_pause = ended.reason == "silence"
        self._last_voice_turn = _VoiceTurn(self.turn, whole, self._now_ms) if ended_by_pause else None
        self._continuing = None

    def _maybe_barge_in(self, commands: list[Command]) -> None:
        """The player talking over the NPC for long enough (not a cough) cuts the NPC off."""
        started = self._speech_started_at
        if started is None or self.npc_turn is None:
            return
        if self.endpointer.samples_seen - started >= _samples(self.rules.barge_in_ms):
            # a continuation is answered as a whole: the cut-off reply is not said again
            self._cut_off = self.rules.resume_after_false_interruption and self._continuing is None
            commands.append(StopSpeaking(self.npc_turn, resumable=self._cut_off))
            self.npc_turn = None

    # --------------------------------------------------------------------------------- helpers
    def _stop_npc(self, commands: list[Command]) -> None:
        if self.npc_turn is not None:
            commands.append(StopSpeaking(self.npc_turn))
            self.npc_turn = None

    def _drop_speculation(self, commands: list[Command]) -> None:
        if self._speculation is not None:
            commands.append(DropSpeculation(self._speculation[0]))
            self._speculation = None

    def _with_continued(self, audio: np.ndarray) -> np.ndarray:
        if self._continuing is None:
            return audio
        joined = np.concatenate([self._continuing.utterance, audio])
        return joined[-self.endpointer.max_utterance_samples :]  # no longer than one turn may be

    def _replaces(self) -> int | None:
        return self._continuing.number if self._continuing is not None else None

    def _resume(self) -> bool:
        return self._cut_off and self._continuing is None
