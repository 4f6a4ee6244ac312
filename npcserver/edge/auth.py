"""Who may open a session: signed session tokens (JWT HS256) and the browser Origin allowlist.

Tokens are issued by the site lookup or a game backend that shares the secret with the nodes:
audience = the site id, subject = the player id, a short expiry. A node checks them in the
WebSocket handshake; HTTP endpoints (health, metrics, lookup, ping, the demo page) stay open.
PyJWT pins the algorithm (no "none", no key confusion) and compares signatures in constant time.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import jwt

from npcserver.config import Settings

ALGORITHM = "HS256"
DEFAULT_TOKEN_TTL_S = 120.0
LEEWAY_S = 5.0  # clock skew between the issuer and the node


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of checking a handshake: allowed (status 0) or refused with an HTTP status."""

    status: int  # 0 allowed, 401 missing/expired/forged token, 403 wrong site or origin
    reason: str = ""
    player: str | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 0


ALLOWED = Verdict(0)


def issue_token(secret: str, player: str, site: str, ttl_s: float = DEFAULT_TOKEN_TTL_S, now: float | None = None) -> str:
    """A session token for `player` on site `site`, valid `ttl_s` seconds."""
    if not secret:
        raise ValueError("a token needs a secret (auth_secret / NPCSERVER_AUTH_SECRET)")
    issued = int(time.time() if now is None else now)
    claims = {"sub": player, "aud": site, "iat": issued, "exp": issued + max(1, int(ttl_s))}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str | None, site: str, max_ttl_s: float, now: float | None = None) -> Verdict:
    """Check a token for this site: 401 when missing, malformed, forged, expired or too long-lived; 403 for another site."""
    if not token:
        return Verdict(401, "a session token is required (Authorization: Bearer ..., or ?token=...)")
    try:  # the audience is checked below, to tell "wrong site" (403) from "bad token" (401)
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], leeway=LEEWAY_S,
                            options={"require": ["exp", "iat", "sub", "aud"], "verify_aud": False})
    except jwt.ExpiredSignatureError:
        return Verdict(401, "the session token has expired")
    except jwt.PyJWTError:
        return Verdict(401, "the session token is invalid")
    current = time.time() if now is None else now
    if not isinstance(claims["exp"], (int, float)) or claims["exp"] - current > max_ttl_s + LEEWAY_S:
        return Verdict(401, f"the session token lives longer than {max_ttl_s:.0f} s")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        return Verdict(401, "the session token names no player")
    audience = claims["aud"]
    audiences = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
    if site not in audiences:
        return Verdict(403, "the session token is for another site")
    return Verdict(0, player=claims["sub"])


def token_from_request(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The token from `Authorization: Bearer ...`, or from `?token=` (browsers can't set headers on WebSocket)."""
    authorization = headers.get("Authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return query.get("token") or None


def parse_origins(setting: str) -> tuple[str, ...]:
    """`allowed_origins` as a tuple: comma-separated origins like https://game.example.com, or '*'."""
    return tuple(origin.strip().rstrip("/").lower() for origin in setting.split(",") if origin.strip())


def origin_allowed(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """Browser clients send Origin; other clients (game engines, the CLI) send none and are allowed.

    A page served by this node (same host and port) is allowed; other origins only when listed
    (or when the list holds '*').
    """
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    allowed = tuple(allowed)
    if "*" in allowed or origin in allowed:
        return True
    if host:
        netloc = urlsplit(origin).netloc
        return bool(netloc) and netloc == host.strip().lower()
    return False


def token_command(settings: Settings, player: str, site: str | None = None, ttl_s: float = DEFAULT_TOKEN_TTL_S) -> int:
    """`npcserver token --player P [--site S] [--ttl SECONDS]`: print a token; exit status 2 without a secret."""
    if not settings.auth_secret:
        print("npcserver token: no secret configured (set NPCSERVER_AUTH_SECRET or auth_secret)", file=sys.stderr)
        return 2
    if ttl_s > settings.token_max_ttl_s:
        print(f"npcserver token: --ttl {ttl_s:g} is over token_max_ttl_s ({settings.token_max_ttl_s:g}); nodes would refuse it",
              file=sys.stderr)
        return 2
    site_id = site or settings.site_id or socket.gethostname()  # the id nodes publish (see registry.py)
    print(issue_token(settings.auth_secret, player, site_id, ttl_s))
    return 0
