"""The evaluation's parts on constructed cases: the stratified bootstrap, the best baseline,
abstention calibration, the leakage guard (pool, candidates, training queries, BM25 corpus,
calibration queries, retriever index), token F1, and the report files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flan_data import LeakageError, Prompt, Query, build_stage_data, tasks_in, write_jsonl
from flan_data.metrics import token_f1
from uprise.evaluation import check_pool_leakage, json_safe, summarise
from uprise.evaluation.abstain import (
    abstain_effect,
    applied_thresholds,
    calibration_queries,
    choose_threshold,
    thresholds_by_kind,
)
from uprise.evaluation.methods import bm25_prompts
from uprise.evaluation.report import markdown, write_report_files
from uprise.evaluation.stats import paired_bootstrap


def test_stratified_bootstrap_by_hand():
    # task x: differences [1, 0]; task y: [1]. Statistic = mean of the two task means.
    a, b, groups = [1.0, 0.0, 1.0], [0.0, 0.0, 0.0], ["x", "x", "y"]
    got = paired_bootstrap(a, b, n_resamples=400, seed=3, groups=groups)
    assert got["diff"] == pytest.approx((0.5 + 1.0) / 2)
    rng = np.random.default_rng(3)
    x = np.array([1.0, 0.0])[rng.integers(0, 2, size=(400, 2))].mean(axis=1)
    y = np.array([1.0])[rng.integers(0, 1, size=(400, 1))].mean(axis=1)
    stat = (x + y) / 2  # each resample is 0.5, 0.75 or 1.0
    assert set(np.unique(stat)) <= {0.5, 0.75, 1.0}
    assert got["low"] == pytest.approx(np.percentile(stat, 2.5)) == 0.5
    assert got["high"] == pytest.approx(np.percentile(stat, 97.5)) == 1.0


def test_bootstrap_rejects_mislabelled_groups():
    with pytest.raises(ValueError, match="one per example"):
        paired_bootstrap([1.0, 0.0], [0.0, 0.0], groups=["x"])


def test_best_baseline_is_the_best_non_trained_method():
    queries = [Query(f"sst2:validation:{i}", "sst2", "sentiment", 0, "x", ["a", "b"], 0)
               for i in range(4)]
    values = {"zero_shot": [1, 0, 0, 0.0], "bm25": [1, 1, 0, 0.0], "random": [0, 0, 0, 0.0],
              "trained": [1, 1, 1, 0.0]}
    report = summarise(queries, values, seed=1)
    assert report["best_baseline"] == "bm25"
    assert report["methods"]["trained"]["vs_best_baseline"]["diff"] == pytest.approx(0.25)
    assert report["methods"]["trained"]["vs_zero_shot"]["diff"] == pytest.approx(0.5)
    assert "vs_best_baseline" not in report["methods"]["bm25"]
    low, high = report["methods"]["trained"]["cluster_ci"]["sentiment"]
    assert low <= 0.75 <= high


def test_threshold_calibration_on_a_constructed_case():
    # prompts help the two high-score queries and hurt the two low-score ones
    scores = [0.9, 0.8, 0.2, 0.1]
    with_prompts = [1.0, 1.0, 0.0, 0.0]
    without = [0.0, 0.0, 1.0, 1.0]
    got = choose_threshold(scores, with_prompts, without)
    assert got["threshold"] == 0.8 and got["calibration_metric"] == 1.0
    assert got["abstain_rate"] == 0.5
    # prompts always help: never abstain; never help: always abstain
    assert choose_threshold(scores, [1.0] * 4, [0.0] * 4)["threshold"] == -math.inf
    assert choose_threshold(scores, [0.0] * 4, [1.0] * 4)["threshold"] == math.inf


def test_thresholds_per_answer_kind_on_a_constructed_case():
    # prompts help every choice query and hurt every generation query: one threshold for all
    # must trade one kind against the other, one per kind need not
    kinds = ["generation", "choice", "generation", "choice"]
    scores = [0.9, 0.8, 0.2, 0.1]  # the kinds interleave in score order
    with_prompts = [0.0, 1.0, 0.0, 1.0]
    without = [1.0, 0.0, 1.0, 0.0]
    overall = choose_threshold(scores, with_prompts, without)
    assert overall["calibration_metric"] == 0.5  # no single threshold does better
    by_kind = thresholds_by_kind(kinds, scores, with_prompts, without)
    assert by_kind["choice"]["threshold"] == -math.inf and by_kind["choice"]["n"] == 2
    assert by_kind["generation"]["threshold"] == math.inf
    assert by_kind["generation"]["abstain_rate"] == 1.0
    calibration = json.loads(json.dumps(json_safe(
        {**overall, "by_kind": by_kind, "abstain_by": "kind"})))
    assert applied_thresholds(calibration) == (
        overall["threshold"], {"choice": -math.inf, "generation": math.inf})
    assert applied_thresholds({**calibration, "abstain_by": "all"}) == (overall["threshold"], None)
    with pytest.raises(ValueError, match="no per-kind thresholds"):
        applied_thresholds({**overall, "abstain_by": "kind"})
    with pytest.raises(ValueError, match="equal lists"):
        thresholds_by_kind(kinds[:3], scores, with_prompts, without)


def test_abstain_effect_counts_removed_regressions_and_kept_gains():
    effect = abstain_effect({
        "a": {"zero_shot": 0.5, "trained": 0.4, "trained+abstain": 0.5},   # regression removed
        "b": {"zero_shot": 0.5, "trained": 0.6, "trained+abstain": 0.6},   # gain kept
        "c": {"zero_shot": 0.5, "trained": 0.7, "trained+abstain": 0.55},  # gain partly lost
    })
    assert (effect["regressions"], effect["regressions_removed"]) == (1, 1)
    assert (effect["gains"], effect["gains_kept"]) == (2, 1)


def test_no_held_out_example_reaches_pool_candidates_queries_bm25_or_calibration(
        shared_data_dir):
    stage = build_stage_data("commonsense", shared_data_dir, ["nli", "paraphrase"],
                             pool_per_task=20, queries_per_task=5, n_candidates=3,
                             eval_per_task=10)
    held = {t.name for t in tasks_in("commonsense")}
    eval_ids = {q.id for q in stage.eval_queries}
    assert eval_ids and {q.task for q in stage.eval_queries} <= held
    assert not {p.task for p in stage.pool} & held
    assert not {q.task for q in stage.train_queries} & held
    assert not {pid.split(":")[0] for c in stage.candidates for pid in c.prompt_ids} & held
    bm25 = bm25_prompts(stage.pool, k=3)(stage.eval_queries)  # the BM25 corpus is the pool
    pool_texts = {p.text for p in stage.pool}
    assert all(len(row) == 3 and set(row) <= pool_texts for row in bm25)
    check_pool_leakage(stage.eval_queries, stage.pool)  # passes
    calib = calibration_queries(stage, shared_data_dir, 42, 5)
    used = {p.id for p in stage.pool} | {q.id for q in stage.train_queries}
    assert calib and not {q.id for q in calib} & (used | eval_ids)
    assert {q.cluster for q in calib} <= {"nli", "paraphrase"}


def test_leakage_guard_rejects_a_held_out_prompt_in_pool_or_index(tmp_path):
    query = Query("copa:validation:3", "copa", "commonsense", 0, "x", ["a", "b"], 0)
    clean = [Prompt("rte:train:1", "rte", "nli", 0, "p yes")]
    leaked = [*clean, Prompt("copa:validation:3", "copa", "commonsense", 0, "x a")]
    with pytest.raises(LeakageError, match="copa:validation:3"):
        check_pool_leakage([query], leaked)
    write_jsonl(tmp_path / "prompts.jsonl", leaked)
    with pytest.raises(LeakageError, match=str(tmp_path)):
        check_pool_leakage([query], clean, [tmp_path])


def test_token_f1():
    assert token_f1("the Eiffel Tower", ["Eiffel Tower in Paris"]) == pytest.approx(2 / 3)
    assert token_f1("Paris", ["London", "paris!"]) == 1.0
    assert token_f1("", ["x"]) == 0.0


def test_report_markdown_and_png(tmp_path):
    queries = [Query(f"sst2:validation:{i}", "sst2", "sentiment", 0, "x", ["a", "b"], i % 2)
               for i in range(6)]
    report = summarise(queries, {"zero_shot": [1, 0, 1, 0, 1, 0.0],
                                 "trained": [1, 1, 1, 0, 1, 1.0]})
    write_report_files(report, tmp_path, title="unit")
    md = (tmp_path / "report.md").read_text()
    assert md == markdown(report, "unit")
    assert "| sst2 | accuracy | 6 | 50.0 | 83.3 |" in md
    assert "| vs zero-shot (95% CI) |  |  |  | +33.3 [" in md
    assert "| sentiment | 50.0 [" in md
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_calibration_hits_skip_the_query_own_cluster(tmp_path, tiny_bert_path):
    from retriever import BiEncoder, BiEncoderConfig, export_retriever, index_pool
    from serve import PromptRetriever
    from uprise.evaluation.methods import top_scores

    pool = [Prompt(f"{task}:train:{i}", task, cluster, 0, f"{task} example {i} yes")
            for task, cluster in (("rte", "nli"), ("mrpc", "paraphrase")) for i in range(6)]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    export_retriever(BiEncoder(BiEncoderConfig(base_model=str(tiny_bert_path))), tmp_path / "r")
    index_pool(tmp_path / "r", tmp_path / "pool.jsonl")
    retriever = PromptRetriever.from_pretrained(tmp_path / "r")
    queries = [Query(f"rte:validation:{i}", "rte", "nli", 0, f"rte example {i}", ["yes", "no"],
                     0) for i in range(3)]
    for top, hits in top_scores(retriever, queries, k=2, exclude_own_cluster=True):
        assert len(hits) == 2 and {h.cluster for h in hits} == {"paraphrase"}
        assert top == hits[0].score >= hits[1].score


def test_abstaining_prompts_apply_the_threshold_of_the_query_kind(tmp_path, tiny_bert_path):
    from retriever import BiEncoder, BiEncoderConfig, export_retriever, index_pool
    from serve import PromptRetriever
    from uprise.evaluation.methods import abstaining_prompts, query_kind

    pool = [Prompt(f"rte:train:{i}", "rte", "nli", 0, f"rte example {i} yes") for i in range(6)]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    export_retriever(BiEncoder(BiEncoderConfig(base_model=str(tiny_bert_path))), tmp_path / "r")
    index_pool(tmp_path / "r", tmp_path / "pool.jsonl")
    retriever = PromptRetriever.from_pretrained(tmp_path / "r")
    queries = [Query("copa:validation:0", "copa", "commonsense", 0, "a cause", ["x", "y"], 0),
               Query("dart:validation:0", "dart", "struct_to_text", 0, "a table", None, None,
                     ["a sentence"])]
    assert [query_kind(q) for q in queries] == ["choice", "generation"]
    everyone = abstaining_prompts(retriever, 2, -math.inf)(queries)
    assert [len(d) for d in everyone] == [2, 2]
    per_kind = abstaining_prompts(retriever, 2, -math.inf, {"generation": math.inf})(queries)
    assert per_kind == [everyone[0], []]  # a kind without its own threshold takes the overall


def test_corpus_metrics_as_the_paper_reports_them():
    from flan_data.metrics import corpus_metric
    from uprise.evaluation.summary import paper_metrics

    golds, preds = [1, 1, 1, 0], [1, 1, 0, 0]  # tp 2, 3 gold positives, 2 predicted: F1 0.8
    assert corpus_metric("f1", golds, preds) == pytest.approx(0.8)
    assert corpus_metric("acc_and_f1", golds, preds) == pytest.approx((0.75 + 0.8) / 2)
    queries = [Query(f"mrpc:validation:{i}", "mrpc", "paraphrase", 0, "x", ["no", "yes"], g)
               for i, g in enumerate(golds)]
    queries.append(Query("rte:validation:0", "rte", "nli", 0, "x", ["yes", "no"], 0))
    got = paper_metrics(queries, [*preds, 1])
    assert got == {"mrpc": {"metric": "acc_and_f1", "value": pytest.approx(0.775)}}


def test_reports_are_strict_json_even_with_an_infinite_threshold():
    import json

    from uprise.evaluation.report import json_safe

    report = {"abstain": {"threshold": -math.inf, "scores": [1.0, math.inf]}}
    text = json.dumps(json_safe(report), allow_nan=False)
    assert float(json.loads(text)["abstain"]["threshold"]) == -math.inf


def test_in_task_leakage_check_allows_the_task_but_not_its_evaluated_split(shared_data_dir):
    from flan_data import LeakageError, Prompt
    from flan_data.protocol import build_in_task_data
    from uprise.evaluation import check_pool_leakage

    stage = build_in_task_data("rte", shared_data_dir, seed=3, pool_size=20, queries=4,
                               n_candidates=2, eval_size=5)
    check_pool_leakage(stage.eval_queries, stage.pool, in_task=True)
    with pytest.raises(LeakageError):
        check_pool_leakage(stage.eval_queries, stage.pool)  # the held-out-cluster rule
    q = stage.eval_queries[0]
    planted = Prompt(id=q.id.replace(q.id.rsplit(":", 1)[1], "999999"), task="rte",
                     cluster=q.cluster, template=0, text="an evaluation row")
    with pytest.raises(LeakageError):
        check_pool_leakage(stage.eval_queries, [*stage.pool, planted], in_task=True)


def test_in_task_leakage_check_of_a_carved_split_allows_only_the_carved_rows(shared_data_dir):
    from flan_data import LeakageError, Prompt
    from flan_data.protocol import build_in_task_data, in_task_carved_ids

    # DART: nothing but validation, so its pool rows and evaluated rows share that split
    stage = build_in_task_data("dart", shared_data_dir, seed=3, pool_size=20, queries=4,
                               n_candidates=2, eval_size=5)
    carved = in_task_carved_ids(stage.manifest)
    check_pool_leakage(stage.eval_queries, stage.pool, in_task=True, carved_ids=carved)
    with pytest.raises(LeakageError):
        check_pool_leakage(stage.eval_queries, stage.pool, in_task=True)  # no carve known
    kept = next(f"dart:validation:{i}" for i in range(1000) if f"dart:validation:{i}"
                not in carved and f"dart:validation:{i}" not in {q.id for q in stage.eval_queries})
    planted = Prompt(id=kept, task="dart", cluster=stage.pool[0].cluster, template=0,
                     text="an evaluation row that was not sampled")
    with pytest.raises(LeakageError):
        check_pool_leakage(stage.eval_queries, [*stage.pool, planted], in_task=True,
                           carved_ids=carved)


@pytest.mark.parametrize(("names", "dirs", "message"), [
    (["zero_shot", "retrieval"], {}, r"unknown method\(s\) \['retrieval'\]; expected names from"),
    (["trained"], {}, r"method\(s\) \['trained'\] need a retriever directory"),
    (["untrained", "trained"], {"trained_dir": "t"}, r"\['untrained'\] need a retriever"),
    (["trained+abstain"], {"trained_dir": "t"}, "needs a calibrated threshold"),
])
def test_build_methods_refuses_unknown_names_and_missing_inputs_before_loading(names, dirs,
                                                                              message):
    from uprise.evaluation import build_methods

    with pytest.raises(ValueError, match=message):
        build_methods(names, [], k=3, seed=0, **dirs)


def test_method_names_are_one_list():
    from uprise.evaluation import ABSTAIN, BASELINES, DEFAULT_METHODS, METHOD_NAMES
    from uprise.evaluation.methods import HYBRID
    from uprise.evaluation_cli import _parser

    assert set(BASELINES) < set(DEFAULT_METHODS) < set(METHOD_NAMES)
    assert set(METHOD_NAMES) - set(DEFAULT_METHODS) == {ABSTAIN, HYBRID}
    methods = next(a for a in _parser()._actions if a.dest == "methods")
    assert tuple(methods.choices) == (*DEFAULT_METHODS, HYBRID)  # --abstain adds ABSTAIN
    assert methods.default == list(DEFAULT_METHODS)


def test_the_local_lm_is_a_predictor_with_the_shared_prediction_type(tiny_gpt_neo_path):
    from flan_data import Prediction
    from proxy_lm import load_lm
    from uprise.evaluation import LocalLM

    tiny_lm = load_lm(str(tiny_gpt_neo_path), dtype="float32")
    query = Query("sst2:validation:0", "sst2", "sentiment", 0, "A fine film.",
                  ["negative", "positive"], 1)
    (pred,) = LocalLM(tiny_lm).predict([query], [["Great. positive"]], progress=False)
    assert isinstance(pred, Prediction) and pred.parsed and pred.prediction in (0, 1)
    assert pred.correct == (pred.prediction == 1) and LocalLM(tiny_lm).name == tiny_lm.name


def test_a_method_with_the_same_prompts_reuses_the_earlier_predictions(tiny_gpt_neo_path):
    from proxy_lm import load_lm
    from uprise.evaluation import LocalLM, evaluate_methods

    class CountingLM(LocalLM):
        calls: list[int] = []

        def predict(self, queries, demonstrations, **kwargs):
            self.calls.append(len(queries))
            return super().predict(queries, demonstrations, **kwargs)

    lm = CountingLM(load_lm(str(tiny_gpt_neo_path), dtype="float32"))
    queries = [Query(f"sst2:validation:{i}", "sst2", "sentiment", 0, f"film {i}",
                     ["negative", "positive"], i % 2) for i in range(4)]
    same = [["Great. positive"]] * 4
    methods = {"zero_shot": lambda qs: [[] for _ in qs], "untrained": lambda qs: same,
               "trained": lambda qs: same}
    report, rows = evaluate_methods(lm, queries, methods, progress=False)
    assert CountingLM.calls == [4, 4]  # zero-shot and untrained asked; trained reused untrained
    assert rows["trained"] == rows["untrained"]
    assert report["methods"]["trained"]["average"] == report["methods"]["untrained"]["average"]
