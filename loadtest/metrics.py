"""Report math: latency histograms, percentiles, budget share and word error rate. Pure functions, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jiwer
from hdrh.histogram import HdrHistogram

PERCENTILES = (50.0, 90.0, 95.0, 99.0)
_MICROS_PER_MS = 1000
_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000  # one hour: anything longer is a hang, clamped so it still counts
_SIGNIFICANT_DIGITS = 3


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    min_ms: float | None
    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {name: getattr(self, name) for name in self.__slots__}


class LatencyHistogram:
    """Milliseconds in, percentiles out; an HDR histogram at microsecond resolution (3 significant digits)."""

    def __init__(self) -> None:
        self._hist = HdrHistogram(_LOWEST_US, _HIGHEST_US, _SIGNIFICANT_DIGITS)

    def record(self, ms: float) -> None:
        micros = min(max(round(ms * _MICROS_PER_MS), _LOWEST_US), _HIGHEST_US)
        self._hist.record_value(micros)

    @property
    def count(self) -> int:
        return int(self._hist.get_total_count())

    def percentile(self, percent: float) -> float | None:
        if self.count == 0:
            return None
        return self._hist.get_value_at_percentile(percent) / _MICROS_PER_MS

    def share_within(self, budget_ms: float) -> float | None:
        """Fraction of recorded values at or under `budget_ms` (at the histogram's resolution)."""
        if self.count == 0:
            return None
        limit = budget_ms * _MICROS_PER_MS
        within = sum(
            item.count_at_value_iterated_to
            for item in self._hist.get_recorded_iterator()
            if self._hist.get_lowest_equivalent_value(item.value_iterated_to) <= limit
        )
        return within / self.count

    def summary(self) -> LatencySummary:
        if self.count == 0:
            return LatencySummary(0, None, None, None, None, None, None, None)
        p50, p90, p95, p99 = (self.percentile(p) for p in PERCENTILES)
        return LatencySummary(
            count=self.count,
            min_ms=self._hist.get_min_value() / _MICROS_PER_MS,
            mean_ms=round(self._hist.get_mean_value() / _MICROS_PER_MS, 3),
            p50_ms=p50,
            p90_ms=p90,
            p95_ms=p95,
            p99_ms=p99,
            max_ms=self._hist.get_max_value() / _MICROS_PER_MS,
        )


def histogram_of(values_ms: Iterable[float]) -> LatencyHistogram:
    hist = LatencyHistogram()
    for value in values_ms:
        hist.record(value)
    return hist


_PUNCTUATION = re.compile(r"[^\w\s']")


def normalize_words(text: str) -> str:
    """Lower case, punctuation dropped, spaces collapsed: 'Good morning, Smith!' -> 'good morning smith'."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after normalize_words."""
    ref = normalize_words(reference)
    if not ref:
        raise ValueError("reference transcript is empty")
    return float(jiwer.wer(ref, normalize_words(hypothesis)))


def corpus_word_error_rate(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Total word errors over total reference words (not the mean of per-turn rates)."""
    pairs = [(normalize_words(ref), normalize_words(hyp)) for ref, hyp in pairs if normalize_words(ref)]
    if not pairs:
        return None
    return float(jiwer.wer([ref for ref, _ in pairs], [hyp for _, hyp in pairs]))
