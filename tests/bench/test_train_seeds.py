"""bench/train_seeds.py: where a retraining goes and which seeds it refuses."""

from __future__ import annotations

import dataclasses
import json

import pytest
from bench_scripts import load_script

from uprise.quickstart import RUN_CONFIG, QuickstartConfig


def test_seed_folder_links_the_rounds_data_and_scores(tmp_path):
    m = load_script("train_seeds")
    for name in ("data", "scores"):
        (tmp_path / "round2" / name).mkdir(parents=True)
    out = m.seed_folder(tmp_path, tmp_path / "round2", "trained_r2", 43)
    assert out == tmp_path / "train_seeds" / "trained_r2" / "seed43"
    assert (out / "data").resolve() == (tmp_path / "round2" / "data").resolve()
    assert (out / "scores").resolve() == (tmp_path / "round2" / "scores").resolve()
    assert m.seed_folder(tmp_path, tmp_path / "round2", "trained_r2", 43) == out  # again: reused


def test_retrain_refuses_the_folders_own_seed_before_any_training(tmp_path):
    m = load_script("train_seeds")
    cfg = dataclasses.asdict(QuickstartConfig(seed=7))
    (tmp_path / RUN_CONFIG).write_text(json.dumps({"config": cfg}))
    with pytest.raises(SystemExit, match="--seeds: 7 is the folder's own seed"):
        m.retrain(tmp_path, [43, 7])
    assert not (tmp_path / "train_seeds").exists()
