"""`uprise eval --on dev` on tiny random models: an in-task run's development queries (rows of
the training split withheld with their inputs, `uprise data --dev-per-task`) are evaluated in
place of its evaluation split, against the same pool and retrievers; the leakage check still
refuses a development query in the pool, and data without development queries is refused
before any model loads."""

from __future__ import annotations

import dataclasses
import json

import pytest

from flan_data import LeakageError
from flan_data.protocol import build_in_task_data
from flan_data.schema import Score, write_jsonl
from flan_data.stage_io import write_stage_data
from uprise.evaluation_cli import eval_main


@pytest.fixture(scope="module")
def in_task(tmp_path_factory, shared_data_dir, train_tiny_retriever):
    """In-task CommonGen data with development queries, and a tiny retriever trained on
    hand-valued scores of its candidates, indexed over its pool."""
    root = tmp_path_factory.mktemp("dev")
    stage = build_in_task_data("common_gen", shared_data_dir, seed=3, pool_size=30, queries=8,
                               n_candidates=3, eval_size=4, dev_size=5)
    write_stage_data(stage, root / "data")
    scores = [Score(c.query_id, pid, "hand", 0, [loss], -loss, None)
              for n, c in enumerate(stage.candidates) for j, pid in enumerate(c.prompt_ids)
              for loss in [1.0 + ((n + 2 * j) % 5) / 5]]
    write_jsonl(root / "scores.jsonl", scores)
    export = train_tiny_retriever(root)
    return root, stage, export


def _eval(data, export, lm, out, *extra):
    eval_main(["--data", str(data), "--retriever", str(export), "--lm", str(lm), "--k", "1",
               "--methods", "bm25", "trained", "--ranking-per-task", "0", "--output-dir",
               str(out), "--no-progress", *extra])
    return json.loads((out / "report.json").read_text())


def _query_ids(out, method):
    return [json.loads(line)["query_id"] for line in
            (out / "predictions" / f"{method}.jsonl").open()]


def test_development_queries_are_evaluated_in_place_of_the_evaluation_split(
        in_task, tmp_path, tiny_gpt_neo_path):
    root, stage, export = in_task
    dev = _eval(root / "data", export, tiny_gpt_neo_path, tmp_path / "dev", "--on", "dev")
    assert dev["config"]["on"] == "dev" and dev["tasks"]["common_gen"]["n"] == 5
    for method in ("bm25", "trained"):
        assert _query_ids(tmp_path / "dev", method) == [q.id for q in stage.dev_queries]
    test = _eval(root / "data", export, tiny_gpt_neo_path, tmp_path / "eval")
    assert test["config"]["on"] == "eval"
    assert _query_ids(tmp_path / "eval", "trained") == [q.id for q in stage.eval_queries]


def test_a_development_query_in_the_pool_is_refused(in_task, tmp_path, tiny_gpt_neo_path):
    root, stage, export = in_task
    leaked = stage.dev_queries[0]
    planted = dataclasses.replace(stage.pool[0], id=leaked.id)
    write_stage_data(dataclasses.replace(stage, pool=[*stage.pool, planted],
                                         manifest={**stage.manifest, "counts": {
                                             **stage.manifest["counts"],
                                             "pool": len(stage.pool) + 1}}), tmp_path / "data")
    with pytest.raises(LeakageError, match=leaked.id):
        _eval(tmp_path / "data", export, tiny_gpt_neo_path, tmp_path / "out", "--on", "dev")


def test_dev_without_development_queries_fails_before_evaluation(in_task, tmp_path,
                                                                 tiny_gpt_neo_path, capsys):
    root, stage, export = in_task
    plain = dataclasses.replace(stage, dev_queries=[], manifest={
        **stage.manifest, "counts": {k: v for k, v in stage.manifest["counts"].items()
                                     if k != "dev_queries"}})
    write_stage_data(plain, tmp_path / "data")
    with pytest.raises(ValueError, match="has no development queries; build it with `uprise "
                                         "data --in-task TASK --dev-per-task N`"):
        _eval(tmp_path / "data", export, "no/such/lm", tmp_path / "out", "--on", "dev")
    with pytest.raises(SystemExit):
        eval_main(["--clusters", "all", "--on", "dev", "--output-dir", str(tmp_path / "x")])
    assert "--on dev evaluates a single run's development queries" in capsys.readouterr().err
