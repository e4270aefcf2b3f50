"""CLI smoke tests: LightningCLI fit with fast_dev_run, --print_config, train_retriever, index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from retriever.cli import index_main, train_main, train_retriever
from retriever.export import load_retriever_encoder
from retriever.settings import latest_ranking


def _fit_args(train_files, tiny_bert_path, tmp_path):
    return [
        "fit",
        "--encoder.base_model", str(tiny_bert_path),
        "--encoder.query_max_length", "32",
        "--data.scores_path", str(train_files["scores"]),
        "--data.queries_path", str(train_files["queries"]),
        "--data.pool_path", str(train_files["pool"]),
        "--data.batch_size", "4",
        "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    ]


def test_fit_fast_dev_run_exports(train_files, tiny_bert_path, tmp_path):
    args = _fit_args(train_files, tiny_bert_path, tmp_path)
    train_main(args + ["--trainer.fast_dev_run", "true", "--model.lr", "1e-3",
                       "--model.loss", "info_nce+kl", "--export_dir", str(tmp_path / "exp")])
    _, config = load_retriever_encoder(tmp_path / "exp")
    assert config["encoder"]["query_max_length"] == 32
    assert config["metadata"]["loss"] == "info_nce+kl" and config["metadata"]["trained"]


def test_print_config(train_files, tiny_bert_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(_fit_args(train_files, tiny_bert_path, tmp_path)
                   + ["--model.lr", "1e-5", "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "lr: 1.0e-05" in printed and f"base_model: {tiny_bert_path}" in printed


def test_train_retriever_saves_config_and_versions_and_is_seeded(train_files, tiny_bert_path,
                                                                  tmp_path):
    def run(name):
        return train_retriever(
            train_files["scores"], train_files["queries"], train_files["pool"],
            out_dir=tmp_path / name, encoder=str(tiny_bert_path), epochs=1, batch_size=4,
            lr=1e-3, seed=5, n_hard_negatives=2, max_steps=2, accelerator="cpu",
            metadata={"held_out_cluster": "sentiment"}, progress=False,
        )

    export = run("a")
    assert export == tmp_path / "a" / "retriever"
    config_files = list((tmp_path / "a").rglob("config.yaml"))
    assert len(config_files) == 1
    assert "seed_everything: 5" in config_files[0].read_text()
    info = json.loads((config_files[0].parent / "run_info.json").read_text())
    assert "torch" in info["libraries"]
    st, config = load_retriever_encoder(export)
    assert config["metadata"]["held_out_cluster"] == "sentiment"
    assert config["metadata"]["global_steps"] == 2
    again, _ = load_retriever_encoder(run("b"))
    texts = ["a wonderful film", "the cat sat"]
    assert torch.allclose(st.encode_query(texts, convert_to_tensor=True),
                          again.encode_query(texts, convert_to_tensor=True), atol=1e-6)
    with pytest.raises(FileExistsError, match="not empty"):
        run("a")


def test_index_main(train_files, tiny_config, tmp_path, capsys):
    from retriever.export import export_retriever
    from retriever.model import BiEncoder

    out = export_retriever(BiEncoder(tiny_config), tmp_path / "exp", {})
    index_main(["--retriever", str(out), "--pool", str(train_files["pool"]), "--no-progress"])
    assert json.loads((out / "manifest.json").read_text())["n_prompts"] == 12


def test_fit_from_a_yaml_config_with_dotted_overrides(train_files, tiny_bert_path, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        f"seed_everything: 3\n"
        f"encoder:\n  base_model: {tiny_bert_path}\n  prompt_max_length: 40\n"
        f"model:\n  lr: 1.0e-3\n"
        f"data:\n  scores_path: {train_files['scores']}\n"
        f"  queries_path: {train_files['queries']}\n  pool_path: {train_files['pool']}\n"
        f"trainer:\n  accelerator: cpu\n  max_epochs: 1\n  enable_progress_bar: false\n"
        f"  default_root_dir: {tmp_path / 'run'}\n"
    )
    train_main(["fit", "--config", str(config), "--data.batch_size", "8",
                "--trainer.max_steps", "1", "--trainer.enable_checkpointing", "false",
                "--data.drop_chance_tasks", "true", "--export_dir", str(tmp_path / "exp")])
    saved = next((tmp_path / "run").rglob("config.yaml")).read_text()
    assert "batch_size: 8" in saved and "prompt_max_length: 40" in saved
    _, exported = load_retriever_encoder(tmp_path / "exp")
    assert exported["encoder"]["prompt_max_length"] == 40
    assert exported["metadata"]["seed"] == 3
    assert exported["metadata"]["tasks_at_chance"] == []  # the one task is well above chance


@pytest.mark.parametrize("config_name, extra", [
    ("train.yaml", []),
    ("train.yaml", ["--model.grad_cache_chunk", "3"]),
    # the paper-scale GPU config, shrunk to this CPU: its keys must all parse and fit
    ("paper_gpu.yaml", ["--trainer.precision", "32", "--data.num_workers", "0",
                        "--data.n_hard_negatives", "2", "--data.n_random_negatives", "2",
                        "--data.val_fraction", "0.25"]),
])
def test_shipped_train_configs_fit_with_dotted_overrides(train_files, tiny_bert_path, tmp_path,
                                                         config_name, extra):
    config = Path(__file__).resolve().parents[2] / "configs" / config_name
    train_main(["fit", "--config", str(config), *extra,
                "--encoder.base_model", str(tiny_bert_path),
                "--data.scores_path", str(train_files["scores"]),
                "--data.queries_path", str(train_files["queries"]),
                "--data.pool_path", str(train_files["pool"]),
                "--trainer.accelerator", "cpu", "--trainer.max_steps", "1",
                "--trainer.enable_progress_bar", "false",
                "--trainer.enable_checkpointing", "false",
                "--trainer.default_root_dir", str(tmp_path / "run"),
                "--export_dir", str(tmp_path / "exp")])
    _, exported = load_retriever_encoder(tmp_path / "exp")
    assert exported["metadata"]["seed"] == 42
    assert exported["metadata"]["global_steps"] == 1
    assert exported["metadata"]["tasks_at_chance"] is None  # drop_chance_tasks off


@pytest.mark.parametrize(("reference", "keep_start", "expected"), [
    (0.5, True, 1),              # fit epoch 1 is best
    (0.95, True, "reference"),   # no epoch beats the untrained towers: they are exported
    (0.95, False, 1),            # unless the start may not compete
])
def test_the_best_validated_epoch_is_restored_not_the_last(train_files, tiny_config,
                                                           monkeypatch, reference, keep_start,
                                                           expected):
    import lightning as L

    import retriever.module as module_file
    from retriever.data import RetrieverDataModule
    from retriever.model import BiEncoder
    from retriever.module import SELECT_METRIC, RetrieverModule

    # The metric is scripted per pass (best = fit epoch 1), so the test does not hang on which
    # epoch a tiny random model happens to rank best; the selection and restore code is real.
    script = {None: reference, 0: 0.6, 1: 0.9, 2: 0.7, 3: 0.4}
    real = module_file.ranking_metrics

    def scripted(retriever_scores, lm_scores, mask):
        got = real(retriever_scores, lm_scores, mask)
        fitting = module.trainer.state.fn == "fit"
        got[SELECT_METRIC] = torch.full_like(got[SELECT_METRIC],
                                             script[module.current_epoch if fitting else None])
        return got

    monkeypatch.setattr(module_file, "ranking_metrics", scripted)

    class Snapshots(L.Callback):
        """The towers' weights after every fit validation pass, by epoch."""

        def __init__(self):
            self.states = {}

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.states[trainer.current_epoch] = {
                    k: v.clone() for k, v in pl_module.model.state_dict().items()}

    L.seed_everything(0)
    data = RetrieverDataModule(train_files["scores"], train_files["queries"], train_files["pool"],
                               batch_size=2, val_fraction=0.5, seed=0)
    module = RetrieverModule(BiEncoder(tiny_config), lr=3e-3, keep_start_if_best=keep_start)
    start = {k: v.clone() for k, v in module.model.state_dict().items()}
    snapshots = Snapshots()
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[snapshots])
    trainer.validate(module, datamodule=data, verbose=False)
    trainer.fit(module, datamodule=data)
    history = module.ranking_history
    assert [r["stage"] for r in history] == ["reference"] + ["fit"] * 4
    assert history[0][SELECT_METRIC] == pytest.approx(reference)
    best = history[0] if expected == "reference" else history[1 + expected]
    assert module.restore_best() == best and best[SELECT_METRIC] > 0.85
    weights = start if expected == "reference" else snapshots.states[expected]
    assert any(not torch.equal(v, snapshots.states[3][k]) for k, v in weights.items())
    restored = module.model.state_dict()  # the restore changed the last epoch's weights back
    assert all(torch.equal(restored[k], v) for k, v in weights.items())


def test_train_retriever_writes_the_ranking_record(train_files, tiny_bert_path, tmp_path):
    export = train_retriever(
        train_files["scores"], train_files["queries"], train_files["pool"],
        out_dir=tmp_path / "run", encoder=str(tiny_bert_path), epochs=2, batch_size=4,
        lr=1e-3, val_fraction=0.25, accelerator="cpu", progress=False,
        loss="info_nce+kl", label_copy_correction=True, n_random_negatives=1,
        keep_start_if_best=False,
    )
    record = latest_ranking(tmp_path / "run")
    assert [r["stage"] for r in record["history"]] == ["reference", "fit", "fit"]
    assert record["best"]["stage"] == "fit"  # the start does not compete
    assert record["select_metric"] == "ndcg@3" and record["history"][0]["n_queries"] == 2
    _, config = load_retriever_encoder(export)
    meta = config["metadata"]
    assert meta["validation_ranking"] == {"reference": record["history"][0],
                                          "exported": record["best"]}
    assert meta["label_copy_correction"] and meta["n_random_negatives"] == 1
