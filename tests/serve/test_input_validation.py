"""Inputs are checked where they enter: `PromptRetriever` refuses empty and non-string queries by
position; the demo's API endpoint names a bad k, diversity or filter in a Gradio error (a task
given as a string is one task, not its characters); the launched demo caps uploads."""

from __future__ import annotations

import pytest

from serve.demo import DemoInputError, parse_api_inputs, ui_filters
from tests.serve.live_server import launched

QUERY = "Premise: the cat sat on the mat. Hypothesis: an animal sat."


@pytest.mark.parametrize(("queries", "message"), [
    (["a real query", ""], "query 1 is ''"),
    (["   \n"], r"query 0 is '   \\n', empty or whitespace only"),
    (["fine", None], "query 1 is a NoneType"),
    ([3], "query 0 is a int"),
])
def test_retrieve_batch_refuses_empty_and_non_string_queries(prompt_retriever, queries, message):
    with pytest.raises(ValueError, match=message):
        prompt_retriever.retrieve_batch(queries, k=2)


def test_retrieve_refuses_an_empty_query(prompt_retriever):
    with pytest.raises(ValueError, match="query 0 is ''"):
        prompt_retriever.retrieve("", k=2)
    assert prompt_retriever.retrieve(QUERY, k=2)


@pytest.mark.parametrize(("raw", "message"), [
    ((QUERY, "abc", None, None, None, 0.0), "k: got 'abc'; expected a whole number"),
    ((QUERY, 2.5, None, None, None, 0.0), "k: got 2.5"),
    ((QUERY, 0, None, None, None, 0.0), "k: got 0"),
    ((QUERY, True, None, None, None, 0.0), "k: got True"),
    ((QUERY, 3, None, None, None, "x"), "diversity: got 'x'"),
    ((QUERY, 3, None, None, None, 1.5), "diversity: got 1.5"),
    ((QUERY, 3, 5, None, None, 0.0), "task: got 5"),
    ((QUERY, 3, None, ["nli", 2], None, 0.0), "cluster: got"),
    ((["not", "text"], 3, None, None, None, 0.0), "query: got a list"),
])
def test_api_inputs_are_checked(raw, message):
    with pytest.raises(DemoInputError, match=message):
        parse_api_inputs(*raw)


def test_a_task_given_as_a_string_is_one_task():
    assert ui_filters("rte", None, "piqa").task == ("rte",)
    assert ui_filters("rte", None, "piqa").exclude_task == ("piqa",)
    query, k, flt, diversity = parse_api_inputs(QUERY, 2.0, "rte", [], None, 0)
    assert (query, k, flt.task, diversity) == (QUERY, 2, ("rte",), 0.0)


@pytest.fixture
def demo_url(prompt_retriever):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install uprise[demo])")
    from serve import build_demo

    with launched(build_demo(prompt_retriever)) as url:
        yield url


def test_the_api_endpoint_names_a_bad_k_and_keeps_a_string_task_whole(demo_url):
    from gradio_client import Client

    client = Client(demo_url, verbose=False)
    with pytest.raises(Exception, match="k: got 'abc'; expected a whole number"):
        client.predict(QUERY, "abc", [], [], [], 0.0, api_name="/retrieve")
    table, _ = client.predict(QUERY, 3, "rte", [], [], 0.0, api_name="/retrieve")
    rows = table["data"] if isinstance(table, dict) else table
    assert rows and {row[2] for row in rows} == {"rte"}


def test_launch_caps_uploads(retriever_dir, monkeypatch):
    gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install uprise[demo])")
    from serve.demo import MAX_FILE_SIZE, launch_demo

    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    launch_demo(retriever_dir, port=7999)
    assert seen["max_file_size"] == MAX_FILE_SIZE == "1kb"
    assert seen["server_name"] == "127.0.0.1" and seen["server_port"] == 7999
