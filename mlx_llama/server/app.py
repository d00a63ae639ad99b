"""The HTTP front: Starlette routes for the OpenAI endpoints, server-sent events, API key and CORS.

Handlers validate the request, render the prompt, hand a Job to the scheduler thread and await its events
on an asyncio queue. A client that goes away cancels its job, which frees its batch slot at the
scheduler's next iteration.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from . import protocol
from .chat import completion_prompt, render_chat_prompt
from .protocol import APIError
from .responses import ResponseBuilder
from .scheduler import Event, Job, Scheduler

DISCONNECT_POLL_S = 0.25


@dataclass
class ServerState:
    scheduler: Scheduler
    tokenizer: object
    model_id: str
    api_key: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def _prepare(state: ServerState, kind: str, body: dict) -> tuple[protocol.Request, Job, asyncio.Queue]:
    vocab = state.scheduler.vocab
    request = protocol.parse_chat(body, vocab) if kind == "chat" else protocol.parse_completion(body, vocab)
    if kind == "chat":
        prompt, extra_stops = render_chat_prompt(state.tokenizer, request.messages)
    else:
        prompt, extra_stops = completion_prompt(state.tokenizer, request.prompt), []
    context = state.scheduler.context_length
    if not prompt:
        raise APIError("The prompt is empty (no tokens to start from).", param="prompt", code="invalid_value")
    if len(prompt) >= context:
        raise APIError(
            f"This model's maximum context length is {context} tokens; the prompt has {len(prompt)} "
            "tokens, which leaves no room for a completion.",
            param="messages" if kind == "chat" else "prompt",
            code="context_length_exceeded",
        )
    room = context - len(prompt)
    max_tokens = room if request.max_tokens is None else min(request.max_tokens, room)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def emit(event: Event) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the server is gone
            pass

    job = Job(prompt, max_tokens, request.options, emit, n=request.n, stop=request.stop + extra_stops)
    return request, job, events


async def _next_event(events: asyncio.Queue, http: HTTPRequest, job: Job, poll: dict) -> Event | None:
    """The next event, or None once the client has disconnected (the job is then cancelled).

    The connection is checked every DISCONNECT_POLL_S, also while events keep coming (`poll` holds the time
    of the last check).
    """
    while True:
        now = time.monotonic()
        if now - poll.setdefault("at", now) >= DISCONNECT_POLL_S:
            poll["at"] = now
            if await http.is_disconnected():
                job.cancelled.set()
                return None
        try:
            return await asyncio.wait_for(events.get(), DISCONNECT_POLL_S)
        except asyncio.TimeoutError:
            continue


def _endpoint(kind: str):
    async def handler(http: HTTPRequest):
        state: ServerState = http.app.state.server
        try:
            request, job, events = _prepare(state, kind, protocol.parse_body(await http.body()))
        except APIError as e:
            return _error(e)
        builder = ResponseBuilder(kind, state.model_id, request, state.tokenizer, len(job.prompt))
        state.scheduler.submit(job)
        if request.stream:
            return StreamingResponse(
                _stream(events, http, job, builder),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        poll: dict = {}
        while True:
            event = await _next_event(events, http, job, poll)
            if event is None:
                return JSONResponse({}, status_code=499)
            if event.kind == "error":
                return _error(APIError(event.message, status=503, type="server_error", code="unavailable"))
            builder.add(event)
            if event.kind == "done":
                return JSONResponse(builder.final())

    return handler


async def _stream(events: asyncio.Queue, http: HTTPRequest, job: Job, builder: ResponseBuilder):
    """Server-sent events: `data: {chunk}` per piece of text, then the usage chunk if asked, then [DONE]."""
    finished, poll = False, {}
    try:
        for chunk in builder.opening():
            yield f"data: {json.dumps(chunk)}\n\n"
        while True:
            event = await _next_event(events, http, job, poll)
            if event is None:
                return
            if event.kind == "error":
                body = APIError(event.message, type="server_error", code="unavailable").body()
                yield f"data: {json.dumps(body)}\n\n"
                finished = True
                return
            for chunk in builder.chunks(event):
                yield f"data: {json.dumps(chunk)}\n\n"
            if event.kind == "done":
                finished = True
                yield "data: [DONE]\n\n"
                return
    finally:
        if not finished:
            job.cancelled.set()


async def health(http: HTTPRequest):
    state: ServerState = http.app.state.server
    return JSONResponse({"status": "ok", "model": state.model_id, **state.scheduler.snapshot()})


async def models(http: HTTPRequest):
    state: ServerState = http.app.state.server
    entry = {"id": state.model_id, "object": "model", "created": state.created, "owned_by": "mlx-llama"}
    return JSONResponse({"object": "list", "data": [entry]})


async def _http_error(http: HTTPRequest, exc: HTTPException):
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{http.method} {http.url.path}: " + ("no such endpoint" if exc.status_code == 404 else exc.detail)
    return JSONResponse(APIError(message, code=code, status=exc.status_code).body(), status_code=exc.status_code)


class APIKeyMiddleware:
    """Pure ASGI: with a key set, every /v1/ request needs `Authorization: Bearer <key>` (else 401)."""

    def __init__(self, app, api_key: str | None) -> None:
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send):
        if self.api_key and scope["type"] == "http" and scope["path"].startswith("/v1/"):
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not secrets.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                error = APIError(
                    "Incorrect or missing API key; send 'Authorization: Bearer <key>'.",
                    code="invalid_api_key",
                    status=401,
                )
                await _error(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(state: ServerState, cors_origins: list[str] | None = None) -> Starlette:
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/completions", _endpoint("completion"), methods=["POST"]),
        Route("/v1/chat/completions", _endpoint("chat"), methods=["POST"]),
    ]
    middleware = []
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    middleware.append(Middleware(APIKeyMiddleware, api_key=state.api_key))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: _http_error})
    app.state.server = state
    return app
