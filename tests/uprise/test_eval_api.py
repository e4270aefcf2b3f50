"""The OpenAI-compatible endpoint path against a real local HTTP server started by the test.

The server implements /v1/chat/completions and /v1/completions and answers deterministically
from its input: with demonstrations, it copies the answer (last word) of the demonstration
nearest the query; without, it says it is not sure (an unparsable reply for choice tasks).
Its first request fails with 503, to exercise the client's retries.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flan_data import Prediction, Query, build_stage_data, write_stage_data
from uprise.evaluation.api_lm import ApiLM, parse_choice
from uprise.evaluation_cli import eval_main


def answer(text: str) -> str:
    paragraphs = text.split("\n\n")
    if paragraphs[-1].startswith("Answer with one of:"):
        paragraphs = paragraphs[:-1]
    demos = paragraphs[:-1]
    if not demos:
        return "I am not sure."
    return f"The answer is {demos[-1].split()[-1]}.\nAnything else?"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        state = self.server.state
        with state["lock"]:
            state["requests"] += 1
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
            first = state["requests"] == 1
            state["auth"].add(self.headers.get("Authorization"))
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state["lock"]:
                state["max_tokens"].append(body.get("max_tokens"))
            time.sleep(0.005)  # lets concurrent requests overlap
            status, payload = self._reply(body, first)
        finally:  # before the reply leaves: once the client has it, its next request may come
            with state["lock"]:
                state["in_flight"] -= 1
        self._send(status, payload)

    def _reply(self, body: dict, first: bool) -> tuple[int, dict]:
        if first:
            return 503, {"error": "warming up"}
        if self.path == "/v1/chat/completions":
            text = answer(body["messages"][-1]["content"])
            return 200, {"choices": [{"message": {"content": text}}]}
        if self.path == "/v1/completions":
            return 200, {"choices": [{"text": answer(body["prompt"])}]}
        return 404, {"error": f"no route {self.path}"}

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = {"lock": threading.Lock(), "requests": 0, "in_flight": 0,
                   "max_in_flight": 0, "auth": set(), "max_tokens": []}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def _queries(n: int) -> list[Query]:
    return [Query(f"rte:validation:{i}", "rte", "nli", 0, f"Premise {i}. Hypothesis?",
                  ["yes", "no"], i % 2) for i in range(n)]


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_api_lm_retries_bounds_concurrency_and_parses_answers(server, endpoint):
    httpd, base = server
    lm = ApiLM(base, "tiny", api_key="sekret", endpoint=endpoint, concurrency=2, backoff_s=0.01)
    queries = _queries(6)
    demos = [[f"Premise. Hypothesis? {'yes' if i % 2 == 0 else 'no'}"] for i in range(6)]
    handed = []  # what a cache would store while the call runs
    preds = lm.predict(queries, demos, progress=False,
                       on_answers=lambda positions, answers: handed.append((positions, answers)))
    assert [p.prediction for p in preds] == [0, 1, 0, 1, 0, 1]
    assert handed == [([i], [pred]) for i, pred in enumerate(preds)]
    assert all(p.correct and p.parsed for p in preds)
    zero = lm.predict(queries, [[] for _ in queries], progress=False)
    assert {(p.prediction, p.parsed, p.correct) for p in zero} == {(-1, False, False)}
    state = httpd.state
    assert state["requests"] == 12 + 1  # one 503, retried
    assert 1 < state["max_in_flight"] <= 2 and state["auth"] == {"Bearer sekret"}


def test_generation_keeps_the_first_line(server):
    _, base = server
    query = Query("nq_open:validation:0", "nq_open", "closed_book_qa", 0, "Q: capital?",
                  references=["Paris"])
    lm = ApiLM(base, "tiny", backoff_s=0.01)
    pred = lm.predict([query], [["Q: city of love? A: Paris"]], progress=False)[0]
    assert pred.prediction == "The answer is Paris."
    assert isinstance(pred, Prediction) and pred.parsed  # the type the local LM returns too


def test_generation_asks_for_the_task_s_answer_budget(server):
    httpd, base = server
    lm = ApiLM(base, "tiny", backoff_s=0.01, concurrency=1)
    queries = [Query(f"{t}:test:0", t, "struct_to_text", 0, "name[X]", references=["X."])
               for t in ("e2e_nlg", "common_gen")]
    lm.predict(queries, [[], []], progress=False)
    lm.predict(queries[:1], [[]], max_new_tokens=7, progress=False)
    assert httpd.state["max_tokens"][-3:] == [64, 32, 7]  # after the first request's 503


def test_errors_name_the_url_and_status(server):
    _, base = server
    with pytest.raises(RuntimeError, match="HTTP 404"):
        ApiLM(base + "/wrong", "tiny", max_retries=1, backoff_s=0.01).complete("hi")  # 503, 404
    with pytest.raises(RuntimeError, match="unreachable after 2 tries"):
        ApiLM("http://127.0.0.1:9/v1", "tiny", max_retries=1, backoff_s=0.01,
              timeout_s=2).complete("hi")
    with pytest.raises(ValueError, match="not an http"):
        ApiLM("localhost:8000", "tiny")


@pytest.mark.parametrize("reply, options, expected", [
    ("Positive.", ["negative", "positive"], 1),
    ("the answer is no", ["yes", "no"], 1),
    ("no, definitely not", ["no", "yes"], 0),
    ("I think the ball rolls down the hill", ["it flies away", "the ball rolls down"], 1),
    ("yes or no", ["yes", "no"], None),
    ("hmm", ["yes", "no"], None),
])
def test_parse_choice(reply, options, expected):
    assert parse_choice(reply, options) == expected


def test_eval_cli_single_run_against_the_server(server, tmp_path, shared_data_dir,
                                                tiny_bert_path, tiny_gpt_neo_path, monkeypatch):
    from retriever import BiEncoder, BiEncoderConfig, export_retriever, index_pool

    _, base = server
    stage = build_stage_data("nli", shared_data_dir, ["paraphrase"], pool_per_task=10,
                             queries_per_task=2, n_candidates=2, eval_per_task=4)
    write_stage_data(stage, tmp_path / "data")
    export = tmp_path / "retriever"
    export_retriever(BiEncoder(BiEncoderConfig(base_model=str(tiny_bert_path))), export)
    index_pool(export, tmp_path / "data" / "pool.jsonl")
    monkeypatch.setenv("TINY_API_KEY", "sekret")
    eval_main(["--data", str(tmp_path / "data"), "--retriever", str(export),
               "--baseline-retriever", str(export), "--api-base", base, "--api-model", "tiny",
               "--api-key-env", "TINY_API_KEY", "--k", "1", "--abstain",
               "--calibration-per-task", "4", "--output-dir", str(tmp_path / "out"),
               "--ranking-per-task", "2", "--ranking-prompts", "3", "--ranking-seed", "11",
               "--scoring-lm-for-ranking", str(tiny_gpt_neo_path), "--no-progress"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    methods = report["methods"]
    assert set(methods) == {"zero_shot", "random", "bm25", "untrained", "trained",
                            "trained+abstain"}
    assert methods["zero_shot"]["unparsable"] == 8 and methods["zero_shot"]["average"] == 0.0
    assert methods["bm25"]["unparsable"] == 0 and methods["trained"]["unparsable"] == 0
    assert report["config"]["lm_name"] == f"api:tiny@{base}"
    assert report["abstain"]["calibration"]["nli"]["tasks"] == ["mrpc"]
    assert (tmp_path / "out" / "report.png").is_file()
    assert "unparsable replies" in (tmp_path / "out" / "report.md").read_text()
    ranking = report["ranking"]  # judged by the local scoring LM, not the API-served one
    assert ranking["lm"] != report["config"]["lm_name"] and ranking["n_queries"] == 2 * 2
    assert ranking["seed"] == 11  # --ranking-seed draws the section, not --seed (42)
    assert set(ranking["methods"]) == {"random", "bm25", "untrained", "trained"}
