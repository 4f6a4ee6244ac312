"""Filler lines ("Hmm.", "Let me think."): pre-synthesized once per persona version, and when to say one.

When a reply will miss the NPC's latency budget (queued behind other players, or a slow model), the
session plays a filler from this cache instead of leaving the player in silence: at once when recent
replies say this one will be late, else as a fallback shortly before the budget runs out.
"""

from __future__ import annotations

import asyncio
import logging
import time

from npcserver.backends.base import Speech
from npcserver.conversation.pipeline import ModelRunner
from npcserver.personas import Persona

log = logging.getLogger(__name__)
FILLERS_NEEDED_AFTER_S = 1.0  # a new session's first turn is at least this far away: other players' speech goes first


class FillerCache:
    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner
        self._speech: dict[tuple[str, str], list[Speech]] = {}
        self._warming: dict[tuple[str, str], asyncio.Task[None]] = {}

    @staticmethod
    def _key(persona: Persona) -> tuple[str, str]:
        return (persona.id, persona.version)

    def get(self, persona: Persona, turn: int) -> Speech | None:
        """A filler for this turn (they take turns), or None while the persona's aren't synthesized yet."""
        lines = self._speech.get(self._key(persona))
        return lines[turn % len(lines)] if lines else None

    def _keep(self, key: tuple[str, str], lines: list[Speech]) -> None:
        """Store a persona version's fillers, dropping the speech of its earlier versions (hot reload)."""
        for old in [k for k in self._speech if k[0] == key[0]]:
            del self._speech[old]
        self._speech[key] = lines

    def warm(self, persona: Persona) -> None:
        """Synthesize the persona's fillers in the background, once per persona version."""
        key = self._key(persona)
        if not persona.fillers or key in self._speech or key in self._warming:
            return
        task = asyncio.create_task(self._synthesize(persona, key), name=f"fillers-{persona.id}")
        self._warming[key] = task
        task.add_done_callback(lambda _: self._warming.pop(key, None))

    async def _synthesize(self, persona: Persona, key: tuple[str, str]) -> None:
        try:
            # not needed before the player's first turn: players' replies go first
            later = time.perf_counter() + FILLERS_NEEDED_AFTER_S
            self._keep(key, [await self._runner.synthesize(line, persona.voice, later) for line in persona.fillers])
        except Exception as exc:  # noqa: BLE001 (fillers are a nicety: a failure must not hurt the session)
            log.warning("could not synthesize fillers for %s: %s", persona.id, exc)

    async def close(self) -> None:
        for task in list(self._warming.values()):
            task.cancel()
        await asyncio.gather(*self._warming.values(), return_exceptions=True)


class LatenessForecast:
    """How late the next reply's first audio will probably be: a moving average of recent turns.

    Recent turns reflect the current load (queued sessions, long prompts), so when they ran past a
    persona's budget the next one most likely will too, and the filler can start without waiting.
    """

    def __init__(self, smoothing: float = 0.3) -> None:
        self._smoothing = smoothing
        self._expected_ms: float | None = None

    def observe(self, reply_audio_ms: float) -> None:
        if self._expected_ms is None:
            self._expected_ms = reply_audio_ms
        else:
            self._expected_ms += self._smoothing * (reply_audio_ms - self._expected_ms)

    def expected_ms(self) -> float | None:
        return self._expected_ms
