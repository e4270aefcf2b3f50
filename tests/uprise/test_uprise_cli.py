"""The `uprise` dispatcher and the data stage's command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from uprise.main import COMMANDS, main


def test_help_lists_every_command(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_unknown_command_names_it():
    with pytest.raises(SystemExit, match="unknown command 'trian'"):
        main(["trian"])


def test_data_command_writes_a_stage_and_refuses_to_overwrite(shared_data_dir, tmp_path):
    out = tmp_path / "data"
    argv = ["data", "--held-out-cluster", "paraphrase", "--train-clusters", "nli", "sentiment",
            "--data-dir", str(shared_data_dir), "--output-dir", str(out), "--pool-per-task", "20",
            "--queries-per-task", "5", "--n-candidates", "4", "--eval-per-task", "10"]
    main(argv)
    manifest = json.loads((out / "data_manifest.json").read_text())
    assert manifest["held_out_cluster"] == "paraphrase"
    assert manifest["counts"]["eval_queries"] == 10
    assert "libraries" in manifest["run_info"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(argv)


def test_console_script_runs_in_a_subprocess():
    done = subprocess.run([sys.executable, "-m", "uprise", "data", "--list"],
                          capture_output=True, text=True, check=True)
    assert "sst2" in done.stdout and "closed_book_qa" in done.stdout


def test_a_user_error_is_one_line_with_exit_status_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "uprise", "score", "--data", str(tmp_path / "missing"),
         "--output-dir", str(tmp_path / "scores")],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "uprise score: error: FileNotFoundError:" in done.stderr
    assert str(tmp_path / "missing") in done.stderr and "uprise data" in done.stderr
