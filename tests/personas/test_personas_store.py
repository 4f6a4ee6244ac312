"""Hot reload: edits in a voices folder under a live PersonaStore (no server, fake voice resolver)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from test_personas import VALID, fake_resolve_voice

from npcserver.personas import check_paths
from npcserver.personas.store import PersonaChange, PersonaStore


def persona_text(persona_id: str, name: str) -> str:
    return VALID.replace('id = "greta"', f'id = "{persona_id}"').replace('name = "Greta"', f'name = "{name}"')


def name_of(store: PersonaStore, persona_id: str) -> str | None:
    persona = store.get(persona_id)
    return persona.name if persona else None


def make_store(folder: Path, **options: object) -> PersonaStore:
    return PersonaStore(folder, resolve_voice=fake_resolve_voice, **options)  # type: ignore[arg-type]


@pytest.fixture()
def voices(tmp_path: Path) -> Path:
    (tmp_path / "greta.toml").write_text(persona_text("greta", "Greta"), encoding="utf-8")
    (tmp_path / "bram.toml").write_text(persona_text("bram", "Bram"), encoding="utf-8")
    return tmp_path


def test_store_loads_every_persona_in_the_folder(voices: Path) -> None:
    store = make_store(voices)
    assert store.ids() == ["bram", "greta"]
    greta = store.get("greta")
    assert greta is not None and greta.name == "Greta"
    assert store.get("nobody") is None
    status = {s["id"]: s for s in store.statuses()}
    assert status["greta"]["live"] is True and status["greta"]["error"] is None
    assert status["greta"]["version"] == greta.version and status["greta"]["file"] == str(voices / "greta.toml")
    assert status["greta"]["loaded_at"] is not None and status["greta"]["name"] == "Greta"


def test_valid_edit_takes_effect(voices: Path) -> None:
    store = make_store(voices)
    old_version = store.get("greta").version  # type: ignore[union-attr]
    (voices / "greta.toml").write_text(persona_text("greta", "Greta the Bold"), encoding="utf-8")
    assert store.reload_changed() == [PersonaChange("updated", "greta", voices / "greta.toml")]
    greta = store.get("greta")
    assert greta is not None and greta.name == "Greta the Bold" and greta.version != old_version
    assert store.reload_changed() == []  # nothing changed since


def test_broken_edit_keeps_the_last_good_version_and_reports_the_check_message(
    voices: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(voices)
    good = store.get("greta")
    (voices / "greta.toml").write_text(
        persona_text("greta", "Greta").replace("speed = 0.9", "speed = 9"), encoding="utf-8"
    )
    with caplog.at_level(logging.ERROR, logger="npcserver.personas"):
        changes = store.reload_changed()
    _, problems = check_paths([voices / "greta.toml"], resolve_voice=fake_resolve_voice)
    expected = str(problems[0])
    assert "voice.speed: the whole number 9 is out of range." in expected
    assert changes == [PersonaChange("failed", "greta", voices / "greta.toml", expected)]
    assert store.get("greta") == good  # still live
    status = {s["id"]: s for s in store.statuses()}["greta"]
    assert status["live"] is True and status["error"] == expected and status["version"] == good.version  # type: ignore[union-attr]
    assert expected in caplog.text

    (voices / "greta.toml").write_text(persona_text("greta", "Greta Fixed"), encoding="utf-8")
    assert [c.kind for c in store.reload_changed()] == ["updated"]
    assert store.get("greta").name == "Greta Fixed"  # type: ignore[union-attr]
    assert {s["id"]: s for s in store.statuses()}["greta"]["error"] is None


def test_added_and_removed_files_appear_and_disappear_and_listeners_hear_it(voices: Path) -> None:
    store = make_store(voices)
    heard: list[PersonaChange] = []
    unsubscribe = store.add_listener(heard.append)
    (voices / "maren.toml").write_text(persona_text("maren", "Maren"), encoding="utf-8")
    (voices / "bram.toml").unlink()
    store.reload_changed()
    assert store.ids() == ["greta", "maren"]
    assert store.get("bram") is None
    assert sorted((c.kind, c.id) for c in heard) == [("added", "maren"), ("removed", "bram")]
    assert [s["id"] for s in store.statuses()] == ["greta", "maren"]
    unsubscribe()
    (voices / "maren.toml").unlink()
    store.reload_changed()
    assert len(heard) == 2


def test_a_file_broken_from_the_start_is_listed_but_not_live(voices: Path) -> None:
    (voices / "pip.toml").write_text("id = pip\n", encoding="utf-8")
    (voices / ".#pip.toml").write_text("editor lock file", encoding="utf-8")
    store = make_store(voices)
    assert store.get("pip") is None
    status = {s["id"]: s for s in store.statuses()}["pip"]
    assert status["live"] is False and status["version"] is None and "TOML syntax error" in status["error"]
    assert len(store.statuses()) == 3


def test_a_failing_listener_does_not_stop_the_others(voices: Path) -> None:
    store = make_store(voices)
    heard: list[str] = []

    def broken(change: PersonaChange) -> None:
        raise RuntimeError("listener bug")

    store.add_listener(broken)
    store.add_listener(lambda change: heard.append(change.id))
    (voices / "bram.toml").unlink()
    store.reload_changed()
    assert heard == ["bram"]


async def _wait_for(condition: Callable[[], bool], limit_s: float = 15.0) -> bool:
    for _ in range(int(limit_s / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


@pytest.mark.parametrize("use_watchfiles", [True, False], ids=["watchfiles", "polling"])
def test_watch_reloads_edits_made_while_running(voices: Path, use_watchfiles: bool) -> None:
    store = make_store(voices, use_watchfiles=use_watchfiles, poll_interval_s=0.1)
    removed: list[str] = []
    store.add_listener(lambda change: removed.append(change.id) if change.kind == "removed" else None)

    async def scenario() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(store.watch(stop))
        try:
            await asyncio.sleep(0.3)
            (voices / "greta.toml").write_text(persona_text("greta", "Greta Renamed"), encoding="utf-8")
            assert await _wait_for(lambda: name_of(store, "greta") == "Greta Renamed")

            (voices / "greta.toml").write_text("broken = [", encoding="utf-8")
            assert await _wait_for(lambda: {s["id"]: s for s in store.statuses()}["greta"]["error"] is not None)
            assert name_of(store, "greta") == "Greta Renamed"

            (voices / "maren.toml").write_text(persona_text("maren", "Maren"), encoding="utf-8")
            (voices / "bram.toml").unlink()
            assert await _wait_for(lambda: store.ids() == ["greta", "maren"])
            assert removed == ["bram"]
        finally:
            stop.set()
            await asyncio.wait_for(watcher, 10)

    asyncio.run(scenario())
