"""SIGTERM on a real `run_server` process: drain (no new sessions, running turns finish), close 1012, exit 0."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import VOICES, Conversation

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 15.0

# A node with slow fake models, so a turn is still running when the signal arrives.
NODE = """
import asyncio, importlib, sys
for name in sys.argv[4:]:
    importlib.import_module(name)  # test-only plugins the parent process had loaded
from npcserver.backends import Backends
from npcserver.backends.fake import FakeDialogue, FakeSynthesizer, FakeTranscriber
from npcserver.config import Settings
from npcserver.logs import configure_logging
from npcserver.edge.server import run_server

configure_logging("info")
settings = Settings(host="127.0.0.1", port=0, voices=sys.argv[1], backend="fake", vad="fake",
                    drain_grace_s=float(sys.argv[2]))
dialogue = FakeDialogue(token_delay_s=float(sys.argv[3]), reply=" ".join(["word"] * 20) + ".")
asyncio.run(run_server(settings, Backends(FakeTranscriber(), dialogue, FakeSynthesizer())))
"""


class Node:
    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url
        self.http = url.replace("ws://", "http://").removesuffix("/v1/talk")

    def signal(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    async def exit_status(self) -> int:
        return await asyncio.wait_for(self.process.wait(), WAIT_S)

    async def get(self, path: str) -> tuple[int, dict[str, object]]:
        def fetch() -> tuple[int, dict[str, object]]:
            try:
                with urllib.request.urlopen(self.http + path, timeout=5) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        return await asyncio.to_thread(fetch)


@asynccontextmanager
async def node(grace_s: float, token_delay_s: float) -> AsyncIterator[Node]:
    preload = [name for name in ("shim_plugin",) if name in sys.modules]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        NODE,
        str(VOICES),
        str(grace_s),
        str(token_delay_s),
        *preload,
        cwd=REPO,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])},
    )
    try:
        url = await asyncio.wait_for(_ready_url(process), WAIT_S)
        yield Node(process, url)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _ready_url(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    while line := (await process.stderr.readline()).decode():
        if found := re.search(r"ready in .* (ws://\S+)", line):
            asyncio.get_running_loop().create_task(_drain_stream(process.stderr))
            return found.group(1)
    raise AssertionError("the node exited before it was ready")


async def _drain_stream(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def closed_code(talk: Conversation) -> int | None:
    try:
        while True:
            await talk.next_message(WAIT_S)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def test_sigterm_lets_the_running_turn_finish_refuses_newcomers_and_exits_0() -> None:
    async with node(grace_s=10.0, token_delay_s=0.1) as server, connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        await talk.send_json(type="text", text="Tell me a long story")
        await talk.until("reply")
        server.signal()
        for _ in range(100):  # the node says it is draining (bounded wait)
            status, body = await server.get("/readyz")
            if body["status"] == "draining":
                break
            await asyncio.sleep(0.02)
        assert (status, body["status"]) == (503, "draining")
        async with connect(server.url) as late:  # a newcomer is told to go elsewhere
            newcomer = Conversation(late)
            assert await closed_code(newcomer) == 1012
            assert [m["code"] for m in newcomer.messages] == ["draining"]
        end = await talk.until("turn_end")
        assert end["interrupted"] is False  # the turn in flight finished
        assert await closed_code(talk) == 1012
        assert await server.exit_status() == 0


async def test_turns_longer_than_the_grace_period_are_cut_and_closed_with_1012() -> None:
    async with node(grace_s=0.3, token_delay_s=1.0) as server, connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        await talk.send_json(type="text", text="Tell me a very long story")
        await talk.until("reply")
        server.signal()
        assert await closed_code(talk) == 1012
        assert await server.exit_status() == 0


async def test_a_second_sigterm_exits_at_once() -> None:
    async with node(grace_s=30.0, token_delay_s=1.0) as server, connect(server.url) as ws:
        talk = Conversation(ws)
        await talk.start()
        await talk.send_json(type="text", text="Tell me a very long story")
        await talk.until("reply")
        server.signal()
        await asyncio.sleep(0.3)
        server.signal()
        assert await server.exit_status() == 1  # well before the 30 s grace period
