"""Plain HTTP replies served beside the WebSocket endpoint, independent of the websockets library.

Handlers for `/healthz`, `/v1/personas`, `/v1/sites/nearest` ... return an HttpReply; `server.py`
turns it into a websockets Response.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpReply:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return HttpReply(status, body, "application/json", headers or {})
