"""Shared fixtures: a real server on a free loopback port with the deterministic fake backends."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from npcserver.backends import Backends
from npcserver.backends.fake import FakeDialogue, FakeSynthesizer, FakeTranscriber
from npcserver.config import Settings
from npcserver.edge.server import NpcServer
from npcserver.protocol import ProtocolError, parse_server_message

REPO = Path(__file__).resolve().parent.parent
VOICES = REPO / "voices"


def fake_settings(**changes: Any) -> Settings:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "voices": VOICES, "backend": "fake", "vad": "fake"}
    return Settings(**(values | changes))


def fake_backends() -> Backends:
    return Backends(FakeTranscriber(), FakeDialogue(), FakeSynthesizer())


@pytest.fixture
async def fake_server() -> AsyncIterator[NpcServer]:
    """A running server with fake models and the fake (energy) VAD, ready for connections."""
    async with NpcServer(fake_settings(), fake_backends()) as server:
        await asyncio.wait_for(server.wait_ready(), 10)
        yield server


def tone(seconds: float, rate: int = 16000, amplitude: float = 0.3) -> bytes:
    """A loud 300 Hz tone the fake VAD takes for speech, as PCM s16le."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 300 * t) * 32767).astype("<i2").tobytes()


def silence(seconds: float, rate: int = 16000) -> bytes:
    return bytes(2 * int(seconds * rate))


@dataclass
class Conversation:
    """A test client: sends frames, collects what the server says until a condition holds.

    It stays a raw WebSocket with dict messages, beside npcserver.client's TalkSession, because tests must
    be able to send what no client should: malformed JSON, unknown types, wrong field types, frames out of
    order. What the server sends is still held to the protocol: every text frame must parse with
    `protocol.parse_server_message`, or the test fails on that frame.
    """

    ws: ClientConnection
    messages: list[dict[str, Any]] = field(default_factory=list)
    audio: dict[int, bytearray] = field(default_factory=dict)
    order: list[dict[str, Any] | int] = field(default_factory=list)  # messages and audio frames (samples), as they came
    _audio_turn: int | None = None

    async def send_json(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def send_audio(self, pcm: bytes, frame_bytes: int = 640) -> None:
        for offset in range(0, len(pcm), frame_bytes):
            await self.ws.send(pcm[offset : offset + frame_bytes])

    async def next_message(self, timeout: float = 10) -> dict[str, Any]:
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            if isinstance(frame, bytes):
                assert self._audio_turn is not None, "audio frame outside audio_start/audio_end"
                self.audio.setdefault(self._audio_turn, bytearray()).extend(frame)
                self.order.append(len(frame) // 2)
                continue
            try:
                parse_server_message(frame)
            except ProtocolError as exc:
                pytest.fail(f"the server sent a frame the protocol module cannot read ({exc.code}: {exc}): {frame}")
            message: dict[str, Any] = json.loads(frame)
            self.messages.append(message)
            self.order.append(message)
            if message["type"] == "audio_start":
                self._audio_turn = message["turn"]
            elif message["type"] == "audio_end":
                self._audio_turn = None
            return message

    async def until(self, type_: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        while True:
            message = await self.next_message(timeout)
            if message["type"] == type_ and all(message.get(k) == v for k, v in match.items()):
                return message

    async def start(self, npc: str = "greta_blacksmith", rate: int = 16000, **extra: Any) -> dict[str, Any]:
        await self.send_json(
            type="start", npc=npc, audio={"encoding": "pcm_s16le", "sample_rate": rate}, **({"greeting": False} | extra)
        )
        return await self.until("ready")


@pytest.fixture
async def talk(fake_server: NpcServer) -> AsyncIterator[Conversation]:
    # max_queue=None: a test that leaves frames unread must not stall the client's closing handshake
    async with connect(fake_server.url, max_size=2**20, max_queue=None) as ws:
        yield Conversation(ws)


# --------------------------------------------------------------------------- a real Redis for the registry tests

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServerProcess:
    """A throwaway redis-server: no persistence, loopback only, own folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10.0
        while True:  # ready when it answers PING
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10.0)
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServerProcess]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    server = RedisServerProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
