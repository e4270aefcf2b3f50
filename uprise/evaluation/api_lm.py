"""An LM behind an OpenAI-compatible HTTP endpoint, evaluated by generation.

Contract: `ApiLM(base_url, model, ...)` is a `predictors.Predictor`: it sends one request per
query to `{base_url}/chat/completions` (the user message is the context) or
`{base_url}/completions` (the prompt is the context), greedy (`temperature=0`), and returns one
`flan_data.Prediction` per query, in order. The context is `join_context(demonstrations,
input)`; for choice queries a line listing the options is appended and the reply is mapped to
an option by `parse_choice`; a reply that maps to no option is *unparsable*: prediction -1
(wrong), `parsed=False`. Generation queries keep the reply's first non-empty line. Requests use
the standard library (`urllib`), at most `concurrency` at a time, each with a timeout, retried
with exponential backoff on connection errors, timeouts, 429 and 5xx; other HTTP errors fail at
once with the server's text.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from flan_data import answer_budget
from flan_data.errors import CommandError
from flan_data.metrics import normalize_answer
from flan_data.schema import Prediction, Query, join_context
from uprise.evaluation.predictors import OnAnswers

log = logging.getLogger(__name__)
ENDPOINTS = ("chat", "completions")
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def parse_choice(text: str, options: list[str]) -> int | None:
    """The option a free-form reply names, or None.

    In order: normalised exact match; the reply starts with an option (the longest wins) and
    names no other; exactly one option occurs in the reply as whole words; else the option
    sharing the largest fraction of its tokens with the reply (None on a tie or no overlap).
    """
    reply = normalize_answer(text)
    norm = [normalize_answer(o) for o in options]
    if reply in norm:
        return norm.index(reply)
    padded = f" {reply} "
    inside = [i for i, o in enumerate(norm) if o and f" {o} " in padded]
    starts = [i for i in inside if padded.startswith(f" {norm[i]} ")]
    longest = max(starts, key=lambda i: len(norm[i]), default=None)
    if longest is not None and all(norm[i] in norm[longest] for i in inside):
        return longest
    if len(inside) == 1:
        return inside[0]
    words = set(reply.split())
    overlap = [len(words & set(o.split())) / max(1, len(set(o.split()))) for o in norm]
    best = max(overlap, default=0.0)
    if best == 0.0 or overlap.count(best) > 1:
        return None
    return overlap.index(best)


def request_text(query: Query, demonstrations: list[str]) -> str:
    text = join_context(demonstrations, query.input)
    if query.is_choice:
        text += "\n\nAnswer with one of: " + " | ".join(query.options or []) + "."
    return text


class ApiLM:
    """A model served by an OpenAI-compatible endpoint (vLLM, llama.cpp, TGI, OpenAI, ...)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 endpoint: str = "chat", timeout_s: float = 60.0, max_retries: int = 3,
                 concurrency: int = 4, backoff_s: float = 0.5) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"--api-base {base_url!r} is not an http(s) URL; pass e.g. "
                             "http://localhost:8000/v1")
        if endpoint not in ENDPOINTS:
            raise ValueError(f"API endpoint {endpoint!r}; expected one of {ENDPOINTS}")
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError(f"concurrency={concurrency}, max_retries={max_retries}, "
                             f"timeout_s={timeout_s}; expected >=1, >=0 and >0")
        self.base_url, self.model, self.endpoint = base_url.rstrip("/"), model, endpoint
        self.api_key, self.timeout_s, self.max_retries = api_key, timeout_s, max_retries
        self.concurrency, self.backoff_s = concurrency, backoff_s

    @property
    def name(self) -> str:
        return f"api:{self.model}@{self.base_url}"

    @property
    def cache_identity(self) -> dict[str, str]:
        """What names this model's answers in the prediction cache (`prediction_cache`)."""
        return {"model": self.model, "base_url": self.base_url, "endpoint": self.endpoint}

    def _payload(self, text: str, max_new_tokens: int) -> dict:
        body: dict = {"model": self.model, "max_tokens": max_new_tokens, "temperature": 0.0}
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = text
        return body

    def _post(self, body: dict) -> dict:
        url = f"{self.base_url}/{'chat/completions' if self.endpoint == 'chat' else 'completions'}"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read().decode())
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")[:300]
                if err.code not in RETRY_STATUS or attempt == self.max_retries:
                    raise CommandError(f"{url} answered HTTP {err.code}: {detail}. Check "
                                       "--api-base, --api-model and the API key.") from err
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if attempt == self.max_retries:
                    raise CommandError(f"{url} unreachable after {attempt + 1} tries: {err}. "
                                       "Is the server running at --api-base?") from err
            log.warning("retrying %s (attempt %d of %d)", url, attempt + 2, self.max_retries + 1)
            time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def complete(self, text: str, max_new_tokens: int = 32) -> str:
        """One greedy completion of `text` (the reply's text, unstripped)."""
        reply = self._post(self._payload(text, max_new_tokens))
        try:
            choice = reply["choices"][0]
            return choice["message"]["content"] if self.endpoint == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError) as err:
            raise CommandError(f"{self.base_url}: unexpected reply shape {str(reply)[:200]}; "
                               f"expected an OpenAI {self.endpoint} response") from err

    def _predict_one(self, query: Query, demos: list[str],
                     max_new_tokens: int | None) -> Prediction:
        budget = max_new_tokens or answer_budget(query.task)
        text = self.complete(request_text(query, demos), budget) or ""
        if not query.is_choice:
            line = text.lstrip().split("\n", 1)[0].strip()
            return Prediction(query.id, line, line, None)
        picked = parse_choice(text, list(query.options or []))
        if picked is None:
            return Prediction(query.id, -1, text, False, parsed=False)
        return Prediction(query.id, picked, text, picked == query.gold)

    def predict(self, queries: list[Query], demonstrations: list[list[str]],
                batch_size: int = 16, max_new_tokens: int | None = None,
                progress: bool = True, on_answers: OnAnswers | None = None
                ) -> list[Prediction]:
        """One prediction per query, in order (`batch_size` is unused: see `concurrency`);
        `on_answers` gets each reply as soon as it and every earlier one have arrived."""
        if len(queries) != len(demonstrations):
            raise ValueError(f"got {len(queries)} queries but {len(demonstrations)} "
                             "demonstration lists; pass one list per query")
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            jobs = pool.map(lambda qd: self._predict_one(qd[0], qd[1], max_new_tokens),
                            zip(queries, demonstrations, strict=True))
            if progress:
                from tqdm.auto import tqdm

                jobs = tqdm(jobs, total=len(queries), desc=f"querying {self.model}")
            answers = []
            for i, answer in enumerate(jobs):
                answers.append(answer)
                if on_answers is not None:
                    on_answers([i], [answer])
            return answers
