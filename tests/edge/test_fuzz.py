"""Protocol fuzzing: thousands of random and mutated frames against a real server with the fake models.

Every example opens a connection, sends a random sequence of frames (valid, mutated, out of order,
garbage), then a sentinel; the server must answer the sentinel (so it neither crashed nor hung),
answer every frame the protocol parser rejects with that frame's documented error code, and use no
code outside ErrorCode. Meanwhile a well-behaved player on the same server keeps finishing turns.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from npcserver.edge.server import NpcServer
from npcserver.protocol import SUPPORTED_SAMPLE_RATES, ErrorCode, ProtocolError, parse_client_message
from tests.conftest import fake_backends, fake_settings, silence, tone

EXAMPLES = 400
DOCUMENTED_CODES = {value for name, value in vars(ErrorCode).items() if not name.startswith("_")}
SENTINEL = json.dumps({"type": "fuzz_sentinel"})

# --------------------------------------------------------------------------- strategies

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**40),  # huge numbers
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
sample_rates = st.one_of(st.sampled_from(SUPPORTED_SAMPLE_RATES), st.integers(-(10**12), 10**12), json_values)
npcs = st.one_of(st.just("greta_blacksmith"), st.text(max_size=30), json_values)

start_messages = st.fixed_dictionaries(
    {"type": st.just("start"), "npc": npcs},
    optional={
        "audio": st.one_of(
            st.fixed_dictionaries(
                {"encoding": st.one_of(st.just("pcm_s16le"), json_values), "sample_rate": sample_rates}
            ),
            json_values,
        ),
        "player": st.one_of(st.text(max_size=20), json_values),
        "context": st.one_of(
            st.dictionaries(st.sampled_from(["time_of_day", "player_holding", "x"]), json_values, max_size=3),
            json_values,
        ),
        "greeting": st.one_of(st.booleans(), json_values),
    },
)
other_messages = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("text"),
            "text": st.one_of(st.text(max_size=80), st.text(min_size=501, max_size=600), json_values),
        }
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["end_of_turn", "interrupt"])}),
    st.fixed_dictionaries({"type": st.just("context"), "context": json_values}),
    st.fixed_dictionaries({"type": st.one_of(st.text(max_size=12), json_values)}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)


def _dump(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


@st.composite
def mutated_json(draw: st.DrawFn) -> str:
    """A valid-looking message, then maybe a field dropped, retyped, or the text cut or spliced."""
    message = dict(draw(st.one_of(start_messages, other_messages)))
    mutation = draw(st.sampled_from(["none", "drop", "retype", "truncate", "splice"]))
    if mutation == "drop" and message:
        message.pop(draw(st.sampled_from(sorted(message))))
    elif mutation == "retype" and message:
        message[draw(st.sampled_from(sorted(message)))] = draw(json_values)
    text = _dump(message)
    if mutation == "truncate":
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif mutation == "splice":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=6)) + text[at:]
    return text


text_frames = st.one_of(
    mutated_json(),
    st.text(max_size=60),  # not JSON at all
    json_values.map(_dump),  # JSON, but maybe not an object
    st.integers(10_000, 30_000).map(lambda depth: "[" * depth + "]" * depth),  # nested deeper than the parser goes
    st.integers(5_000, 6_000).map(
        lambda digits: '{"type":"start","npc":"greta_blacksmith","audio":{"sample_rate":' + "9" * digits + "}}"
    ),
)
binary_frames = st.one_of(
    st.binary(max_size=3000),  # garbage, odd lengths included
    st.sampled_from([tone(0.3), silence(0.2), tone(0.02), b"", b"\x01"]),
)
frame_sequences = st.lists(st.one_of(text_frames, text_frames, binary_frames), min_size=1, max_size=12)


# --------------------------------------------------------------------------- a server in its own thread


@dataclass
class ServerThread:
    url: str = ""
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    stop: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def server_thread() -> Iterator[ServerThread]:
    box = ServerThread()
    started = threading.Event()
    stop_async: list[asyncio.Event] = []

    async def serve() -> None:
        stopping = asyncio.Event()
        stop_async.append(stopping)
        async with NpcServer(fake_settings(max_connections_per_ip=0), fake_backends()) as server:
            await server.wait_ready()
            box.url = server.url
            started.set()
            await stopping.wait()

    thread = threading.Thread(target=lambda: box.loop.run_until_complete(serve()), name="fuzz-server")
    thread.start()
    assert started.wait(10), "server did not start"
    try:
        yield box
    finally:
        box.loop.call_soon_threadsafe(stop_async[0].set)
        thread.join(10)
        box.loop.close()


@dataclass
class GoodPlayer:
    """A well-behaved player taking turns while the fuzzer runs."""

    url: str
    turns: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with connect(self.url) as ws:
            ws.send(json.dumps({"type": "start", "npc": "greta_blacksmith", "greeting": False}))
            while not self.stop.is_set():
                ws.send(json.dumps({"type": "text", "text": f"Turn {self.turns + 1}, smith!"}))
                while True:
                    frame = ws.recv(timeout=10)
                    if isinstance(frame, bytes):
                        continue
                    message = json.loads(frame)
                    if message["type"] == "error":
                        self.errors.append(message["code"])
                    if message["type"] == "turn_end":
                        self.turns += not message["interrupted"]
                        break
                self.stop.wait(0.05)  # a person pauses between lines (the fake models answer in ~1 ms)


# --------------------------------------------------------------------------- the test


def expected_codes(frame: str) -> set[str] | None:
    """The error codes the protocol parser may give this frame, or None when it parses."""
    try:
        parse_client_message(frame)
    except ProtocolError as error:
        return {error.code}
    except RecursionError:  # how deep json can nest depends on the stack (hypothesis raises the limit)
        return {ErrorCode.BAD_JSON, ErrorCode.BAD_MESSAGE}
    return None


def is_subsequence(needles: list[set[str]], haystack: list[str]) -> bool:
    found = iter(haystack)
    return all(any(item in needle for item in found) for needle in needles)


# A failing example of big frames has a repr of 45 kB or more: hypothesis warns while it replays it, and
# with warnings as errors that warning would hide the failure it was about to report.
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
def test_fuzzed_protocol_never_crashes_and_answers_with_documented_codes(server_thread: ServerThread) -> None:
    stats = {"examples": 0, "frames": 0, "errors": 0}
    good = GoodPlayer(server_thread.url)
    good_thread = threading.Thread(target=good.run, name="good-player")
    good_thread.start()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(started=st.booleans(), rate=st.sampled_from(SUPPORTED_SAMPLE_RATES), frames=frame_sequences)
    def one_connection(started: bool, rate: int, frames: list[str | bytes]) -> None:
        expected = [codes for frame in frames if isinstance(frame, str) and (codes := expected_codes(frame))]
        codes: list[str] = []
        with connect(server_thread.url, max_size=2**20) as ws:
            if started:  # half the examples fuzz a session that is already talking
                ws.send(json.dumps({"type": "start", "npc": "greta_blacksmith", "audio": {"sample_rate": rate}}))
            for frame in frames:
                ws.send(frame)
            ws.send(SENTINEL)
            try:
                while True:
                    reply = ws.recv(timeout=10)
                    if isinstance(reply, bytes):
                        continue
                    message = json.loads(reply)
                    if message["type"] == "error":
                        if "fuzz_sentinel" in message["message"]:
                            break
                        codes.append(message["code"])
            except ConnectionClosed as closed:
                pytest.fail(f"server closed the connection ({closed}) after {frames!r}")
        assert set(codes) <= DOCUMENTED_CODES, codes
        assert is_subsequence(expected, codes), (expected, codes, frames)
        stats["examples"] += 1
        stats["frames"] += len(frames) + 1
        stats["errors"] += len(codes)

    try:
        one_connection()
    finally:
        good.stop.set()
        good_thread.join(15)
    print(
        f"\nfuzz: {stats['examples']} connections, {stats['frames']} frames, {stats['errors']} error replies; "
        f"well-behaved player finished {good.turns} turns"
    )
    assert good.turns >= 1 and good.errors == []
