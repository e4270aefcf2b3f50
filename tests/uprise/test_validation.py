"""Bad options fail before the expensive part: the quickstart config is checked when built, and
`uprise data` checks its counts and names before it creates the output folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from flan_data.schema import write_json
from uprise.evaluation_cli import eval_main
from uprise.main import main
from uprise.quickstart import (
    DEFAULT_CONFIG,
    RUN_CONFIG,
    QuickstartConfig,
    check_resumable,
    quickstart_config,
    quickstart_main,
    quickstart_parser,
    run_quickstart,
)


def _yaml(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(changes)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"k": 0}, r"k: got 0 \(int\), expected an integer >= 1"),
    ({"pool_per_task": "8"}, r"pool_per_task: got '8' \(str\), expected an integer >= 1 or null"),
    ({"train_clusters": "sentiment"}, r"train_clusters: got 'sentiment' \(str\), expected a "
                                      "non-empty list of cluster names"),
    ({"train_clusters": []}, "train_clusters: got"),
    ({"train_clusters": ["sentiment", "nope"]}, "train_clusters: unknown cluster 'nope'"),
    ({"held_out_cluster": "sentiment"}, "also listed in train_clusters"),
    ({"n_candidates": -4}, "n_candidates: got -4"),
    ({"epochs": 1.5}, "epochs: got 1.5"),
    ({"seed": True}, "seed: got True"),
    ({"lr": "3e-5"}, r"lr: got '3e-5' \(str\), expected a number > 0"),
    ({"lm_temperature": 0}, "lm_temperature: got 0"),
    ({"loss": "infonce"}, r"loss: got 'infonce' \(str\), expected one of \['info_nce'"),
    ({"lm_dtype": "fp16"}, "lm_dtype: got 'fp16'"),
    ({"drop_chance_tasks": "yes"}, "drop_chance_tasks: got 'yes'"),
    ({"keep_start_if_best": "no"}, "keep_start_if_best: got 'no'"),
    ({"n_hard_negatives": -1}, "n_hard_negatives: got -1"),
    ({"grad_cache_chunk": -1}, r"grad_cache_chunk: got -1 \(int\), expected an integer >= 0"),
    ({"grad_cache_chunk": 2.5}, "grad_cache_chunk: got 2.5"),
    ({"grad_cache_chunk": None}, "grad_cache_chunk: got None"),
    ({"positive_top_k": 0}, r"positive_top_k: got 0 \(int\), expected an integer >= 1"),
    ({"encoder": ""}, "encoder: got ''"),
    ({"mining_rounds": 0}, "mining_rounds: got 0"),
    ({"mining_rounds": 2, "mining_top_k": 9}, r"mining_top_k: got 9 \(int\), expected an "
                                              r"integer <= n_candidates \(8\)"),
    ({"cross_cluster_candidates": 9}, r"cross_cluster_candidates: got 9 \(int\), expected an "
                                      r"integer <= n_candidates \(8\)"),
    ({"cross_cluster_candidates": -1}, "cross_cluster_candidates: got -1"),
    ({"mining_rounds": 2, "cross_cluster_candidates": 2},
     "cross_cluster_candidates: got 2 .* 0 when mining_rounds > 1"),
])
def test_config_refuses_bad_fields_when_loaded(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        QuickstartConfig.from_yaml(_yaml(tmp_path, **changes))


def test_config_accepts_the_shipped_file_and_a_list_of_clusters():
    cfg = QuickstartConfig.from_yaml(DEFAULT_CONFIG)
    assert cfg == QuickstartConfig()  # the shipped file and the dataclass defaults agree
    assert isinstance(cfg.train_clusters, tuple) and "sentiment" in cfg.train_clusters
    assert QuickstartConfig(train_clusters=["nli"]).train_clusters == ("nli",)
    assert QuickstartConfig(train_clusters=None, pool_per_task=None).train_clusters is None
    with pytest.raises(ValueError, match="k: got 0"):
        dataclasses.replace(cfg, k=0)  # replace() goes through the same checks
    forced = QuickstartConfig(keep_start_if_best=False).train_settings()
    assert cfg.train_settings().keep_start_if_best and not forced.keep_start_if_best
    assert forced.cli_config("s", "q", "p", "o", "e")["fit"]["model"]["keep_start_if_best"] is False


def test_grad_cache_chunk_reaches_the_training_module_config():
    assert QuickstartConfig().train_settings().grad_cache_chunk == 0  # off by default
    settings = QuickstartConfig(grad_cache_chunk=4).train_settings()
    assert settings.grad_cache_chunk == 4
    assert settings.cli_config("s", "q", "p", "o", "e")["fit"]["model"]["grad_cache_chunk"] == 4


@pytest.mark.parametrize("name", ["quickstart.yaml", "loco.yaml", "loco_cpu.yaml"])
def test_the_shipped_quickstart_style_configs_load_and_list_their_newer_keys(name):
    path = DEFAULT_CONFIG.parent / name
    assert {"grad_cache_chunk", "positive_top_k"} <= yaml.safe_load(path.read_text()).keys()
    settings = QuickstartConfig.from_yaml(path).train_settings()
    assert (settings.grad_cache_chunk, settings.positive_top_k) == (0, 1)


def test_positive_top_k_reaches_the_data_config():
    settings = QuickstartConfig(positive_top_k=3).train_settings()
    assert settings.cli_config("s", "q", "p", "o", "e")["fit"]["data"]["positive_top_k"] == 3


def test_quickstart_refuses_a_bad_config_before_making_the_run_folder(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="k: got 0"):
        quickstart_main(["--config", str(_yaml(tmp_path, k=0)), "--output-dir", str(out)])
    with pytest.raises(ValueError, match="eval_per_task: got 0"):
        quickstart_main(["--config", str(_yaml(tmp_path, eval_per_task=0)),
                         "--output-dir", str(out)])
    assert not out.exists()
    with pytest.raises(ValueError, match="eval_per_task: got 0"):
        run_quickstart(QuickstartConfig(eval_per_task=0), out)
    assert not out.exists()


def test_a_non_mapping_config_file_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- k\n- 3\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        QuickstartConfig.from_yaml(path)


@pytest.mark.parametrize(("option", "message"), [
    (["--queries-per-task", "0"], "--queries-per-task 0: expected an integer >= 1"),
    (["--n-candidates", "0"], "--n-candidates 0: expected an integer >= 1"),
    (["--n-candidates", "-4"], "--n-candidates -4: expected an integer >= 1"),
    (["--pool-per-task", "0"], "--pool-per-task 0"),
    (["--eval-per-task", "0"], "--eval-per-task 0"),
    (["--max-prompt-chars", "0"], "--max-prompt-chars 0"),
    (["--carve-fraction", "0"], "--carve-fraction 0.0"),
    (["--held-out-cluster", "nope"], "unknown cluster 'nope'"),
    (["--train-clusters", "nli", "nope"], "unknown cluster 'nope'"),
    (["--train-clusters", "sentiment"], "also listed in train_clusters"),
    (["--in-task", "nope"], "unknown task 'nope'"),
])
def test_data_refuses_bad_options_before_making_the_folder(tmp_path, capsys, option, message):
    out = tmp_path / "data"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "--output-dir", str(out), "--data-dir", str(tmp_path / "mirror"), *option])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_loss_options_reach_the_quickstart_config_over_the_file(tmp_path):
    args = quickstart_parser().parse_args(["--loss", "info_nce+kl", "--lm-temperature", "0.5"])
    cfg = quickstart_config(args)
    assert (cfg.loss, cfg.lm_temperature) == ("info_nce+kl", 0.5)
    plain = quickstart_config(quickstart_parser().parse_args(
        ["--config", str(_yaml(tmp_path, loss="info_nce+kl", lm_temperature=0.2))]))
    assert (plain.loss, plain.lm_temperature) == ("info_nce+kl", 0.2)  # the file's, unflagged
    with pytest.raises(ValueError, match="lm_temperature: got 0.0"):
        quickstart_config(quickstart_parser().parse_args(["--lm-temperature", "0"]))


@pytest.mark.parametrize(("argv", "message"), [
    (["--clusters", "commonsense", "--loss", "kl"], "--loss: invalid choice: 'kl'"),
    (["--data", "run/data", "--methods", "zero_shot", "--loss", "info_nce+kl"],
     "a --data run evaluates an already trained --retriever"),
    (["--data", "run/data", "--methods", "zero_shot", "--eval-seed", "7"],
     "a --data run evaluates the queries its `uprise data` folder holds"),
])
def test_eval_refuses_options_that_do_not_apply(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        eval_main([*argv, "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_eval_loss_options_reach_the_stage_config(tmp_path):
    """--lm-temperature 0 is refused by the stage config's own check: the option reached it
    (before any model loads or any cluster folder is made)."""
    with pytest.raises(ValueError, match="lm_temperature: got 0.0"):
        eval_main(["--clusters", "commonsense", "--loss", "info_nce+kl", "--lm-temperature", "0",
                   "--work-dir", str(tmp_path / "work"), "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(("key", "other"), [("zero_shot_relative", True),
                                            ("grad_cache_chunk", 4), ("positive_top_k", 3)])
def test_a_run_saved_before_a_config_key_existed_resumes_with_its_default(tmp_path, key, other):
    cfg = QuickstartConfig()
    saved = dataclasses.asdict(cfg)
    del saved[key]  # a run folder from before the option
    write_json(tmp_path / RUN_CONFIG, {"config": saved})
    check_resumable(cfg, tmp_path)
    with pytest.raises(ValueError, match=rf"changed: \['{key}'\]"):
        check_resumable(dataclasses.replace(cfg, **{key: other}), tmp_path)


def test_mining_options_reach_the_config_and_a_resumed_run_may_add_rounds(tmp_path):
    """Round 1's stages do not read the mining keys: a finished run may gain a mined round
    (each round folder checks its own settings, tests/uprise/test_eval_loco.py)."""
    cfg = quickstart_config(quickstart_parser().parse_args(
        ["--mining-rounds", "2", "--mining-top-k", "3"]))
    assert (cfg.mining_rounds, cfg.mining_top_k) == (2, 3)
    write_json(tmp_path / RUN_CONFIG, {"config": dataclasses.asdict(QuickstartConfig())})
    check_resumable(cfg, tmp_path)
    with pytest.raises(ValueError, match=r"changed: \['seed'\]"):
        check_resumable(dataclasses.replace(cfg, seed=7), tmp_path)
