"""`create_app`: the FastAPI application of `uprise serve` over one loaded `PromptRetriever`.

Contract: `create_app(retriever, settings, tokenizer=None)` serves
- `POST /v1/retrieve`, `POST /v1/augment`: the Python API's `retrieve_batch` / `augment_batch`
  over HTTP (same options, same prompts and scores; concurrent requests share encoder calls
  through `QueryBatcher`);
- `POST /v1/chat/completions`, `POST /v1/completions` (with `settings.upstream`): the augmenting
  proxy of `serve.api.proxy`; the upstream's status, body and content type come back unchanged
  (server-sent events streamed as they arrive), with the inserted prompt ids in
  `X-Uprise-Prompt-Ids`;
- `GET /healthz` (the process answers), `GET /readyz` (the encoder worker runs: 200, else 503),
  `GET /metrics` (Prometheus), and the generated OpenAPI schema at `/openapi.json` (`/docs`).
Client errors are 4xx with `{"error": {"message", "type", "param"}}` (OpenAI's shape). With
`settings.api_key_env`, `/v1/*` needs `Authorization: Bearer <key>` (401 otherwise); health,
readiness and metrics stay open for probes and scrapers. One JSON log line per request (method,
path, status, milliseconds, query count, prompt ids); query text only with `log_queries`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from serve.api.batcher import QueryBatcher
from serve.api.metrics import ServiceMetrics
from serve.api.proxy import (
    IDS_HEADER,
    Upstream,
    augment_chat,
    augment_completion,
    chat_query,
    completion_queries,
    ids_header,
    proxy_options,
    relay,
    response_headers,
)
from serve.api.schemas import (
    AugmentRequest,
    RequestError,
    RetrieveRequest,
    RetrieveResponse,
    check_limits,
)
from serve.api.settings import LOG_FIELDS, ServeSettings
from serve.context import build_context

log = logging.getLogger(__name__)

ROUTES = ("/v1/retrieve", "/v1/augment", "/v1/chat/completions", "/v1/completions",
          "/healthz", "/readyz", "/metrics")


def create_app(retriever: Any, settings: ServeSettings | None = None,
               tokenizer: Any | None = None) -> FastAPI:
    """The service over `retriever` (a loaded `PromptRetriever`)."""
    settings = settings or ServeSettings()
    metrics = ServiceMetrics(ROUTES)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.batcher = QueryBatcher(retriever, settings.max_batch, metrics.observe_batch)
        app.state.upstream = Upstream(settings) if settings.upstream else None
        if app.state.upstream is not None:
            await app.state.upstream.open()
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.batcher.close, settings.graceful_timeout_s)
            if app.state.upstream is not None:
                await app.state.upstream.aclose()

    app = FastAPI(title="uprise", version="1", lifespan=lifespan,
                  description="Retrieves prompts with a trained UPRISE retriever and augments "
                              "requests to an OpenAI-compatible LLM server.")
    app.add_middleware(ServiceMiddleware, settings=settings, metrics=metrics)
    _add_error_handlers(app)

    async def retrieve_rows(req: RetrieveRequest, request: Request) -> tuple[list, int]:
        k = check_limits(req, settings)
        flt = _filters(retriever, req.filters.as_dict() if req.filters else None)
        rows = await request.app.state.batcher.retrieve(req.texts(), k, flt, req.diversity)
        _log_fields(request, req.texts(), rows, settings)
        return rows, k

    @app.post("/v1/retrieve", response_model=RetrieveResponse, response_model_exclude_none=True)
    async def retrieve(req: RetrieveRequest, request: Request) -> dict[str, Any]:
        """Top-k pool prompts per query, best first (`PromptRetriever.retrieve_batch`)."""
        rows, _ = await retrieve_rows(req, request)
        if req.query is not None:
            return {"prompts": rows[0]}
        return {"results": [{"prompts": r} for r in rows]}

    @app.post("/v1/augment", response_model=RetrieveResponse, response_model_exclude_none=True)
    async def augment(req: AugmentRequest, request: Request) -> dict[str, Any]:
        """Each query preceded by its prompts (`PromptRetriever.augment_batch`)."""
        rows, _ = await retrieve_rows(req, request)
        out = [{"prompts": r, "augmented": build_context(q, r, req.max_tokens,
                                                                      tokenizer)}
               for q, r in zip(req.texts(), rows, strict=True)]
        return out[0] if req.query is not None else {"results": out}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        """OpenAI chat completions, forwarded upstream with prompts for the last user message."""
        body, opts, upstream = await _proxy_request(request, settings)
        found = chat_query(body) if opts.k else None
        hits: list = []
        if found is not None:
            hits = (await _proxy_retrieve(request, retriever, [found[1]], opts))[0]
            body = augment_chat(body, found[0], hits, settings)
        _log_fields(request, [found[1]] if found else [], [hits], settings)
        return await _forward(request, upstream, "chat/completions", body, [hits], metrics)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        """OpenAI (legacy) completions, forwarded upstream with prompts before each prompt."""
        body, opts, upstream = await _proxy_request(request, settings)
        queries = completion_queries(body) if opts.k else None
        rows: list = []
        if queries and all(q.strip() for q in queries):
            rows = await _proxy_retrieve(request, retriever, queries, opts)
            body = augment_completion(body, rows)
        _log_fields(request, queries or [], rows, settings)
        return await _forward(request, upstream, "completions", body, rows, metrics)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        batcher = getattr(request.app.state, "batcher", None)
        if batcher is None or not batcher.alive:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready", "prompts": len(retriever.prompts),
                             "upstream": settings.upstream})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app


def _filters(retriever: Any, filters: dict[str, Any] | None) -> Any:
    try:
        return retriever.check_filters(filters)
    except (TypeError, ValueError) as err:
        raise RequestError(422, str(err), "filters") from None


async def _proxy_request(request: Request, settings: ServeSettings):
    upstream = request.app.state.upstream
    if upstream is None:
        raise RequestError(404, "this service has no upstream LLM; start it with "
                           "`uprise serve --upstream http://HOST:PORT/v1`.", None)
    try:
        body = json.loads(await request.body())
    except ValueError as err:
        raise RequestError(400, f"the request body is not valid JSON: {err}", None) from None
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object.", None)
    return body, proxy_options(body, request.headers, settings), upstream


async def _proxy_retrieve(request: Request, retriever: Any, queries: list[str], opts) -> list:
    flt = _filters(retriever, opts.filters)
    return await request.app.state.batcher.retrieve(queries, opts.k, flt, opts.diversity)


async def _forward(request: Request, upstream: Upstream, path: str, body: dict[str, Any],
                   rows: list, metrics: ServiceMetrics) -> Response:
    try:
        resp = await upstream.send(path, body, request.headers)
    except RequestError as err:
        metrics.upstream_errors.labels(reason=err.kind).inc()
        raise
    headers = {**response_headers(resp), IDS_HEADER: ids_header(rows)}
    if resp.status >= 400:
        metrics.upstream_errors.labels(reason=f"status_{resp.status // 100}xx").inc()
    if not body.get("stream") or resp.status >= 400:
        try:
            content = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            metrics.upstream_errors.labels(reason="upstream_timeout").inc()
            raise RequestError(504, "the upstream stopped answering mid-response "
                               "(--upstream-timeout).", None, "upstream_timeout") from None
        finally:
            resp.release()
        return Response(content, status_code=resp.status, headers=headers)

    def broken(err: Exception) -> None:
        metrics.upstream_errors.labels(reason="stream_interrupted").inc()
        log.warning("upstream stream interrupted: %s: %s", type(err).__name__, err)

    return StreamingResponse(relay(resp, broken), status_code=resp.status, headers=headers)


def _log_fields(request: Request, queries: list[str], rows: list, settings: ServeSettings) -> None:
    fields = {"queries": len(queries), "prompt_ids": [[h.id for h in r] for r in rows]}
    if settings.log_queries:
        fields["query_text"] = queries
    request.state.log_fields = fields


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"][1:]) or "body"
        message = f"{param}: {first['msg']} (got {first.get('input')!r:.80})"
        return JSONResponse(RequestError(422, message, param).body(), status_code=422)


class ServiceMiddleware:
    """Pure ASGI: body-size limit, client API key, metrics and one JSON log line per request."""

    def __init__(self, app: Any, settings: ServeSettings, metrics: ServiceMetrics) -> None:
        self.app, self.settings, self.metrics = app, settings, metrics
        key = settings.client_api_key()
        self.key = key.encode() if key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), [0]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        error = self._refuse(scope["path"], headers)

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                self.metrics.observe_request(scope["path"], status[0], time.perf_counter() - t0)
            await send(message)

        if error is not None:
            await JSONResponse(error.body(), status_code=error.status)(scope, receive, send_wrapper)
        else:
            await self.app(scope, self._limited(receive), send_wrapper)
        self._log(scope, status[0], t0)

    def _refuse(self, path: str, headers: dict[str, str]) -> RequestError | None:
        if self.key is not None and path.startswith("/v1/"):
            auth = headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), self.key):
                return RequestError(401, "missing or wrong API key; send "
                                    "'Authorization: Bearer <key>'.", None, "authentication_error")
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > self.settings.max_body_bytes:
            return RequestError(413, f"request body of {length} bytes; the limit is "
                                f"{self.settings.max_body_bytes} (--max-body-bytes).", None)
        return None

    def _limited(self, receive: Any) -> Any:
        """`receive` that refuses a chunked body growing past the limit (no Content-Length)."""
        seen = [0]

        async def wrapper() -> dict:
            message = await receive()
            seen[0] += len(message.get("body", b""))
            if seen[0] > self.settings.max_body_bytes:
                raise RequestError(413, f"request body over {self.settings.max_body_bytes} "
                                   "bytes (--max-body-bytes).", None)
            return message

        return wrapper

    def _log(self, scope: dict, status: int, t0: float) -> None:
        record = {"method": scope["method"], "path": scope["path"], "status": status,
                  "ms": round(1e3 * (time.perf_counter() - t0), 2),
                  **scope.get("state", {}).get("log_fields", {})}
        log.info("%s %s %d %.1f ms", record["method"], record["path"], status, record["ms"],
                 extra={LOG_FIELDS: record})
