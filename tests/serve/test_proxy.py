"""The OpenAI-compatible augmenting proxy between a client and a real local upstream server."""

from __future__ import annotations

import httpx
import pytest

from serve.api import ServeSettings, create_app
from serve.context import build_context
from tests.serve.live_server import RELEASE, events, free_port, serving, upstream_app

QUERY = "Premise: the cat sat on the mat. Hypothesis: an animal sat. Answer:"


@pytest.fixture(scope="module")
def upstream():
    with serving(upstream_app()) as url:
        yield url + "/v1"


def proxy(prompt_retriever, upstream_url, **kwargs):
    return serving(create_app(prompt_retriever, ServeSettings(upstream=upstream_url, **kwargs)))


@pytest.fixture(scope="module")
def service(prompt_retriever, upstream):
    with proxy(prompt_retriever, upstream, upstream_timeout_s=2) as url:
        yield url


def chat(query: str = QUERY, **extra) -> dict:
    return {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "assistant", "content": "Hi."},
                                       {"role": "user", "content": query}], **extra}


def test_chat_is_augmented_like_the_python_api(service, prompt_retriever):
    resp = httpx.post(f"{service}/v1/chat/completions", json=chat(uprise={"k": 2}),
                      headers={"authorization": "Bearer client-key"})
    assert resp.status_code == 200
    sent = resp.json()["echo"]
    hits = prompt_retriever.retrieve(QUERY, k=2)
    assert sent["body"]["messages"][-1]["content"] == prompt_retriever.augment(QUERY, k=2)
    assert sent["body"]["messages"][:2] == chat()["messages"][:2]
    assert "uprise" not in sent["body"]  # the extra field never reaches the upstream
    assert sent["authorization"] == "Bearer client-key"  # passed through: no client key set
    assert resp.headers["x-uprise-prompt-ids"] == ",".join(h.id for h in hits)


def test_opt_out_and_header_k(service):
    off = httpx.post(f"{service}/v1/chat/completions", json=chat(uprise={"k": 0})).json()
    assert off["echo"]["body"] == chat()
    one = httpx.post(f"{service}/v1/chat/completions", json=chat(), headers={"X-Uprise-K": "1"})
    assert len(one.headers["x-uprise-prompt-ids"].split(",")) == 1


def test_list_content_and_system_insertion(prompt_retriever, upstream):
    parts = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": QUERY}, {"type": "image_url", "image_url": {"url": "x"}}]}]}
    hits = prompt_retriever.retrieve(QUERY, k=3)
    with proxy(prompt_retriever, upstream) as url:
        sent = httpx.post(f"{url}/v1/chat/completions", json=parts).json()["echo"]["body"]
    content = sent["messages"][0]["content"]
    assert content[1:] == parts["messages"][0]["content"]
    assert build_context("", hits).rstrip() == content[0]["text"].rstrip()
    with proxy(prompt_retriever, upstream, insert="system",
               system_template="Examples:\n{prompts}") as url:
        sent = httpx.post(f"{url}/v1/chat/completions", json=chat()).json()["echo"]["body"]
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "system", "assistant", "user"]
    assert sent["messages"][1]["content"] == "Examples:\n" + build_context("", hits).rstrip()
    assert sent["messages"][-1]["content"] == QUERY


def test_completions_text_lists_and_token_ids(service, prompt_retriever):
    body = {"model": "m", "prompt": [QUERY, "Review: dull. Sentiment:"], "uprise": {"k": 1}}
    resp = httpx.post(f"{service}/v1/completions", json=body)
    assert resp.json()["echo"]["body"]["prompt"] == prompt_retriever.augment_batch(
        body["prompt"], 1)
    assert resp.headers["x-uprise-prompt-ids"].count(";") == 1
    tokens = {"model": "m", "prompt": [1, 2, 3]}
    assert httpx.post(f"{service}/v1/completions", json=tokens).json()["echo"]["body"] == tokens


def test_streaming_is_relayed_as_it_arrives(service):
    RELEASE.clear()
    body = chat(model="slow-stream", stream=True)
    with httpx.stream("POST", f"{service}/v1/chat/completions", json=body) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-uprise-prompt-ids"]
        chunks = resp.iter_raw()
        first = next(chunks)
        RELEASE.set()  # the upstream sends the rest only now: the first event came through alone
        rest = b"".join(chunks)
    assert first + rest == b"".join(events(body))


def test_upstream_failures_become_proper_errors(service, prompt_retriever, upstream):
    failed = httpx.post(f"{service}/v1/chat/completions", json=chat(model="fail"))
    assert failed.status_code == 500 and failed.json() == {"error": {"message": "upstream broke"}}
    hung = httpx.post(f"{service}/v1/chat/completions", json=chat(model="hang"), timeout=30)
    assert hung.status_code == 504 and hung.json()["error"]["type"] == "upstream_timeout"
    with proxy(prompt_retriever, f"http://127.0.0.1:{free_port()}/v1") as url:
        gone = httpx.post(f"{url}/v1/chat/completions", json=chat())
    assert gone.status_code == 502 and gone.json()["error"]["type"] == "upstream_error"
    metrics = httpx.get(f"{service}/metrics").text
    assert 'uprise_upstream_errors_total{reason="upstream_timeout"}' in metrics
    assert 'uprise_upstream_errors_total{reason="status_5xx"}' in metrics


@pytest.mark.parametrize("body,headers,param", [
    (chat(uprise={"k": 99}), {}, "uprise.k"),
    (chat(uprise={"kk": 1}), {}, "uprise"),
    (chat(uprise={"filters": {"cluster": ["nope"]}}), {}, "filters"),
    (chat(), {"X-Uprise-K": "many"}, "X-Uprise-K"),
    ({"model": "m", "messages": "hello"}, {}, "messages"),
])
def test_bad_proxy_requests_get_a_4xx(service, body, headers, param):
    resp = httpx.post(f"{service}/v1/chat/completions", json=body, headers=headers)
    assert resp.status_code == 422 and resp.json()["error"]["param"] == param


def test_without_upstream_the_proxy_routes_say_how_to_enable_them(prompt_retriever):
    with serving(create_app(prompt_retriever)) as url:
        resp = httpx.post(f"{url}/v1/chat/completions", json=chat())
    assert resp.status_code == 404 and "--upstream" in resp.json()["error"]["message"]


def test_upstream_key_replaces_the_client_key(prompt_retriever, upstream, monkeypatch):
    monkeypatch.setenv("TEST_CLIENT_KEY", "mine")
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "theirs")
    with proxy(prompt_retriever, upstream, api_key_env="TEST_CLIENT_KEY",
               upstream_api_key_env="TEST_UPSTREAM_KEY") as url:
        resp = httpx.post(f"{url}/v1/chat/completions", json=chat(),
                          headers={"authorization": "Bearer mine"})
    assert resp.json()["echo"]["authorization"] == "Bearer theirs"
