"""The Python client of protocol v1: what a game client needs to talk to an NPC, on `npcserver.protocol`.

It imports only `npcserver.protocol` (every message out through `encode`, every text frame in through
`parse_server_message`), never server code. Used by the command-line client (game_client_demo/cli.py),
the load tester and the tests.

    async with await TalkSession.open("ws://127.0.0.1:8765/v1/talk", "greta_blacksmith") as session:
        turn = await session.say("How much for a sword?")
        print(turn.reply_text, turn.voice_to_voice_ms)
"""

from npcserver.client.session import PROTOCOL_SAMPLE_RATES, TalkSession
from npcserver.client.turns import (
    CLIENT_TIMEOUT_CODE,
    CONNECT_FAILED_CODE,
    CONNECTION_CLOSED_CODE,
    FRAME_MS,
    AudioArrival,
    HeardTurn,
    ServerError,
    SessionInfo,
    TalkError,
)

__all__ = [
    "CLIENT_TIMEOUT_CODE",
    "CONNECTION_CLOSED_CODE",
    "CONNECT_FAILED_CODE",
    "FRAME_MS",
    "PROTOCOL_SAMPLE_RATES",
    "AudioArrival",
    "HeardTurn",
    "ServerError",
    "SessionInfo",
    "TalkError",
    "TalkSession",
]
