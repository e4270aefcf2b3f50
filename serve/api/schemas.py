"""Request and response bodies of `/v1/retrieve` and `/v1/augment`, and the proxy's options.

Contract: a request names exactly one of `query` (one text) or `queries` (a list); `k`, `filters`
and `diversity` mean what they mean in `PromptRetriever.retrieve` (`filters` keys: task, cluster,
exclude_task, exclude_cluster); `/v1/augment` adds `max_tokens`, counted with the tokenizer the
service was started with (`--tokenizer`, the target LM's; whitespace words without one).
Limits that depend on the service's settings (k, number and length of queries) are checked by
`check_limits`, which raises `RequestError` (a 4xx with one message naming the field).
The proxy reads its per-request options from the body's extra `uprise` object
(`{"k": 0}` turns retrieval off) or the `X-Uprise-K` header (`ProxyOptions`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from serve.api.settings import ServeSettings
from serve.prompt_retriever import RetrievedPrompt


class RequestError(Exception):
    """A client error: HTTP `status` with a one-line `message` naming the field (`param`)."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param}}


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: list[StrictStr] | StrictStr | None = None
    cluster: list[StrictStr] | StrictStr | None = None
    exclude_task: list[StrictStr] | StrictStr | None = None
    exclude_cluster: list[StrictStr] | StrictStr | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: StrictStr | None = Field(None, description="one task input")
    queries: list[StrictStr] | None = Field(None, description="several task inputs, batched")
    k: StrictInt | None = Field(None, description="prompts per query (default: the service's)")
    filters: Filters | None = None
    diversity: StrictFloat | StrictInt = Field(0.0, description="MMR weight in [0, 1]")

    def texts(self) -> list[str]:
        return [self.query] if self.query is not None else list(self.queries or [])


class AugmentRequest(RetrieveRequest):
    max_tokens: StrictInt | None = Field(None, description="budget of the augmented input")


class QueryResult(BaseModel):
    prompts: list[RetrievedPrompt]
    augmented: str | None = None


class RetrieveResponse(BaseModel):
    """`query` requests get `prompts` (and `augmented`); `queries` requests get `results`."""

    prompts: list[RetrievedPrompt] | None = None
    augmented: str | None = None
    results: list[QueryResult] | None = None


def check_limits(req: RetrieveRequest, settings: ServeSettings) -> int:
    """Checks the request against the service's limits; returns the k to use."""
    if (req.query is None) == (req.queries is None):
        raise RequestError(422, "give exactly one of 'query' (a string) or 'queries' (a list of "
                           "strings).", "query")
    texts = req.texts()
    if not texts:
        raise RequestError(422, "'queries' is empty; send at least one query.", "queries")
    if len(texts) > settings.max_queries:
        raise RequestError(413, f"{len(texts)} queries in one request; the limit is "
                           f"{settings.max_queries}: split the batch.", "queries")
    for i, text in enumerate(texts):
        where = "query" if req.query is not None else f"queries[{i}]"
        if not text.strip():
            raise RequestError(422, f"{where} is empty or whitespace; send the task input.", where)
        if len(text) > settings.max_query_chars:
            raise RequestError(413, f"{where} has {len(text)} characters; the limit is "
                               f"{settings.max_query_chars}.", where)
    k = settings.default_k if req.k is None else req.k
    check_k(k, settings, "k")
    check_diversity(req.diversity, "diversity")
    if isinstance(req, AugmentRequest) and req.max_tokens is not None and req.max_tokens < 1:
        raise RequestError(422, f"max_tokens={req.max_tokens}; expected a positive integer.",
                           "max_tokens")
    return k


def check_k(k: Any, settings: ServeSettings, param: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= settings.max_k:
        raise RequestError(422, f"{param}={k!r}; expected an integer from 1 to "
                           f"{settings.max_k} (the service's --max-k).", param)


def check_diversity(value: Any, param: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise RequestError(422, f"{param}={value!r}; expected a number in [0, 1].", param)
