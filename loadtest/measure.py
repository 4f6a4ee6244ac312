"""What the load tester measures in a turn the client heard: stutters in the reply audio, when its playback
ends, and where the speech stops in a recording.

The client (npcserver.client) only records: it stamps every reply audio frame on arrival
(`HeardTurn.audio_arrivals`). These functions model a player's playback of those frames. No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from npcserver.client import AudioArrival, HeardTurn

SPEECH_RMS_THRESHOLD = 0.01  # -40 dBFS over 10 ms: above this the WAV holds speech, below is (near) silence


@dataclass(frozen=True, slots=True)
class Underrun:
    """Playback ran dry: the next frame came `gap_s` after the buffered audio had all been played."""

    at_audio_s: float  # position in the reply audio where the silence was heard
    gap_s: float


def find_underruns(arrivals: Sequence[AudioArrival], sample_rate: int, tolerance_s: float = 0.0) -> list[Underrun]:
    """Audible stutters: frames that arrived after everything received before them had been played.

    Playback starts when the first frame arrives and runs at real time; when the buffer runs dry it stops
    and restarts on the next frame. A gap between frames is only audible if it is longer than the audio
    buffered when it began, which is what this measures.
    """
    if not arrivals or sample_rate <= 0:
        return []
    underruns: list[Underrun] = []
    play_until = arrivals[0].at  # wall time when the buffered audio runs out
    played_s = 0.0  # reply audio position at play_until
    for arrival in arrivals:
        gap = arrival.at - play_until
        if gap > tolerance_s and arrival is not arrivals[0]:
            underruns.append(Underrun(at_audio_s=played_s, gap_s=gap))
        duration = arrival.samples / sample_rate
        play_until = max(play_until, arrival.at) + duration
        played_s += duration
    return underruns


def playback_end(arrivals: Sequence[AudioArrival], sample_rate: int) -> float | None:
    """When a player would hear the last sample (perf_counter seconds; playback starts on the first frame)."""
    if not arrivals or sample_rate <= 0:
        return None
    play_until = arrivals[0].at
    for arrival in arrivals:
        play_until = max(play_until, arrival.at) + arrival.samples / sample_rate
    return play_until


def turn_underruns(turn: HeardTurn) -> list[Underrun]:
    """The stutters a player heard in this turn's reply."""
    return find_underruns(turn.audio_arrivals, turn.reply_sample_rate)


def turn_playback_end(turn: HeardTurn) -> float | None:
    """When a player would hear this turn's last reply sample, or None if no audio came."""
    return playback_end(turn.audio_arrivals, turn.reply_sample_rate)


def speech_end_sample(pcm: np.ndarray, sample_rate: int, threshold: float = SPEECH_RMS_THRESHOLD) -> int:
    """Index just past the last 10 ms window whose RMS is above `threshold` (0 if all silent).

    Recorded utterances carry some silence at the end; voice-to-voice is measured from the last speech
    sample, as the server's endpointer locates it, not from the end of the file (pass it to
    `TalkSession.speak(speech_end=...)`).
    """
    window = max(1, sample_rate // 100)
    samples = pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float32)
    usable = samples.size - samples.size % window
    if usable == 0:
        return 0
    rms = np.sqrt(np.mean(np.square(samples[:usable].reshape(-1, window)), axis=1))
    loud = np.flatnonzero(rms > threshold)
    return 0 if loud.size == 0 else int((loud[-1] + 1) * window)
