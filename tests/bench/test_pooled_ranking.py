"""bench/pooled_ranking.py on a tiny `uprise eval` folder given a second, fresh ranking section
(`--ranking-seed`): each section's rows reproduce its report, the pooled row is their mean, and a
section read with the wrong ranking seed is refused."""

from __future__ import annotations

import json

import pytest
from bench_scripts import load_script, tiny_section_run

from uprise.evaluation_cli import eval_main


@pytest.fixture(scope="module")
def sections(tmp_path_factory, shared_data_dir, tiny_bert_path, tiny_gpt_neo_path):
    """The cluster folder and its two sections' reports: the run's own (seed 3), then one
    drawn with --ranking-seed 9, nothing retrained."""
    root = tmp_path_factory.mktemp("pooled")
    args = tiny_section_run(root, shared_data_dir, tiny_bert_path, tiny_gpt_neo_path)
    reports = []
    for out, extra in (("first", []), ("fresh", ["--ranking-seed", "9"])):
        eval_main([*args, "--output-dir", str(root / out), *extra])
        reports.append(json.loads((root / out / "report.json").read_text())
                       ["clusters"]["commonsense"]["ranking"])
    return root / "work" / "commonsense", reports


def test_a_fresh_section_is_read_only_with_its_ranking_seed(sections):
    cluster_dir, (first, fresh) = sections
    assert (first["seed"], fresh["seed"]) == (3, 9)
    own, other = first["score_folder"], fresh["score_folder"]
    assert own != other
    m = load_script("ranking_ceiling")
    with pytest.raises(SystemExit, match="with seed 3; pass the --ranking-seed"):
        m.section(cluster_dir, other, eval_seed=5)
    got = m.section(cluster_dir, other, eval_seed=5, ranking_seed=9)
    assert got.scores.shape == (4, 4)
    assert {p.id for p in got.prompts} != {p.id for p in m.section(
        cluster_dir, own, eval_seed=5).prompts}  # another draw of the pool


def test_pooled_rows_reproduce_each_section_and_average_them(sections, tmp_path):
    cluster_dir, reports = sections
    m = load_script("pooled_ranking")
    own, other = (r["score_folder"] for r in reports)
    specs = [(cluster_dir, own, 5, 3), (cluster_dir, other, 5, 9)]
    pairs = [("trained", "untrained"), ("trained", "bm25")]
    result = m.measure(specs, pairs, n_resamples=50, seed=3)
    rows = result["sections"]
    assert [r["bootstrap_seed"] for r in rows] == [3, 4]
    for row, report in zip(rows, reports, strict=True):
        want = report["methods"]["trained"]["ndcg@3"]["vs_untrained"]["diff"]
        for mode in ("crossed", "queries"):
            assert row["pairs"]["trained-untrained"][mode]["ndcg@3"]["diff"] == (
                pytest.approx(want))
        bm25 = (report["methods"]["trained"]["ndcg@3"]["mean"]
                - report["methods"]["bm25"]["ndcg@3"]["mean"])
        assert row["pairs"]["trained-bm25"]["queries"]["ndcg@3"]["diff"] == pytest.approx(bm25)
    # section 1's query-only interval is its report's: same queries, same bootstrap seed
    mine = rows[0]["pairs"]["trained-untrained"]["queries"]["ndcg@3"]
    theirs = reports[0]["methods"]["trained"]["ndcg@3"]["vs_untrained"]
    assert (mine["low"], mine["high"]) == pytest.approx((theirs["low"], theirs["high"]))
    for pair in ("trained-untrained", "trained-bm25"):
        for mode in ("crossed", "queries"):
            got = result["pooled"][pair][mode]["ndcg@3"]
            parts = [r["pairs"][pair][mode]["ndcg@3"]["diff"] for r in rows]
            assert got["diff"] == pytest.approx(sum(parts) / 2)
            assert got["low"] <= got["diff"] <= got["high"]
    ranking_ceiling = load_script("ranking_ceiling")
    a, b = (ranking_ceiling.section(cluster_dir, tag, 5, seed) for _, tag, _, seed in specs)
    assert rows[0]["shared_with"] == {other: {
        "queries": len({q.id for q in a.queries} & {q.id for q in b.queries}),
        "prompts": len({p.id for p in a.prompts} & {p.id for p in b.prompts})}}
    out = tmp_path / "pooled.json"
    assert m.main(["--section", str(cluster_dir), own, "5", "3", "--section", str(cluster_dir),
                   other, "5", "9", "--pairs", "trained:untrained", "trained:bm25",
                   "--resamples", "50", "--seed", "3", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["pooled"] == json.loads(json.dumps(result["pooled"]))


def test_bad_pairs_and_seeds_are_refused_before_any_work(sections):
    cluster_dir, reports = sections
    m = load_script("pooled_ranking")
    with pytest.raises(SystemExit, match="expected NAME:REFERENCE"):
        m.parse_pairs(["trained"])
    with pytest.raises(SystemExit, match="two different rankers"):
        m.parse_pairs(["bm25:bm25"])
    with pytest.raises(SystemExit, match="must be integers"):
        m.parse_section([str(cluster_dir), "tag", "five", "3"])
    own = reports[0]["score_folder"]
    with pytest.raises(SystemExit, match="'best'.* is not a ranker of"):
        m.measure([(cluster_dir, own, 5, 3)], [("best", "untrained")], n_resamples=5)
    with pytest.raises(SystemExit, match="expected one ranking folder named nope"):
        m.measure([(cluster_dir, own, 5, 3), (cluster_dir, "nope", 5, 3)],
                  [("trained", "untrained")], n_resamples=5)
