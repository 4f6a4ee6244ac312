"""SIGTERM on `npcserver serve` with the real models: the running turn finishes, the process exits 0.

With the fake backend (tests/edge/test_drain.py) no model thread runs torch, so this only shows with the
real models: a model worker still busy when the interpreter finalized used to abort the process
(exit status 134, "terminate called without an active exception").
"""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from loadtest.server_process import REPO, server_process
from tests.conftest import Conversation

pytestmark = pytest.mark.real


async def test_sigterm_after_a_turn_and_mid_turn_finishes_the_turn_and_exits_0() -> None:
    with server_process("--voices", str(REPO / "voices"), "--drain-grace-s", "20") as server:
        async with connect(server.url) as ws:
            talk = Conversation(ws)
            await talk.start()
            await talk.send_json(type="text", text="How much for a sword?")
            await talk.until("turn_end", timeout=60, turn=1)  # a whole turn: the model threads have run
            await talk.send_json(type="text", text="Tell me about your forge and your family.")
            await talk.until("reply", timeout=60, turn=2)
            server.process.send_signal(signal.SIGTERM)  # mid-turn
            end = await talk.until("turn_end", timeout=30, turn=2)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await talk.next_message(timeout=30)
        status = await asyncio.to_thread(wait_for_exit, server.process, 30.0)
    assert end["interrupted"] is False  # finished within the grace period
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert status == 0, "".join(server.log_tail)[-2000:]


def wait_for_exit(process: subprocess.Popen[str], timeout_s: float) -> int:
    return process.wait(timeout_s)
