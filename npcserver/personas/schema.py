"""The published JSON Schema of the persona format, made from `PersonaSpec`."""

from __future__ import annotations

import copy
from typing import Any

from npcserver.personas.spec import PersonaSpec

SCHEMA_FILE_NAME = "persona.schema.json"  # written beside the persona files, named in their first line


def persona_json_schema() -> dict[str, Any]:
    """The format as a self-contained JSON Schema (draft-07 style, no $refs) for editors such as taplo."""
    schema = PersonaSpec.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
                merged = {**inline(target), **{k: inline(v) for k, v in node.items() if k != "$ref"}}
                return merged
            node = {k: inline(v) for k, v in node.items() if k != "title"}
            # TOML has no null: "X or null" is just an optional X.
            any_of = node.get("anyOf")
            if isinstance(any_of, list) and len(any_of) == 2 and {"type": "null"} in any_of:
                other = next(a for a in any_of if a != {"type": "null"})
                node = {**{k: v for k, v in node.items() if k != "anyOf"}, **other}
                if node.get("default") is None:
                    node.pop("default", None)
            return node
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    result = inline(schema)
    result["properties"]["context_keys"]["additionalProperties"] = False  # key names must match the pattern
    for table in ("knowledge", "dialogue", "voice", "latency"):
        result["properties"][table].pop("default", None)  # pydantic renders default_factory tables as {}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "npcserver NPC persona",
        **result,
    }
