"""bench/ranking_ceiling.py's `section`: a tiny `uprise eval` folder whose held-out rows were
drawn with an --eval-seed apart from its --seed is read back only with that seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from bench_scripts import load_script

from flan_data import evaluation_queries
from uprise.evaluation_cli import eval_main

REPO = Path(__file__).resolve().parents[2]


def test_section_reads_a_folder_evaluated_with_another_eval_seed(
        tmp_path, shared_data_dir, tiny_bert_path, tiny_gpt_neo_path):
    raw = yaml.safe_load((REPO / "configs" / "loco.yaml").read_text())
    config = tmp_path / "tiny.yaml"  # short demonstrations: the tiny LMs have a 512-token window
    config.write_text(yaml.safe_dump({**raw, "max_prompt_chars": 150}))
    eval_main(["--config", str(config), "--data-dir", str(shared_data_dir),
               "--encoder", str(tiny_bert_path), "--scoring-lm", str(tiny_gpt_neo_path),
               "--clusters", "commonsense", "--train-clusters", "nli", "paraphrase",
               "--pool-per-task", "12", "--queries-per-task", "4", "--n-candidates", "3",
               "--epochs", "1", "--k", "2", "--batch-size", "8", "--seed", "3",
               "--eval-seed", "5", "--eval-per-task", "5", "--methods", "zero_shot",
               "--ranking-per-task", "2", "--ranking-prompts", "4",
               "--work-dir", str(tmp_path / "work"), "--output-dir", str(tmp_path / "out"),
               "--no-progress"])
    cluster_dir = tmp_path / "work" / "commonsense"
    m = load_script("ranking_ceiling")
    with pytest.raises(SystemExit, match="evaluation seed 3.*pass the --eval-seed"):
        m.section(cluster_dir)  # the folder's seed (3) draws other templates or rows
    got = m.section(cluster_dir, eval_seed=5)
    drawn = {q.id: q for q in evaluation_queries("commonsense", shared_data_dir, 5, 5)}
    assert len(got.queries) == 4 and len(got.prompts) == 4  # 2 per task (copa, piqa) x 4
    assert all(drawn[q.id] == q for q in got.queries)
    assert got.scores.shape == (4, 4) and not np.isnan(got.scores).any()
