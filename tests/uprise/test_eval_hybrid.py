"""`uprise eval --methods hybrid` on tiny random models: the weight is chosen on the trained
retriever's own validation queries (re-derived from its export, so the dense end of the curve
is exactly the validation NDCG@3 that training recorded), weight 1 retrieves and ranks what the
trained retriever does, and bad input fails before any evaluation."""

from __future__ import annotations

import json

import pytest

from flan_data.stage_io import POOL
from retriever.data import validation_query_ids
from uprise.evaluation.hybrid import calibrate
from uprise.evaluation.validation import choose_weight
from uprise.evaluation_cli import eval_main


def _eval(root, export, lm, out, *extra):
    eval_main(["--data", str(root / "data"), "--retriever", str(export), "--lm", str(lm),
               "--k", "1", "--ranking-per-task", "0", "--output-dir", str(out),
               "--no-progress", *extra])
    return json.loads((out / "report.json").read_text())


def _prompts(out, method):
    return [json.loads(line)["prediction"] for line in
            (out / "predictions" / f"{method}.jsonl").open()]


def test_the_weight_is_chosen_on_the_training_runs_validation_queries(
        hand_scored_retriever, tmp_path, tiny_gpt_neo_path):
    root, export = hand_scored_retriever
    report = _eval(root, export, tiny_gpt_neo_path, tmp_path / "out",
                   "--methods", "bm25", "trained", "hybrid")
    hybrid = report["hybrid"]
    meta = json.loads((export / "uprise_config.json").read_text())["metadata"]
    recorded = meta["validation_ranking"]["exported"]
    assert meta["val_fraction"] == 0.25
    assert hybrid["curve"]["1.0"] == pytest.approx(recorded["ndcg@3"])
    records = [json.loads(line) for line in (root / "scores.jsonl").open()]
    held = validation_query_ids({r["query_id"] for r in records}, 0.25, meta["seed"])
    labelled = held & {r["query_id"] for r in records if r["correct"]}
    assert 0 < len(labelled) < len(held)  # the fixture exercises the unlabelled case
    assert hybrid["n_queries"] == recorded["n_queries"] == len(labelled)
    assert hybrid["weight"] == choose_weight({float(w): v for w, v in hybrid["curve"].items()})
    assert set(report["methods"]) == {"bm25", "trained", "hybrid"}
    assert {"vs_dense", "vs_bm25"} <= set(hybrid)
    assert (f"Hybrid weight {hybrid['weight']}, chosen by ndcg@3 on {hybrid['n_queries']} "
            "validation queries") in (tmp_path / "out" / "report.md").read_text()


def test_weight_one_retrieves_what_the_trained_retriever_does(hand_scored_retriever, tmp_path,
                                                             tiny_gpt_neo_path):
    root, export = hand_scored_retriever
    report = _eval(root, export, tiny_gpt_neo_path, tmp_path / "out",
                   "--methods", "trained", "hybrid", "--hybrid-weight", "1",
                   "--ranking-per-task", "3", "--ranking-prompts", "6")
    assert report["hybrid"] == {"weight": 1.0, "source": "--hybrid-weight"}
    assert _prompts(tmp_path / "out", "hybrid") == _prompts(tmp_path / "out", "trained")
    # the ranking section reads the hybrid's pool-wide relevance at its own prompts: at weight 1
    # that orders them as the trained retriever does, query by query
    ranked = report["ranking"]["methods"]
    assert {"trained", "hybrid", "bm25"} <= set(ranked)
    for metric in ("ndcg@3", "top1", "spearman"):
        assert ranked["hybrid"][metric]["mean"] == pytest.approx(ranked["trained"][metric]["mean"])
        assert ranked["hybrid"][metric]["by_task"] == pytest.approx(
            ranked["trained"][metric]["by_task"])


def test_the_hybrid_ranker_is_the_methods_relevance_at_the_pool_rows(hand_scored_retriever):
    from serve import PromptRetriever
    from serve.hybrid import HybridRetriever
    from uprise.evaluation.ranking import hybrid_ranker

    root, export = hand_scored_retriever
    pool = PromptRetriever.from_pretrained(export).prompts
    picked = [pool[5], pool[0], pool[9]]
    queries = ["Is the cat on the mat?", "Premise: rain. Hypothesis: wet streets."]
    got = hybrid_ranker(export, 0.3)(queries, [p.text for p in picked])
    full = HybridRetriever(PromptRetriever.from_pretrained(export), 0.3).relevance(queries)
    assert got.shape == (2, 3)
    assert got == pytest.approx(full[:, [5, 0, 9]])
    with pytest.raises(KeyError, match="1 of 2 ranking prompts are not in the pool"):
        hybrid_ranker(export, 0.3)(queries, [pool[0].text, "a prompt no pool holds"])


def test_bad_hybrid_input_fails_before_evaluation(hand_scored_retriever, tmp_path,
                                                  tiny_bert_path, tiny_gpt_neo_path, capsys):
    from retriever import BiEncoder, BiEncoderConfig, export_retriever, index_pool
    from serve import PromptRetriever

    root, export = hand_scored_retriever
    with pytest.raises(SystemExit):
        _eval(root, export, tiny_gpt_neo_path, tmp_path / "a", "--methods", "hybrid",
              "--hybrid-weight", "2")
    assert "--hybrid-weight: hybrid weight 2.0; expected a number in [0, 1]" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_main(["--data", str(root / "data"), "--methods", "hybrid", "--output-dir",
                   str(tmp_path / "b")])
    assert "'hybrid' needs a trained --retriever" in capsys.readouterr().err
    untrained = tmp_path / "untrained"
    export_retriever(BiEncoder(BiEncoderConfig(base_model=str(tiny_bert_path))), untrained,
                     metadata={"trained": False})
    index_pool(untrained, root / "data" / POOL)
    with pytest.raises(ValueError, match="lacks .*give --hybrid-weight"):
        calibrate(PromptRetriever.from_pretrained(untrained))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
