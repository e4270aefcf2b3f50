"""`uprise eval` end to end on tiny random models: leave-one-cluster-out with every method,
abstention, the report files, reuse of the cached stages, a separate evaluated LM, an evaluation
seed apart from the stages' seed, and the bring-your-own-task path with the example under
examples/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flan_data import evaluation_queries
from flan_data.score_folder import SCORE_MANIFEST
from uprise.evaluation_cli import eval_main

REPO = Path(__file__).resolve().parents[2]
ALL = {"zero_shot", "random", "bm25", "untrained", "trained", "trained+abstain"}


def _config(folder: Path) -> Path:
    """The LOCO config with short demonstrations: the tiny LMs have a 512-token window."""
    raw = yaml.safe_load((REPO / "configs" / "loco.yaml").read_text())
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**raw, "max_prompt_chars": 150}))
    return path


def _argv(shared_data_dir, bert, lm, work, out, *extra):
    return ["--config", str(_config(work.parent)), "--data-dir", str(shared_data_dir),
            "--encoder", str(bert), "--scoring-lm", str(lm),
            "--train-clusters", "nli", "paraphrase", "--pool-per-task", "12",
            "--queries-per-task", "4", "--n-candidates", "3", "--eval-per-task", "5",
            "--epochs", "1", "--k", "2", "--batch-size", "8", "--work-dir", str(work),
            "--output-dir", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def loco_run(tmp_path_factory, shared_data_dir, tiny_bert_path, tiny_gpt_neo_path):
    root = tmp_path_factory.mktemp("loco")
    argv = _argv(shared_data_dir, tiny_bert_path, tiny_gpt_neo_path, root / "work",
                 root / "out", "--clusters", "commonsense", "--abstain",
                 "--calibration-per-task", "3", "--ranking-per-task", "2",
                 "--ranking-prompts", "4")
    eval_main(argv)
    return root, json.loads((root / "out" / "report.json").read_text())


def test_ranking_section_ranks_every_retriever_against_the_scoring_lm(loco_run):
    root, report = loco_run
    ranking = report["clusters"]["commonsense"]["ranking"]
    assert ranking["n_queries"] == 4 and ranking["n_prompts"] == 4  # 2 per task: copa, piqa
    # the hybrid is ranked when its weight could be chosen: these tiny runs' few validation
    # queries may have no positive to rank (the --hybrid-weight test below ranks it)
    hybrid = {"hybrid"} if "hybrid" in report["clusters"]["commonsense"] else set()
    assert set(ranking["methods"]) == {"random", "bm25", "untrained", "trained"} | hybrid
    for name, row in ranking["methods"].items():
        assert set(row) == {"ndcg@3", "top1", "spearman"}
        assert ("vs_untrained" in row["ndcg@3"]) == (name != "untrained")
        assert set(row["ndcg@3"]["by_task"]) == {"copa", "piqa"}
    ranking_scores = root / "work" / "commonsense" / "ranking_scores"
    assert len(list(ranking_scores.glob(f"*/{SCORE_MANIFEST}")))  # score folders
    assert "Ranking vs LM scores" in (root / "out" / "commonsense" / "report.md").read_text()


def test_the_hybrid_at_weight_one_is_the_trained_retriever(
        loco_run, shared_data_dir, tiny_bert_path, tiny_gpt_neo_path):
    """`--clusters ... --methods hybrid --hybrid-weight 1` retrieves and ranks as 'trained'
    (the weight chosen on validation queries: tests/uprise/test_eval_hybrid.py)."""
    root, _ = loco_run
    eval_main(_argv(shared_data_dir, tiny_bert_path, tiny_gpt_neo_path, root / "work",
                    root / "hybrid1", "--clusters", "commonsense", "--methods", "trained",
                    "hybrid", "--hybrid-weight", "1", "--ranking-per-task", "2",
                    "--ranking-prompts", "4"))
    rerun = json.loads((root / "hybrid1" / "report.json").read_text())["clusters"]["commonsense"]
    assert rerun["hybrid"] == {"weight": 1.0, "source": "--hybrid-weight"}
    folder = root / "hybrid1" / "commonsense" / "predictions"
    assert (folder / "hybrid.jsonl").read_text() == (folder / "trained.jsonl").read_text()
    ranked = rerun["ranking"]["methods"]
    for metric in ("ndcg@3", "top1", "spearman"):
        assert ranked["hybrid"][metric]["by_task"] == pytest.approx(
            ranked["trained"][metric]["by_task"])


def test_the_ranking_section_goes_without_a_hybrid_it_cannot_calibrate(loco_run, tmp_path,
                                                                       caplog):
    """A cluster whose retriever has no validation queries to re-derive (here: the untrained
    export in its place) leaves the hybrid out of the ranking section with a warning, and fails
    before evaluation when the hybrid is a named method."""
    from uprise.loco import EvalSettings, hybrid_choice

    root, _ = loco_run
    (tmp_path / "retriever").symlink_to(root / "work" / "commonsense" / "untrained_retriever")
    with caplog.at_level("WARNING"):
        assert hybrid_choice(tmp_path, EvalSettings(), named=False) is None
    assert "goes without the hybrid" in caplog.text and "give --hybrid-weight" in caplog.text
    with pytest.raises(ValueError, match="give --hybrid-weight"):
        hybrid_choice(tmp_path, EvalSettings(), named=True)
    assert hybrid_choice(tmp_path, EvalSettings(hybrid_weight=0.5), named=True) == {
        "weight": 0.5, "source": "--hybrid-weight"}


def test_every_method_is_evaluated_on_the_same_examples(loco_run):
    root, report = loco_run
    cluster = report["clusters"]["commonsense"]
    assert set(cluster["methods"]) == ALL
    assert {t: i["n"] for t, i in cluster["tasks"].items()} == {"copa": 5, "piqa": 5}
    ids = None
    for name in ALL:
        rows = [json.loads(line) for line in
                (root / "out" / "commonsense" / "predictions" / f"{name}.jsonl").open()]
        assert ids is None or [r["query_id"] for r in rows] == ids
        ids = [r["query_id"] for r in rows]
        expected = {0} if name == "zero_shot" else {2}
        if name != "trained+abstain":
            assert {r["n_prompts"] for r in rows} == expected, name
    for result in cluster["methods"].values():
        assert 0.0 <= result["average"] <= 1.0
    assert cluster["best_baseline"] in {"zero_shot", "random", "bm25", "untrained"}
    assert "vs_best_baseline" in cluster["methods"]["trained"]


def test_abstention_is_calibrated_on_training_clusters_and_reported(loco_run):
    root, report = loco_run
    calibration = report["abstain"]["calibration"]["commonsense"]
    assert set(calibration["tasks"]) <= {"rte", "qnli", "mrpc"}
    assert calibration["n"] > 0
    effect = report["abstain"]["effect"]["clusters"]["commonsense"]
    assert effect["regression"] == (effect["trained"] < effect["zero_shot"])
    assert "Abstention" in (root / "out" / "report.md").read_text()


def test_abstention_per_answer_kind_reuses_the_calibration(loco_run, shared_data_dir,
                                                           tiny_bert_path, tiny_gpt_neo_path):
    """--abstain-by kind on the finished run: the cached calibration (it holds the per-kind
    thresholds) is reused; every calibration query here is multiple choice (nli, paraphrase),
    so the one kind's threshold is the overall one and the abstaining answers do not change."""
    root, _ = loco_run
    cached = sorted((root / "work" / "commonsense" / "abstain").glob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    argv = _argv(shared_data_dir, tiny_bert_path, tiny_gpt_neo_path, root / "work",
                 root / "by_kind", "--clusters", "commonsense", "--abstain", "--abstain-by",
                 "kind", "--calibration-per-task", "3", "--methods", "zero_shot", "trained")
    with pytest.raises(SystemExit):  # --abstain-by without --abstain
        eval_main([a for a in argv if a != "--abstain"])
    eval_main(argv)
    assert cached and {p: p.stat().st_mtime_ns for p in cached} == stamps
    report = json.loads((root / "by_kind" / "report.json").read_text())
    calibration = report["abstain"]["calibration"]["commonsense"]
    assert calibration["abstain_by"] == "kind" and set(calibration["by_kind"]) == {"choice"}
    choice = calibration["by_kind"]["choice"]
    assert float(choice["threshold"]) == float(calibration["threshold"])
    assert choice["n"] == calibration["n"]

    def answers(folder: str) -> list[tuple]:
        path = root / folder / "commonsense" / "predictions" / "trained+abstain.jsonl"
        return [(r["query_id"], r["n_prompts"], r["prediction"])
                for r in map(json.loads, path.open())]

    assert answers("by_kind") == answers("out")
    assert "choice queries: threshold" in (root / "by_kind" / "report.md").read_text()


def test_report_files_are_written(loco_run):
    root, report = loco_run
    for path in (root / "out").rglob("report.json"):  # strict JSON: no Infinity / NaN
        assert not any(c in path.read_text() for c in ("Infinity", "NaN")), path
    md = (root / "out" / "report.md").read_text()
    assert "| held-out cluster |" in md and "trained+abstain" in md and "copa" in md
    for png in (root / "out" / "report.png", root / "out" / "commonsense" / "report.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["run_info"]["libraries"] and report["config"]["scoring_lm"]
    assert report["summary"]["methods"]["trained"]["clusters"]["commonsense"] == \
        report["clusters"]["commonsense"]["methods"]["trained"]["average"]


def test_a_rerun_takes_every_answer_from_the_prediction_cache(
        loco_run, shared_data_dir, tiny_bert_path, tiny_gpt_neo_path):
    root, report = loco_run
    assert report["prediction_cache"]["answers_asked"] > 0
    base = _argv(shared_data_dir, tiny_bert_path, tiny_gpt_neo_path, root / "work",
                 root / "rerun", "--clusters", "commonsense", "--abstain",
                 "--calibration-per-task", "3", "--ranking-per-task", "0")
    eval_main(base)
    rerun = json.loads((root / "rerun" / "report.json").read_text())
    assert rerun["prediction_cache"]["answers_asked"] == 0
    # 10 rows; a method with another's prompts for every row reuses its answers without asking
    assert rerun["prediction_cache"]["answers_from_cache"] >= 3 * 10

    def rows(out: str, method: str) -> str:
        return (root / out / "commonsense" / "predictions" / f"{method}.jsonl").read_text()

    assert all(rows("rerun", m) == rows("out", m) for m in ALL)
    eval_main([a for a in base if a != "--abstain"] + [  # the last --output-dir counts
        "--no-prediction-cache", "--methods", "zero_shot", "--output-dir", str(root / "uncached")])
    uncached = json.loads((root / "uncached" / "report.json").read_text())
    assert uncached["prediction_cache"] is None
    assert rows("uncached", "zero_shot") == rows("out", "zero_shot")


def test_mined_rounds_are_built_from_the_previous_round_and_reported(
        loco_run, shared_data_dir, tiny_bert_path, tiny_gpt_neo_path):
    """--mining-rounds 3 on the finished run: round 1 is reused untouched, round 2 is mined
    from round 1's retriever and round 3 from round 2's, each scored, trained and indexed, and
    each reported beside 'trained' (downstream and ranking); other settings are refused."""
    from flan_data import read_stage_data
    from flan_data.score_folder import read_scores

    root, _ = loco_run
    work = root / "work" / "commonsense"
    round1 = sorted((work / "scores").glob("*")) + sorted((work / "retriever").glob("*"))
    stamps = {p: p.stat().st_mtime_ns for p in round1}
    mined = ["--clusters", "commonsense", "--methods", "zero_shot", "trained",
             "--mining-rounds", "3", "--mining-top-k", "2", "--ranking-per-task", "2",
             "--ranking-prompts", "4"]
    eval_main(_argv(shared_data_dir, tiny_bert_path, tiny_gpt_neo_path, root / "work",
                    root / "mined", *mined))
    assert {p: p.stat().st_mtime_ns for p in round1} == stamps
    first = read_stage_data(work / "data")
    for r, source in ((2, work), (3, work / "round2")):
        folder = work / f"round{r}"
        stage = read_stage_data(folder / "data")
        assert stage.manifest["mining"] == {
            "round": r - 1, "source": str(source / "data"), "ranker": "retriever",
            "retriever": str(source / "retriever"), "top_k": 2, "n_random": 1, "seed": 42}
        assert [q.id for q in stage.train_queries] == [q.id for q in first.train_queries]
        tasks = {p.id: p.task for p in stage.pool}
        for q, c in zip(stage.train_queries, stage.candidates, strict=True):
            assert len(c.prompt_ids) == 3 and q.id not in c.prompt_ids
            assert {tasks[i] for i in c.prompt_ids} == {q.task}
        scored = {(s.query_id, s.prompt_id) for s in read_scores(folder / "scores")}
        assert scored == {(c.query_id, i) for c in stage.candidates for i in c.prompt_ids}
        config = json.loads((folder / "retriever" / "uprise_config.json").read_text())
        assert config["metadata"]["mining_round"] == r
    report = json.loads((root / "mined" / "report.json").read_text())["clusters"]["commonsense"]
    assert set(report["methods"]) == {"zero_shot", "trained", "trained_r2", "trained_r3"}
    assert "vs_best_baseline" in report["methods"]["trained_r3"]
    assert {"trained_r2", "trained_r3"} <= set(report["ranking"]["methods"])
    # without `trained` downstream, the rounds are ranked only (all stages cached by now)
    eval_main(_argv(shared_data_dir, tiny_bert_path, tiny_gpt_neo_path, root / "work",
                    root / "ranked", *mined[:3], "zero_shot", *mined[5:]))
    ranked = json.loads((root / "ranked" / "report.json").read_text())["clusters"]["commonsense"]
    assert set(ranked["methods"]) == {"zero_shot"}
    assert {"trained", "trained_r2", "trained_r3"} <= set(ranked["ranking"]["methods"])
    with pytest.raises(ValueError, match=r"round2/data/data_manifest.json: mined with other "
                                         r"settings \(changed: \['n_random', 'top_k'\]"):
        eval_main(_argv(shared_data_dir, tiny_bert_path, tiny_gpt_neo_path, root / "work",
                        root / "refused", *mined[:-6], "--mining-top-k", "1", "--overwrite"))


def _stage_stamps(root: Path) -> dict[Path, int]:
    """Modification times of the cached commonsense scores and trained retriever files."""
    work = root / "work" / "commonsense"
    cached = sorted((work / "scores").glob("*")) + sorted((work / "retriever").glob("*"))
    return {p: p.stat().st_mtime_ns for p in cached}


def test_a_second_run_reuses_the_stages_with_another_evaluated_lm(
        loco_run, shared_data_dir, tiny_bert_path, tiny_gpt_neo_path, tiny_llama_path):
    root, _ = loco_run
    stamps = _stage_stamps(root)
    eval_main(_argv(shared_data_dir, tiny_bert_path, tiny_gpt_neo_path, root / "work",
                    root / "again", "--clusters", "commonsense", "--eval-lm",
                    str(tiny_llama_path), "--methods", "zero_shot", "trained")
              + ["--k", "1", "--eval-per-task", "3"])
    again = json.loads((root / "again" / "report.json").read_text())
    assert again["config"]["eval_lm"] != again["config"]["scoring_lm"]
    assert set(again["clusters"]["commonsense"]["methods"]) == {"zero_shot", "trained"}
    assert {t: i["n"] for t, i in again["clusters"]["commonsense"]["tasks"].items()} == {
        "copa": 3, "piqa": 3}
    rows = (root / "again" / "commonsense" / "predictions" / "trained.jsonl").read_text()
    assert {json.loads(line)["n_prompts"] for line in rows.splitlines()} == {1}
    assert _stage_stamps(root) == stamps


def test_eval_seed_draws_the_held_out_rows_and_reuses_the_stages(
        loco_run, shared_data_dir, tiny_bert_path, tiny_gpt_neo_path):
    root, _ = loco_run
    stamps = _stage_stamps(root)

    def ids(out: Path) -> list[str]:
        rows = (out / "commonsense" / "predictions" / "zero_shot.jsonl").read_text()
        return [json.loads(line)["query_id"] for line in rows.splitlines()]

    eval_main(_argv(shared_data_dir, tiny_bert_path, tiny_gpt_neo_path, root / "work",
                    root / "eval_seed", "--clusters", "commonsense", "--methods", "zero_shot",
                    "--ranking-per-task", "0", "--eval-seed", "5"))
    drawn = [q.id for q in evaluation_queries("commonsense", shared_data_dir, 5, 5)]
    assert ids(root / "eval_seed") == drawn != ids(root / "out")  # the stages' seed is 42
    assert json.loads((root / "eval_seed" / "report.json").read_text())["clusters"][
        "commonsense"]["eval_seed"] == 5
    assert _stage_stamps(root) == stamps


def test_the_configs_k_is_used_unless_k_is_given(loco_run, shared_data_dir, tiny_bert_path,
                                                tiny_gpt_neo_path):
    root, _ = loco_run
    config = root / "k1.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load(_config(root).read_text()), "k": 1}))
    argv = _argv(shared_data_dir, tiny_bert_path, tiny_gpt_neo_path, root / "work",
                 root / "config_k", "--clusters", "commonsense", "--methods", "trained",
                 "--ranking-per-task", "0", "--eval-per-task", "2")
    at = argv.index("--k")
    argv = [*argv[:at], *argv[at + 2:]]  # no --k: the config's k = 1
    argv[argv.index("--config") + 1] = str(config)
    eval_main(argv)
    report = json.loads((root / "config_k" / "report.json").read_text())
    rows = (root / "config_k" / "commonsense" / "predictions" / "trained.jsonl").read_text()
    assert report["config"]["k"] == 1
    assert {json.loads(line)["n_prompts"] for line in rows.splitlines()} == {1}


@pytest.fixture
def product_reviews_registered():
    from flan_data.custom_task import unregister_custom_task

    yield
    unregister_custom_task("product_reviews")  # keep the sentiment cluster built-in only


def test_bring_your_own_task_end_to_end(tmp_path, shared_data_dir, tiny_bert_path,
                                        tiny_gpt_neo_path, product_reviews_registered):
    out = tmp_path / "out"
    eval_main(_argv(shared_data_dir, tiny_bert_path, tiny_gpt_neo_path, tmp_path / "work", out,
                    "--task-file", str(REPO / "examples" / "product_reviews.yaml"),
                    "--methods", "zero_shot", "bm25", "trained"))
    report = json.loads((out / "report.json").read_text())
    sentiment = report["clusters"]["sentiment"]
    assert sentiment["tasks"] == {"product_reviews": {"cluster": "sentiment",
                                                      "metric": "accuracy", "n": 5}}
    pool = [json.loads(line) for line in
            (tmp_path / "work" / "sentiment" / "data" / "pool.jsonl").open()]
    assert pool and {p["cluster"] for p in pool} <= {"nli", "paraphrase"}
    assert not {p["task"] for p in pool} & {"product_reviews", "sst2", "sentiment140"}
    assert "product_reviews" in (out / "report.md").read_text()


def test_the_cpu_config_is_the_documented_cpu_run():
    """configs/loco_cpu.yaml gives the stage config of the README's CPU proof run (loco.yaml with
    that run's size options), so its cached stages are reused and its numbers reproduced."""
    from uprise.loco import LOCO_CONFIG, cluster_config
    from uprise.quickstart import QuickstartConfig

    train = ["sentiment", "nli", "paraphrase", "commonsense", "coreference", "closed_book_qa",
             "summarization", "struct_to_text"]
    documented = QuickstartConfig.from_yaml(LOCO_CONFIG, pool_per_task=200, queries_per_task=40,
                                            n_candidates=10, epochs=3)
    cpu = QuickstartConfig.from_yaml(REPO / "configs" / "loco_cpu.yaml")
    assert cpu.eval_per_task == 150  # the run's --eval-per-task
    for cluster in ("struct_to_text", "summarization"):
        assert cluster_config(cpu, cluster, train) == cluster_config(documented, cluster, train)
    command = (REPO / "configs" / "loco_cpu.yaml").read_text()
    assert "--train-clusters " + " ".join(train[:6]) in " ".join(command.replace("#", "").split())
