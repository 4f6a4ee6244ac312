"""The network edge: one port serves the WebSocket endpoint `/v1/talk` and a few HTTP endpoints.

This is the only module that imports websockets. Models load in the background after the port
opens, so `/healthz` can answer 503 ("loading") and then 200 ("ready").

What faces the internet is checked here, before a frame reaches a session: the handshake (origin,
session token, connections per address, capacity and memory pressure), then per frame the size
(websockets closes 1009), the frame and audio rates, and the idle time; on the way out, a client
that stops reading is cut off after `send_timeout_s`. See docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import inspect
import logging
import math
import mimetypes
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from npcserver.backends import Backends, create_backends
from npcserver.config import Settings
from npcserver.conversation.endpoint import Endpointer, FakeVad, SileroVad
from npcserver.conversation.fillers import FillerCache, LatenessForecast
from npcserver.conversation.phrase_cache import PhraseAudioCache
from npcserver.conversation.pipeline import ModelRunner
from npcserver.conversation.session import Session, SessionClosed, SessionServices, SessionState
from npcserver.edge.auth import origin_allowed, parse_origins, token_from_request, verify_token
from npcserver.edge.heap import TRIM_EVERY_S, release_freed_memory
from npcserver.edge.limits import (
    AddressBudgets,
    ConnectionCounter,
    Pressure,
    SessionLimits,
    client_key,
    resident_memory_bytes,
)
from npcserver.edge.metrics import LiveState, ServerMetrics
from npcserver.edge.web import HttpReply, json_reply
from npcserver.personas import Persona
from npcserver.personas.store import PersonaChange, PersonaStore
from npcserver.protocol import (
    MAX_AUDIO_FRAME_BYTES,
    CloseCode,
    Error,
    ErrorCode,
    ServerMessage,
    encode,
)
from npcserver.sites.http import nearest_sites, next_best_site, ping
from npcserver.sites.ranking import SiteRecord
from npcserver.sites.registry import (
    SiteRegistry,
    registry_from_settings,
    site_id_from_settings,
    site_record_from_settings,
)

log = logging.getLogger(__name__)

TALK_PATH = "/v1/talk"
# Headers the checks read as one value: a request that repeats one is refused (400), not guessed at.
SINGLE_VALUED_HEADERS = ("Host", "Origin", "Authorization")
HttpHandler = Callable[[dict[str, str]], HttpReply | Awaitable[HttpReply]]


def _demo_dir() -> Path | None:
    spec = importlib.util.find_spec("game_client_demo")
    if spec is None or not spec.submodule_search_locations:
        return None
    web = Path(next(iter(spec.submodule_search_locations))) / "web"
    return web if web.is_dir() else None


class NpcServer:
    """Owns the listening socket, the models, the personas and the live sessions."""

    def __init__(
        self,
        settings: Settings,
        backends: Backends | None = None,
        load_backends: Callable[[Settings], Backends] = create_backends,
    ) -> None:
        self.settings = settings
        self.personas = PersonaStore(settings.voices, default_voice=settings.tts_voice)
        self.sessions: dict[Session, ServerConnection] = {}
        self.runner: ModelRunner | None = None
        self.fillers: FillerCache | None = None
        self.forecast = LatenessForecast()  # shared: every session's turns tell how loaded the models are
        self._backends = backends
        self._load_backends = load_backends
        self._server: Server | None = None
        self._port: int | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._persona_tests: dict[str, asyncio.Task[None]] = {}  # by persona id: its tests after the last reload
        self._stopping = asyncio.Event()
        self._vad: SileroVad | FakeVad | None = None
        self._demo = _demo_dir()
        self.draining = False
        self.registry: SiteRegistry | None = None
        self.connections = ConnectionCounter(settings.max_connections_per_ip)
        self.player_connections = ConnectionCounter(settings.max_connections_per_ip)  # by token subject: the same share
        self.budgets = address_budgets(settings)
        self.pressure = Pressure(settings.max_rss_mb, settings.max_queue_depth)
        self._origins = parse_origins(settings.allowed_origins)
        # token subject, from handshake to session (weak: a handshake that fails later leaves nothing behind)
        self._verified_players: weakref.WeakKeyDictionary[ServerConnection, str] = weakref.WeakKeyDictionary()
        self.metrics = ServerMetrics(LiveState(
            sessions=lambda: len(self.sessions),
            capacity=lambda: settings.max_sessions,
            ready=lambda: self.ready,
            draining=lambda: self.draining,
            model_load=lambda: self.runner.load if self.runner is not None else {},
            phrase_cache=lambda: self.runner.phrase_cache if self.runner is not None else None,
        ))
        self.routes: dict[str, HttpHandler] = {
            "/healthz": lambda query: self._health(),
            "/readyz": lambda query: self._readiness(),
            "/metrics": lambda query: HttpReply(200, self.metrics.render(), self.metrics.content_type),
            "/v1/personas": lambda query: json_reply({"personas": self.personas.statuses()}),
            "/v1/ping": lambda query: ping(),
            "/v1/sites/nearest": self._nearest_sites,
        }

    # ------------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        return self.runner is not None

    @property
    def port(self) -> int:
        """The port actually bound (settings.port may be 0); still known after stop()."""
        assert self._port is not None, "the server has not started"
        return self._port

    @property
    def url(self) -> str:
        host = self.settings.host if ":" not in self.settings.host else f"[{self.settings.host}]"
        return f"ws://{host}:{self.port}{TALK_PATH}"

    async def start(self) -> None:
        self._server = await serve(
            self._handle_connection,
            self.settings.host,
            self.settings.port,
            process_request=self._process_request,
            compression=None,  # audio doesn't compress, and inflating is a decompression-bomb risk
            max_size=MAX_AUDIO_FRAME_BYTES,  # larger frames close the connection with 1009
            ping_interval=20,
            ping_timeout=20,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("listening on %s", self.url)
        self.registry = registry_from_settings(self.settings, self.site_record)
        await self.registry.start()
        self._spawn(self._load_models())
        self._spawn(self._release_freed_memory())
        self._spawn(self.personas.watch(self._stopping))
        self.personas.add_listener(self._end_sessions_of_removed_persona)
        if self.settings.persona_tests_on_reload:
            self.personas.add_listener(self._test_reloaded_persona)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def _release_freed_memory(self) -> None:
        """Hand freed heap pages back every TRIM_EVERY_S: a burst of sessions should not raise the
        node's memory for good (npcserver.edge.heap)."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=TRIM_EVERY_S)
                return  # stopping: no trim for a process about to exit
            held, started = resident_memory_bytes(), time.perf_counter()
            await asyncio.to_thread(release_freed_memory)
            log.debug("heap trimmed: %.0f MiB handed back in %.0f ms",
                      (held - resident_memory_bytes()) / 2**20, (time.perf_counter() - started) * 1000)

    async def _load_models(self) -> None:
        started = time.perf_counter()
        backends = self._backends
        if backends is None:
            log.info("loading models (backend=%s, device=%s)...", self.settings.backend, self.settings.device)
            backends = await asyncio.to_thread(self._load_backends, self.settings)
        self._vad = await asyncio.to_thread(self._make_vad)
        cache_mb = self.settings.tts_phrase_cache_mb
        phrases = PhraseAudioCache(cache_mb * 1024 * 1024) if cache_mb > 0 else None
        runner = ModelRunner(backends, interleave_llm=self.settings.llm_interleave, phrase_cache=phrases)
        self.fillers = FillerCache(runner)
        # Every persona's fact and action indexes before the node says it is ready: built when a first
        # player speaks, they would hold that turn and the ones behind it on the knowledge worker (0.4-3 s
        # a persona with the embedded encoders on a CPU). A persona saved from now on is rebuilt at once.
        self.personas.add_listener(lambda change: self._index_changed_persona(runner, change))
        if backends.embedder is not None:
            log.info("building the fact and action indexes of %d personas...", len(self.personas.ids()))
            await runner.build_indexes([p for pid in self.personas.ids() if (p := self.personas.get(pid)) is not None])
        self.runner = runner  # ready
        log.info("ready in %.1f s: %s", time.perf_counter() - started, self.url)

    def _index_changed_persona(self, runner: ModelRunner, change: PersonaChange) -> None:
        """A saved persona's indexes are rebuilt at once, in the background, not at its next turn."""
        persona = self.personas.get(change.id)
        if change.kind in ("added", "updated") and persona is not None:
            runner.knowledge_index(persona)

    def _end_sessions_of_removed_persona(self, change: PersonaChange) -> None:
        """A deleted persona file ends its sessions now (npc_removed, close 1001), not at their next frame:
        an open mic that stays silent would otherwise wait forever."""
        if change.kind != "removed":
            return
        for session, ws in list(self.sessions.items()):
            if session.persona_id == change.id:
                self._end_session(ws, session, session.persona_removed())

    def _test_reloaded_persona(self, change: PersonaChange) -> None:
        """After a designer saves a persona, run its [[tests]] once in the background and log how it did."""
        persona = self.personas.get(change.id)
        if change.kind not in ("added", "updated") or persona is None or not persona.tests or self.runner is None:
            return
        running = self._persona_tests.pop(change.id, None)
        if running is not None:
            running.cancel()  # a newer save supersedes it
        self._persona_tests[change.id] = self._spawn(self._run_persona_tests(persona, self.runner))

    async def _run_persona_tests(self, persona: Persona, runner: ModelRunner) -> None:
        from npcserver.personas.designer_tests import PASSING_RATE, pass_rate, report_lines, run_persona_tests

        outcomes = await run_persona_tests(runner, persona, runs=1)
        rate = pass_rate(outcomes)
        report = "\n".join(report_lines(persona, outcomes))
        (log.info if rate >= PASSING_RATE else log.warning)("persona tests after reload: %s", report)

    def _make_vad(self) -> SileroVad | FakeVad:
        return FakeVad() if self.settings.vad == "fake" else SileroVad()

    def new_endpointer(self, push_to_talk: bool = False) -> Endpointer:
        assert self._vad is not None
        s = self.settings
        return Endpointer(
            self._vad,
            threshold=s.vad_threshold,
            # push-to-talk: the key, not a pause, ends the turn (a pause still starts speculation)
            end_silence_ms=s.max_utterance_s * 1000 if push_to_talk else s.end_silence_ms,
            min_speech_ms=s.min_speech_ms,
            max_utterance_s=s.max_utterance_s,
            adaptive=s.adaptive_end_silence,
            quiet_db=s.end_silence_quiet_db or None,
            background_db=s.end_silence_background_db or None,
        )

    @functools.cached_property
    def site_id(self) -> str:
        """This node's id in lookups and tokens (the host name unless site_id is set)."""
        return site_id_from_settings(self.settings)

    def site_record(self) -> SiteRecord:
        """This node as the site registry shows it to lookups (heartbeated every second or so)."""
        s = self.settings
        models = (s.asr_model, s.llm_model, s.tts_voice)
        return site_record_from_settings(s, port=self.port, npcs=self.personas.ids(), models=models,
                                         active_sessions=len(self.sessions))

    async def wait_ready(self) -> None:
        while not self.ready:
            await asyncio.sleep(0.02)

    async def drain(self) -> None:
        """Graceful stop: refuse new sessions, let running turns finish (bounded), close with 1012."""
        self.draining = True
        log.info("draining: no new sessions; waiting up to %.0f s for %d sessions' turns",
                 self.settings.drain_grace_s, len(self.sessions))
        if self.registry is not None:
            await self.registry.mark_draining()
        busy = [session.wait_turn_done() for session in self.sessions]
        if busy:
            await asyncio.wait([asyncio.ensure_future(b) for b in busy], timeout=self.settings.drain_grace_s)
        await self.stop(close_code=CloseCode.SERVICE_RESTART, reason="server restarting")

    async def stop(self, close_code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Close every session, the port, the registry entry and the model workers."""
        self._stopping.set()
        if self._server is not None:
            self._server.close(close_connections=True, code=close_code, reason=reason)
            await self._server.wait_closed()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.registry is not None:
            await self.registry.stop()
        if self.fillers is not None:
            await self.fillers.close()
        if self.runner is not None:
            # Wait (off the loop) until every model worker thread has ended: a daemon worker still
            # running Python when the interpreter finalizes is ended by pthread_exit, which unwinds
            # through torch's C++ frames and aborts the process ("terminate called without an active
            # exception", exit status 134). Each worker ends after its current call.
            await asyncio.to_thread(self.runner.close, True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ HTTP

    def _health(self) -> HttpReply:
        """Liveness, and (as the voice-turn issue asks) 503 until the models are loaded."""
        if self.ready:
            return json_reply({"status": "ready", "draining": self.draining, "sessions": len(self.sessions)})
        return json_reply({"status": "loading"}, status=503)

    def _overload(self) -> str | None:
        """Memory or model queues past their limits (out-of-memory protection), or None."""
        load = self.runner.load if self.runner is not None else {}
        return self.pressure.refusal(resident_memory_bytes() if self.pressure.max_rss_mb else 0, load)

    def _refusal(self) -> str | None:
        """Why a new session can't be taken now, or None."""
        if not self.ready:
            return "loading"
        if self.draining:
            return "draining"
        if len(self.sessions) >= self.settings.max_sessions:
            return "full"
        if self._overload() is not None:
            return "overloaded"
        return None

    def _readiness(self) -> HttpReply:
        refusal = self._refusal()
        load = self.runner.load if self.runner is not None else {}
        body = {
            "status": refusal or "ready",
            "sessions": len(self.sessions),
            "capacity": self.settings.max_sessions,
            "rss_mb": round(resident_memory_bytes() / 2**20, 1),
            "queue_depth": {stage: stage_load.pending for stage, stage_load in load.items()},
        }
        if refusal == "overloaded":
            body["reason"] = self._overload()
        return json_reply(body, status=503 if refusal else 200)

    async def _nearest_sites(self, query: dict[str, str]) -> HttpReply:
        assert self.registry is not None
        return nearest_sites(query, await self.registry.list_sites(), time.time())

    async def _next_best_url(self) -> str | None:
        if self.registry is None:
            return None
        best = next_best_site(await self.registry.list_sites(), self.site_id, time.time())
        return best.site.url if best is not None else None

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        for name in SINGLE_VALUED_HEADERS:
            if len(request.headers.get_all(name)) > 1:
                return _response(json_reply({"error": "bad_request", "message": f"more than one {name} header"}, 400))
        parts = urlsplit(request.path)
        if parts.path == TALK_PATH:
            return self._check_handshake(connection, request, dict(parse_qsl(parts.query)))
        handler = self.routes.get(parts.path)
        if handler is not None:
            reply = handler(dict(parse_qsl(parts.query)))
            return _response(await reply if inspect.isawaitable(reply) else reply)
        return _response(await asyncio.to_thread(self._static, parts.path))  # file I/O off the loop

    def _check_handshake(self, connection: ServerConnection, request: Request, query: dict[str, str]) -> Response | None:
        """Refuse a WebSocket upgrade with a plain HTTP answer, or None to go on with the handshake."""
        headers = request.headers
        peer = _peer(connection)
        refused: tuple[str, int, str, str] | None = None
        retry_after_s = self.budgets.retry_after_s(peer)
        if retry_after_s > 0:  # checked first: a throttled address costs no token check
            refused = ("throttled", 429, "rate_limited", "this address has used up its allowance; retry later")
        elif not origin_allowed(headers.get("Origin"), headers.get("Host"), self._origins):
            refused = ("origin", 403, "origin_not_allowed", "this page's origin may not connect (see allowed_origins)")
        elif self.settings.auth_secret:
            verdict = verify_token(self.settings.auth_secret, token_from_request(headers, query),
                                   self.site_id, self.settings.token_max_ttl_s)
            if not verdict.allowed:
                self.budgets.take(peer, "auth_failure")
                refused = ("token", verdict.status, "unauthorized" if verdict.status == 401 else "forbidden",
                           verdict.reason)
            elif verdict.player is not None:
                self._verified_players[connection] = verdict.player
        if refused is None and not self.connections.allows(peer):
            refused = ("per_ip", 429, "too_many_connections",
                       f"at most {self.connections.per_address} connections per address")
        player = self._verified_players.get(connection)
        if refused is None and player is not None and not self.player_connections.allows(player):
            refused = ("per_player", 429, "too_many_connections",
                       f"at most {self.player_connections.per_address} connections per player")
        if refused is None and not self.ready:
            refused = ("loading", 503, "loading", "models are still loading; retry shortly")
        if refused is None:
            return None  # go on with the WebSocket handshake
        reason, status, error, message = refused
        self._verified_players.pop(connection, None)
        self.metrics.refused.labels(reason=reason).inc()
        # a flood of refusals must not flood the log: the ones a flood gets (429) are counted, logged at debug
        (log.debug if status == 429 else log.info)("handshake from %s refused: %s", peer, message)
        retry_s = math.ceil(retry_after_s) if reason == "throttled" else 2
        headers_out = {"Retry-After": str(retry_s)} if status in (429, 503) else {}
        return _response(json_reply({"error": error, "message": message}, status, headers_out))

    def _static(self, path: str) -> HttpReply:
        if self._demo is None:
            return HttpReply(404, b"not found\n")
        relative = "index.html" if path in ("", "/") else path.lstrip("/")
        try:
            target = (self._demo / relative).resolve()
            if not target.is_relative_to(self._demo.resolve()) or not target.is_file():
                return HttpReply(404, b"not found\n")
            body = target.read_bytes()
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte...: no such file
            return HttpReply(404, b"not found\n")
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        return HttpReply(200, body, kind, {"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ WebSocket

    async def _refuse(self, ws: ServerConnection, why: str) -> None:
        """Accept the socket only to say why not and where to go: browsers can't read a refused handshake."""
        retry_url = await self._next_best_url()
        where = f"; try {retry_url}" if retry_url else "; retry shortly"
        if why == "draining":
            error = Error(ErrorCode.DRAINING, "this node is restarting" + where, fatal=True, retry_url=retry_url)
            code = CloseCode.SERVICE_RESTART
        elif why == "overloaded":
            message = "this node is overloaded" + where
            error = Error(ErrorCode.SERVER_FULL, message, fatal=True, retry_url=retry_url)
            code = CloseCode.TRY_AGAIN_LATER
        else:
            message = f"this node is full ({self.settings.max_sessions} sessions)" + where
            error = Error(ErrorCode.SERVER_FULL, message, fatal=True, retry_url=retry_url)
            code = CloseCode.TRY_AGAIN_LATER
        self.metrics.refused.labels(reason=why).inc()
        self.metrics.errors.labels(code=error.code).inc()
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(self.settings.send_timeout_s):
                await ws.send(encode(error))
                await ws.close(code, error.code)

    async def _handle_connection(self, ws: ServerConnection) -> None:
        peer = _peer(ws)
        player = self._verified_players.pop(ws, None)
        self.connections.opened(peer)
        if player is not None:
            self.player_connections.opened(player)
        try:
            refusal = self._refusal()
            if refusal is not None:
                await self._refuse(ws, refusal)
                return
            await self._converse(ws, peer, player)
        finally:
            self.connections.closed(peer)
            if player is not None:
                self.player_connections.closed(player)

    async def _converse(self, ws: ServerConnection, peer: str, player: str | None) -> None:
        """One session: frames in (checked against the limits), messages and audio out."""
        assert self.runner is not None
        settings = self.settings
        assert self.fillers is not None
        services = SessionServices(settings, self.runner, self.personas, self.new_endpointer, self.fillers, self.forecast)
        out_rate = self.runner.sample_rate
        metrics = self.metrics

        async def emit(message: ServerMessage | bytes) -> None:
            metrics.outgoing(message, out_rate)
            data = message if isinstance(message, bytes) else encode(message)
            try:
                async with asyncio.timeout(settings.send_timeout_s):
                    await ws.send(data)
            except TimeoutError:
                # The client stopped reading: drop it rather than hold its turn and buffers.
                log.warning("session %s: client read nothing for %.0f s; disconnecting", session.id,
                            settings.send_timeout_s)
                ws.transport.abort()
            except ConnectionClosed:
                pass  # the receive loop sees the close and ends the session

        session = Session(services, emit, allowed=lambda kind: self.budgets.take(peer, kind))
        self.sessions[session] = ws
        metrics.sessions.inc()
        limits = SessionLimits(settings.max_frames_per_s, settings.frame_burst, settings.audio_rate_limit,
                               settings.audio_burst_s)
        log.info("session %s connected from %s", session.id, peer)
        try:
            while True:
                frame = await self._next_frame(ws, session)
                if frame is None:
                    break
                if not limits.frame_allowed():
                    message = f"more than {settings.max_frames_per_s:g} frames per second"
                    await self._close_rate_limited(ws, emit, session, message)
                    break
                try:
                    if isinstance(frame, str):
                        waiting_for_start = session.state is SessionState.AWAITING_START
                        await session.on_text_frame(frame)
                        if waiting_for_start and player is not None:
                            session.player = player  # the token's player id wins over what the client says
                        continue
                    if session.input_rate:
                        seconds = len(frame) / 2 / session.input_rate
                        if not limits.audio_allowed(seconds):
                            message = f"audio arrives faster than {settings.audio_rate_limit:g}x real time"
                            await self._close_rate_limited(ws, emit, session, message)
                            break
                        if not self.budgets.take(peer, "audio", seconds):
                            message = "this address sends more audio, all its connections together, than it may"
                            await self._close_rate_limited(ws, emit, session, message)
                            break
                        metrics.audio_in.inc(seconds)
                    await session.on_audio_frame(frame)
                except SessionClosed as closed:
                    self._end_session(ws, session, closed)  # this loop reads (and drops) until the close is done
        except ConnectionClosed:
            pass
        finally:
            await session.close()
            self.sessions.pop(session, None)
            log.info("session %s closed (code %s)", session.id, ws.close_code)

    def _end_session(self, ws: ServerConnection, session: Session, closed: SessionClosed) -> None:
        """End a session from the server's side (its NPC is gone, its address ran out of a budget): its
        turn stops, the client hears why, the socket closes. The connection loop goes on reading
        (frames are dropped) and ends once the close is done."""
        if session.end():
            self._spawn(self._say_goodbye(ws, session, closed))

    async def _say_goodbye(self, ws: ServerConnection, session: Session, closed: SessionClosed) -> None:
        await session.close()
        await session.emit(Error(closed.error_code, closed.reason, fatal=True))
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(self.settings.send_timeout_s):
                await ws.close(closed.close_code, closed.reason[:120])

    async def _next_frame(self, ws: ServerConnection, session: Session) -> str | bytes | None:
        """The next frame, or None when the connection is over (closed, or idle too long)."""
        while True:
            idle_s = self._idle_allowance(session)
            waited_s = time.monotonic() - session.active_at
            # while the NPC speaks the player listens, and an ending session is closing: neither is idle
            exempt = session.state in (SessionState.RESPONDING, SessionState.CLOSED)
            if waited_s >= idle_s and not exempt:
                await self._close_idle(ws, session, idle_s)
                return None
            try:
                async with asyncio.timeout(idle_s if exempt else idle_s - waited_s):
                    return await ws.recv()
            except ConnectionClosed:
                return None
            except TimeoutError:
                continue

    def _idle_allowance(self, session: Session) -> float:
        """How long a session may go without player activity: short until it has started."""
        if session.state is SessionState.AWAITING_START:
            return self.settings.start_timeout_s
        return self.settings.idle_timeout_s

    async def _close_idle(self, ws: ServerConnection, session: Session, idle_s: float) -> None:
        log.info("session %s idle for %.0f s; closing", session.id, idle_s)
        if session.state is SessionState.AWAITING_START:
            message = f"no start within {idle_s:g} s of connecting"
        else:
            message = f"nothing from the player for {idle_s:g} s (context and interrupt messages don't count)"
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(self.settings.send_timeout_s):
                await ws.send(encode(Error(ErrorCode.IDLE_TIMEOUT, message, fatal=True)))
        await self._close(ws, CloseCode.NORMAL, ErrorCode.IDLE_TIMEOUT)
        self.metrics.errors.labels(code=ErrorCode.IDLE_TIMEOUT).inc()

    async def _close_rate_limited(
        self, ws: ServerConnection, emit: Callable[[ServerMessage], Awaitable[None]], session: Session, message: str
    ) -> None:
        log.info("session %s rate limited: %s", session.id, message)
        await emit(Error(ErrorCode.RATE_LIMITED, message, fatal=True))
        await self._close(ws, CloseCode.POLICY_VIOLATION, ErrorCode.RATE_LIMITED)

    async def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
        """Close from the server side, reading (and dropping) what the client still sends meanwhile:
        with unread frames queued, websockets stops reading and would miss the client's close reply."""

        async def discard_incoming() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.recv()

        reader = asyncio.create_task(discard_incoming())
        try:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                async with asyncio.timeout(self.settings.send_timeout_s):
                    await ws.close(code, reason)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


def address_budgets(settings: Settings) -> AddressBudgets:
    """What one address may spend over all its connections: `max_connections_per_ip` sessions' worth of
    audio, typed lines and context messages (no per-IP cap, no such budgets), and its token failures."""
    sessions = settings.max_connections_per_ip

    def per_address(rate: float, burst: float) -> tuple[float, float]:
        return (rate * sessions, burst * sessions) if sessions > 0 else (0.0, 0.0)

    return AddressBudgets({
        "audio": per_address(settings.audio_rate_limit, settings.audio_burst_s),
        "text": per_address(settings.text_lines_per_min / 60, settings.text_burst),
        "context": per_address(settings.context_per_min / 60, settings.context_burst),
        "auth_failure": (settings.auth_failures_per_min / 60, settings.auth_failure_burst),
    })


def _peer(connection: ServerConnection) -> str:
    """The client as the per-address limits count it (and the log names it): see `client_key`."""
    address = connection.remote_address
    return client_key(str(address[0])) if address else "?"


def _response(reply: HttpReply) -> Response:
    headers = Headers({"Content-Type": reply.content_type, "Content-Length": str(len(reply.body)), **reply.headers})
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
              429: "Too Many Requests", 503: "Service Unavailable"}.get(reply.status, "")
    return Response(reply.status, reason, headers, reply.body)


async def run_server(settings: Settings, backends: Backends | None = None) -> None:
    """Serve until SIGINT/SIGTERM (what `npcserver serve` runs).

    The first signal drains (see NpcServer.drain) and returns normally (exit status 0); a second
    one exits at once with status 1. `backends` replaces the models the settings name (tests).
    """
    import os
    import signal

    server = NpcServer(settings, backends)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second stop signal: exiting now")
            os._exit(1)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await server.start()
    await stop.wait()
    await server.drain()
    log.info("stopped")
