"""Turn-taking benchmark on real human speech: cut-ins at mid-thought pauses against latency, and noise.

    python -m loadtest.turn_taking [--utterances loadtest/human_speech_more] [--png docs/turn-taking.png]
    python -m loadtest.turn_taking --text-only     # the sentence-end model on the repository's player lines

Each recording (several speakers, loadtest/human_speech) is split at word boundaries inside the
sentence (whisper's word timings, moved to the quietest 10 ms nearby), so the first part never
finishes the thought; a pause of 400, 700 or 1000 ms is put there. The stream (silence, part one,
pause, part two, silence) goes through the server's own turn-taking core with the real Silero VAD,
the real Smart Turn v3.2, the real ASR transcripts and the real sentence-end model, 20 ms at a time,
in stream time. Model latencies are constants (`--asr-ms`, `--detector-ms`, `--sentence-end-ms`,
`--reply-ms`): a speculation's reply audio is ready `--reply-ms` after its pause began, so the NPC
is heard at max(end of turn, reply ready).

- cut-in: the NPC would be heard before the player resumes;
- latency: the whole recordings followed by silence, from the end of speech to the NPC's audio;
- sessions: one core per speaker for all their recordings (each with a 700 ms pause, then whole),
  with the fixed and the adaptive end silence: what learning a player's pauses buys;
- noise: the whole recordings with babble (other recordings of the set, summed) at 20 dB SNR or
  pink noise at 15 dB SNR under and after the speech: end of turn against the same recording in
  silence; and 30 s of babble or music alone: turns started.

Piper's voice is never used. No LLM or TTS runs: this measures when the NPC would speak.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from game_client_demo.wav import read_wav_mono16
from loadtest.report import machine_line
from npcserver.backends.base import Transcript
from npcserver.config import Settings
from npcserver.conversation.endpoint import Endpointer, SileroVad
from npcserver.conversation.turn_taking import (
    CommitSpeculation,
    PauseRule,
    ScoreSentenceEnd,
    ScoreTurnEnd,
    StartSpeculation,
    StartTurn,
    TurnTaking,
    TurnTakingRules,
)

RATE = 16_000
CHUNK = 320  # 20 ms, as the demo client streams
HUMAN_SPEECH = Path(__file__).parent / "human_speech"
PAUSES_MS = (400, 700, 1000)

# Smart Turn's 250 / 900 ms, and with the words' veto below 0.02: the rows below vary one of these
SMART_TURN = PauseRule(finished_ms=0, complete_at=0.5, complete_ms=250, incomplete_below=0.5, incomplete_ms=900)
WORDS = replace(SMART_TURN, sentence_end_below=0.02)
RULES: dict[str, PauseRule] = {
    "silence 500 ms": PauseRule(finished_ms=0),
    "silence 500, finished text 300 (before)": PauseRule(finished_ms=300),
    "silence 800 ms": PauseRule(finished_ms=0),  # the endpointer's end silence is set from the name
    "smart turn 0.5: 250 / 1200 ms": PauseRule(finished_ms=0, complete_at=0.5, complete_ms=250, incomplete_below=0.5),
    "smart turn 0.5: 250 / 900 ms": SMART_TURN,
    "smart turn >=0.8: 250, <0.5: 1200, else text": PauseRule(
        finished_ms=300, complete_at=0.8, complete_ms=250, incomplete_below=0.5
    ),
    "smart turn 0.5: 250 / 900 ms, words <0.02: 900": WORDS,
    "smart turn 0.5: 250 / 900 ms, words <0.02: 900, last word p <0.4: 900": replace(WORDS, guessed_word_below=0.4),
    "smart turn 0.5: 250 / 750 ms, words <0.02, last word p <0.4": replace(WORDS, guessed_word_below=0.4, incomplete_ms=750),
    "smart turn 0.5: 250 / 800 ms, words <0.02, last word p <0.4": replace(WORDS, guessed_word_below=0.4, incomplete_ms=800),
    "smart turn 0.5: 250 / 800 ms, words <0.02 or >=0.3: 500, last word p <0.4": replace(
        WORDS, guessed_word_below=0.4, incomplete_ms=800, sentence_end_at=0.3
    ),
    "smart turn 0.5: 250 / 800 ms, words <0.02 or >=0.4: 500, last word p <0.4": replace(
        WORDS, guessed_word_below=0.4, incomplete_ms=800, sentence_end_at=0.4
    ),
    "smart turn 0.5: 250 / 800 ms, words <0.02 or >=0.5: 500, last word p <0.4": replace(
        WORDS, guessed_word_below=0.4, incomplete_ms=800, sentence_end_at=0.5
    ),
    "smart turn 0.5: 250 / 900 ms, words <0.02: 900, last word p <0.6: 900": replace(WORDS, guessed_word_below=0.6),
    "smart turn 0.5: 250 / 900 ms, words <0.02: 900, >=0.25: 500": replace(WORDS, sentence_end_at=0.25),
    "smart turn 0.5: 250 / 900 ms, words <0.05: 900, >=0.25: 500": replace(
        WORDS, sentence_end_below=0.05, sentence_end_at=0.25
    ),
}
DEFAULT_RULE = "smart turn 0.5: 250 / 800 ms, words <0.02 or >=0.4: 500, last word p <0.4"  # the server's settings


@dataclass(frozen=True, slots=True)
class Recording:
    name: str
    speaker: str
    audio: np.ndarray  # float32, 16 kHz
    word_ends: tuple[int, ...]  # sample where each word but the last ends (a split point inside the sentence)
    speech_end: int


@dataclass(frozen=True, slots=True)
class Outcome:
    turn_end: int | None  # the sample at which the first turn ended (None: no turn)
    heard_at: int | None  # the sample at which the NPC would be heard
    reason: str | None


# ------------------------------------------------------------------------------------------ corpus
def _quietest_near(audio: np.ndarray, at: int, span: int = 1280) -> int:
    """The middle of the quietest 10 ms within `span` samples of `at`: a cut there splits no sound."""
    lo, hi = max(0, at - span), min(audio.size - 160, at + span)
    if hi <= lo:
        return at
    windows = [(float(np.mean(audio[i : i + 160] ** 2)), i + 80) for i in range(lo, hi, 40)]
    return min(windows)[1]


def _speech_end(audio: np.ndarray) -> int:
    """Just past the last 10 ms window within 35 dB of the loudest one."""
    frames = audio[: audio.size // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.nonzero(level >= level.max() - 35)[0]
    return int(loud[-1] + 1) * 160


def load_recordings(folder: Path) -> list[Recording]:
    from faster_whisper import WhisperModel

    from npcserver.models import resolve_asr_model

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    model = WhisperModel(str(resolve_asr_model("tiny.en")), device="cpu", compute_type="int8", cpu_threads=1)
    recordings = []
    for entry in manifest["utterances"]:
        pcm, rate = read_wav_mono16(folder / entry["file"])
        assert rate == RATE, f"{entry['file']}: {rate} Hz"
        audio = pcm.astype(np.float32) / 32768.0
        segments, _ = model.transcribe(audio, language="en", word_timestamps=True, beam_size=1)
        words = [word for segment in segments for word in (segment.words or [])]
        ends = tuple(_quietest_near(audio, int((a.end + b.start) / 2 * RATE)) for a, b in itertools.pairwise(words))
        recordings.append(Recording(Path(entry["file"]).stem, entry.get("speaker", "?"), audio, ends, _speech_end(audio)))
    return recordings


def split_points(recording: Recording, per_recording: int = 3) -> list[int]:
    """Up to `per_recording` word boundaries spread over the sentence, never before its second word."""
    inner = [end for end in recording.word_ends[1:] if 0.4 * RATE <= end <= recording.speech_end - 0.3 * RATE]
    if not inner:
        return []
    picks = np.linspace(0, len(inner) - 1, min(per_recording, len(inner))).round().astype(int)
    return sorted({inner[i] for i in picks})


# ------------------------------------------------------------------------------------------ noise
def _speech_rms(audio: np.ndarray) -> float:
    frames = audio[: audio.size // 512 * 512].reshape(-1, 512)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return float(np.sqrt(np.mean(rms[rms >= rms.max() * 10 ** (-30 / 20)] ** 2)))


def pink_noise(samples: int, seed: int = 0) -> np.ndarray:
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(samples))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))  # 1/f power
    noise = np.fft.irfft(spectrum, samples)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def babble(recordings: list[Recording], samples: int, exclude_speaker: str, seed: int = 0) -> np.ndarray:
    """Three talkers at once from the other speakers' recordings (all, if one speaker is all there is), looped."""
    rng = np.random.default_rng(seed)
    others = [r for r in recordings if r.speaker != exclude_speaker] or recordings
    mix = np.zeros(samples, np.float32)
    for talker in range(3):
        stream = np.concatenate([others[i].audio for i in rng.permutation(len(others))])
        stream = np.roll(stream, talker * RATE)
        mix += np.resize(stream, samples) / _speech_rms(stream)
    return mix / np.sqrt(np.mean(mix**2))


def music(samples: int, seed: int = 0) -> np.ndarray:
    """Chords changing every half second over a drum beat: harmonic sound the VAD may take for a voice."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / RATE
    out = np.zeros(samples, np.float32)
    for start in range(0, samples, RATE // 2):
        root = 110 * 2 ** (rng.integers(0, 12) / 12)
        span = slice(start, start + RATE // 2)
        for ratio in (1, 1.25, 1.5, 2):
            for harmonic in (1, 2, 3):
                out[span] += np.sin(2 * np.pi * root * ratio * harmonic * t[span]) / harmonic
    beat = np.exp(-np.arange(RATE // 8) / 300.0) * rng.standard_normal(RATE // 8)
    for start in range(0, samples - beat.size, RATE // 4):
        out[start : start + beat.size] += 3 * beat
    return out / np.sqrt(np.mean(out**2))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    return (speech + noise[: speech.size] * _speech_rms(speech) / 10 ** (snr_db / 20)).astype(np.float32)


# ------------------------------------------------------------------------------------------ simulation
class Models:
    """The real ASR, Smart Turn and sentence-end model, cached by input (the same speculation recurs under every rule)."""

    def __init__(self) -> None:
        from npcserver.backends.smart_turn import SmartTurnDetector
        from npcserver.backends.whisper_asr import WhisperTranscriber
        from npcserver.models import resolve_asr_model, resolve_turn_detector

        self._asr = WhisperTranscriber(resolve_asr_model("tiny.en"), cpu_threads=1, window_s=Settings().asr_window_s)
        self._detector = SmartTurnDetector(resolve_turn_detector("smart-turn-v3.2"))
        self._words = sentence_end_model()
        self._cache: dict[tuple[str, str], object] = {}

    def _cached(self, kind: str, key: str, compute: Callable[[], object]) -> object:
        if (kind, key) not in self._cache:
            self._cache[kind, key] = compute()
        return self._cache[kind, key]

    def transcript(self, audio: np.ndarray) -> Transcript:
        return self._cached("asr", _digest(audio), lambda: self._asr.transcribe(audio))  # type: ignore[return-value]

    def score(self, audio: np.ndarray) -> float:
        return float(self._cached("turn", _digest(audio), lambda: self._detector.turn_complete_probability(audio)))  # type: ignore[arg-type]

    def sentence_end(self, text: str) -> float:
        return float(self._cached("words", text, lambda: self._words.sentence_end_probability(text)))  # type: ignore[arg-type]


def _digest(audio: np.ndarray) -> str:
    return hashlib.sha1(audio.tobytes()).hexdigest()


def sentence_end_model():  # type: ignore[no-untyped-def]
    """The server's sentence-end model, on the CPU in the precision the server would choose."""
    from npcserver.backends.loading import load_sentence_end_model
    from npcserver.models import prepare_models

    settings = Settings()
    prepare_models(settings)
    return load_sentence_end_model(settings, "cpu")


# ------------------------------------------------------------------------------------------ words alone
LINE_SOURCES = ("loadtest/dialogue_questions*.toml", "loadtest/action_lines*.toml", "voices/*.toml")


def player_lines(root: Path) -> list[str]:
    """Every player line the repository holds (benchmark questions, persona tests and examples), as said."""
    import tomllib

    from npcserver.backends.sentence_end import plain_words

    def walk(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["player"]] if isinstance(node.get("player"), str) else []
            return found + [line for value in node.values() for line in walk(value)]
        if isinstance(node, list):
            return [line for value in node for line in walk(value)]
        return []

    lines = {plain_words(line) for pattern in LINE_SOURCES for path in root.glob(pattern)
             for line in walk(tomllib.loads(path.read_text(encoding="utf-8")))}
    return sorted(line for line in lines if len(line.split()) >= 3)


def words_benchmark(lines: list[str], seed: int, thresholds: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.25, 0.4)) -> dict:
    """Whole lines against the same lines cut at a random word: how the sentence-end model tells them apart."""
    import random

    rng = random.Random(seed)
    whole_set = set(lines)
    pairs = []
    for line in lines:
        words = line.split()
        cut = " ".join(words[: rng.randrange(1, len(words))])
        if cut not in whole_set:  # "good day" cut from "good day to you" is whole too
            pairs.append((line, cut))
    model = sentence_end_model()
    whole = np.array([model.sentence_end_probability(line) for line, _ in pairs])
    cut = np.array([model.sentence_end_probability(part) for _, part in pairs])
    auc = float(np.mean((whole[:, None] > cut[None, :]) + 0.5 * (whole[:, None] == cut[None, :])))
    return {
        "pairs": len(pairs),
        "auc": auc,
        "below": {t: (float(np.mean(whole < t)), float(np.mean(cut < t))) for t in thresholds},
    }


@dataclass(frozen=True, slots=True)
class Latencies:
    asr_ms: float
    detector_ms: float
    reply_ms: float
    sentence_end_ms: float = 70.0


BACKGROUND_GATE = [Settings().end_silence_background_db or None]  # --no-background-gate: [None]


def new_endpointer(vad: SileroVad, end_silence_ms: float = 500.0, *, adaptive: bool = False) -> Endpointer:
    """The server's endpointer (its default settings), with the rule's end silence."""
    defaults = Settings()
    return Endpointer(
        vad, threshold=defaults.vad_threshold, end_silence_ms=end_silence_ms, min_speech_ms=defaults.min_speech_ms,
        quiet_db=defaults.end_silence_quiet_db or None, background_db=BACKGROUND_GATE[0], adaptive=adaptive,
    )


def at_samples(ms: float) -> int:
    return int(ms * RATE / 1000)


def run_stream(
    stream: np.ndarray, rule: PauseRule, end_silence_ms: float, models: Models, latency: Latencies, vad: SileroVad
) -> Outcome:
    """Feed the stream through a fresh core; where its first turn ends and when the NPC is heard."""
    core = TurnTaking(new_endpointer(vad, end_silence_ms), TurnTakingRules(pause=rule))
    return next(turns_of(stream, core, models, latency), Outcome(None, None, None))


def turns_of(stream: np.ndarray, core: TurnTaking, models: Models, latency: Latencies) -> Iterator[Outcome]:
    """Feed the stream through `core`: each turn the NPC takes, as it ends."""
    due: list[tuple[int, Callable[[], None]]] = []  # model answers, by the sample they arrive at
    ready_at: dict[int, int] = {}  # speculative turn -> the sample its reply audio is ready
    position = 0

    def heard(turn: int, transcript: Transcript) -> None:
        for question in core.on_transcript(turn, transcript.text, transcript.last_word_probability):
            assert isinstance(question, ScoreSentenceEnd)
            at, p = question.at_sample, models.sentence_end(question.text)
            due.append((position + at_samples(latency.sentence_end_ms), lambda a=at, q=p: core.on_sentence_end_score(a, q)))

    for start in range(0, stream.size, CHUNK):
        position = start + CHUNK
        for arrival, answer in [d for d in due if d[0] <= position]:
            due.remove((arrival, answer))
            answer()
        for command in core.on_audio(stream[start:position], position * 1000 / RATE):
            if isinstance(command, StartSpeculation):
                turn, audio = command.turn, command.audio
                ready_at[turn] = position + at_samples(latency.reply_ms)
                transcript = models.transcript(audio)
                due.append((position + at_samples(latency.asr_ms), lambda t=turn, x=transcript: heard(t, x)))
            elif isinstance(command, ScoreTurnEnd):
                at, p = command.at_sample, models.score(command.audio)
                due.append((position + at_samples(latency.detector_ms), lambda a=at, q=p: core.on_turn_score(a, q)))
            elif isinstance(command, CommitSpeculation):
                yield Outcome(position, max(position, ready_at[command.turn]), command.ended.reason)
            elif isinstance(command, StartTurn):
                yield Outcome(position, position + at_samples(latency.reply_ms), command.ended.reason if command.ended else None)


def _end_silence_of(rule_name: str) -> float:
    return 800.0 if rule_name.startswith("silence 800") else 500.0


# ------------------------------------------------------------------------------------------ report
def pause_benchmark(recordings: list[Recording], models: Models, latency: Latencies, vad: SileroVad) -> dict:
    lead = np.zeros(int(0.3 * RATE), np.float32)
    tail = np.zeros(2 * RATE, np.float32)
    results: dict[str, dict] = {}
    for name, rule in RULES.items():
        end_silence = _end_silence_of(name)
        cut_ins = {p: [0, 0] for p in PAUSES_MS}
        answered_half = dict.fromkeys(PAUSES_MS, 0)  # the turn ended in the pause (a continuation merges it)
        for recording in recordings:
            for split in split_points(recording):
                first, second = recording.audio[:split], recording.audio[split:]
                for pause in PAUSES_MS:
                    gap = np.zeros(int(pause * RATE / 1000), np.float32)
                    stream = np.concatenate([lead, first, gap, second, tail])
                    resume = lead.size + first.size + gap.size
                    outcome = run_stream(stream, rule, end_silence, models, latency, vad)
                    cut_ins[pause][1] += 1
                    cut_ins[pause][0] += outcome.heard_at is not None and outcome.heard_at < resume
                    answered_half[pause] += outcome.turn_end is not None and outcome.turn_end < resume
        delays = []
        for recording in recordings:
            stream = np.concatenate([lead, recording.audio, tail])
            outcome = run_stream(stream, rule, end_silence, models, latency, vad)
            if outcome.heard_at is not None:
                delays.append((outcome.heard_at - lead.size - recording.speech_end) * 1000 / RATE)
        results[name] = {
            "cut_in": {p: c / n for p, (c, n) in cut_ins.items()},
            "ended_in_pause": {p: answered_half[p] / cut_ins[p][1] for p in PAUSES_MS},
            "cases": cut_ins[PAUSES_MS[0]][1],
            "p50_ms": float(np.percentile(delays, 50)),
            "p95_ms": float(np.percentile(delays, 95)),
        }
    return results


def session_benchmark(
    recordings: list[Recording], rule: PauseRule, models: Models, latency: Latencies, vad: SileroVad, pause_ms: int
) -> dict:
    """One session per speaker, one core throughout: each recording said once with a `pause_ms` pause
    mid-sentence, then once whole, 3 s apart. With the adaptive end silence the core learns the pauses
    it cut into; without, every pause is met cold. Cut-ins on the paused ones, latency on the whole ones."""
    gap, apart = np.zeros(at_samples(pause_ms), np.float32), np.zeros(3 * RATE, np.float32)
    results = {}
    for adaptive in (False, True):
        cut_ins = cases = 0
        delays: list[float] = []
        for speaker in sorted({r.speaker for r in recordings}):
            pieces, paused_spans, whole_ends = [apart], [], []
            for recording in (r for r in recordings if r.speaker == speaker):
                splits = split_points(recording)
                start = sum(p.size for p in pieces)
                if splits:
                    split = splits[len(splits) // 2]
                    pieces += [recording.audio[:split], gap, recording.audio[split:], apart]
                    paused_spans.append((start, start + split + gap.size))  # from its start to the resumption
                    start = sum(p.size for p in pieces)
                pieces += [recording.audio, apart]
                whole_ends.append(start + recording.speech_end)
            core = TurnTaking(new_endpointer(vad, adaptive=adaptive), TurnTakingRules(pause=rule))
            heard = [o.heard_at for o in turns_of(np.concatenate(pieces), core, models, latency) if o.heard_at is not None]
            for begin, resume in paused_spans:
                cases += 1
                cut_ins += any(begin <= h < resume for h in heard)
            for end in whole_ends:
                after = [h for h in heard if h >= end - at_samples(300)]  # a list read with pauses may end early
                if after:
                    delays.append((min(after) - end) * 1000 / RATE)
        results["adaptive" if adaptive else "fixed"] = {
            "cut_in": cut_ins / max(cases, 1), "cases": cases,
            "p50_ms": float(np.percentile(delays, 50)), "p95_ms": float(np.percentile(delays, 95)),
        }
    return results


def noise_benchmark(recordings: list[Recording], rule: PauseRule, models: Models, latency: Latencies, vad: SileroVad) -> dict:
    lead = np.zeros(int(0.3 * RATE), np.float32)
    tail = np.zeros(3 * RATE, np.float32)
    rows: dict[str, dict] = {}
    for label, snr in (("babble 20 dB SNR", 20.0), ("pink noise 15 dB SNR", 15.0)):
        extra, missed = [], 0
        for index, recording in enumerate(recordings):
            clean = np.concatenate([lead, recording.audio, tail])
            noise = babble(recordings, clean.size, recording.speaker, seed=index) if label.startswith("babble") else pink_noise(clean.size, index)
            quiet_end = run_stream(clean, rule, 500, models, latency, vad).turn_end
            noisy_end = run_stream(mix_at_snr(clean, noise, snr), rule, 500, models, latency, vad).turn_end
            if quiet_end is None or noisy_end is None:
                missed += 1
                continue
            extra.append((noisy_end - quiet_end) * 1000 / RATE)
        within = sum(e <= 300 for e in extra)
        rows[label] = {
            "extra_p50_ms": float(np.percentile(extra, 50)) if extra else None,
            "extra_max_ms": float(max(extra)) if extra else None,
            "within_300_ms": f"{within}/{len(recordings)}",
            "no_turn_end": missed,
        }
    false_starts = {}
    for label, noise in (("babble alone", babble(recordings, 30 * RATE, "")), ("music alone", music(30 * RATE))):
        scaled = noise * 10 ** (-26 / 20)  # a TV at a talker's level in a quiet room: -26 dBFS RMS
        core = TurnTaking(new_endpointer(vad), TurnTakingRules(speculative=False))
        starts = 0
        for start in range(0, scaled.size, CHUNK):
            starts += sum(isinstance(c, StartTurn) for c in core.on_audio(scaled[start : start + CHUNK], start / 16))
        false_starts[label] = starts
    return {"end_of_turn": rows, "turns_started_in_30_s": false_starts}


def write_png(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = plt.get_cmap("tab20").colors  # more rules than the default cycle's 10 colours
    for (name, row), colour in zip(results.items(), itertools.cycle(colours)):
        rates = [100 * row["cut_in"][p] for p in PAUSES_MS]
        ax.plot([row["p50_ms"]] * len(PAUSES_MS), rates, "o-", color=colour, alpha=0.35)
        for pause, rate in zip(PAUSES_MS, rates, strict=True):
            ax.annotate(f"{pause}", (row["p50_ms"], rate), fontsize=7, xytext=(3, 0), textcoords="offset points")
        ax.plot([], [], "o-", color=colour, label=name)  # the legend in the line's own colour
    ax.axhline(10, color="grey", ls=":", lw=1)
    ax.axhline(25, color="grey", ls="--", lw=1)
    ax.set_xlabel("finished utterances: end of speech to NPC audio, p50 (ms)")
    ax.set_ylabel("cut-in rate (%), per pause length (ms, labels)")
    ax.set_title("Turn-taking rules on real speech: cut-ins at mid-thought pauses vs latency")
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=Path, default=HUMAN_SPEECH)
    parser.add_argument("--asr-ms", type=float, default=300.0, help="speculative transcript arrives this long after the pause")
    parser.add_argument("--detector-ms", type=float, default=60.0, help="Smart Turn's answer arrives this long after the pause")
    parser.add_argument("--reply-ms", type=float, default=400.0, help="a speculation's reply audio is ready this long after the pause")
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--no-background-gate", action="store_true", help="the VAD alone, as before end_silence_background_db")
    parser.add_argument("--sentence-end-ms", type=float, default=70.0, help="the sentence-end model's answer arrives this long after the transcript")
    parser.add_argument("--noise-rule", default=DEFAULT_RULE, choices=list(RULES))
    parser.add_argument("--text-only", action="store_true", help="only the words: whole player lines against the same lines cut at a random word")
    parser.add_argument("--seed", type=int, default=7, help="where --text-only cuts the lines")
    args = parser.parse_args(argv)
    print(machine_line())
    if args.text_only:
        lines = player_lines(Path(__file__).parent.parent)
        words = words_benchmark(lines, args.seed)
        print(f"{len(lines)} player lines, {words['pairs']} cut at a random word (seed {args.seed}): AUC {words['auc']:.3f}")
        print("| P(sentence ends) below | whole lines | cut lines |\n|---|---|---|")
        for threshold, (whole, cut) in words["below"].items():
            print(f"| {threshold} | {100 * whole:.1f} % | {100 * cut:.1f} % |")
        return

    latency = Latencies(args.asr_ms, args.detector_ms, args.reply_ms, args.sentence_end_ms)
    if args.no_background_gate:
        BACKGROUND_GATE[0] = None
    recordings = load_recordings(args.utterances)
    models, vad = Models(), SileroVad()
    cases = sum(len(split_points(r)) for r in recordings)
    speakers = len({r.speaker for r in recordings})
    print(f"{len(recordings)} recordings, {speakers} speakers, {cases} mid-sentence splits x {len(PAUSES_MS)} pauses")
    results = pause_benchmark(recordings, models, latency, vad)
    print("\ncut-in: NPC audio before the player resumes (turn ended in the pause); p50/p95: end of speech to NPC audio")
    print(f"| rule | {' | '.join(f'{p} ms pause' for p in PAUSES_MS)} | p50 | p95 |")
    print("|---|" + "---|" * (len(PAUSES_MS) + 2))
    for name, row in results.items():
        rates = " | ".join(f"{100 * row['cut_in'][p]:.0f} % ({100 * row['ended_in_pause'][p]:.0f} %)" for p in PAUSES_MS)
        print(f"| {name} | {rates} | {row['p50_ms']:.0f} ms | {row['p95_ms']:.0f} ms |")
    print(f"\nsessions, one per speaker, rule {args.noise_rule!r}: each recording with a 700 ms pause mid-sentence, then whole")
    for label, row in session_benchmark(recordings, RULES[args.noise_rule], models, latency, vad, 700).items():
        print(f"  {label} end silence: cut-in {100 * row['cut_in']:.0f} % of {row['cases']}, "
              f"whole recordings p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms")
    noise = noise_benchmark(recordings, RULES[args.noise_rule], models, latency, vad)
    print(f"\nnoise, rule {args.noise_rule!r}: end of turn vs the same recording in silence")
    for label, row in noise["end_of_turn"].items():
        print(f"  {label}: {row}")
    print(f"  turns started by 30 s of noise with no player speech: {noise['turns_started_in_30_s']}")
    if args.png is not None:
        write_png(results, args.png)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
