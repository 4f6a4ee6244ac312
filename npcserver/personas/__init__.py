"""Persona files: load `voices/*.toml` into frozen dataclasses, and explain every mistake in them.

Designers, not programmers, write these files, so validation is the feature: each problem names the
file, the field, the line (where it can be found), what is wrong and what would be right, and all the
problems of a file are reported at once. Everything here is pure (no models, no network); the one
outside lookup, "does this Piper voice exist", goes through an injectable resolver.

The file format itself is the pydantic model `PersonaSpec` below (types, defaults, ranges, help
text); it is also the source of the published JSON Schema. `Persona` is what the rest of the server
uses.
"""

from npcserver.personas.loading import check_paths, content_version, load_persona_file, parse_persona, persona_files
from npcserver.personas.persona import Action, ActionArg, ContextKey, ExampleLine, Persona, PersonaTest
from npcserver.personas.problems import LoadResult, PersonaFileError, PersonaProblem
from npcserver.personas.schema import SCHEMA_FILE_NAME, persona_json_schema
from npcserver.personas.spec import VoiceResolver

__all__ = [
    "SCHEMA_FILE_NAME",
    "Action",
    "ActionArg",
    "ContextKey",
    "ExampleLine",
    "LoadResult",
    "Persona",
    "PersonaFileError",
    "PersonaProblem",
    "PersonaTest",
    "VoiceResolver",
    "check_paths",
    "content_version",
    "load_persona_file",
    "parse_persona",
    "persona_files",
    "persona_json_schema",
]
