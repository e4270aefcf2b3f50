"""The OpenAI-compatible augmenting proxy: what it reads from a request, how it inserts prompts,
and how it forwards to the upstream server.

Contract:
- `proxy_options(body, headers, settings)` removes the extra `uprise` object from the body (so
  the upstream never sees it) and returns the request's k (0 = no retrieval), filters and
  diversity; `X-Uprise-K` sets k when the body does not.
- Chat: the query is the text of the last `user` message (a string, or the `text` parts of a
  list). `augment_chat` inserts the retrieved prompts where `settings.insert` says: `user`
  (default) puts them before that message's text exactly as `PromptRetriever.augment` does (best
  prompt last, nearest the input; a list content gets them as a first text part); `system` adds
  one system message after the leading system messages, `settings.system_template` with
  `{prompts}` replaced by the prompts (best last). Completions: each text `prompt` is augmented
  like `augment` (token-id prompts are forwarded unchanged).
- `Upstream.send` forwards the JSON body to `<upstream>/<path>` and returns the upstream's
  response unread (streaming or not); the caller passes status, body and content type back
  unchanged. A timeout becomes `RequestError` 504, an unreachable upstream 502. Authorization:
  the configured upstream key if there is one; otherwise the client's own `Authorization` header
  when the service itself has no client key (a pass-through proxy), else none.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from flan_data.schema import SEP
from serve.api.schemas import RequestError, check_diversity, check_k
from serve.api.settings import ServeSettings
from serve.context import build_context

OPTION_KEYS = ("k", "filters", "diversity")
K_HEADER = "x-uprise-k"
IDS_HEADER = "X-Uprise-Prompt-Ids"
FORWARDED_HEADERS = ("accept", "openai-organization", "openai-project")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length",
              "content-encoding", "te", "trailer", "upgrade", "proxy-authenticate"}


@dataclass(frozen=True)
class ProxyOptions:
    k: int  # 0 = forward without retrieval
    filters: dict[str, Any] | None
    diversity: float


def proxy_options(body: dict[str, Any], headers: Mapping[str, str],
                  settings: ServeSettings) -> ProxyOptions:
    extra = body.pop("uprise", None) or {}
    if not isinstance(extra, dict):
        raise RequestError(422, f"uprise={extra!r}; expected an object such as "
                           '{"k": 2, "filters": {"cluster": ["nli"]}}.', "uprise")
    unknown = sorted(set(extra) - set(OPTION_KEYS))
    if unknown:
        raise RequestError(422, f"unknown uprise option(s) {unknown}; expected some of "
                           f"{list(OPTION_KEYS)}.", "uprise")
    k = extra.get("k")
    if k is None and K_HEADER in headers:
        try:
            k = int(headers[K_HEADER])
        except ValueError:
            raise RequestError(422, f"header X-Uprise-K={headers[K_HEADER]!r}; expected an "
                               "integer (0 turns retrieval off).", "X-Uprise-K") from None
    k = settings.default_k if k is None else k
    if k != 0:
        check_k(k, settings, "uprise.k")
    diversity = extra.get("diversity", 0.0)
    check_diversity(diversity, "uprise.diversity")
    filters = extra.get("filters")
    if filters is not None and not isinstance(filters, dict):
        raise RequestError(422, f"uprise.filters={filters!r}; expected an object such as "
                           '{"cluster": ["nli"]}.', "uprise.filters")
    return ProxyOptions(int(k), filters, float(diversity))


def chat_query(body: dict[str, Any]) -> tuple[int, str] | None:
    """(index, text) of the last user message, or None when there is no user text."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(422, "'messages' must be a non-empty list of chat messages.",
                           "messages")
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if isinstance(msg, dict) and msg.get("role") == "user":
            text = _content_text(msg.get("content"))
            return (i, text) if text.strip() else None
    return None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content
                         if isinstance(part, dict) and part.get("type") == "text")
    return ""


def augment_chat(body: dict[str, Any], index: int, hits: list[Any],
                 settings: ServeSettings) -> dict[str, Any]:
    """A copy of `body` with `hits` inserted for the user message at `index`."""
    body = copy.deepcopy(body)
    messages = body["messages"]
    prompts = [h.text for h in sorted(hits, key=lambda h: h.rank, reverse=True)]  # best last
    if settings.insert == "system":
        text = settings.system_template.replace("{prompts}", SEP.join(prompts))
        at = next((i for i, m in enumerate(messages)
                   if not (isinstance(m, dict) and m.get("role") == "system")), len(messages))
        messages.insert(at, {"role": "system", "content": text})
        return body
    msg = messages[index]
    if isinstance(msg["content"], str):
        msg["content"] = build_context(msg["content"], hits)
    else:
        msg["content"] = [{"type": "text", "text": SEP.join([*prompts, ""])}, *msg["content"]]
    return body


def completion_queries(body: dict[str, Any]) -> list[str] | None:
    """The text prompts of a completions request, or None for token-id prompts."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    return None


def augment_completion(body: dict[str, Any], hits: list[list[Any]]) -> dict[str, Any]:
    body = dict(body)
    texts = [build_context(q, h) for q, h in zip(completion_queries(body), hits, strict=True)]
    body["prompt"] = texts[0] if isinstance(body["prompt"], str) else texts
    return body


def ids_header(hits: list[list[Any]]) -> str:
    """Prompt ids per query, best first: ids joined by ',', queries by ';'."""
    return ";".join(",".join(h.id for h in row) for row in hits)


class Upstream:
    """An HTTP client of the upstream OpenAI-compatible server (aiohttp: about 0.5 ms of CPU per
    forwarded request on the 2-core bench machine, against 4.6 ms for httpx's async client).
    `open()` runs inside the service's event loop, `aclose()` at shutdown."""

    def __init__(self, settings: ServeSettings) -> None:
        assert settings.upstream is not None
        self.base_url = settings.upstream.rstrip("/") + "/"
        self.timeout_s = settings.upstream_timeout_s
        self.api_key = settings.upstream_api_key()
        self.pass_client_auth = settings.client_api_key() is None
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=min(10.0, self.timeout_s),
                                        sock_read=self.timeout_s)
        self.session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False,
                                             connector=aiohttp.TCPConnector(limit=256))

    def headers(self, client_headers: Mapping[str, str]) -> dict[str, str]:
        out = {"content-type": "application/json", "accept-encoding": "identity"}
        out.update({h: client_headers[h] for h in FORWARDED_HEADERS if h in client_headers})
        if self.api_key:
            out["authorization"] = f"Bearer {self.api_key}"
        elif self.pass_client_auth and "authorization" in client_headers:
            out["authorization"] = client_headers["authorization"]
        return out

    async def send(self, path: str, body: dict[str, Any],
                   client_headers: Mapping[str, str]) -> aiohttp.ClientResponse:
        """The upstream's response, headers read, body not yet (release it when done)."""
        assert self.session is not None, "Upstream.open() was not called"
        try:
            return await self.session.post(self.base_url + path.lstrip("/"),
                                           data=json.dumps(body).encode(),
                                           headers=self.headers(client_headers))
        except asyncio.TimeoutError:
            raise RequestError(504, f"the upstream {self.base_url} did not answer within "
                               f"{self.timeout_s:g} s (--upstream-timeout).", None,
                               "upstream_timeout") from None
        except aiohttp.ClientError as err:
            raise RequestError(502, f"the upstream {self.base_url} is unreachable: "
                               f"{type(err).__name__}: {err}", None, "upstream_error") from None

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


def response_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}


async def relay(upstream: aiohttp.ClientResponse, on_error) -> AsyncIterator[bytes]:
    """The upstream's body bytes as they arrive; a failure mid-stream ends the stream."""
    try:
        async for chunk in upstream.content.iter_any():
            yield chunk
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:
        on_error(err)
    finally:
        upstream.release()
