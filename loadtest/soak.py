"""`python -m loadtest.soak`: does a node's memory stay under a ceiling through a long run of players and attacks? (issue 18)

Starts `npcserver serve` with the real models on 127.0.0.1 (or uses --url), then for --duration-s runs
--players simulated players with the load runner of `python -m loadtest` (open-loop Poisson turns, real
speech in real time, each reply listened to its end) and, at the same time, the hostile clients of
`python -m loadtest.attacks`: every --attack-every-s, one attack (slots, flood, context, in turn) for
--attack-s, from --attackers loopback addresses (127.0.0.2 onwards), --connections clients each. The
first interval is quiet, as a baseline.

Every 5 s it samples the node's resident memory: `rss_mb` from /readyz and, for a node it started, VmRSS
and VmHWM (the kernel's peak, which sees spikes between samples) from /proc/PID/status. A progress line
comes about every 30 s. The report gives RSS at ready, its p50 and max over the run, min/max over the last
5 minutes, the slope over the second half (MiB per 10 min: is it still growing?), the players'
voice-to-voice p50/p95, turns answered/failed and stutters, and whether the peak stayed under --ceiling-mb.

The node it starts gets `--max-connections-per-ip 0 --max-sessions 64` (as in docs/operations.md's
16-player figure), because all players connect from 127.0.0.1. With no per-address cap the per-address
budgets are off too, so the attackers meet only the per-session limits: slot hogs are all admitted and
each flood connection gets a fresh burst. That is harsher on memory than the shipped limits, which is
the point of a soak. `max_rss_mb` stays off, so the node grows rather than refusing. --serve-arg adds to
or overrides these (the later flag wins). A node given with --url must take --players connections from
127.0.0.1.

Exit status: 0 when the peak RSS stayed under --ceiling-mb, 1 when not, 2 when the node exited during the run
(or an argument is out of bounds).
Traffic goes only to the node on loopback; every loop is bounded in count and time.

Examples:
  python -m loadtest.soak                                   # 30 minutes, 16 players, real models
  python -m loadtest.soak --json artifacts/soak.json        # also every sample and figure as JSON
  python -m loadtest.soak --duration-s 60 --players 4 --attack-every-s 20 --attack-s 10   # a smoke run
  python -m loadtest.soak --url ws://127.0.0.1:8765/v1/talk # a node already up (RSS from /readyz only)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.attacks import ATTACKS, AttackClock, AttackerTally, attack_act, attacker, readiness, settle
from loadtest.corpus import UTTERANCES_DIR, Utterance, load_utterances
from loadtest.report import build_report, format_table, write_json
from loadtest.runner import LoadConfig, RunResult, RunState, run_load

SERVE_ARGS = ("--max-connections-per-ip", "0", "--max-sessions", "64")
DEFAULT_CEILING_MB = 3900.0  # docs/operations.md: "set max_rss_mb (e.g. 3900)" (with the sentence-end model)
LAST_WINDOW_S = 300.0
BUDGET_MS = 800.0  # only for the load report's within-budget share; the soak judges memory
SETTLE_S = 30.0

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SoakOptions:
    url: str
    npc: str = "greta_blacksmith"
    players: int = 16
    duration_s: float = 1800.0
    turn_interval_s: float = 15.0
    seed: int = 1
    attack_every_s: float = 120.0
    attack_s: float = 30.0
    attack_kinds: tuple[str, ...] = ATTACKS
    attackers: int = 2  # addresses, 127.0.0.2 onwards
    connections: int = 8  # clients per address, as in loadtest.attacks
    ceiling_mb: float = DEFAULT_CEILING_MB
    sample_every_s: float = 5.0
    progress_every_s: float = 30.0


# --------------------------------------------------------------------------- attack schedule


@dataclass(frozen=True, slots=True)
class AttackWindow:
    kind: str
    start_s: float  # seconds after the soak started
    end_s: float


def attack_windows(duration_s: float, every_s: float, attack_s: float, kinds: Sequence[str]) -> list[AttackWindow]:
    """An attack every `every_s` from `every_s` on (the first interval is the quiet baseline), the kinds in
    turn; only windows that end by `duration_s`, so no attack outlives the players."""
    windows: list[AttackWindow] = []
    start = every_s
    while kinds and start + attack_s <= duration_s and len(windows) < 10_000:
        windows.append(AttackWindow(kinds[len(windows) % len(kinds)], start, start + attack_s))
        start += every_s
    return windows


def active_attack(windows: Sequence[AttackWindow], t_s: float) -> str | None:
    return next((w.kind for w in windows if w.start_s <= t_s < w.end_s), None)


@dataclass(slots=True)
class AttackRun:
    window: AttackWindow
    addresses: tuple[str, ...]
    tally: AttackerTally

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.window.kind, "start_s": self.window.start_s, "end_s": self.window.end_s,
                "addresses": list(self.addresses), "attackers": self.tally.as_dict()}


# --------------------------------------------------------------------------- memory samples


@dataclass(frozen=True, slots=True)
class RssSample:
    t_s: float  # seconds after the soak started
    rss_mb: float | None  # /readyz (the node's own psutil figure)
    vm_rss_mb: float | None = None  # /proc/PID/status, a node this process started
    vm_hwm_mb: float | None = None  # the kernel's peak RSS of that process so far
    sessions: int | None = None
    turns_ok: int = 0
    turns_failed: int = 0
    attack: str | None = None

    @property
    def mb(self) -> float | None:
        return self.rss_mb if self.rss_mb is not None else self.vm_rss_mb


def proc_memory_mb(pid: int) -> tuple[float | None, float | None]:
    """(VmRSS, VmHWM) of process `pid` in MiB, or None where /proc doesn't say (gone, not Linux)."""
    values: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM") and rest.split():
                values[name] = int(rest.split()[0]) / 1024  # kB
    return values.get("VmRSS"), values.get("VmHWM")


@dataclass(frozen=True, slots=True)
class RssSummary:
    samples: int
    at_ready_mb: float | None
    p50_mb: float | None
    max_mb: float | None  # the largest sample
    peak_mb: float | None  # max_mb, or the kernel's VmHWM when it rose during the run (a spike between samples)
    last_window_s: float
    last_window_min_mb: float | None
    last_window_max_mb: float | None
    second_half_slope_mb_per_10min: float | None
    ceiling_mb: float
    under_ceiling: bool  # False without a single sample: nothing measured, nothing claimed

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def slope_mb_per_10min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) points, in MiB per 10 minutes (None under two distinct times)."""
    if len({t for t, _ in points}) < 2:
        return None
    times, values = np.array(points, dtype=float).T
    return float(np.polyfit(times, values, 1)[0] * 600.0)


def summarize_rss(samples: Sequence[RssSample], ceiling_mb: float, last_window_s: float = LAST_WINDOW_S,
                  hwm_at_ready_mb: float | None = None) -> RssSummary:
    points = [(s.t_s, s.mb) for s in samples if s.mb is not None]
    values = [mb for _, mb in points]
    if not points:
        return RssSummary(0, None, None, None, None, last_window_s, None, None, None, ceiling_mb, False)
    first_t, last_t = points[0][0], points[-1][0]
    last = [mb for t, mb in points if t >= last_t - last_window_s]
    second_half = [(t, mb) for t, mb in points if t >= (first_t + last_t) / 2]
    peak = max(values)
    hwm = max((s.vm_hwm_mb for s in samples if s.vm_hwm_mb is not None), default=None)
    # VmHWM counts from the process start: only when it grew past its value at ready was its peak in the run.
    if hwm is not None and (hwm_at_ready_mb is None or hwm > hwm_at_ready_mb):
        peak = max(peak, hwm)
    return RssSummary(
        samples=len(points), at_ready_mb=values[0], p50_mb=float(np.median(values)), max_mb=max(values),
        peak_mb=peak, last_window_s=last_window_s, last_window_min_mb=min(last), last_window_max_mb=max(last),
        second_half_slope_mb_per_10min=slope_mb_per_10min(second_half), ceiling_mb=ceiling_mb,
        under_ceiling=peak < ceiling_mb,
    )


# --------------------------------------------------------------------------- the run


@dataclass(slots=True)
class SoakResult:
    options: SoakOptions
    windows: list[AttackWindow]
    samples: list[RssSample] = field(default_factory=list)
    attacks: list[AttackRun] = field(default_factory=list)
    load: RunResult | None = None
    hwm_at_ready_mb: float | None = None
    rss_after_settle_mb: float | None = None
    node_died: bool = False
    elapsed_s: float = 0.0


class _LiveTurns:
    """The load runner's live state, handed over by its progress callback (about once a second)."""

    def __init__(self) -> None:
        self.state: RunState | None = None

    def __call__(self, state: RunState, elapsed_s: float) -> None:
        self.state = state

    def counts(self) -> tuple[int, int]:
        records = self.state.records if self.state is not None else []
        ok = sum(1 for r in records if r.ok)
        return ok, len(records) - ok


async def _sample(options: SoakOptions, pid: int | None, t0: float, live: _LiveTurns,
                  windows: Sequence[AttackWindow]) -> RssSample:
    ready = await readiness(options.url)
    vm_rss, vm_hwm = proc_memory_mb(pid) if pid is not None else (None, None)
    t_s = time.monotonic() - t0
    ok, failed = live.counts()
    rss = ready.get("rss_mb")
    return RssSample(round(t_s, 2), float(rss) if rss is not None else None, vm_rss, vm_hwm, ready.get("sessions"),
                     ok, failed, active_attack(windows, t_s))


async def sample_memory(options: SoakOptions, result: SoakResult, pid: int | None, alive: Callable[[], bool],
                        t0: float, live: _LiveTurns, stop: asyncio.Event, progress: Progress) -> None:
    """Every sample_every_s until `stop` (bounded by the longest the load can run); returns early if the node died."""
    longest_s = options.duration_s + 120.0  # the load runner's drain and turn timeout, with room
    last_print = -options.progress_every_s
    for number in range(int(longest_s / options.sample_every_s) + 2):
        sample = await _sample(options, pid, t0, live, result.windows)
        result.samples.append(sample)
        if sample.t_s - last_print >= options.progress_every_s - 0.5:
            last_print = sample.t_s
            top = max((s.mb for s in result.samples if s.mb is not None), default=None)
            progress(f"{sample.t_s:5.0f}/{options.duration_s:.0f} s  RSS {_mb(sample.mb)} MiB (max {_mb(top)})  "
                     f"sessions {sample.sessions if sample.sessions is not None else '-'}  "
                     f"turns {sample.turns_ok} ok, {sample.turns_failed} failed  attack: {sample.attack or '-'}")
        if not alive():
            result.node_died = True
            return
        with contextlib.suppress(TimeoutError):
            next_at = t0 + (number + 1) * options.sample_every_s  # a fixed grid: a slow /readyz doesn't drift it
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
            return


async def cycle_attacks(options: SoakOptions, result: SoakResult, flood_speech: np.ndarray, t0: float,
                        stop: asyncio.Event, progress: Progress) -> None:
    """Each window in turn: every attacker client reconnects until the window ends (or the soak stops)."""
    addresses = tuple(f"127.0.0.{2 + n}" for n in range(options.attackers))
    for window in result.windows:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, t0 + window.start_s - time.monotonic()))
        if stop.is_set():
            return
        clock = AttackClock(t0 + window.end_s, stop)  # the soak's stop ends an attack early too
        run = AttackRun(window, addresses, AttackerTally())
        result.attacks.append(run)
        act = attack_act(window.kind, flood_speech)
        started = time.monotonic()
        outcomes = await asyncio.gather(*(attacker(options.url, address, options.npc, clock, run.tally, act)
                                          for address in addresses for _ in range(options.connections)),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):  # a bug in the attack clients: show it, don't hide it
                run.tally.outcomes[f"attacker client failed: {outcome!r}"] += 1
        run.tally.elapsed_s = time.monotonic() - started
        progress(f"attack {window.kind} {window.start_s:.0f}-{window.end_s:.0f} s: {run.tally.summary()}")


async def run_soak(options: SoakOptions, utterances: list[Utterance], flood_speech: np.ndarray,
                   pid: int | None = None, alive: Callable[[], bool] = lambda: True,
                   progress: Progress = lambda line: None) -> SoakResult:
    """Players, attacks and memory samples side by side; all three end when the load runner is done."""
    result = SoakResult(options, attack_windows(options.duration_s, options.attack_every_s, options.attack_s,
                                                options.attack_kinds))
    if pid is not None:
        result.hwm_at_ready_mb = proc_memory_mb(pid)[1]
    config = LoadConfig(url=options.url, npc=options.npc, players=options.players, duration_s=options.duration_s,
                        turn_interval_s=options.turn_interval_s, seed=options.seed)
    live = _LiveTurns()
    stop = asyncio.Event()
    t0 = time.monotonic()
    load = asyncio.create_task(run_load(config, utterances, on_progress=live))
    sampler = asyncio.create_task(sample_memory(options, result, pid, alive, t0, live, stop, progress))
    attacks = asyncio.create_task(cycle_attacks(options, result, flood_speech, t0, stop, progress))
    try:
        await asyncio.wait([load, sampler], return_when=asyncio.FIRST_COMPLETED)
        if not result.node_died:  # a dead node: don't wait out the players' timeouts
            result.load = await load
    finally:
        stop.set()
        load.cancel()
        await asyncio.gather(load, sampler, attacks, return_exceptions=True)
    for task in (sampler, attacks):  # a bug in this file: show it, don't hide it
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error
    result.elapsed_s = time.monotonic() - t0
    if not result.node_died:
        await settle(options.url, SETTLE_S)  # everyone gone: what does the node keep?
        result.rss_after_settle_mb = (await readiness(options.url)).get("rss_mb")
    return result


# --------------------------------------------------------------------------- report


def player_figures(load: RunResult | None) -> dict[str, Any]:
    """The load runner's report (latency summaries, turns, errors) plus voice-to-voice p95 per half of the run."""
    if load is None:
        return {}
    figures = build_report(load, budget_ms=BUDGET_MS)
    half = load.config.duration_s / 2
    for name, keep in (("first_half", lambda t: t < half), ("second_half", lambda t: t >= half)):
        values = [r.voice_to_voice_ms for r in load.records if r.ok and r.voice_to_voice_ms is not None and keep(r.started_s)]
        figures[f"voice_to_voice_p95_ms_{name}"] = float(np.percentile(values, 95)) if values else None
    return figures


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def format_report(result: SoakResult, rss: RssSummary, players: dict[str, Any]) -> str:
    o = result.options
    kinds = list(dict.fromkeys(w.kind for w in result.windows))  # in the order they ran
    lines = [f"soak: {o.players} players for {o.duration_s:.0f} s on {o.url}; {len(result.windows)} attacks "
             f"({', '.join(kinds) or 'none'}) of {o.attack_s:g} s every {o.attack_every_s:g} s, "
             f"{o.attackers} addresses x {o.connections} clients"]
    slope = rss.second_half_slope_mb_per_10min
    lines.append(f"RSS MiB: at ready {_mb(rss.at_ready_mb)}, p50 {_mb(rss.p50_mb)}, max {_mb(rss.max_mb)} "
                 f"(peak with VmHWM {_mb(rss.peak_mb)}), after the players left {_mb(result.rss_after_settle_mb)}; "
                 f"{rss.samples} samples")
    lines.append(f"  last {rss.last_window_s / 60:g} min: min {_mb(rss.last_window_min_mb)}, max {_mb(rss.last_window_max_mb)}; "
                 f"second half slope {'-' if slope is None else f'{slope:+.1f}'} MiB per 10 min")
    if players:
        turns = players["turns"]
        v2v = players["latency_ms"]["voice_to_voice_ms"]
        reply = players["latency_ms"].get("server_reply_audio_ms") or {}
        lines.append(f"players: {turns['completed_ok']} turns answered, {turns['failed']} failed, "
                     f"{turns['skipped_overlapped']} skipped, {turns['with_stutter']} with stutter; "
                     f"voice-to-voice p50 {_ms(v2v['p50_ms'])}, p95 {_ms(v2v['p95_ms'])} "
                     f"(p95 first half {_ms(players['voice_to_voice_p95_ms_first_half'])}, "
                     f"second half {_ms(players['voice_to_voice_p95_ms_second_half'])})"
                     + (f"; reply's own first audio p50 {_ms(reply.get('p50_ms'))}, p95 {_ms(reply.get('p95_ms'))}"
                        if reply.get("count") else ""))
        if players["errors_by_code"] or players["connect_failures"]:
            lines.append(f"  errors: {players['errors_by_code']}; connect failures {players['connect_failures']}")
    else:
        lines.append("players: no result (the run was cut short)")
    for kind in kinds:
        runs = [a for a in result.attacks if a.window.kind == kind]
        lines.append(f"attack {kind} x{len(runs)}: {sum(a.tally.handshakes for a in runs)} tries, "
                     f"{sum(a.tally.admitted for a in runs)} admitted")
    verdict = "under" if rss.under_ceiling else "NOT under"
    lines.append(f"verdict: peak RSS {_mb(rss.peak_mb)} MiB is {verdict} the {o.ceiling_mb:g} MiB ceiling")
    return "\n".join(lines)


def soak_json(result: SoakResult, rss: RssSummary, players: dict[str, Any], serve_args: Sequence[str]) -> dict[str, Any]:
    return {"options": asdict(result.options), "serve_args": list(serve_args), "elapsed_s": round(result.elapsed_s, 1),
            "node_died": result.node_died, "rss": rss.as_dict(), "hwm_at_ready_mb": result.hwm_at_ready_mb,
            "rss_after_settle_mb": result.rss_after_settle_mb,
            "attack_windows": [asdict(w) for w in result.windows], "attacks": [a.as_dict() for a in result.attacks],
            "samples": [asdict(s) for s in result.samples], "players": players}


ATTACK_COLORS = {"slots": "tab:orange", "flood": "tab:purple", "context": "tab:green"}


def write_png(result: SoakResult, rss: RssSummary, path: Path) -> None:
    """RSS over the run with the ceiling and the attack windows shaded; below, each turn's voice-to-voice."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    o = result.options
    fig, (memory, latency) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, height_ratios=(2, 1))
    fig.suptitle(f"soak: {o.players} players, {o.duration_s / 60:g} min, an attack of {o.attack_s:g} s every "
                 f"{o.attack_every_s:g} s; peak RSS {_mb(rss.peak_mb)} MiB")
    for ax in (memory, latency):
        labelled: set[str] = set()
        for window in result.windows:
            ax.axvspan(window.start_s / 60, window.end_s / 60, color=ATTACK_COLORS.get(window.kind, "tab:gray"),
                       alpha=0.15, linewidth=0, label=None if window.kind in labelled or ax is latency else window.kind)
            labelled.add(window.kind)
        ax.grid(alpha=0.3)
    for attribute, label in (("rss_mb", "rss_mb (/readyz)"), ("vm_rss_mb", "VmRSS (/proc)")):
        points = [(s.t_s / 60, getattr(s, attribute)) for s in result.samples if getattr(s, attribute) is not None]
        if points:
            times, values = np.array(points).T
            memory.plot(times, values, linewidth=1.2 if attribute == "rss_mb" else 0.8,
                        linestyle="-" if attribute == "rss_mb" else "--", label=label)
    memory.axhline(o.ceiling_mb, color="tab:red", linestyle="--", linewidth=1, label=f"ceiling {o.ceiling_mb:g} MiB")
    memory.set_ylim(0, max(o.ceiling_mb, rss.peak_mb or 0.0) * 1.1)
    memory.set_ylabel("resident memory (MiB)")
    memory.legend(loc="lower right", fontsize="small")
    records = [r for r in result.load.records if r.ok and r.voice_to_voice_ms is not None] if result.load else []
    if records:
        latency.scatter([r.started_s / 60 for r in records], [r.voice_to_voice_ms for r in records], s=6)
    latency.set_ylim(bottom=0)
    latency.set_ylabel("voice-to-voice (ms)")
    latency.set_xlabel("minutes into the soak")
    latency.set_xlim(0, max(o.duration_s, result.elapsed_s) / 60)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="A node already running on loopback (default: start `npcserver serve` with the "
                                      f"real models and {' '.join(SERVE_ARGS)} on 127.0.0.1).")
    parser.add_argument("--npc", default="greta_blacksmith", help="Persona the players and the attackers talk to.")
    parser.add_argument("--players", type=int, default=16, help="Simulated players, all from 127.0.0.1 (1-64).")
    parser.add_argument("--duration-s", type=float, default=1800.0, help="Seconds during which turns start (10-3600).")
    parser.add_argument("--turn-interval", type=float, default=15.0,
                        help="Mean seconds between one player's turns, Poisson, as in `python -m loadtest` (1-600).")
    parser.add_argument("--utterances", type=Path, default=UTTERANCES_DIR,
                        help="Players' speech: a folder with manifest.json and WAVs (default: the Piper clips "
                             "`python -m loadtest` uses).")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the players' schedule (same seed, same load).")
    parser.add_argument("--attack-every-s", type=float, default=120.0,
                        help="An attack starts this often, the first after one quiet interval (10-3600).")
    parser.add_argument("--attack-s", type=float, default=30.0,
                        help="How long each attack lasts (1-120, shorter than --attack-every-s).")
    parser.add_argument("--attacks", default=",".join(ATTACKS),
                        help=f"Attack kinds to cycle through, comma-separated, from {','.join(ATTACKS)}; "
                             "'none' for players only.")
    parser.add_argument("--attackers", type=int, default=2, help="Attacker addresses, 127.0.0.2 onwards (1-50).")
    parser.add_argument("--connections", type=int, default=8, help="Attacker clients per address (1-64).")
    parser.add_argument("--ceiling-mb", type=float, default=DEFAULT_CEILING_MB,
                        help="RSS ceiling in MiB the peak must stay under for exit status 0 (default %(default)g, "
                             "docs/operations.md's suggested max_rss_mb).")
    parser.add_argument("--json", type=Path, help="Also write every sample and figure here as JSON.")
    parser.add_argument("--png", type=Path, default=Path("artifacts/soak.png"),
                        help="RSS over time, ceiling and attack windows (default %(default)s).")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="Extra argument for `npcserver serve` (repeatable; after the soak's own, so it "
                             "overrides them), e.g. --serve-arg=--backend=fake.")
    return parser


def options_from(args: argparse.Namespace, url: str) -> SoakOptions:
    for name, value, low, high in (("players", args.players, 1, 64), ("duration-s", args.duration_s, 10, 3600),
                                   ("turn-interval", args.turn_interval, 1, 600),
                                   ("attack-every-s", args.attack_every_s, 10, 3600), ("attack-s", args.attack_s, 1, 120),
                                   ("attackers", args.attackers, 1, 50), ("connections", args.connections, 1, 64),
                                   ("ceiling-mb", args.ceiling_mb, 100, 1_000_000)):
        if not low <= value <= high:
            raise ValueError(f"--{name} must be within {low}-{high}")
    if args.attack_s >= args.attack_every_s:
        raise ValueError("--attack-s must be shorter than --attack-every-s (the node gets quiet time between attacks)")
    kinds = tuple(k.strip() for k in args.attacks.split(",") if k.strip() and k.strip() != "none")
    if unknown := [k for k in kinds if k not in ATTACKS]:
        raise ValueError(f"unknown attacks {unknown}; expected some of {ATTACKS} or 'none'")
    return SoakOptions(url=url, npc=args.npc, players=args.players, duration_s=args.duration_s,
                       turn_interval_s=args.turn_interval, seed=args.seed, attack_every_s=args.attack_every_s,
                       attack_s=args.attack_s, attack_kinds=kinds, attackers=args.attackers,
                       connections=args.connections, ceiling_mb=args.ceiling_mb)


def finish(result: SoakResult, args: argparse.Namespace, serve_args: Sequence[str]) -> int:
    rss = summarize_rss(result.samples, result.options.ceiling_mb, hwm_at_ready_mb=result.hwm_at_ready_mb)
    players = player_figures(result.load)
    if players:
        print(format_table(players))
    print(format_report(result, rss, players))
    if args.json is not None:
        write_json(soak_json(result, rss, players, serve_args), args.json)
    write_png(result, rss, args.png)
    print(f"plot: {args.png}" + (f"  json: {args.json}" if args.json else ""))
    return 0 if rss.under_ceiling else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options_from(args, "ws://127.0.0.1/")  # bounds first, before minutes of model loading
    except ValueError as wrong:
        parser.error(str(wrong))

    def progress(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    utterances = load_utterances(args.utterances)
    flood_speech = np.concatenate([u.pcm for u in load_utterances(UTTERANCES_DIR)])  # as loadtest.attacks floods
    if args.url:
        options = options_from(args, args.url)
        return finish(asyncio.run(run_soak(options, utterances, flood_speech, progress=progress)), args, ())
    from loadtest.server_process import server_process

    serve_args = (*SERVE_ARGS, *args.serve_arg)
    progress(f"starting npcserver serve {' '.join(serve_args)} (real models unless --serve-arg says otherwise)")
    with server_process(*serve_args) as server:
        progress(f"node ready at {server.url} (pid {server.process.pid})")
        options = options_from(args, server.url)
        result = asyncio.run(run_soak(options, utterances, flood_speech, server.process.pid,
                                      lambda: server.process.poll() is None, progress))
        code = server.process.poll()
    status = finish(result, args, serve_args)
    if code is not None:
        progress(f"the node exited during the run with status {code}:\n" + "".join(server.log_tail))
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
