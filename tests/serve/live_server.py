"""Real uvicorn servers on loopback for the HTTP tests: `serving(app)` and a local upstream.

`serving(app)` runs an ASGI app with uvicorn in a background thread on a free 127.0.0.1 port and
yields its base URL; leaving the block shuts it down as a signal would (lifespan included).
`launched(demo)` does the same for a Gradio demo.
`upstream_app()` is a small real OpenAI-compatible server: it echoes what it received (body and
Authorization) as a chat or text completion, streams server-sent events when asked, and behaves
badly on demand by model name: "fail" answers 500, "hang" never answers, "slow-stream" sends one
event and then waits for `RELEASE` before the rest.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

RELEASE = threading.Event()
"""Set by a test once it has read the first event of a "slow-stream" response through the proxy."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(app, timeout_s: float = 30.0) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)


@contextmanager
def launched(demo) -> Iterator[str]:
    """A Gradio `demo` served on a free 127.0.0.1 port; yields its URL, closes it after."""
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def events(body: dict) -> list[bytes]:
    """The SSE chunks the upstream streams for `body` (also what the proxy must relay)."""
    words = ["Hello", " from", " upstream"]
    out = [f"data: {json.dumps({'choices': [{'delta': {'content': w}}]})}\n\n".encode()
           for w in words]
    return [*out, b"data: [DONE]\n\n"]


def upstream_app() -> FastAPI:
    app = FastAPI()

    async def answer(request: Request, kind: str):
        body = await request.json()
        model = body.get("model")
        if model == "hang":
            await asyncio.sleep(3600)
        if model == "fail":
            return JSONResponse({"error": {"message": "upstream broke"}}, status_code=500)
        if body.get("stream"):
            return StreamingResponse(stream(body), media_type="text/event-stream")
        return {"object": kind, "choices": [{"text": "ok"}],
                "echo": {"body": body, "authorization": request.headers.get("authorization")}}

    async def stream(body: dict):
        chunks = events(body)
        yield chunks[0]
        if body.get("model") == "slow-stream":
            for _ in range(1000):  # up to 10 s for the test to read the first event
                if RELEASE.is_set():
                    break
                await asyncio.sleep(0.01)
            else:
                yield b"data: NOT-RELEASED\n\n"
        for chunk in chunks[1:]:
            yield chunk

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await answer(request, "chat.completion")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer(request, "text_completion")

    return app
