"""The live set of personas, reloaded when designers save files in the voices folder.

A broken edit never takes a character down: the last good version stays live and the problems are
recorded (and logged) with the same text `npcserver personas check` prints. Added files appear,
removed files disappear; listeners hear about every change (the server ends a removed persona's
running turns). Readers (`get`, `ids`, `statuses`) never block: they read a dict that reloads
replace whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from npcserver.models import EMBEDDED_VOICE, resolve_piper_voice
from npcserver.personas import (
    Persona,
    VoiceResolver,
    load_persona_file,
    persona_files,
)

log = logging.getLogger("npcserver.personas")

ChangeKind = Literal["added", "updated", "removed", "failed"]
PersonaListener = Callable[["PersonaChange"], None]

POLL_INTERVAL_S = 0.5
RECENT_WRITE_S = 2.0


@dataclass(frozen=True, slots=True)
class PersonaChange:
    kind: ChangeKind  # failed: the file has problems; the last good version (if any) stays live
    id: str
    file: Path
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    file: Path
    stat: tuple[int, int]  # (mtime_ns, size) of the file as last read
    content_version: str | None  # hash of the content last read, good or broken
    persona: Persona | None  # last good version
    modified_at: float | None  # mtime of the last good version
    loaded_at: float | None  # when the last good version went live
    error: str | None  # problems of the current content, None when it is live


class PersonaStore:
    def __init__(
        self,
        voices_dir: Path,
        *,
        default_voice: str = EMBEDDED_VOICE,
        resolve_voice: VoiceResolver = resolve_piper_voice,
        poll_interval_s: float = POLL_INTERVAL_S,
        use_watchfiles: bool = True,
    ) -> None:
        """Loads every persona at once (blocking file I/O: call it before the event loop, or in a thread)."""
        self.voices_dir = Path(voices_dir)
        self._default_voice = default_voice
        self._resolve_voice = resolve_voice
        self._poll_interval_s = poll_interval_s
        self._use_watchfiles = use_watchfiles
        self._entries: dict[Path, _Entry] = {}
        self._by_id: dict[str, Persona] = {}
        self._listeners: list[PersonaListener] = []
        self._reload_lock = threading.Lock()
        self.reload_changed()

    # ---------------------------------------------------------------- reading (cheap, non-blocking)

    def get(self, persona_id: str) -> Persona | None:
        return self._by_id.get(persona_id)

    def ids(self) -> list[str]:
        return sorted(self._by_id)

    def statuses(self) -> list[dict[str, Any]]:
        """One record per persona file, for `GET /v1/personas`."""
        records = []
        for entry in sorted(self._entries.values(), key=lambda e: e.file.name):
            persona = entry.persona
            records.append(
                {
                    "id": persona.id if persona else entry.file.stem,
                    "name": persona.name if persona else None,
                    "role": persona.role if persona else None,
                    "description": persona.description if persona else None,
                    "file": str(entry.file),
                    "live": persona is not None,
                    "version": persona.version if persona else None,
                    "modified_at": entry.modified_at,
                    "loaded_at": entry.loaded_at,
                    "error": entry.error,
                }
            )
        return records

    # ---------------------------------------------------------------- listeners

    def add_listener(self, listener: PersonaListener) -> Callable[[], None]:
        """Call `listener(change)` after each reload that changed something; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _notify(self, changes: list[PersonaChange]) -> None:
        for change in changes:
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:
                    log.exception("persona listener failed on %s %s", change.kind, change.id)

    # ---------------------------------------------------------------- reloading

    def reload_changed(self) -> list[PersonaChange]:
        """Re-read files whose modification time, size or content changed; notify listeners (blocking I/O)."""
        changes = self._reload_files()
        self._notify(changes)
        return changes

    def _reload_files(self) -> list[PersonaChange]:
        with self._reload_lock:
            changes: list[PersonaChange] = []
            entries = dict(self._entries)
            present = persona_files([self.voices_dir]) if self.voices_dir.is_dir() else []

            for file in [f for f in entries if f not in present]:
                gone = entries.pop(file)
                if gone.persona is not None:
                    changes.append(PersonaChange("removed", gone.persona.id, file))
                    log.info("persona %s removed (%s deleted)", gone.persona.id, file)

            for file in present:
                try:
                    stat = file.stat()
                except FileNotFoundError:  # deleted between glob and stat: the next pass removes it
                    continue
                key = (stat.st_mtime_ns, stat.st_size)
                old = entries.get(file)
                # File times are coarse (a few ms): a same-size rewrite in the same tick keeps the old
                # stat, so recently modified files are re-read and compared by content.
                if old is not None and old.stat == key and time.time() - stat.st_mtime > RECENT_WRITE_S:
                    continue
                result = load_persona_file(
                    file,
                    voices_dir=self.voices_dir,
                    default_voice=self._default_voice,
                    resolve_voice=self._resolve_voice,
                )
                if old is not None and result.version == old.content_version:
                    entries[file] = _replace_stat(old, key)  # touched, not changed
                    continue
                if result.ok and result.persona is not None:
                    entries[file] = _Entry(file, key, result.version, result.persona, stat.st_mtime, time.time(), None)
                    kind: ChangeKind = "updated" if old is not None and old.persona is not None else "added"
                    changes.append(PersonaChange(kind, result.persona.id, file))
                    log.info("persona %s %s (version %s)", result.persona.id, kind, result.persona.version)
                else:
                    error = "\n".join(str(p) for p in result.problems)
                    kept = old.persona if old is not None else None
                    entries[file] = _Entry(
                        file,
                        key,
                        result.version,
                        kept,
                        old.modified_at if old else None,
                        old.loaded_at if old else None,
                        error,
                    )
                    pid = kept.id if kept else file.stem
                    changes.append(PersonaChange("failed", pid, file, error))
                    log.error(
                        "persona file %s has problems; %s\n%s",
                        file,
                        f"version {kept.version} stays live" if kept else "not loaded",
                        error,
                    )

            self._entries = entries
            self._by_id = {e.persona.id: e.persona for e in entries.values() if e.persona is not None}
            return changes

    async def watch(self, stop_event: asyncio.Event) -> None:
        """Reload on file changes until `stop_event` is set: watchfiles where it works, else polling."""
        watchfiles: Any = None
        if self._use_watchfiles:
            try:
                watchfiles = importlib.import_module("watchfiles")
            except ImportError:  # pragma: no cover - watchfiles is a dependency; polling is the fallback
                watchfiles = None
        while not stop_event.is_set():
            if watchfiles is not None and self.voices_dir.is_dir():
                await self._reload_in_thread()  # catch what changed before the watcher started
                try:
                    async for _ in watchfiles.awatch(
                        self.voices_dir,
                        stop_event=stop_event,
                        watch_filter=lambda _change, path: path.endswith(".toml"),
                        debounce=300,
                        step=50,
                        recursive=False,
                        rust_timeout=int(self._poll_interval_s * 4000),
                        yield_on_timeout=True,
                    ):
                        await self._reload_in_thread()
                except (OSError, RuntimeError) as exc:  # e.g. out of inotify watches, or the folder vanished
                    log.warning("watching %s failed (%s); polling instead", self.voices_dir, exc)
                    await self._poll(stop_event, until_dir_exists=False)
                continue
            await self._poll(stop_event, until_dir_exists=True)

    async def _poll(self, stop_event: asyncio.Event, *, until_dir_exists: bool) -> None:
        while not stop_event.is_set():
            await self._reload_in_thread()
            if until_dir_exists and self.voices_dir.is_dir():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), self._poll_interval_s)

    async def _reload_in_thread(self) -> None:
        changes = await asyncio.to_thread(self._reload_files)
        self._notify(changes)  # on the event loop, so listeners may touch sessions directly


def _replace_stat(entry: _Entry, stat: tuple[int, int]) -> _Entry:
    return _Entry(
        entry.file, stat, entry.content_version, entry.persona, entry.modified_at, entry.loaded_at, entry.error
    )
