"""Command line: `npcserver serve | prepare | personas check|schema|test | chat | say | token`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from npcserver.config import ENV_PREFIX, SECTIONS, Settings, SettingsError, load_settings, setting_fields
from npcserver.logs import configure_logging
from npcserver.personas import cli as persona_cli

DESCRIPTION = """\
npcserver: talk to game characters out loud. A WebSocket service that turns a player's speech into an
NPC's spoken reply (faster-whisper -> transformers LLM -> Piper), streaming every stage.

Every option can also be set in the environment (NPCSERVER_<OPTION>, e.g. NPCSERVER_PORT=9000) or in a
TOML config file (--config; keys are option names with underscores). Flags win over the environment,
which wins over the config file.
"""


def _add_settings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help=f"TOML file of settings (env {ENV_PREFIX}CONFIG).")
    group: Any = parser
    for f in setting_fields():
        if f.name in SECTIONS:
            group = parser.add_argument_group(SECTIONS[f.name])
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default}; env {ENV_PREFIX}{f.name.upper()})"
        if isinstance(f.default, bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            choices = f.metadata.get("choices")
            metavar = "{" + ",".join(choices) + "}" if choices else f.name.upper()
            group.add_argument(flag, dest=f.name, default=None, metavar=metavar, choices=choices, help=help_text)


def _settings(args: argparse.Namespace) -> Settings:
    names = {f.name for f in setting_fields()}
    flags = {k: v for k, v in vars(args).items() if k in names}
    return load_settings(flags, config_file=args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npcserver", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="Run the server (WebSocket /v1/talk, /healthz, demo page at /).",
                                description="Run the server. It listens at once; /healthz answers 503 until the models are loaded, then 200.")
    _add_settings_options(serve)

    prepare = commands.add_parser("prepare", help="Prepare the models once (converts the embedded LLM, exports the sentence encoders; cached).",
                                  description="Locate and prepare every model the settings name; later starts reuse the cache.")
    _add_settings_options(prepare)

    persona_cli.add_personas_parser(commands, _add_settings_options)

    chat = commands.add_parser("chat", help="Text conversation with an NPC in the terminal (real model, no audio).")
    chat.add_argument("npc", help="Persona id, e.g. greta_blacksmith.")
    _add_settings_options(chat)

    say = commands.add_parser("say", help="Write an NPC's voice saying TEXT to a WAV file.")
    say.add_argument("npc", help="Persona id, e.g. greta_blacksmith.")
    say.add_argument("text", help="What the NPC says.")
    say.add_argument("--out", type=Path, default=None, help="WAV file to write (default: NPC_ID.wav).")
    _add_settings_options(say)
    token = commands.add_parser("token", help="Print a short-lived session token for a player (needs auth_secret).",
                                description="Issue a JWT (HS256) that nodes accept in the WebSocket handshake: audience = the site id, subject = the player id.")
    token.add_argument("--player", required=True, help="Player id (the token's subject).")
    token.add_argument("--site", default=None, help="Site id the token is for (default: site_id, else the host name).")
    token.add_argument("--ttl", type=float, default=120.0, help="Seconds the token stays valid (default: 120; at most token_max_ttl_s).")
    _add_settings_options(token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except SettingsError as exc:
        print(f"npcserver: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from local packages, never from a hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.command == "personas":
        return persona_cli.run_personas(args, _settings)

    settings = _settings(args)
    configure_logging(settings.log_level, settings.log_json)
    if args.command == "serve":
        from npcserver.edge.heap import limit_arenas

        limit_arenas()  # before any worker thread starts: see npcserver.edge.heap
        from npcserver.edge.server import run_server

        asyncio.run(run_server(settings))
        return 0
    if args.command == "token":
        from npcserver.edge.auth import token_command

        return token_command(settings, args.player, args.site, args.ttl)
    if args.command == "prepare":
        from npcserver.models import prepare_models

        prepare_models(settings)
        return 0
    from npcserver import preview

    if args.command == "chat":
        return preview.chat_command(settings, args.npc)
    if args.command == "say":
        return preview.say_command(settings, args.npc, args.text, args.out)
    raise AssertionError(args.command)


def entry_point() -> Any:
    sys.exit(main())
