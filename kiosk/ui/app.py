"""The web server of the kiosk's screen: FastAPI on loopback, inside ``kiosk run``'s own
event loop (so the hub, the runner and the WebSocket share one thread and need no locks).

Routes: ``/`` the page, ``/static/…`` its script and style, ``/messages/LANG.json`` the
catalogues, ``/ws`` the live state (server → page) and the person's actions (page →
server). No route takes a PIN in its URL or returns one; uvicorn's access log is off (a
kiosk has no use for it, and it is one place fewer where a request could be written
down).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route functions'
# annotations (``WebSocket``) as objects, and these are imported inside create_app.
import asyncio
import contextlib
import copy
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kiosk.ui.hub import UiConfigError, WebHub, catalogue_languages, load_catalogue

__all__ = ["STATIC", "UiServer", "create_app", "parse_action", "parse_listen"]

STATIC = Path(__file__).parent / "static"

#: The page loads only its own files; nothing inline, nothing from elsewhere.
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self';"
                               " img-src 'self' data:; connect-src 'self';"
                               " frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(hub: WebHub, voice: Any = None) -> Any:
    """The page's routes; with ``voice`` (a :class:`kiosk.ui.voice.Voice`) also the spoken
    guidance's clips."""
    from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    binary_refused = RateLimitedLog("a binary WebSocket message was refused (closed 1003:"
                                    " the page sends JSON text only)")

    @app.middleware("http")
    async def headers(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        for k, v in _HEADERS.items():
            response.headers[k] = v
        return response

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/messages/{lang}.json")
    async def messages(lang: str) -> JSONResponse:
        if lang not in catalogue_languages():
            raise HTTPException(404, "no such catalogue")
        return JSONResponse(load_catalogue(lang))

    @app.get("/voice/{lang}/{key}.wav")
    async def clip(lang: str, key: str) -> FileResponse:
        """One catalogue text, spoken (rendered offline, cached); 404 when there is none —
        the page then goes on silently."""
        path = await asyncio.to_thread(voice.path, lang, key) if voice is not None else None
        if path is None:
            raise HTTPException(404, "no clip")
        return FileResponse(path, media_type="audio/wav")

    @app.get("/languages.json")
    async def languages() -> JSONResponse:
        return JSONResponse({"default": hub.lang, "languages": [
            {"lang": lang, "name": load_catalogue(lang).get("_name", lang)}
            for lang in catalogue_languages()]})

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        # Only the page this server served may drive the kiosk: a WebSocket is not bound by
        # the same-origin policy, so another origin (a page elsewhere, a rebound DNS name)
        # is refused before anything is sent.
        # The Host must name this machine's loopback itself: a rebound DNS name carries its
        # own name in both Host and Origin, which would otherwise match each other.
        origin = websocket.headers.get("origin")
        host = websocket.headers.get("host", "")
        name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
        if name.lower() not in LOOPBACK_NAMES or (
                origin is not None and origin not in (f"http://{host}", f"https://{host}")):
            await websocket.close(code=1008)
            return
        await websocket.accept()
        q = hub.subscribe()

        async def pump() -> None:
            while True:
                await websocket.send_text(await q.get())

        sender = asyncio.get_running_loop().create_task(pump())
        try:
            while True:
                # The raw ASGI message: ``receive_text`` assumed text and raised KeyError
                # on a binary frame, dropping the connection without a close frame.
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:  # binary: the page only ever sends JSON text
                    binary_refused.note()
                    await websocket.close(code=1003)  # unsupported data
                    break
                hub.act(parse_action(text))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            hub.unsubscribe(q)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def parse_action(text: str) -> object:
    """One message from the page, parsed; None for anything that is not JSON — including
    nesting deep enough to exhaust the parser's recursion (4 KiB of ``[`` is), which raised
    RecursionError out of the handler. The hub refuses None (and any other shape it does
    not expect) as malformed, and the connection stays."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


class RateLimitedLog:
    """One warning line now and then for a repeated refusal, with the count since the last
    line: any process on the machine can reconnect and repeat it, and must not be able to
    fill the log. One per server (a new server starts with a line)."""

    def __init__(self, what: str, every: float = 60.0) -> None:
        self.what, self.every = what, every
        self.last: float | None = None
        self.quiet = 0

    def line(self) -> str | None:
        """The line to log now, or None while the last one is recent (counted)."""
        now = time.monotonic()
        if self.last is not None and now - self.last < self.every:
            self.quiet += 1
            return None
        more = f" ({self.quiet} more since the last line)" if self.quiet else ""
        self.last, self.quiet = now, 0
        return f"kiosk UI: {self.what}{more}"

    def note(self) -> None:
        line = self.line()
        if line is not None:
            _log.warning("%s", line)


class ClientNoiseFilter(logging.Filter):
    """On uvicorn's error log: a text message that is not UTF-8 is the client's doing, yet
    uvicorn logs it with a traceback (``logger.exception``) — a traceback per message for
    anyone who reconnects and repeats it. That record becomes one rate-limited line."""

    def __init__(self) -> None:
        super().__init__()
        self.bad_utf8 = RateLimitedLog("a WebSocket text message that is not UTF-8 was"
                                       " refused (closed 1007)")

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Invalid UTF-8 sequence"):
            return True
        line = self.bad_utf8.line()
        if line is None:
            return False
        record.msg, record.args = line, ()
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


#: The UI's own log lines (to stderr beside uvicorn's: :class:`UiServer` configures it).
_log = logging.getLogger("kiosk.ui")


#: Names the kiosk's own browser reaches the screen by (the server listens on loopback).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})

#: The largest WebSocket message the page ever sends is a PIN-reset form (a few hundred
#: bytes); anything bigger is refused by the protocol layer before it is parsed.
WS_MAX_SIZE = 4096


def parse_listen(value: object) -> tuple[str, int]:
    """``"127.0.0.1:0"`` → host and port (0: an ephemeral port)."""
    if not isinstance(value, str) or ":" not in value:
        raise UiConfigError(f"[web] listen must be HOST:PORT, e.g. \"127.0.0.1:0\" (got"
                            f" {value!r})")
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise UiConfigError(f"[web] listen must be HOST:PORT (got {value!r})")
    return host, int(port)


class UiServer:
    """uvicorn serving :func:`create_app` on a socket bound before the start (so port 0
    gives an ephemeral port whose URL is known at once), in the running event loop."""

    def __init__(self, hub: WebHub, listen: str = "127.0.0.1:0", *,
                 voice: Any = None) -> None:
        import uvicorn

        from kiosk.ui.voice import Voice

        #: The spoken guidance (rendered ahead of time on a thread once serving starts).
        self.voice = voice if voice is not None else Voice()

        host, port = parse_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as e:
            self.sock.close()
            raise UiConfigError(f"[web] cannot listen on {listen}: {e.strerror}") from None
        self.sock.listen(64)
        bound = self.sock.getsockname()
        shown = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
        self.url = f"http://{shown}:{bound[1]}/"
        from uvicorn.config import LOGGING_CONFIG

        log_config = copy.deepcopy(LOGGING_CONFIG)
        log_config["loggers"]["kiosk.ui"] = {"handlers": ["default"], "level": "INFO"}
        config = uvicorn.Config(create_app(hub, self.voice), log_level="warning",
                                access_log=False,
                                log_config=log_config,
                                lifespan="off", ws="websockets-sansio", http="h11",
                                ws_max_size=WS_MAX_SIZE,
                                timeout_graceful_shutdown=2)
        self.server = _quiet_server(config)
        # Added to uvicorn's (process-wide) error logger for this server's life only, after
        # the Config above configured logging; ``stop`` takes it off again.
        self._noise = ClientNoiseFilter()
        logging.getLogger("uvicorn.error").addFilter(self._noise)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        missing = self.voice.missing()
        if missing:
            _log.warning("kiosk UI: no spoken guidance in some languages: missing %s",
                         "; ".join(missing))
        # Every clip rendered once, in the background (cached across starts): the first
        # person of the day does not wait for a synthesiser.
        threading.Thread(target=self.voice.prerender, name="voice-prerender",
                         daemon=True).start()
        self._task = asyncio.get_running_loop().create_task(
            self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise UiConfigError("the UI server stopped before it started")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        self.sock.close()
        logging.getLogger("uvicorn.error").removeFilter(self._noise)


def _quiet_server(config: Any) -> Any:
    """uvicorn's server without its signal handling: SIGTERM/SIGINT belong to ``kiosk
    run``, which stops taking cards and lets a session in progress finish first."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)
