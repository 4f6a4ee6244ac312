"""Protocol v1: every message type survives encode -> parse, and every mistake has its code."""

from __future__ import annotations

import json

import pytest

from npcserver import protocol as p

CLIENT_MESSAGES = [
    p.Start(npc="greta_blacksmith"),
    p.Start(npc="greta_blacksmith", audio=p.AudioFormat("pcm_s16le", 48000), player="p1",
            context={"time_of_day": "night", "quest": {"sword": True}}, greeting=False, push_to_talk=True, visemes=True),
    p.EndOfTurn(),
    p.Text(text="Hello there, smith."),
    p.Say(text="*bows* Welcome to Millbrook, traveller."),
    p.Say(text="Sold!", action=p.ActionRequest("sell_item", {"item": "lantern", "count": 2})),
    p.Event(text="The player drew a sword."),
    p.Interrupt(),
    p.Context(context={"location": "forge"}),
]

SERVER_MESSAGES = [
    p.Ready("s1", p.NpcInfo("greta_blacksmith", "Greta"), p.AudioFormat("pcm_s16le", 22050)),
    p.TranscriptMessage(1, "hello", final=True),
    p.TranscriptMessage(1, "hel", final=False),
    p.Reply(1, " Well met."),
    p.AudioStart(1),
    p.Visemes(1, (p.Viseme("sil", 0, 768), p.Viseme("PP", 768, 1024))),
    p.Emote(1, "smile", at_sample=22050),
    p.Action(1, "sell_item", {"item": "lantern", "count": 2}),
    p.AudioEnd(1),
    p.TurnEnd(1, False, {"asr_ms": 120.5, "voice_to_voice_ms": 480.0}),
    p.Error("unknown_npc", "no such npc"),
    p.Error("server_full", "full", turn=3, fatal=True, retry_url="ws://other:8765/v1/talk"),
]


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=lambda m: m.type)
def test_client_messages_round_trip(message: p.ClientMessage) -> None:
    assert p.parse_client_message(p.encode(message)) == message


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=lambda m: m.type)
def test_server_messages_round_trip(message: p.ServerMessage) -> None:
    assert p.parse_server_message(p.encode(message)) == message


def test_every_message_type_is_covered_by_the_round_trip_tests() -> None:
    assert {m.type for m in CLIENT_MESSAGES} == set(p.CLIENT_TYPES)
    assert {m.type for m in SERVER_MESSAGES} == set(p.SERVER_TYPES)


def test_encode_puts_type_first_and_omits_unset_optionals() -> None:
    body = json.loads(p.encode(p.Error("bad_json", "oops")))
    assert next(iter(body)) == "type"
    assert "retry_url" not in body and "turn" not in body


def test_start_defaults_to_16k_pcm_and_ignores_unknown_fields() -> None:
    message = p.parse_client_message('{"type":"start","npc":"x","future_field":1}')
    assert message == p.Start(npc="x", audio=p.AudioFormat("pcm_s16le", 16000))


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", p.ErrorCode.BAD_JSON),
        ("42", p.ErrorCode.BAD_MESSAGE),
        ("{}", p.ErrorCode.BAD_MESSAGE),
        ('{"type": 1}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "sing"}', p.ErrorCode.UNKNOWN_TYPE),
        ('{"type": "start"}', p.ErrorCode.MISSING_FIELD),
        ('{"type": "start", "npc": ""}', p.ErrorCode.INVALID_VALUE),
        ('{"type": "start", "npc": ["a"]}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "start", "npc": "a", "audio": 16000}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "start", "npc": "a", "audio": {"sample_rate": "16000"}}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "start", "npc": "a", "audio": {"sample_rate": true}}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "start", "npc": "a", "audio": {"sample_rate": 11025}}', p.ErrorCode.INVALID_VALUE),
        ('{"type": "start", "npc": "a", "context": "night"}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "start", "npc": "a", "greeting": "no"}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "start", "npc": "a", "visemes": 1}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "text"}', p.ErrorCode.MISSING_FIELD),
        ('{"type": "text", "text": 5}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "say"}', p.ErrorCode.MISSING_FIELD),
        ('{"type": "say", "text": ["Hi"]}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "say", "text": "Hi", "action": "sell_item"}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "say", "text": "Hi", "action": {"args": {}}}', p.ErrorCode.MISSING_FIELD),
        ('{"type": "say", "text": "Hi", "action": {"id": "sell_item", "args": ["map"]}}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "event", "text": null}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "event", "text": {"what": "sword"}}', p.ErrorCode.WRONG_TYPE),
        ('{"type": "context", "context": []}', p.ErrorCode.WRONG_TYPE),
    ],
)
def test_mistakes_map_to_stable_codes(frame: str, code: str) -> None:
    with pytest.raises(p.ProtocolError) as error:
        p.parse_client_message(frame)
    assert error.value.code == code
    assert error.value.message  # always something a person can act on
