"""`uprise serve`'s retrieval API over a real uvicorn server: equal to the Python API, batched,
limited, authenticated, observable."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from serve.api import QueryBatcher, ServeSettings, create_app
from tests.serve.live_server import serving

QUERIES = ["Premise: the cat sat on the mat. Hypothesis: an animal sat.",
           "Review: a moving film. Positive or negative?",
           "Write a sentence with the words fox, jump, dog."]


@pytest.fixture(scope="module")
def api(prompt_retriever):
    with serving(create_app(prompt_retriever, ServeSettings(max_k=5, max_queries=4,
                                                            max_body_bytes=4096))) as url:
        yield url


def ids_scores(rows):
    return [[(p["id"], round(p["score"], 4)) for p in row] for row in rows]


def expected(hits_rows):
    return [[(h.id, round(h.score, 4)) for h in row] for row in hits_rows]


def test_retrieve_equals_the_python_api(api, prompt_retriever):
    filters = {"exclude_cluster": ["nli"]}
    one = httpx.post(f"{api}/v1/retrieve", json={"query": QUERIES[0], "k": 2}).json()
    many = httpx.post(f"{api}/v1/retrieve", json={"queries": QUERIES, "k": 3, "filters": filters,
                                                   "diversity": 0.3}).json()
    assert ids_scores([one["prompts"]]) == expected([prompt_retriever.retrieve(QUERIES[0], 2)])
    assert ids_scores([r["prompts"] for r in many["results"]]) == expected(
        prompt_retriever.retrieve_batch(QUERIES, 3, filters=filters, diversity=0.3))
    assert set(one["prompts"][0]) == {"id", "text", "task", "cluster", "score", "rank"}


def test_augment_equals_the_python_api(api, prompt_retriever):
    one = httpx.post(f"{api}/v1/augment", json={"query": QUERIES[1], "k": 2}).json()
    many = httpx.post(f"{api}/v1/augment", json={"queries": QUERIES, "max_tokens": 30}).json()
    assert one["augmented"] == prompt_retriever.augment(QUERIES[1], k=2)
    assert [r["augmented"] for r in many["results"]] == prompt_retriever.augment_batch(
        QUERIES, 3, max_tokens=30)


@pytest.mark.parametrize("body,status,param", [
    ({"query": QUERIES[0], "k": 0}, 422, "k"),
    ({"query": QUERIES[0], "k": 6}, 422, "k"),
    ({"query": QUERIES[0], "k": "abc"}, 422, "k"),
    ({"query": QUERIES[0], "k": True}, 422, "k"),
    ({}, 422, "query"),
    ({"query": "a", "queries": ["b"]}, 422, "query"),
    ({"query": "   "}, 422, "query"),
    ({"queries": ["fine", ""]}, 422, "queries[1]"),
    ({"queries": []}, 422, "queries"),
    ({"queries": ["q"] * 5}, 413, "queries"),
    ({"query": "q", "diversity": 2}, 422, "diversity"),
    ({"query": "q", "filters": {"cluster": ["no_such_cluster"]}}, 422, "filters"),
    ({"query": "q", "filters": {"clusters": ["nli"]}}, 422, "filters.clusters"),
    ({"query": "q", "task": "sst2"}, 422, "task"),
    ({"query": ["not", "a", "string"]}, 422, "query"),
])
def test_bad_requests_get_a_4xx_naming_the_field(api, body, status, param):
    resp = httpx.post(f"{api}/v1/retrieve", json=body)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]


def test_malformed_and_oversized_bodies(api):
    resp = httpx.post(f"{api}/v1/retrieve", content=b"{not json",
                      headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["error"]["message"]
    resp = httpx.post(f"{api}/v1/retrieve", json={"query": "x" * 5000})
    assert resp.status_code == 413 and "--max-body-bytes" in resp.json()["error"]["message"]


def test_health_readiness_openapi_and_metrics(api):
    assert httpx.get(f"{api}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{api}/readyz")
    assert ready.status_code == 200 and ready.json()["prompts"] == 8
    paths = httpx.get(f"{api}/openapi.json").json()["paths"]
    assert {"/v1/retrieve", "/v1/augment", "/v1/chat/completions"} <= set(paths)
    httpx.post(f"{api}/v1/retrieve", json={"query": QUERIES[0]})
    httpx.post(f"{api}/v1/retrieve", json={"query": QUERIES[0], "k": 0})
    httpx.get(f"{api}/no/such/path")
    text = httpx.get(f"{api}/metrics").text
    assert 'uprise_requests_total{route="/v1/retrieve",status="200"}' in text
    assert 'uprise_requests_total{route="/v1/retrieve",status="422"}' in text
    assert 'uprise_requests_total{route="other",status="404"}' in text
    assert "uprise_encoder_batch_queries_count" in text
    assert "uprise_request_duration_seconds_bucket" in text


def test_api_key_guards_v1_only(prompt_retriever, monkeypatch):
    monkeypatch.setenv("TEST_UPRISE_KEY", "s3cret")
    app = create_app(prompt_retriever, ServeSettings(api_key_env="TEST_UPRISE_KEY"))
    with serving(app) as url:
        body = {"query": QUERIES[0]}
        assert httpx.post(f"{url}/v1/retrieve", json=body).status_code == 401
        wrong = {"authorization": "Bearer nope"}
        assert httpx.post(f"{url}/v1/retrieve", json=body, headers=wrong).status_code == 401
        right = {"authorization": "Bearer s3cret"}
        assert httpx.post(f"{url}/v1/retrieve", json=body, headers=right).status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_settings_refuse_bad_values(monkeypatch):
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    for kwargs, message in [({"port": 99999}, "port=99999"), ({"max_k": 0}, "max_k=0"),
                            ({"upstream": "ftp://x"}, "upstream="), ({"insert": "end"}, "insert"),
                            ({"system_template": "no slot"}, "{prompts}"),
                            ({"api_key_env": "UNSET_KEY_VAR"}, "UNSET_KEY_VAR"),
                            ({"upstream_timeout_s": 0}, "upstream_timeout_s"),
                            ({"default_k": 9, "max_k": 4}, "default_k=9")]:
        with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
            ServeSettings(**kwargs)


class GatedRetriever:
    """The real retriever, with its first encoder call held until `gate` opens (so the test
    knows every job is queued) and every call's batch size recorded."""

    def __init__(self, retriever) -> None:
        self.retriever, self.gate, self.calls = retriever, threading.Event(), []

    def encode_queries(self, queries):
        self.gate.wait(30)
        self.calls.append(len(queries))
        return self.retriever.encode_queries(queries)

    def search_embeddings(self, *args):
        return self.retriever.search_embeddings(*args)


def test_batcher_serves_concurrent_jobs_in_one_encoder_call(prompt_retriever):
    gated = GatedRetriever(prompt_retriever)
    batcher = QueryBatcher(gated, max_batch=64)
    flt = prompt_retriever.check_filters({"cluster": ["nli", "sentiment"]})
    jobs = [([QUERIES[0]], 2, None, 0.0), ([QUERIES[1], QUERIES[2]], 3, flt, 0.0),
            ([QUERIES[2]], 2, None, 0.0), ([QUERIES[0]], 4, None, 0.5)]

    async def run():
        tasks = [asyncio.create_task(batcher.retrieve(*job)) for job in jobs]
        await asyncio.sleep(0.2)  # the first job is in the worker, the rest in its queue
        gated.gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(run())
    batcher.close()
    for (queries, k, f, diversity), rows in zip(jobs, results, strict=True):
        want = prompt_retriever.retrieve_batch(queries, k, filters=f, diversity=diversity)
        assert expected(rows) == expected(want)
    assert sum(gated.calls) == 5 and len(gated.calls) <= 2  # the first job, then the rest at once
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(batcher.retrieve(["late"], 1))
