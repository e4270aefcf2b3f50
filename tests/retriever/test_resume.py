"""Resuming `uprise train` with `--ckpt_path` ends where an uninterrupted run ends, bitwise:
the same final weights, export (the best validated epoch) and `ranking.json`.

The first test SIGKILLs a real `uprise train` process mid-epoch (epoch 1, after its first batch)
and resumes it: the resumed run must repeat epoch 1's order (not epoch 0's), skip the batch the
checkpoint holds, draw the uninterrupted run's dropout masks (the tiny BERT's dropout is on) and
keep epoch 0's validation for `select_best`. The second resumes from a checkpoint written after
an epoch's last batch, before its validation, which Lightning alone would skip. Same hardware
and thread count on both sides (the child runs with one thread, `one_thread` here), so the
comparison is exact: `torch.equal`, no tolerance.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from retriever.cli import train_main

HERE = Path(__file__).resolve().parent
BATCHES_PER_EPOCH, EPOCHS = 3, 3  # 6 training queries (8, 2 held out) in batches of 2
KILL_AFTER_STEP = 4  # epoch 1, after its first batch


def _args(train_files, tiny_bert_path, run: Path) -> list[str]:
    return [
        "fit", "--seed_everything", "7",
        "--encoder.base_model", str(tiny_bert_path), "--encoder.query_max_length", "32",
        "--encoder.prompt_max_length", "48",
        "--data.scores_path", str(train_files["scores"]),
        "--data.queries_path", str(train_files["queries"]),
        "--data.pool_path", str(train_files["pool"]),
        "--data.batch_size", "2", "--data.val_fraction", "0.25",
        "--data.n_random_negatives", "1",
        "--model.lr", "1e-3",
        "--trainer.accelerator", "cpu", "--trainer.max_epochs", str(EPOCHS),
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(run),
        # the README's mid-epoch checkpointing: every step here, last.ckpt beside
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={run / 'checkpoints'}",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.save_top_k=-1",
        "--trainer.callbacks.save_last=true",
        "--export_dir", str(run / "export"),
    ]


def _wait_for(path: Path, child: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if path.is_file():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path.name} not written before exit/timeout (exit {child.poll()}):\n"
                         f"{log.read_text()[-3000:]}")


def _final(run: Path) -> tuple[dict, dict, dict]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    exported = {f"{p.parent.name}/{k}": v for p in sorted((run / "export").rglob("*.safetensors"))
                for k, v in load_file(p).items()}
    ranking = json.loads(next(run.rglob("ranking.json")).read_text())
    return ckpt, exported, ranking


def _assert_equal_tensors(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    differ = [k for k in want if not torch.equal(got[k], want[k])]
    worst = max((float((got[k] - want[k]).abs().max()) for k in differ), default=0.0)
    assert not differ, f"{len(differ)} tensors differ (max |diff| {worst:.3g}): {differ[:3]}"


def test_sigkilled_training_resumes_to_the_uninterrupted_weights(train_files, tiny_bert_path,
                                                                 tmp_path, one_thread):
    run = tmp_path / "killed"
    args = _args(train_files, tiny_bert_path, run)
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1]), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = tmp_path / "child.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, str(HERE / "stalled_train_run.py"), str(KILL_AFTER_STEP), *args],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    ckpt = run / "checkpoints" / f"epoch=1-step={KILL_AFTER_STEP}.ckpt"
    try:
        _wait_for(ckpt, child, log)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert not (run / "export").exists()
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] == KILL_AFTER_STEP
    loader_state = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state == [{"epoch": 1, "batches": KILL_AFTER_STEP - BATCHES_PER_EPOCH}]

    train_main([*args, "--ckpt_path", str(ckpt)])  # resume, in this process (one thread)
    train_main(_args(train_files, tiny_bert_path, tmp_path / "whole"))  # uninterrupted
    resumed, uninterrupted = _final(run), _final(tmp_path / "whole")

    assert resumed[0]["global_step"] == uninterrupted[0]["global_step"] == (
        BATCHES_PER_EPOCH * EPOCHS)
    _assert_equal_tensors(resumed[0]["state_dict"], uninterrupted[0]["state_dict"])
    _assert_equal_tensors(resumed[1], uninterrupted[1])  # the export: the best epoch's weights
    assert resumed[2] == uninterrupted[2]  # every validation pass, the same best epoch
    assert [r["stage"] for r in resumed[2]["history"]] == ["reference"] + ["fit"] * EPOCHS


def test_resume_after_an_epochs_last_batch_keeps_that_epochs_validation(
        train_files, tiny_bert_path, tmp_path, one_thread):
    whole = tmp_path / "whole"
    train_main(_args(train_files, tiny_bert_path, whole))
    name = f"epoch=0-step={BATCHES_PER_EPOCH}.ckpt"  # written before epoch 0's validation
    run = tmp_path / "resumed"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(whole / "checkpoints" / name, run / "checkpoints" / name)
    train_main([*_args(train_files, tiny_bert_path, run), "--ckpt_path",
                str(run / "checkpoints" / name)])
    resumed, uninterrupted = _final(run), _final(whole)
    _assert_equal_tensors(resumed[0]["state_dict"], uninterrupted[0]["state_dict"])
    _assert_equal_tensors(resumed[1], uninterrupted[1])
    assert resumed[2] == uninterrupted[2]
    assert [r["epoch"] for r in resumed[2]["history"]] == [0, *range(EPOCHS)]
