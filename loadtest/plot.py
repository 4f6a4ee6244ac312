"""The report's PNG: per metric, latency over the run (left) and its CDF (right)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PLOTTED_METRICS = ("voice_to_voice_ms", "transcript_ms", "first_reply_text_ms", "turn_end_ms")


def write_png(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    records = [r for r in report["records"] if r["ok"]]
    metrics = [m for m in PLOTTED_METRICS if any(r[m] is not None for r in records)] or [PLOTTED_METRICS[0]]
    fig, axes = plt.subplots(len(metrics), 2, figsize=(12, 3.2 * len(metrics)), squeeze=False)
    budget = report["budget_ms"]
    config = report["config"]
    fig.suptitle(
        f"{config['players']} players, {config['duration_s']:g} s, mean turn interval {config['turn_interval_s']:g} s{' (text mode)' if config['text_mode'] else ''}"
    )
    for row, metric in enumerate(metrics):
        points = [(r["started_s"], r[metric]) for r in records if r[metric] is not None]
        over_time, cdf = axes[row]
        if points:
            times, values = np.array(points).T
            over_time.scatter(times, values, s=10)
            ordered = np.concatenate([[0.0], np.sort(values)])
            cdf.step(ordered, np.arange(ordered.size) / (ordered.size - 1), where="post")
        for ax in (over_time, cdf):
            ax.grid(alpha=0.3)
        if metric == "voice_to_voice_ms":  # the budget is a voice-to-voice budget
            over_time.axhline(budget, color="tab:red", linestyle="--", linewidth=1, label=f"budget {budget:g} ms")
            over_time.legend(loc="best", fontsize="small")
            cdf.axvline(budget, color="tab:red", linestyle="--", linewidth=1)
        # Latency from zero with headroom, so distances to the budget read true and no point sits on the frame.
        top = max([v for _, v in points] + ([budget] if metric == "voice_to_voice_ms" else []) + [1.0])
        over_time.set_ylim(0, top * 1.1)
        cdf.set_xlim(left=0)
        over_time.set_xlabel("turn start (s into the run)")
        over_time.set_ylabel(f"{metric} (ms)")
        cdf.set_xlabel(f"{metric} (ms)")
        cdf.set_ylabel("share of turns")
        cdf.set_ylim(0, 1.02)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_ramp_png(ramp: dict[str, Any], path: Path) -> None:
    """Voice-to-voice p50/p95 against the number of players (and the reply's own first audio, which a
    filler line can hide), with the budget and the capacity found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = ramp["steps"]
    players = [s["players"] for s in steps]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = [("voice_to_voice_ms", "voice-to-voice (first audio, filler included)", "-")]
    if any(s.get("reply_audio_ms") for s in steps):
        series.append(("reply_audio_ms", "reply's own first audio (server)", "--"))
    for metric, name, style in series:
        for key, label, color in (("p50_ms", "p50", "tab:blue"), ("p95_ms", "p95", "tab:orange")):
            values = [np.nan if not s.get(metric) or s[metric][key] is None else s[metric][key] for s in steps]
            ax.plot(players, values, marker="o", linestyle=style, color=color, label=f"{name} {label}")
    ax.axhline(
        ramp["budget_ms"], color="tab:red", linestyle="--", linewidth=1, label=f"budget {ramp['budget_ms']:g} ms"
    )
    if ramp["capacity_players"]:
        ax.axvline(
            ramp["capacity_players"],
            color="tab:green",
            linestyle=":",
            label=f"capacity {ramp['capacity_players']} players",
        )
    ax.set_ylim(bottom=0)
    ax.set_xlabel("concurrent players")
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
