"""The prediction cache: cached answers equal the LM's own, only missing answers are asked, every
part of the key counts, damage is asked again, and an interrupted evaluation resumes from the
methods it finished (tiny random GPT-Neo, real generation and option scoring)."""

from __future__ import annotations

import json

import pytest

from flan_data import Query
from proxy_lm import load_lm
from uprise.evaluation import LocalLM, cached_predictor, evaluate_methods
from uprise.evaluation.prediction_cache import CachedPredictor, cache_summary, predictor_identity


class CountingLM(LocalLM):
    """A real local LM that records how many answers each call asks for (and can fail)."""

    def __init__(self, lm, fail_after: int | None = None) -> None:
        super().__init__(lm)
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "fail_after", fail_after)

    def predict(self, queries, demonstrations, **kwargs):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls.append(len(queries))
        return super().predict(queries, demonstrations, **kwargs)


def _queries() -> list[Query]:
    choice = [Query(f"sst2:validation:{i}", "sst2", "sentiment", 0, f"film {i}",
                    ["negative", "positive"], i % 2) for i in range(3)]
    generation = [Query(f"common_gen:validation:{i}", "common_gen", "struct_to_text", 0,
                        f"Concepts: dog, ball {i}", references=["A dog plays with a ball."])
                  for i in range(2)]
    return choice + generation


@pytest.fixture()
def neo(tiny_gpt_neo_path):
    return load_lm(str(tiny_gpt_neo_path), dtype="float32")


def _answers(preds) -> list[tuple]:
    return [(p.query_id, p.prediction, p.text, p.correct, p.parsed) for p in preds]


def test_cached_answers_equal_the_lms_and_only_missing_ones_are_asked(neo, tmp_path):
    queries, demos = _queries(), [["Great. positive"]] * 5
    plain = LocalLM(neo).predict(queries, demos, max_new_tokens=4, progress=False)
    lm = CountingLM(neo)
    cached = cached_predictor(lm, tmp_path)
    assert isinstance(cached, CachedPredictor) and cached.name == lm.name
    first = cached.predict(queries, demos, max_new_tokens=4, progress=False)
    assert _answers(first) == _answers(plain) and lm.calls == [5]
    # a new process (a fresh cache object on the same folder) asks nothing
    again = cached_predictor(lm, tmp_path)
    assert _answers(again.predict(queries, demos, max_new_tokens=4, progress=False)) == \
        _answers(plain) and lm.calls == [5]
    assert cache_summary(again) == {"folder": str(again.cache.folder), "answers_asked": 0,
                                    "answers_from_cache": 5}
    # other demonstrations, their order, the budget, the query's wording: asked again
    other = [["Great. positive"], ["Awful. negative"], ["Great. positive", "Awful. negative"],
             ["Awful. negative", "Great. positive"], ["Great. positive"]]
    again.predict(queries, other, max_new_tokens=4, progress=False)
    assert lm.calls == [5, 3]  # the first and the last keep their demonstrations
    again.predict(queries[3:], demos[3:], max_new_tokens=5, progress=False)
    reworded = [Query(q.id, q.task, q.cluster, 1, q.input, q.options, q.gold, q.references)
                for q in queries[:2]]
    again.predict(reworded, demos[:2], max_new_tokens=4, progress=False)
    assert lm.calls == [5, 3, 2, 2]


def test_dtype_and_predictor_kind_name_the_namespace(neo, tiny_gpt_neo_path, tmp_path):
    from uprise.evaluation.api_lm import ApiLM

    fp32 = cached_predictor(LocalLM(neo), tmp_path)
    bf16 = cached_predictor(LocalLM(load_lm(str(tiny_gpt_neo_path), dtype="bfloat16")), tmp_path)
    assert fp32.cache.folder != bf16.cache.folder
    chat = predictor_identity(ApiLM("http://127.0.0.1:1/v1", "m"))
    completions = predictor_identity(ApiLM("http://127.0.0.1:1/v1", "m", endpoint="completions"))
    assert chat != completions and chat["server"]["model"] == "m"
    assert cached_predictor(LocalLM(neo), False).__class__ is LocalLM


def test_a_damaged_entry_is_asked_again(neo, tmp_path):
    queries, demos = _queries()[:2], [[], []]
    lm = CountingLM(neo)
    cached_predictor(lm, tmp_path).predict(queries, demos, progress=False)
    (segment,) = next(tmp_path.iterdir()).glob("seg-*.jsonl")
    lines = segment.read_text().splitlines()
    row = json.loads(lines[0])
    row["l"]["parsed"] = "yes"  # not a bool: damaged
    segment.write_text("\n".join([json.dumps(row), lines[1]]) + "\n")
    again = cached_predictor(lm, tmp_path)
    again.predict(queries, demos, progress=False)
    assert lm.calls == [2, 1] and again.cache.damaged == 1


def test_an_interrupted_evaluation_resumes_after_the_methods_it_finished(neo, tmp_path):
    queries = _queries()
    methods = {"zero_shot": lambda qs: [[] for _ in qs],
               "bm25": lambda qs: [["Great. positive"] for _ in qs],
               "trained": lambda qs: [["Awful. negative"] for _ in qs]}
    crashing = CountingLM(neo, fail_after=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate_methods(cached_predictor(crashing, tmp_path), queries, methods, progress=False)
    assert crashing.calls == [5, 5]  # zero-shot and bm25 answered, trained crashed
    resumed = CountingLM(neo)
    report, rows = evaluate_methods(cached_predictor(resumed, tmp_path), queries, methods,
                                    progress=False)
    assert resumed.calls == [5]  # only trained is asked
    plain_report, plain_rows = evaluate_methods(LocalLM(neo), queries, methods, progress=False)
    assert rows == plain_rows and report == plain_report


def _generation_queries(n: int) -> list[Query]:
    return [Query(f"common_gen:validation:{10 + i}", "common_gen", "struct_to_text", 0,
                  "Concepts: " + ", ".join(["dog", "ball", "park", "run"][: 1 + i % 4]),
                  references=["A dog runs."]) for i in range(n)]


def test_a_method_killed_mid_generation_resumes_with_the_same_batches(neo, tmp_path,
                                                                     monkeypatch):
    queries, demos = _generation_queries(9), [["Concepts: cat. A cat sleeps."]] * 9
    batches = []  # the prompt ids of every generate call
    generate = neo.model.generate

    def recording(**kwargs):
        batches.append(kwargs["input_ids"].tolist())
        return generate(**kwargs)

    def killed_at_third_batch(**kwargs):
        if len(batches) == 2:
            raise KeyboardInterrupt
        return recording(**kwargs)

    monkeypatch.setattr(neo.model, "generate", recording)
    plain = LocalLM(neo).predict(queries, demos, batch_size=2, max_new_tokens=3, progress=False)
    uninterrupted, batches[:] = list(batches), []
    monkeypatch.setattr(neo.model, "generate", killed_at_third_batch)
    with pytest.raises(KeyboardInterrupt):
        cached_predictor(LocalLM(neo), tmp_path).predict(queries, demos, batch_size=2,
                                                         max_new_tokens=3, progress=False)
    monkeypatch.setattr(neo.model, "generate", recording)
    batches.clear()
    resumed = cached_predictor(LocalLM(neo), tmp_path)
    answers = resumed.predict(queries, demos, batch_size=2, max_new_tokens=3, progress=False)
    assert (resumed.served, resumed.asked) == (4, 5)  # two batches were stored when it died
    assert batches == uninterrupted[2:] and len(uninterrupted) == 5
    assert _answers(answers) == _answers(plain)


def test_answers_are_stored_while_the_call_runs(neo, tmp_path):
    queries = _queries() + _generation_queries(4)  # choice answers at once, then each batch
    cached = cached_predictor(LocalLM(neo), tmp_path)
    cached.flush_seconds = 0  # every hand-over is written
    handed = []
    answers = cached.predict(queries, [[]] * 9, batch_size=2, max_new_tokens=3, progress=False,
                             on_answers=lambda positions, preds: handed.append(positions))
    assert sorted(len(p) for p in handed) == [2, 2, 2, 3]  # 3 choice rows; 6 to generate
    assert len(list(cached.cache.folder.glob("seg-*.jsonl"))) == 4
    again = []
    cached_predictor(LocalLM(neo), tmp_path).predict(
        queries, [[]] * 9, batch_size=2, max_new_tokens=3, progress=False,
        on_answers=lambda positions, preds: again.append((positions, preds)))
    assert again == [(list(range(9)), answers)]  # served at once, from the cache


def test_a_single_run_rerun_asks_nothing_calibration_included(tmp_path, shared_data_dir,
                                                              train_tiny_retriever,
                                                              tiny_gpt_neo_path):
    """`uprise eval --data ... --abstain` twice on one cache: the second run takes the methods'
    and the abstention calibration's answers from it and writes the same predictions."""
    from flan_data.protocol import build_stage_data
    from flan_data.schema import Score, write_jsonl
    from flan_data.stage_io import write_stage_data
    from uprise.evaluation_cli import eval_main

    stage = build_stage_data("commonsense", shared_data_dir, ["nli"], pool_per_task=12,
                             queries_per_task=8, n_candidates=4, eval_per_task=3,
                             max_prompt_chars=150)
    write_stage_data(stage, tmp_path / "data")
    write_jsonl(tmp_path / "scores.jsonl", [
        Score(c.query_id, pid, "hand", 0, [1.0 - v, 1.0], v, j != 1)
        for n, c in enumerate(stage.candidates) for j, pid in enumerate(c.prompt_ids)
        for v in [((n * 7 + j * 5) % 11) / 11]])
    export = train_tiny_retriever(tmp_path)

    def run(out: str) -> dict:
        eval_main(["--data", str(tmp_path / "data"), "--retriever", str(export), "--lm",
                   str(tiny_gpt_neo_path), "--k", "1", "--ranking-per-task", "0", "--methods",
                   "zero_shot", "trained", "--abstain", "--calibration-per-task", "2",
                   "--prediction-cache", str(tmp_path / "answers"), "--output-dir",
                   str(tmp_path / out), "--no-progress"])
        return json.loads((tmp_path / out / "report.json").read_text())

    first, second = run("first"), run("second")
    assert first["prediction_cache"]["answers_asked"] > 0
    assert second["prediction_cache"]["answers_asked"] == 0
    assert second["prediction_cache"]["answers_from_cache"] == \
        first["prediction_cache"]["answers_asked"] + first["prediction_cache"]["answers_from_cache"]
    for method in ("zero_shot", "trained", "trained+abstain"):
        path = f"predictions/{method}.jsonl"
        assert (tmp_path / "second" / path).read_text() == (tmp_path / "first" / path).read_text()


def test_a_cache_folder_and_no_cache_together_are_refused(tmp_path, capsys):
    from uprise.evaluation_cli import eval_main

    with pytest.raises(SystemExit):
        eval_main(["--clusters", "nli", "--prediction-cache", str(tmp_path / "answers"),
                   "--no-prediction-cache", "--output-dir", str(tmp_path / "out")])
    assert "give one of them" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
