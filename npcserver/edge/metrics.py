"""Prometheus metrics for one server (`GET /metrics`), on a registry of its own.

Counters and histograms are fed by the connection loop as frames go in and out (it watches the
session's outgoing messages: TurnEnd timings, Error codes, audio bytes), so the session and the
pipeline need no metrics code. Gauges that mirror live state (sessions, model queues, model busy
time) are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from npcserver.conversation.phrase_cache import PhraseAudioCache
from npcserver.protocol import Error, TurnEnd

# Turn timings are milliseconds on the wire; Prometheus wants seconds.
STAGE_OF_TIMING = {
    "endpoint_ms": "endpoint",
    "asr_ms": "asr",
    "llm_first_token_ms": "llm_first_token",
    "llm_total_ms": "llm_total",
    "tts_first_audio_ms": "tts_first_audio",
    "voice_to_voice_ms": "voice_to_voice",
}
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class LiveState:
    """Read at every scrape: the server's present state."""

    sessions: Callable[[], int]
    capacity: Callable[[], int]
    ready: Callable[[], bool]
    draining: Callable[[], bool]
    model_load: Callable[[], Mapping[str, Any]]  # stage -> StageLoad (pending, busy_seconds, calls)
    phrase_cache: Callable[[], PhraseAudioCache | None] = lambda: None


class _LiveCollector(Collector):
    def __init__(self, state: LiveState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state
        yield GaugeMetricFamily("npcserver_sessions_active", "Sessions open now.", value=state.sessions())
        yield GaugeMetricFamily("npcserver_sessions_capacity", "Sessions this node takes (max_sessions).",
                                value=state.capacity())
        yield GaugeMetricFamily("npcserver_ready", "1 once the models are loaded.", value=int(state.ready()))
        yield GaugeMetricFamily("npcserver_draining", "1 while the node drains before stopping.",
                                value=int(state.draining()))
        queue = GaugeMetricFamily("npcserver_model_queue_depth", "Model calls waiting or running, per stage.",
                                  labels=["stage"])
        busy = CounterMetricFamily("npcserver_model_busy_seconds", "Time spent in each model's calls (with batching, calls served together each count in full).", labels=["stage"])
        calls = CounterMetricFamily("npcserver_model_calls", "Calls each model completed.", labels=["stage"])
        for stage, load in state.model_load().items():
            queue.add_metric([stage], load.pending)
            busy.add_metric([stage], load.busy_seconds)
            calls.add_metric([stage], load.calls)
        yield queue
        yield busy
        yield calls
        if (phrases := state.phrase_cache()) is not None:
            yield CounterMetricFamily("npcserver_tts_phrase_cache_hits", "Short phrases spoken from the phrase cache, not synthesized.", value=phrases.hits)
            yield CounterMetricFamily("npcserver_tts_phrase_cache_misses", "Short phrases not in the phrase cache (synthesized, then kept).", value=phrases.misses)
            yield GaugeMetricFamily("npcserver_tts_phrase_cache_bytes", "Audio kept in the phrase cache.", value=phrases.bytes)


class ServerMetrics:
    """Every metric of one NpcServer. `render()` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, state: LiveState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions = Counter("npcserver_sessions", "Sessions accepted.", registry=r)
        self.refused = Counter("npcserver_refused", "Connections refused, by reason.", ["reason"], registry=r)
        self.turns = Counter("npcserver_turns", "Turns finished, interrupted or not.", ["interrupted"], registry=r)
        self.errors = Counter("npcserver_errors", "Error messages sent to clients, by code.", ["code"], registry=r)
        self.latency = Histogram("npcserver_stage_latency_seconds", "Per-turn stage latency (from turn_end timings).",
                                 ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.audio_in = Counter("npcserver_audio_in_seconds", "Player audio received.", registry=r)
        self.audio_out = Counter("npcserver_audio_out_seconds", "NPC audio sent.", registry=r)
        r.register(_LiveCollector(state))
        ProcessCollector(registry=r)  # memory, CPU, open files of this process

    def outgoing(self, message: object, out_sample_rate: int) -> None:
        """Observe one message or audio frame on its way to a client."""
        if isinstance(message, bytes):
            if out_sample_rate > 0:
                self.audio_out.inc(len(message) / 2 / out_sample_rate)
        elif isinstance(message, TurnEnd):
            self.turns.labels(interrupted=str(message.interrupted).lower()).inc()
            for key, stage in STAGE_OF_TIMING.items():
                value = message.timings.get(key)
                if isinstance(value, (int, float)) and value >= 0:
                    self.latency.labels(stage=stage).observe(value / 1000.0)
        elif isinstance(message, Error):
            self.errors.labels(code=message.code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
