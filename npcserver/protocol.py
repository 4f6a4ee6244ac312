"""Protocol v1, the wire contract: message dataclasses, parse() and encode(). No I/O, no asyncio.

Text frames carry one JSON object with a "type"; binary frames carry mono PCM s16le audio.
See docs/protocol.md for the prose version. Clients may send fields we don't know (ignored);
fields we know are type-checked, and every mistake maps to a stable error code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

SUPPORTED_SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
SUPPORTED_ENCODINGS = ("pcm_s16le",)
MAX_AUDIO_FRAME_BYTES = 64 * 1024


class ErrorCode:
    """Stable, machine-readable error codes (never rename; add new ones at the end)."""

    BAD_JSON = "bad_json"  # a text frame that is not valid JSON
    BAD_MESSAGE = "bad_message"  # valid JSON but not an object, or no "type"
    UNKNOWN_TYPE = "unknown_type"  # a "type" the server does not know
    MISSING_FIELD = "missing_field"  # a required field is absent
    WRONG_TYPE = "wrong_type"  # a field has the wrong JSON type
    INVALID_VALUE = "invalid_value"  # right type, unacceptable value (e.g. sample rate 12345)
    UNKNOWN_NPC = "unknown_npc"  # "start" names a persona the server does not have
    NOT_STARTED = "not_started"  # audio or a turn message before a successful "start"
    ALREADY_STARTED = "already_started"  # a second "start" in one session
    BAD_AUDIO = "bad_audio"  # binary frame of odd length (not whole s16 samples)
    FRAME_TOO_LARGE = "frame_too_large"  # a frame over the size limit (session-fatal, close 1009)
    TEXT_TOO_LONG = "text_too_long"  # a typed line over the length limit
    NPC_REMOVED = "npc_removed"  # the persona file was deleted while the session was running
    MODEL_ERROR = "model_error"  # a model failed during this turn; the session goes on
    SERVER_FULL = "server_full"  # no capacity for a new session (close 1013, names a next-best site)
    DRAINING = "draining"  # the node is shutting down (close 1012)
    RATE_LIMITED = "rate_limited"  # the client sends faster than allowed
    IDLE_TIMEOUT = "idle_timeout"  # nothing received for too long (close 1000)
    NPC_BUSY = "npc_busy"  # an "event" while the NPC is answering or the player is talking: not reacted to
    UNKNOWN_ACTION = "unknown_action"  # a "say" names an action the persona does not declare, or bad arguments


class CloseCode:
    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


class ProtocolError(Exception):
    """A client mistake; `code` is one of ErrorCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- shared parts


@dataclass(frozen=True, slots=True)
class AudioFormat:
    encoding: str = "pcm_s16le"
    sample_rate: int = 16000


@dataclass(frozen=True, slots=True)
class NpcInfo:
    id: str
    name: str


# --------------------------------------------------------------------------- client -> server


@dataclass(frozen=True, slots=True)
class Start:
    type: ClassVar[str] = "start"
    npc: str
    audio: AudioFormat = AudioFormat()
    player: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    greeting: bool = True  # false: don't speak the persona's greeting when the session starts
    push_to_talk: bool = False  # true: only end_of_turn ends a turn, never a silence
    visemes: bool = False  # true: each clause's audio comes with its mouth shapes (a "visemes" message)


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    type: ClassVar[str] = "end_of_turn"


@dataclass(frozen=True, slots=True)
class Text:
    type: ClassVar[str] = "text"
    text: str


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """An action of the persona's `[[actions]]`, named with its arguments."""

    id: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Say:
    """A designer's line for the NPC to say as it is, as its own turn; with `action`, the turn also
    carries out that declared action (checked like any other: only declared ids and values)."""

    type: ClassVar[str] = "say"
    text: str
    action: ActionRequest | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """Something happened in the game ("The player drew a sword."): the NPC reacts in character."""

    type: ClassVar[str] = "event"
    text: str


@dataclass(frozen=True, slots=True)
class Interrupt:
    type: ClassVar[str] = "interrupt"


@dataclass(frozen=True, slots=True)
class Context:
    """New game state mid-session (time of day, location, quest flags...)."""

    type: ClassVar[str] = "context"
    context: dict[str, Any]


ClientMessage = Start | EndOfTurn | Text | Say | Event | Interrupt | Context

# --------------------------------------------------------------------------- server -> client


@dataclass(frozen=True, slots=True)
class Ready:
    type: ClassVar[str] = "ready"
    session: str
    npc: NpcInfo
    audio: AudioFormat


@dataclass(frozen=True, slots=True)
class TranscriptMessage:
    type: ClassVar[str] = "transcript"
    turn: int
    text: str
    final: bool


@dataclass(frozen=True, slots=True)
class Reply:
    type: ClassVar[str] = "reply"
    turn: int
    text: str


@dataclass(frozen=True, slots=True)
class AudioStart:
    type: ClassVar[str] = "audio_start"
    turn: int


@dataclass(frozen=True, slots=True)
class Viseme:
    """One mouth shape: `start` is a sample index into the turn's audio, `duration` in samples."""

    name: str  # one of the 15 OVR LipSync visemes (npcserver/visemes.py)
    start: int
    duration: int


@dataclass(frozen=True, slots=True)
class Visemes:
    """The mouth shapes of the audio that follows, sent just before its first frame."""

    type: ClassVar[str] = "visemes"
    turn: int
    visemes: tuple[Viseme, ...]


@dataclass(frozen=True, slots=True)
class Emote:
    """A gesture or mood the persona declared, to play from `at_sample` of the turn's audio on."""

    type: ClassVar[str] = "emote"
    turn: int
    name: str
    at_sample: int


@dataclass(frozen=True, slots=True)
class Action:
    """Something the game carries out for this turn: a declared action with declared argument values."""

    type: ClassVar[str] = "action"
    turn: int
    id: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AudioEnd:
    type: ClassVar[str] = "audio_end"
    turn: int


@dataclass(frozen=True, slots=True)
class TurnEnd:
    type: ClassVar[str] = "turn_end"
    turn: int
    interrupted: bool
    timings: dict[str, float]
    filler: bool = False  # a filler line was played before the reply (voice_to_voice_ms counts it)
    speculative: bool = False  # the turn was started during the player's pause, before the end was confirmed
    resumed: bool = False  # the player's turn was only "uh-huh" over the NPC: the cut-off reply was said again


@dataclass(frozen=True, slots=True)
class Error:
    type: ClassVar[str] = "error"
    code: str
    message: str
    turn: int | None = None
    fatal: bool = False
    retry_url: str | None = None  # where to reconnect when this node is full or draining


ServerMessage = Ready | TranscriptMessage | Reply | AudioStart | Visemes | Emote | Action | AudioEnd | TurnEnd | Error

CLIENT_TYPES: dict[str, type] = {cls.type: cls for cls in (Start, EndOfTurn, Text, Say, Event, Interrupt, Context)}
SERVER_TYPES: dict[str, type] = {
    cls.type: cls
    for cls in (Ready, TranscriptMessage, Reply, AudioStart, Visemes, Emote, Action, AudioEnd, TurnEnd, Error)
}

# --------------------------------------------------------------------------- parsing


def _load_object(text: str | bytes) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: [[[[...]]]] nested thousands deep
        raise ProtocolError(ErrorCode.BAD_JSON, f"text frame is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a text frame must be a JSON object with a \"type\"")
    if "type" not in data:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "message has no \"type\" field")
    if not isinstance(data["type"], str):
        raise ProtocolError(ErrorCode.WRONG_TYPE, "\"type\" must be a string")
    return data


def _field(data: dict[str, Any], where: str, name: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    if name not in data or (data[name] is None and not required):
        if required:
            raise ProtocolError(ErrorCode.MISSING_FIELD, f"{where}: missing field \"{name}\"")
        return None
    value = data[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python, but never a valid number on the wire
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(_json_type_name(k) for k in kinds)
        raise ProtocolError(
            ErrorCode.WRONG_TYPE, f"{where}: \"{name}\" must be {expected}, got {_json_type_name(type(value))}"
        )
    return value


def _json_type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false", dict: "an object",
            list: "an array", type(None): "null"}.get(kind, kind.__name__)


def _parse_audio_format(value: Any) -> AudioFormat:
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.WRONG_TYPE, "start: \"audio\" must be an object")
    encoding = _field(value, "start.audio", "encoding", str, required=False) or "pcm_s16le"
    rate = _field(value, "start.audio", "sample_rate", int, required=False) or 16000
    if encoding not in SUPPORTED_ENCODINGS:
        raise ProtocolError(ErrorCode.INVALID_VALUE, f"start.audio: encoding {encoding!r} is not supported; use \"pcm_s16le\"")
    if rate not in SUPPORTED_SAMPLE_RATES:
        rates = ", ".join(map(str, SUPPORTED_SAMPLE_RATES))
        raise ProtocolError(ErrorCode.INVALID_VALUE, f"start.audio: sample_rate {rate} is not supported; use one of {rates}")
    return AudioFormat(encoding, rate)


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Parse one text frame from a client; raise ProtocolError with a stable code on any mistake."""
    data = _load_object(text)
    kind = data["type"]
    if kind == "start":
        npc = _field(data, "start", "npc", str)
        if not npc.strip():
            raise ProtocolError(ErrorCode.INVALID_VALUE, "start: \"npc\" must not be empty")
        audio = _parse_audio_format(data["audio"]) if data.get("audio") is not None else AudioFormat()
        player = _field(data, "start", "player", str, required=False)
        context = _field(data, "start", "context", dict, required=False) or {}
        greeting = _field(data, "start", "greeting", bool, required=False)
        push_to_talk = _field(data, "start", "push_to_talk", bool, required=False)
        visemes = _field(data, "start", "visemes", bool, required=False)
        return Start(npc=npc, audio=audio, player=player, context=context, greeting=greeting is not False,
                     push_to_talk=push_to_talk is True, visemes=visemes is True)
    if kind == "end_of_turn":
        return EndOfTurn()
    if kind == "text":
        return Text(text=_field(data, "text", "text", str))
    if kind == "say":
        action = _field(data, "say", "action", dict, required=False)
        if action is not None:
            args = _field(action, "say.action", "args", dict, required=False) or {}
            action = ActionRequest(id=_field(action, "say.action", "id", str), args=args)
        return Say(text=_field(data, "say", "text", str), action=action)
    if kind == "event":
        return Event(text=_field(data, "event", "text", str))
    if kind == "interrupt":
        return Interrupt()
    if kind == "context":
        return Context(context=_field(data, "context", "context", dict))
    known = ", ".join(sorted(CLIENT_TYPES))
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r}; expected one of {known}")


def parse_server_message(text: str | bytes) -> ServerMessage:
    """Parse one text frame from the server (used by clients and the round-trip tests)."""
    data = _load_object(text)
    cls = SERVER_TYPES.get(data["type"])
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown server message type {data['type']!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in names}
    try:
        if cls is Ready:
            values["npc"] = NpcInfo(**values["npc"])
            values["audio"] = AudioFormat(**values["audio"])
        elif cls is Visemes:
            values["visemes"] = tuple(Viseme(**viseme) for viseme in values["visemes"])
        return cls(**values)  # type: ignore[no-any-return]
    except (TypeError, KeyError) as exc:
        raise ProtocolError(ErrorCode.MISSING_FIELD, f"{data['type']}: {exc}") from None


def encode(message: ClientMessage | ServerMessage) -> str:
    """One message as a compact JSON text frame, "type" first."""
    body: dict[str, Any] = {"type": message.type}
    for f in dataclasses.fields(message):  # type: ignore[arg-type]
        value = getattr(message, f.name)
        if value is None and f.default is None:
            continue  # optional fields are omitted rather than sent as null
        body[f.name] = _plain(value)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _plain(value: Any) -> Any:
    """A field's value as JSON can hold it: dataclasses become objects, tuples arrays."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value
