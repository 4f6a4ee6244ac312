"""The demo page in a real browser: Debian's Chromium, headless, hears a spoken question through its
fake microphone (a WAV file) and talks to a real npcserver started as a subprocess.

Needs `/usr/bin/chromium` (`apt-get install -y chromium`) and the `playwright` package (which drives
that Chromium; its own browser download is never used). The real-model test writes the README's
screenshot, docs/demo-screenshot.png, when it is missing or NPCSERVER_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import free_port
from tests.realserver import recorded_question

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("NPCSERVER_CHROMIUM", "/usr/bin/chromium"))
README_SCREENSHOT = REPO / "docs" / "demo-screenshot.png"
NPC = "greta_blacksmith"

pytestmark = pytest.mark.browser


# ------------------------------------------------------------------------------------------ helpers


def _require_browser() -> Any:
    """The Playwright sync API, or a skip that says what is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright; never `playwright install`)")
    return sync_api


def _log_tail(log: Path, lines: int = 40) -> str:
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_server(tmp_path: Path, *args: str, ready_within_s: float, port: int | None = None) -> Iterator[str]:
    """`python -m npcserver serve` on loopback (a free port unless given); yields its base URL once
    /healthz says ready, and stops it (terminate, then kill) whatever happens."""
    port = port or free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "npcserver",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--voices",
        str(REPO / "voices"),
        *args,
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within_s
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{_log_tail(log)}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/healthz", timeout=2) as reply:
                if reply.status == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not ready within {ready_within_s:.0f} s:\n{_log_tail(log)}")
            time.sleep(0.25)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def write_question_wav(path: Path, lead_s: float = 4.0, tail_s: float = 8.0) -> Path:
    """The corpus recording "How much for a steel sword?" between stretches of silence.

    A fixed recording (not a fresh synthesis, which varies a little each run) keeps the transcript
    stable. Chromium loops the file: the silence after the question leaves room for the whole reply
    before the question comes round again.
    """
    pcm, _ = recorded_question("sword_price")
    rate = 16000
    speech = np.frombuffer(pcm, dtype="<i2")
    padded = np.concatenate([np.zeros(int(lead_s * rate), np.int16), speech, np.zeros(int(tail_s * rate), np.int16)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(padded.astype("<i2").tobytes())
    return path


@dataclass
class BrowserPage:
    page: Any  # playwright.sync_api.Page
    console: list[str] = field(default_factory=list)  # the page's console messages and errors
    timeout_error: type[Exception] = TimeoutError


@contextlib.contextmanager
def open_browser(wav: Path) -> Iterator[BrowserPage]:
    """A headless Chromium page whose microphone plays `wav` (looped); closed whatever happens."""
    sync_api = _require_browser()
    flags = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=flags)
        try:
            opened = BrowserPage(
                browser.new_page(viewport={"width": 1280, "height": 680}), timeout_error=sync_api.TimeoutError
            )
            opened.page.on("console", lambda message: opened.console.append(f"{message.type}: {message.text}"))
            opened.page.on("pageerror", lambda error: opened.console.append(f"page error: {error}"))
            yield opened
        finally:
            browser.close()


def page_state(page: Any) -> dict[str, Any]:
    """What the page's test hooks say (`window.npcDemo`), as plain JSON."""
    return json.loads(page.evaluate("JSON.stringify(window.npcDemo)"))


# One finished player turn (turn >= 1) with a transcript, reply text, played reply audio and timings.
FIRST_ANSWERED_TURN = """
() => {
  const demo = window.npcDemo;
  if (!demo) return false;
  return demo.turns.some((t) => t.turn >= 1 && typeof t.v2v_ms === "number"
    && demo.transcripts.some((s) => s.session === t.session && s.turn === t.turn && s.final && s.text)
    && demo.replies.some((r) => r.session === t.session && r.turn === t.turn && r.text.trim())
    && (demo.playedSamplesByTurn[t.turn] || 0) > 0);
}
"""


def wait_for_answered_turn(browser: BrowserPage, timeout_s: float) -> dict[str, Any]:
    try:
        browser.page.wait_for_function(FIRST_ANSWERED_TURN, timeout=timeout_s * 1000, polling=250)
    except browser.timeout_error:
        console = "\n".join(browser.console[-20:])
        pytest.fail(
            f"no answered turn within {timeout_s:.0f} s.\n"
            f"page state: {json.dumps(page_state(browser.page))[:3000]}\nconsole:\n{console}"
        )
    return page_state(browser.page)


def answered_turn(state: dict[str, Any]) -> dict[str, Any]:
    return next(
        t
        for t in state["turns"]
        if t["turn"] >= 1
        and isinstance(t["v2v_ms"], (int, float))
        and (state["playedSamplesByTurn"].get(str(t["turn"])) or 0) > 0
    )


def said(entries: list[dict[str, Any]], turn: dict[str, Any]) -> str:
    """The transcript or reply text of `turn` (turn numbers start again in each session)."""
    return next(e["text"] for e in entries if e["session"] == turn["session"] and e["turn"] == turn["turn"])


# -------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_browser()  # skip before spending time on speech synthesis
    return write_question_wav(tmp_path_factory.mktemp("audio") / "question.wav")


def test_demo_page_talks_with_fake_models(tmp_path: Path, question_wav: Path) -> None:
    """The whole browser path (mic, worklet, socket, playback, chart) against the deterministic fakes."""
    with (
        running_server(tmp_path, "--backend", "fake", "--vad", "fake", ready_within_s=30) as base,
        open_browser(question_wav) as browser,
    ):
        page = browser.page
        page.goto(f"{base}/?autostart=1&npc={NPC}&mode=open", timeout=15_000)
        state = wait_for_answered_turn(browser, timeout_s=60)
        turn = answered_turn(state)
        transcript = said(state["transcripts"], turn)
        assert transcript.startswith("fake transcript")
        assert page.locator("#dialogue .bubble.player").filter(has_text="fake transcript").count() >= 1
        assert page.locator("#dialogue .bubble.npc").count() >= 1
        assert page.locator("#timings svg text").filter(has_text="voice to voice (this page)").count() == 1
        assert state["micFramesSent"] > 0
        assert state["site"]["url"].startswith("ws://127.0.0.1:")
        # lip-sync: the page asked for visemes, and the portrait's mouth took their shapes as the voice played
        assert state["visemesReceived"] > 0
        assert len(set(state["mouthShapesShown"]) - {"sil"}) >= 3, state["mouthShapesShown"]
        page.screenshot(path=str(tmp_path / "demo-fake.png"))


@pytest.mark.real
def test_demo_page_answers_a_spoken_question(tmp_path: Path, question_wav: Path) -> None:
    """A player asks Greta about swords out loud; the page shows the words, her answer, plays her
    voice and charts the turn's timings."""
    with running_server(tmp_path, ready_within_s=180) as base, open_browser(question_wav) as browser:
        page = browser.page
        page.goto(f"{base}/?autostart=1&npc={NPC}&mode=open", timeout=15_000)
        state = wait_for_answered_turn(browser, timeout_s=120)
        turn = answered_turn(state)
        transcript = said(state["transcripts"], turn)
        reply = said(state["replies"], turn)
        # "How much for a steel sword?" through Chromium's fake mic; tiny.en has also heard "steel sort"
        heard = [word for word in ("sword", "steel") if word in transcript.lower()]
        assert heard, transcript
        assert reply.strip()
        assert state["playedSamplesByTurn"][str(turn["turn"])] > 0
        assert {"asr_ms", "voice_to_voice_ms"} <= set(turn["timings"])
        assert page.locator("#dialogue .bubble.player").filter(has_text=heard[0]).count() >= 1
        assert page.locator("#timings svg text").filter(has_text="speech recognition").count() == 1
        assert len(set(state["mouthShapesShown"]) - {"sil"}) >= 3  # Piper's alignment moves the mouth
        page.screenshot(path=str(tmp_path / "demo.png"))
        if not README_SCREENSHOT.exists() or os.environ.get("NPCSERVER_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(tmp_path / "demo.png", README_SCREENSHOT)


def test_full_site_hands_the_page_to_the_next_and_push_to_talk_works(tmp_path: Path, question_wav: Path) -> None:
    """Site A is full and names site B; the page moves there on its own, and a held Space key
    sends the question as one push-to-talk turn."""
    port_a, port_b = free_port(), free_port()
    origin_a, url_a, url_b = (
        f"http://127.0.0.1:{port_a}",
        f"ws://127.0.0.1:{port_a}/v1/talk",
        f"ws://127.0.0.1:{port_b}/v1/talk",
    )
    sites = tmp_path / "sites.toml"
    sites.write_text(f'[[site]]\nid = "site-b"\nregion = "test"\nlat = 0.0\nlon = 0.0\nurl = "{url_b}"\ncapacity = 4\n')
    fake = ("--backend", "fake", "--vad", "fake")
    full_a = ("--site-id", "site-a", "--max-sessions", "0", "--static-sites", str(sites))
    open_b = ("--site-id", "site-b", "--allowed-origins", origin_a)  # B takes players from A's page
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_server(tmp_path / "a", *fake, *full_a, port=port_a, ready_within_s=30),
        running_server(tmp_path / "b", *fake, *open_b, port=port_b, ready_within_s=30),
        open_browser(question_wav) as browser,
    ):
        page = browser.page
        page.goto(f"{origin_a}/?autostart=1&npc={NPC}&mode=ptt&ws={url_a}", timeout=15_000)
        page.wait_for_function("window.npcDemo.session !== null", timeout=20_000)
        state = page_state(page)
        assert "server_full" in [error["code"] for error in state["errors"]]
        assert state["site"]["url"] == url_b
        # The question starts 4 s into the looped file: holding Space for 6.5 s covers it.
        page.keyboard.down("Space")
        page.wait_for_timeout(6_500)
        page.keyboard.up("Space")
        state = wait_for_answered_turn(browser, timeout_s=30)
        turn = answered_turn(state)
        transcript = said(state["transcripts"], turn)
        assert transcript.startswith("fake transcript")
