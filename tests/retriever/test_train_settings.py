"""`TrainSettings`: checked when built, and its structured config is exactly what the equivalent
`uprise train fit` command line resolves to (same parser, links and defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from retriever.cli import train_main, train_retriever
from retriever.settings import TrainSettings


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epochs", 0, "epochs=0: expected a number > 0"),
    ("lr", -1e-5, "lr=-1e-05"),
    ("n_hard_negatives", -1, "n_hard_negatives=-1: expected an integer >= 0"),
    ("positive_top_k", 0, "positive_top_k=0: expected an integer >= 1"),
    ("loss", "infonce", r"loss='infonce': expected one of \['info_nce', 'info_nce\+kl'\]"),
    ("val_fraction", 1.0, "val_fraction=1.0: expected a fraction in"),
])
def test_settings_refuse_bad_values_when_built(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings(**{field: value})


def test_structured_config_equals_the_command_line(train_files, tiny_bert_path, tmp_path):
    """One real step each way; the saved config.yaml files (the resolved configs) agree."""
    settings = TrainSettings(encoder=str(tiny_bert_path), epochs=1, batch_size=4, lr=1e-3,
                             seed=7, n_hard_negatives=2, n_random_negatives=1, positive_top_k=2,
                             label_copy_correction=True, loss="info_nce+kl",
                             lm_temperature=0.2, max_steps=1, accelerator="cpu")
    paths = (train_files["scores"], train_files["queries"], train_files["pool"])
    train_retriever(*paths, tmp_path / "a", tmp_path / "a_exp", settings, {"note": "x"},
                    progress=False)
    b = tmp_path / "b"
    train_main(["fit", "--seed_everything=7", f"--encoder.base_model={tiny_bert_path}",
                "--model.lr=0.001", "--model.loss=info_nce+kl", "--model.lm_temperature=0.2",
                "--data.n_random_negatives=1", "--data.positive_top_k=2",
                "--data.label_copy_correction=true",
                f"--data.scores_path={paths[0]}", f"--data.queries_path={paths[1]}",
                f"--data.pool_path={paths[2]}", "--data.batch_size=4",
                "--data.n_hard_negatives=2", f"--trainer.default_root_dir={b}",
                "--trainer.max_epochs=1", "--trainer.max_steps=1", "--trainer.accelerator=cpu",
                "--trainer.enable_progress_bar=false", "--trainer.enable_checkpointing=false",
                "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                f"--trainer.logger.save_dir={b}", "--trainer.logger.name=logs",
                f"--export_dir={tmp_path / 'b_exp'}", '--metadata={"note": "x"}'])
    structured, command_line = (_saved_config(tmp_path / name) for name in ("a", "b"))
    assert structured == command_line
    assert structured["model"]["lm_temperature"] == 0.2 and structured["seed_everything"] == 7


def _saved_config(run: Path) -> dict:
    """The run's resolved config.yaml, with its own folder names made neutral."""
    (path,) = run.rglob("config.yaml")
    text = path.read_text().replace(str(run) + "_exp", "EXPORT").replace(str(run), "RUN")
    return yaml.safe_load(text)
