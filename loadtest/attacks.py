"""`python -m loadtest.attacks`: is a well-behaved player still served while hostile clients attack? (issue 18)

Starts `npcserver serve` with the real models on 127.0.0.1 and its default settings, so the per-address
limits are the shipped ones. One well-behaved player, from 127.0.0.1, then speaks --turns real spoken turns
(Piper clips from loadtest/utterances and real recordings from loadtest/human_speech, alternately, the same
ones in every scenario), in real time with an open mic, listening to each reply to its end before the
next, and measures voice-to-voice at the client, as `python -m loadtest` does:

  quiet      nobody else on the node
  slots      slot hogging (issue 18 item 2): each attacker address opens --connections sessions, starts them,
             then sends only {"type":"context","context":{}} keep-alives every 4 s; it knocks again 1 s after
             a refusal or a close
  flood      reconnecting audio floods (item 3): --connections clients per attacker address send speech as
             fast as the socket takes it (1 s of audio a frame) and reconnect at once after each cut
  context    context bloat (item 4): --connections sessions per attacker address send maximum-size context
             updates (32 keys of 256 characters) back to back, every other one also a 60 KB value the node
             must refuse, reconnecting after each cut
  quiet-again  nobody else again: how far the figures drift on their own (a shared machine)

Meanwhile another player from 127.0.0.1 arrives every 5 s (opens a session, closes it): is a newcomer
admitted at any moment of the attack, not only at its start?

The table gives p50/p95 of each scenario's turns and, because the p50 of a few turns moves with one turn,
also the change turn by turn (each utterance against itself in quiet): its median and its worst.

Attackers come from other loopback addresses (127.0.0.2, 127.0.0.3, ... one per --attackers), so each
attack meets the per-address limits as an attacker on the internet would. The goal (issue 18): under each
attack the player is admitted and its voice-to-voice p50 and p95 stay within +20 % of quiet.

Bounded: an attack starts --warmup-s before the player's first turn and stops when the player is done, or
after --attack-s (60) at most; no player turn starts after that. Every attacker connection is counted;
traffic goes only to the node on loopback.

Examples:
  python -m loadtest.attacks                          # starts the node (real models), ~5 minutes
  python -m loadtest.attacks --json attacks.json      # also the figures as JSON
  python -m loadtest.attacks --url ws://127.0.0.1:8765/v1/talk --scenarios quiet,flood  # a node already up
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from loadtest.corpus import UTTERANCES_DIR, Utterance, load_utterances
from loadtest.measure import turn_playback_end
from loadtest.metrics import histogram_of
from npcserver.client import TalkError, TalkSession

HUMAN_SPEECH_DIR = Path(__file__).parent / "human_speech"
PIPER_CLIPS = ("sword_price", "repair_shield", "dragon_rumor", "best_armor")
HUMAN_CLIPS = ("cards_002", "goforward", "librivox_0880", "cards_005")  # people, 1.5-3.5 s each
SCENARIOS = ("quiet", "slots", "flood", "context", "quiet-again")
ATTACKS = ("slots", "flood", "context")
GOAL_PERCENT = 20.0
KEEP_ALIVE = json.dumps({"type": "context", "context": {}})
CONTEXT_KEYS = 32  # the shipped max_context_keys
CONTEXT_ENTRY_CHARS = 256  # the shipped max_context_entry_chars, key and value as JSON
OVERSIZE_CHARS = 60_000  # item 4's value: over the entry limit, under the 64 KiB frame limit


# --------------------------------------------------------------------------- attackers


@dataclass(slots=True)
class AttackerTally:
    """What the attacker clients of one scenario did and what the node answered them."""

    handshakes: int = 0
    admitted: int = 0  # got `ready`
    outcomes: Counter[str] = field(default_factory=Counter)  # how each connection attempt ended
    errors: Counter[str] = field(default_factory=Counter)  # error codes the node sent
    audio_s: float = 0.0  # audio written to the sockets (the node reads less: it cuts a flood)
    context_messages: int = 0
    elapsed_s: float = 0.0

    def summary(self) -> str:
        parts = [f"{self.handshakes} tries, {self.admitted} admitted"]
        parts += [f"{outcome} x{count}" for outcome, count in self.outcomes.most_common()]
        if self.audio_s:
            rate = self.audio_s / self.elapsed_s if self.elapsed_s else 0.0
            parts.append(f"{self.audio_s:.0f} s of audio written ({rate:.0f}x real time)")
        if self.context_messages:
            parts.append(f"{self.context_messages} context msgs")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"handshakes": self.handshakes, "admitted": self.admitted, "outcomes": dict(self.outcomes),
                "errors": dict(self.errors), "audio_s": round(self.audio_s, 1),
                "context_messages": self.context_messages, "elapsed_s": round(self.elapsed_s, 1)}


Act = Callable[[ClientConnection, "AttackClock", AttackerTally], Awaitable[None]]


@dataclass(slots=True)
class AttackClock:
    deadline: float  # time.monotonic()
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def over(self) -> bool:
        return self.stop.is_set() or time.monotonic() >= self.deadline

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds`, or less if the attack ends first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), max(0.0, min(seconds, self.deadline - time.monotonic())))


def start_message(npc: str) -> str:
    return json.dumps({"type": "start", "npc": npc, "audio": {"encoding": "pcm_s16le", "sample_rate": 16000},
                       "greeting": False, "player": "attacker"})


async def attack_connection(url: str, address: str, npc: str, clock: AttackClock, tally: AttackerTally,
                            act: Act) -> float:
    """One connection from `address`: start, then `act` until the node cuts it or the attack ends.

    Records how it ended in `tally.outcomes`; returns how long to wait before knocking again.
    """
    tally.handshakes += 1
    try:
        async with connect(url, local_addr=(address, 0), open_timeout=5, close_timeout=1, proxy=None,
                           compression=None, max_size=2**22, max_queue=None) as ws:
            errors: list[str] = []
            ready = asyncio.Event()

            async def read() -> None:  # drain everything (replies too), so the node never waits on us
                with contextlib.suppress(ConnectionClosed):
                    async for raw in ws:
                        if isinstance(raw, str):
                            message = json.loads(raw)
                            if message.get("type") == "ready":
                                ready.set()
                            elif message.get("type") == "error":
                                code = str(message.get("code"))
                                if "overloaded" in str(message.get("message")):  # server_full has two causes
                                    code += " (overloaded)"
                                errors.append(code)
                                tally.errors[code] += 1

            reader = asyncio.create_task(read())
            try:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(start_message(npc))
                    waiting = asyncio.ensure_future(ready.wait())
                    await asyncio.wait([reader, waiting], timeout=5, return_when=asyncio.FIRST_COMPLETED)
                    waiting.cancel()
                    if ready.is_set():
                        tally.admitted += 1
                        await act(ws, clock, tally)
                ended_by_us = clock.over() and ws.close_code is None
            finally:
                await ws.close()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(reader, 2)
            if ended_by_us:
                tally.outcomes["held to the end"] += 1
                return 0.0
            code = ws.close_code  # the node's close code
            tally.outcomes[f"closed {code} {errors[-1]}" if errors else f"closed {code}"] += 1
            return 0.0 if ready.is_set() else 1.0
    except InvalidStatus as refused:
        tally.outcomes[f"HTTP {refused.response.status_code}"] += 1
    except (OSError, TimeoutError, InvalidHandshake) as failed:
        tally.outcomes[type(failed).__name__] += 1
    return 1.0


async def attacker(url: str, address: str, npc: str, clock: AttackClock, tally: AttackerTally, act: Act,
                   max_connections: int = 1000) -> None:
    """Reconnect after each cut or refusal until the attack ends (at most `max_connections` tries)."""
    for _ in range(max_connections):
        if clock.over():
            return
        await clock.sleep(await attack_connection(url, address, npc, clock, tally, act))


async def keep_alives(ws: ClientConnection, clock: AttackClock, tally: AttackerTally, every_s: float = 4.0) -> None:
    """Item 2: hold the slot with nothing but empty context updates (every 4 s: under the old 5 s idle timeout)."""
    while not clock.over():
        await ws.send(KEEP_ALIVE)
        tally.context_messages += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ws.wait_closed(), max(0.0, min(every_s, clock.deadline - time.monotonic())))
            return  # the node closed it
        await asyncio.sleep(0)


def flood_of(speech: np.ndarray, frame_s: float = 1.0) -> Act:
    """Item 3: speech as fast as the socket takes it, `frame_s` of audio a frame (few frames, much audio)."""
    audio = np.asarray(speech, dtype="<i2").tobytes()
    frame = int(16000 * frame_s) * 2

    async def flood(ws: ClientConnection, clock: AttackClock, tally: AttackerTally) -> None:
        offset = 0
        while not clock.over():
            chunk = audio[offset : offset + frame]
            if len(chunk) < frame:
                chunk += audio[: frame - len(chunk)]
            offset = (offset + frame) % len(audio)
            await ws.send(chunk)
            tally.audio_s += len(chunk) / 32000
            await asyncio.sleep(0)  # let the reader and the other attackers run

    return flood


def max_context(serial: int) -> dict[str, str]:
    """32 keys, each entry exactly the shipped 256 characters as JSON; fresh values every time."""
    entries = {}
    for key_number in range(CONTEXT_KEYS):
        key = f"k{key_number:02d}"
        room = CONTEXT_ENTRY_CHARS - len(json.dumps({key: ""}))
        entries[key] = (f"{serial}-" * room)[:room]
    return entries


async def context_bloat(ws: ClientConnection, clock: AttackClock, tally: AttackerTally) -> None:
    """Item 4: maximum-size context updates back to back, every other one with a 60 KB value besides."""
    serial = 0
    while not clock.over():
        await ws.send(json.dumps({"type": "context", "context": max_context(serial)}))
        if serial % 2:
            await ws.send(json.dumps({"type": "context", "context": {"lore": "x" * OVERSIZE_CHARS}}))
            tally.context_messages += 1
        tally.context_messages += 1
        serial += 1
        await asyncio.sleep(0)


def attack_act(kind: str, flood_speech: np.ndarray) -> Act:
    if kind == "slots":
        return keep_alives
    if kind == "flood":
        return flood_of(flood_speech)
    if kind == "context":
        return context_bloat
    raise ValueError(f"unknown attack {kind!r}; expected one of {ATTACKS}")


# --------------------------------------------------------------------------- the well-behaved player


@dataclass(slots=True)
class PlayerResult:
    admitted: bool = False
    refusal: str | None = None
    turns_tried: int = 0
    voice_to_voice_ms: list[float] = field(default_factory=list)  # answered turns only
    failures: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    turns: list[dict[str, Any]] = field(default_factory=list)  # each turn tried, in order (same utterances each scenario)

    def by_utterance(self) -> dict[str, float]:
        """Voice-to-voice of each answered turn, by the utterance spoken (for comparing turn by turn)."""
        return {t["utterance"]: t["voice_to_voice_ms"] for t in self.turns if t["voice_to_voice_ms"] is not None}

    def as_dict(self) -> dict[str, Any]:
        return {"admitted": self.admitted, "refusal": self.refusal, "turns_tried": self.turns_tried,
                "answered": len(self.voice_to_voice_ms), "voice_to_voice_ms": [round(v, 1) for v in self.voice_to_voice_ms],
                "failures": dict(self.failures), "reconnects": self.reconnects, "turns": self.turns}


async def open_player(url: str, npc: str) -> TalkSession | str:
    try:
        return await TalkSession.open(url, npc, player="well-behaved", greeting=False, timeout_s=10)
    except TalkError as refused:
        return refused.code


async def play(url: str, npc: str, utterances: Sequence[Utterance], clock: AttackClock | None,
               pause_s: float = 0.5, turn_timeout_s: float = 30.0) -> PlayerResult:
    """One player from 127.0.0.1 speaking each utterance in real time, with an open mic, until turn_end.

    It listens to the whole reply (until its last sample would have played), waits `pause_s` and speaks
    again: it never talks over the NPC, so every turn is a fresh question. No turn starts once `clock` says the attack is over.
    """
    result = PlayerResult()
    opened = await open_player(url, npc)
    if isinstance(opened, str):
        result.refusal = opened
        return result
    result.admitted = True
    session = opened
    try:
        for utterance in utterances:
            if clock is not None and clock.over():
                break
            if session.closed:
                await session.close()
                result.reconnects += 1
                opened = await open_player(url, npc)
                if isinstance(opened, str):
                    result.turns_tried += 1
                    result.failures[f"reconnect refused: {opened}"] += 1
                    result.turns.append({"utterance": utterance.name, "voice_to_voice_ms": None, "failure": opened})
                    continue
                session = opened
            result.turns_tried += 1
            heard = await session.speak(utterance.pcm, speech_end=utterance.speech_end, timeout_s=turn_timeout_s)
            answered = heard.ok and heard.voice_to_voice_ms is not None
            reason = None
            if answered:
                result.voice_to_voice_ms.append(heard.voice_to_voice_ms)  # type: ignore[arg-type]
            else:
                reason = ",".join(heard.error_codes) or ("timeout" if heard.timed_out else "no reply audio")
                reason += " (interrupted)" if heard.interrupted else ""
                result.failures[reason] += 1
            result.turns.append({
                "utterance": utterance.name, "turn": heard.turn,
                "voice_to_voice_ms": round(heard.voice_to_voice_ms, 1) if answered else None,  # type: ignore[arg-type]
                "failure": reason, "interrupted": heard.interrupted, "transcript": heard.transcript,
                "reply": heard.reply_text, "turn_end_ms": heard.turn_end_ms, "server_timings": dict(heard.server_timings),
            })
            if (played_until := turn_playback_end(heard)) is not None:
                await asyncio.sleep(min(max(0.0, played_until - time.perf_counter()), turn_timeout_s))
            await asyncio.sleep(pause_s)
    finally:
        await session.close()
    return result


# --------------------------------------------------------------------------- scenarios


@dataclass(slots=True)
class ScenarioResult:
    name: str
    attackers: tuple[str, ...]
    player: PlayerResult
    tally: AttackerTally | None
    rss_before_mb: float | None
    rss_after_mb: float | None
    rss_peak_mb: float | None
    elapsed_s: float
    newcomers: Counter[str] = field(default_factory=Counter)  # players arriving during it: "admitted" or the refusal

    def percentiles(self) -> tuple[float | None, float | None]:
        if not self.player.voice_to_voice_ms:
            return None, None
        summary = histogram_of(self.player.voice_to_voice_ms).summary()
        return summary.p50_ms, summary.p95_ms

    def as_dict(self) -> dict[str, Any]:
        p50, p95 = self.percentiles()
        return {"scenario": self.name, "attacker_addresses": list(self.attackers), "player": self.player.as_dict(),
                "voice_to_voice_p50_ms": p50, "voice_to_voice_p95_ms": p95,
                "attackers": self.tally.as_dict() if self.tally else None, "rss_before_mb": self.rss_before_mb,
                "rss_after_mb": self.rss_after_mb, "rss_peak_mb": self.rss_peak_mb, "elapsed_s": round(self.elapsed_s, 1),
                "newcomers": dict(self.newcomers)}


def readyz_url(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    return urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc, "/readyz", "", ""))


def _read_readyz(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # the node's own loopback URL
            return dict(json.loads(answer.read()))
    except urllib.error.HTTPError as refused:  # 503 while full or overloaded: the body still says how much
        return dict(json.loads(refused.read()))


async def readiness(ws_url: str) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(_read_readyz, readyz_url(ws_url))
    except (OSError, ValueError):
        return {}


async def settle(ws_url: str, limit_s: float) -> None:
    """Wait (at most `limit_s`) until the node has no session and no model call waiting: the last attack is over."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        ready = await readiness(ws_url)
        if ready.get("sessions") == 0 and not any(ready.get("queue_depth", {}).values()):
            return
        await asyncio.sleep(0.5)


@dataclass(frozen=True, slots=True)
class Options:
    url: str
    npc: str = "greta_blacksmith"
    scenarios: tuple[str, ...] = SCENARIOS
    turns: int = 7
    attackers: int = 2  # attacker addresses, 127.0.0.2 onwards
    connections: int = 8  # attacker clients per address (twice the shipped per-address cap)
    attack_s: float = 60.0
    warmup_s: float = 2.0
    settle_s: float = 20.0
    pause_s: float = 0.5
    newcomer_every_s: float = 5.0  # another player from 127.0.0.1 opens a session (and closes it) this often


async def run_scenario(name: str, options: Options, utterances: Sequence[Utterance], flood_speech: np.ndarray,
                       progress: Callable[[str], None]) -> ScenarioResult:
    attack = name if name in ATTACKS else None
    addresses = tuple(f"127.0.0.{2 + n}" for n in range(options.attackers)) if attack else ()
    rss_before = (await readiness(options.url)).get("rss_mb")
    peak: list[float] = [rss_before] if rss_before is not None else []
    started = time.monotonic()
    clock = AttackClock(started + options.attack_s)
    tally = AttackerTally() if attack else None
    tasks: list[asyncio.Task[None]] = []
    if attack and tally is not None:
        act = attack_act(attack, flood_speech)
        tasks = [asyncio.create_task(attacker(options.url, address, options.npc, clock, tally, act))
                 for address in addresses for _ in range(options.connections)]

    async def sample_memory() -> None:
        while True:
            rss = (await readiness(options.url)).get("rss_mb")
            if rss is not None:
                peak.append(rss)
            await asyncio.sleep(2.0)

    newcomers: Counter[str] = Counter()

    async def newcomer() -> None:  # is a player arriving in the middle of it admitted too?
        await asyncio.sleep(options.warmup_s + options.newcomer_every_s / 2)
        while True:
            opened = await open_player(options.url, options.npc)
            newcomers["admitted" if isinstance(opened, TalkSession) else opened] += 1
            if isinstance(opened, TalkSession):
                await opened.close()
            await asyncio.sleep(options.newcomer_every_s)

    sampler = asyncio.create_task(sample_memory())
    arrivals = asyncio.create_task(newcomer())
    try:
        if attack:
            await clock.sleep(options.warmup_s)
        player = await play(options.url, options.npc, utterances, clock if attack else None, options.pause_s)
    finally:
        clock.stop.set()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception) and tally is not None:  # a bug in this file: show it, don't hide it
                tally.outcomes[f"attacker client failed: {outcome!r}"] += 1
        if tally is not None:
            tally.elapsed_s = time.monotonic() - started
        sampler.cancel()
        arrivals.cancel()
        await asyncio.gather(sampler, arrivals, return_exceptions=True)
    elapsed = time.monotonic() - started
    await settle(options.url, options.settle_s)
    rss_after = (await readiness(options.url)).get("rss_mb")
    if rss_after is not None:
        peak.append(rss_after)
    result = ScenarioResult(name, addresses, player, tally, rss_before, rss_after, max(peak) if peak else None, elapsed,
                            newcomers)
    progress(f"{name}: {len(player.voice_to_voice_ms)}/{options.turns} answered in {elapsed:.0f} s"
             + (f"; attackers: {tally.summary()}" if tally else ""))
    return result


def benchmark_utterances(turns: int) -> list[Utterance]:
    """Piper clips and real recordings alternately, `turns` of them (cycling), the same in every scenario."""
    piper = {u.name: u for u in load_utterances(UTTERANCES_DIR)}
    human = {u.name: u for u in load_utterances(HUMAN_SPEECH_DIR)}
    order = [clip for pair in zip(PIPER_CLIPS, HUMAN_CLIPS, strict=True) for clip in pair]
    return [piper.get(name) or human[name] for name in (order[i % len(order)] for i in range(turns))]


async def run_benchmark(options: Options, progress: Callable[[str], None] = lambda line: None) -> list[ScenarioResult]:
    utterances = benchmark_utterances(options.turns)
    flood_speech = np.concatenate([u.pcm for u in load_utterances(UTTERANCES_DIR)])
    return [await run_scenario(name, options, utterances, flood_speech, progress) for name in options.scenarios]


# --------------------------------------------------------------------------- report


def change_percent(value: float | None, quiet: float | None) -> float | None:
    if value is None or not quiet:
        return None
    return (value - quiet) / quiet * 100.0


def per_turn_changes(result: ScenarioResult, quiet: ScenarioResult) -> list[float]:
    """Percent change of each utterance's voice-to-voice against the same utterance in quiet (both answered)."""
    before = quiet.player.by_utterance()
    return [(v - before[name]) / before[name] * 100.0
            for name, v in result.player.by_utterance().items() if before.get(name)]


def paired(result: ScenarioResult, quiet: ScenarioResult | None) -> str:
    """'median / worst' per-turn change: p50 of 8 bimodal turns moves with one turn, the pairs show more."""
    changes = sorted(per_turn_changes(result, quiet)) if quiet is not None and result is not quiet else []
    if not changes:
        return ""
    return f"{_pct(float(np.median(changes)))} / {_pct(changes[-1])}"


def shortfalls(results: Sequence[ScenarioResult]) -> dict[str, list[str]]:
    """Per attack, what keeps it from the goal (none: met): admitted, every turn answered, p50 and p95 +20 % at most."""
    quiet = next((r for r in results if r.name == "quiet"), None)
    if quiet is None:
        return {}
    q50, q95 = quiet.percentiles()
    out: dict[str, list[str]] = {}
    for result in results:
        if result.name not in ATTACKS:
            continue
        missed = [] if result.player.admitted else [f"refused ({result.player.refusal})"]
        refused = sum(result.newcomers.values()) - result.newcomers["admitted"]
        if refused:
            missed.append(f"{refused} newcomers refused")
        unanswered = result.player.turns_tried - len(result.player.voice_to_voice_ms)
        if result.player.admitted and unanswered:
            missed.append(f"{unanswered} unanswered")
        p50, p95 = result.percentiles()
        for label, change in (("p50", change_percent(p50, q50)), ("p95", change_percent(p95, q95))):
            if change is None or change > GOAL_PERCENT:
                missed.append(f"{label} {_pct(change)}")
        out[result.name] = missed
    return out


def verdicts(results: Sequence[ScenarioResult]) -> dict[str, bool]:
    return {name: not missed for name, missed in shortfalls(results).items()}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0f} %"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def newcomer_cell(newcomers: Counter[str]) -> str:
    cell = f"{newcomers['admitted']}/{sum(newcomers.values())}"
    refused = [f"{code} x{count}" for code, count in newcomers.items() if code != "admitted"]
    return cell + (f" ({', '.join(refused)})" if refused else "")


def format_table(results: Sequence[ScenarioResult], turns: int) -> str:
    quiet = next((r for r in results if r.name == "quiet"), None)
    q50, q95 = quiet.percentiles() if quiet else (None, None)
    goals = shortfalls(results)
    header = ("scenario", "admitted", "answered", "v2v p50 ms", "v2v p95 ms", "p50 vs quiet", "p95 vs quiet",
              "per turn: median/worst", "goal", "newcomers admitted", "RSS MiB before/peak/after", "attackers")
    rows = [header]
    for r in results:
        p50, p95 = r.percentiles()
        admitted = "yes" if r.player.admitted else f"no ({r.player.refusal})"
        answered = f"{len(r.player.voice_to_voice_ms)}/{turns}"
        if r.player.failures:
            answered += " (" + ", ".join(f"{k} x{v}" for k, v in r.player.failures.items()) + ")"
        goal = "" if r.name not in goals else ("MISSED: " + ", ".join(goals[r.name]) if goals[r.name] else "met")
        who = f"{','.join(r.attackers)}: {r.tally.summary()}" if r.tally else ""
        rows.append((r.name, admitted, answered, _ms(p50), _ms(p95),
                     _pct(change_percent(p50, q50)) if r.name != "quiet" else "",
                     _pct(change_percent(p95, q95)) if r.name != "quiet" else "", paired(r, quiet), goal,
                     newcomer_cell(r.newcomers), f"{_mb(r.rss_before_mb)}/{_mb(r.rss_peak_mb)}/{_mb(r.rss_after_mb)}", who))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for number, row in enumerate(rows):
        lines.append(" | ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)) + " | " + row[-1])
        if number == 0:
            lines.append("-+-".join("-" * width for width in widths) + "-+-" + "-" * 9)
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.attacks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="A node already running on loopback (default: start `npcserver serve` with "
                                      "the real models and default settings on 127.0.0.1).")
    parser.add_argument("--npc", default="greta_blacksmith", help="Persona the player and the attackers talk to.")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"Comma-separated, in order, from {','.join(SCENARIOS)} (default: all).")
    parser.add_argument("--turns", type=int, default=7, help="Spoken turns the player takes per scenario (1-40).")
    parser.add_argument("--attackers", type=int, default=2, help="Attacker addresses, 127.0.0.2 onwards (1-50).")
    parser.add_argument("--connections", type=int, default=8,
                        help="Attacker clients per address (1-64; default 8, twice the shipped per-address cap).")
    parser.add_argument("--attack-s", type=float, default=60.0, help="Longest an attack lasts, seconds (1-120).")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="Attack time before the player's first turn.")
    parser.add_argument("--json", type=Path, help="Also write every figure here as JSON.")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="Extra argument for `npcserver serve` (repeatable), e.g. --serve-arg=--backend=fake.")
    return parser


def options_from(args: argparse.Namespace, url: str) -> Options:
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        raise SystemExit(f"unknown scenarios {unknown}; expected some of {SCENARIOS}")
    for name, value, low, high in (("turns", args.turns, 1, 40), ("attackers", args.attackers, 1, 50),
                                   ("connections", args.connections, 1, 64), ("attack-s", args.attack_s, 1, 120)):
        if not low <= value <= high:
            raise SystemExit(f"--{name} must be within {low}-{high}")
    return Options(url=url, npc=args.npc, scenarios=scenarios, turns=args.turns, attackers=args.attackers,
                   connections=args.connections, attack_s=args.attack_s, warmup_s=args.warmup_s)


def report(options: Options, results: list[ScenarioResult], json_path: Path | None) -> int:
    print(format_table(results, options.turns))
    goals = verdicts(results)
    if json_path is not None:
        json_path.write_text(json.dumps({"options": {k: getattr(options, k) for k in options.__slots__},
                                         "goal_percent": GOAL_PERCENT, "goals_met": goals,
                                         "scenarios": [r.as_dict() for r in results]}, indent=2) + "\n")
    return 0 if all(goals.values()) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def progress(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    if args.url:
        options = options_from(args, args.url)
        results = asyncio.run(run_benchmark(options, progress))
        return report(options, results, args.json)
    from loadtest.server_process import server_process

    progress("starting npcserver serve (real models unless --serve-arg says otherwise)")
    with server_process(*args.serve_arg) as server:
        progress(f"node ready at {server.url}")
        options = options_from(args, server.url)
        results = asyncio.run(run_benchmark(options, progress))
        code = server.process.poll()
    if code is not None:
        progress(f"the node exited during the run with status {code}:\n" + "".join(server.log_tail))
        return 2
    return report(options, results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
