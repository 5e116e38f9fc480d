"""The live preview web server: every template rendered with every sample, in a browser.

Routes (all GET, nothing sends or writes anything):

- ``/``: the index of templates, kinds and samples, with the problems of the files;
- ``/m/TEMPLATE/KIND/SAMPLE``: one message (headers, size, HTML at 600 and 390 px, text);
- ``/raw/...``: that message's HTML part alone, sandboxed (the frames of the message view);
- ``/eml/...``: the whole message as the mail server would receive it;
- ``/events``: server-sent events, one ``catalogue`` event with the generation now live on
  connecting and after each change of the files;
- ``/-/healthy``: 200 once serving; ``/-/status``: the generation and the open streams (JSON).

Renders run in a worker thread: a slow template (bounded by the render budget) holds that
thread, never the event loop that serves the other pages and the event streams.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from types import FrameType
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from balancewatch.tools.studio.catalogue import Preview
from balancewatch.tools.studio.live import Snapshot, Studio
from balancewatch.tools.studio.pages import (
    ACCOUNT_KIND,
    PAGE_POLICY,
    RAW_POLICY,
    AccountLinks,
    Link,
    index_page,
    message_page,
    message_path,
    missing_page,
)

KEEPALIVE = 15.0  # seconds between comments on an idle event stream: a gone client is noticed
RETRY_MS = 1000  # how soon a browser reconnects a dropped event stream
GRACE = 3  # seconds uvicorn waits for open connections at shutdown before cancelling them

_PAGE_HEADERS = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"}


LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def create_app(studio: Studio, *, local_only: bool = True) -> Starlette:
    """The preview's web app, serving ``studio``'s latest snapshot on every request.

    ``local_only`` (serving on a loopback address) answers only requests whose Host is a
    loopback name: a web page elsewhere could otherwise point its own name at 127.0.0.1 (DNS
    rebinding) and read the preview, account data included."""
    path = "/{template}/{kind}/{sample}"
    app = Starlette(
        routes=[
            Route("/", _index),
            Route("/m" + path, _message),
            Route("/raw" + path, _raw),
            Route("/eml" + path, _eml),
            Route("/events", _events),
            Route("/-/healthy", _healthy),
            Route("/-/status", _status),
        ]
    )
    app.state.studio = studio
    if local_only:
        app.add_middleware(_LocalHostOnly)
    return app


class _LocalHostOnly:
    """Refuses (400) a request whose Host header is not a loopback name."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and host_name(Headers(scope=scope).get("host", "")) not in LOCAL_NAMES:
            response = PlainTextResponse(
                "the preview answers only at localhost or 127.0.0.1\n", status_code=400
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _attachment(name: str) -> str:
    """A Content-Disposition for ``name``, whatever characters the template's name has: an ASCII
    fallback, and the name itself in RFC 5987 form."""
    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "-._") else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def host_name(host: str) -> str:
    """The name of a Host header without its port: ``[::1]:8025`` -> ``::1``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _studio(request: Request) -> Studio:
    studio: Studio = request.app.state.studio
    return studio


async def _index(request: Request) -> Response:
    studio = _studio(request)
    snapshot = studio.snapshot
    accounts = await run_in_threadpool(_account_links, studio, snapshot.catalogue.names)
    return HTMLResponse(index_page(snapshot, accounts), headers=_PAGE_HEADERS)


async def _message(request: Request) -> Response:
    studio = _studio(request)
    # One snapshot for the render and the page: the page's generation then says which files it
    # shows, so a save during the render still reloads it.
    snapshot = studio.snapshot
    found = await _render(studio, request, snapshot)
    if isinstance(found, Response):
        return found
    return HTMLResponse(message_page(snapshot, found), headers=_PAGE_HEADERS)


async def _raw(request: Request) -> Response:
    studio = _studio(request)
    found = await _render(studio, request, studio.snapshot)
    if isinstance(found, Response):
        return found
    headers = {"Content-Security-Policy": RAW_POLICY, "Cache-Control": "no-store"}
    if found.rendered is None or found.rendered.html is None:
        reason = str(found.problem) if found.problem else "this template has no HTML part (body.html)"
        return PlainTextResponse(reason, headers=headers)
    return HTMLResponse(found.rendered.html, headers=headers)


async def _eml(request: Request) -> Response:
    studio = _studio(request)
    found = await _render(studio, request, studio.snapshot)
    if isinstance(found, Response):
        return found
    if found.message is None:
        return PlainTextResponse(str(found.problem), status_code=422)
    name = f"{found.template}-{found.sample}.eml"
    return Response(
        found.message.as_bytes(),
        media_type="message/rfc822",
        headers={"Content-Disposition": _attachment(name), "X-Content-Type-Options": "nosniff"},
    )


async def _events(request: Request) -> Response:
    studio = _studio(request)
    return StreamingResponse(
        _stream(studio),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _healthy(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def _status(request: Request) -> Response:
    studio = _studio(request)
    snapshot = studio.snapshot
    return JSONResponse(
        {
            "generation": snapshot.generation,
            "clients": studio.clients,
            "templates": str(snapshot.catalogue.templates.directory),
            "stale": [str(p) for p in snapshot.stale],
        }
    )


async def _render(studio: Studio, request: Request, snapshot: Snapshot) -> Preview | Response:
    """The preview a message URL names in ``snapshot``, or a 404 page saying what there is."""
    template, kind, sample = (request.path_params[k] for k in ("template", "kind", "sample"))
    catalogue = snapshot.catalogue
    if kind == ACCOUNT_KIND and studio.account is not None:
        messages, why = await run_in_threadpool(studio.account_messages, template)
        found_message = next((m for m in messages if m.sample == sample), None)
        if found_message is None:
            reason = (
                why or f"no message {sample!r} of template {template!r} for account {studio.account.id!r}"
            )
            return HTMLResponse(missing_page(snapshot, reason), status_code=404, headers=_PAGE_HEADERS)
        return found_message
    try:
        found_kind, found = catalogue.find(template, sample, kind)
        if found_kind not in catalogue.uses[template]:
            raise LookupError(f"template {template!r} is not used for {kind!r}")
    except LookupError as exc:
        return HTMLResponse(missing_page(snapshot, str(exc)), status_code=404, headers=_PAGE_HEADERS)
    return await run_in_threadpool(catalogue.render, template, found_kind, found)


def _account_links(studio: Studio, templates: list[str]) -> dict[str, AccountLinks]:
    """For ``preview --account``: each template's messages for the account, or why there are none."""
    if studio.account is None:
        return {}
    out = {}
    for template in templates:
        messages, why = studio.account_messages(template)
        out[template] = AccountLinks(
            studio.account.id,
            [Link(m.sample, m.title, message_path(template, ACCOUNT_KIND, m.sample)) for m in messages],
            why,
        )
    return out


async def _stream(studio: Studio) -> AsyncIterator[str]:
    """One client's events until it goes (Starlette cancels this on disconnect) or the server
    stops (``studio.changes`` is closed)."""
    studio.clients += 1  # only the event loop's thread counts: no lock needed
    try:
        seen = studio.snapshot.generation
        yield f"retry: {RETRY_MS}\nevent: catalogue\ndata: {seen}\n\n"
        while not studio.changes.closed:
            now = await studio.changes.wait(seen, KEEPALIVE)
            if studio.changes.closed:
                break
            if now == seen:
                yield ": keepalive\n\n"
                continue
            seen = studio.snapshot.generation
            yield f"event: catalogue\ndata: {seen}\n\n"
    finally:
        studio.clients -= 1


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one). Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=64)


class PreviewServer(uvicorn.Server):
    """uvicorn's server for the preview, stopped by ``stop()`` from any thread or, while
    ``run`` is in the main thread, by SIGINT or SIGTERM.

    Stopping ends the open event streams first (``studio.changes`` is closed), so shutdown never
    waits on a browser tab; ``GRACE`` bounds it anyway. Unlike plain uvicorn, a signal is not
    raised again after the shutdown: the command exits 0 when stopped as asked."""

    def __init__(self, studio: Studio, *, local_only: bool = True) -> None:
        config = uvicorn.Config(
            create_app(studio, local_only=local_only),
            lifespan="off",
            log_config=None,
            access_log=False,
            http="h11",
            loop="asyncio",
            timeout_graceful_shutdown=GRACE,
        )
        super().__init__(config)
        self.studio = studio

    def stop(self) -> None:
        self.studio.changes.close()
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for anything
        self.stop()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only; whoever runs us there calls stop()
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
