"""The section benches on a tiny `uprise eval` folder whose held-out rows were drawn with an
--eval-seed apart from its --seed: `ranking_ceiling.section` reads it back only with that seed,
and bench/section_exports.py judges any export on it (and refuses one that saw the cluster)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bench_scripts import load_script, tiny_section_run

from flan_data import evaluation_queries
from retriever.export import CONFIG_NAME
from uprise.evaluation_cli import eval_main


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory, shared_data_dir, tiny_bert_path, tiny_gpt_neo_path):
    root = tmp_path_factory.mktemp("section")
    eval_main([*tiny_section_run(root, shared_data_dir, tiny_bert_path, tiny_gpt_neo_path),
               "--output-dir", str(root / "out")])
    return root / "work" / "commonsense"


def test_section_reads_a_folder_evaluated_with_another_eval_seed(cluster_dir, shared_data_dir):
    m = load_script("ranking_ceiling")
    with pytest.raises(SystemExit, match="evaluation seed 3.*pass the --eval-seed"):
        m.section(cluster_dir)  # the folder's seed (3) draws other templates or rows
    got = m.section(cluster_dir, eval_seed=5)
    drawn = {q.id: q for q in evaluation_queries("commonsense", shared_data_dir, 5, 5)}
    assert len(got.queries) == 4 and len(got.prompts) == 4  # 2 per task (copa, piqa) x 4
    assert all(drawn[q.id] == q for q in got.queries)
    assert got.scores.shape == (4, 4) and not np.isnan(got.scores).any()


def test_an_export_judged_on_the_section_as_the_folders_own_rankers_are(cluster_dir):
    m = load_script("section_exports")
    result = m.measure(cluster_dir, [f"again={cluster_dir / 'retriever'}"], seed=3, eval_seed=5)
    methods = result["methods"]
    assert set(methods) == {"random", "bm25", "untrained", "trained", "again"}
    assert methods["again"] == methods["trained"]  # the same towers on the same section
    report = json.loads((cluster_dir.parents[1] / "out" / "report.json").read_text())
    section_rows = report["clusters"]["commonsense"]["ranking"]["methods"]
    assert methods["trained"]["ndcg@3"]["mean"] == section_rows["trained"]["ndcg@3"]["mean"]
    with pytest.raises(SystemExit, match="already name the folder's own rankers"):
        m.measure(cluster_dir, [f"trained={cluster_dir / 'retriever'}"], eval_seed=5)
    with pytest.raises(SystemExit, match="--crossed: \\['untrained'\\] is not one of"):
        m.measure(cluster_dir, [], eval_seed=5, crossed=["untrained"])
    wide = m.measure(cluster_dir, [], seed=3, eval_seed=5, crossed=["trained"],
                     crossed_resamples=50)["methods"]["trained"]["ndcg@3"]
    assert wide["vs_untrained_crossed"]["diff"] == pytest.approx(wide["vs_untrained"]["diff"])
    assert "vs_untrained_crossed" not in methods["trained"]["ndcg@3"]  # only when asked
    against_bm25 = m.measure(cluster_dir, [], seed=3, eval_seed=5, crossed=["trained"],
                             crossed_resamples=50, reference="bm25")["methods"]
    got = against_bm25["trained"]["ndcg@3"]
    want = methods["trained"]["ndcg@3"]["mean"] - methods["bm25"]["ndcg@3"]["mean"]
    assert got["vs_bm25"]["diff"] == pytest.approx(want)
    assert got["vs_bm25_crossed"]["diff"] == pytest.approx(want)
    assert "vs_bm25" not in against_bm25["bm25"]["ndcg@3"]  # the reference itself has none
    with pytest.raises(SystemExit, match="--reference 'best' is not one of the rankers"):
        m.measure(cluster_dir, [], eval_seed=5, reference="best")


def test_named_exports_refuse_what_saw_the_cluster_or_is_no_export(tmp_path):
    m = load_script("section_exports")

    def export(name: str, metadata: dict) -> str:
        (tmp_path / name).mkdir()
        (tmp_path / name / CONFIG_NAME).write_text(json.dumps({"metadata": metadata}))
        return f"{name}={tmp_path / name}"

    ok = export("ok", {"trained": True, "held_out_cluster": "nli",
                       "train_clusters": ["sentiment"]})
    start = export("start", {"trained": False})
    assert set(m.named_exports([ok, start], "nli")) == {"ok", "start"}
    seen = export("seen", {"trained": True, "held_out_cluster": "sentiment",
                           "train_clusters": ["nli"]})
    with pytest.raises(SystemExit, match="--exports seen: .*not with 'nli' held out"):
        m.named_exports([seen], "nli")
    with pytest.raises(SystemExit, match="--exports none: .* holds no"):
        m.named_exports([f"none={tmp_path}"], "nli")
    with pytest.raises(SystemExit, match="is not a new NAME=DIR"):
        m.named_exports([ok, ok], "nli")


def test_hybrid_crossed_intervals_only_when_asked_and_around_the_same_difference(cluster_dir):
    m = load_script("hybrid_ranking")
    plain = m.measure(cluster_dir, seed=3, weight=0.5, eval_seed=5)
    wide = m.measure(cluster_dir, seed=3, weight=0.5, eval_seed=5, crossed_resamples=50)
    for ref in m.REFERENCES:
        row = wide["against"][ref]["hybrid"]["ndcg@3"]
        assert f"vs_{ref}_crossed" not in plain["against"][ref]["hybrid"]["ndcg@3"]
        assert row[f"vs_{ref}"] == plain["against"][ref]["hybrid"]["ndcg@3"][f"vs_{ref}"]
        assert row[f"vs_{ref}_crossed"]["diff"] == pytest.approx(row[f"vs_{ref}"]["diff"])
    assert "(crossed)" in m.table(wide) and "(crossed)" not in m.table(plain)
