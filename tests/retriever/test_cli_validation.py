"""`uprise train` refuses a non-empty --export_dir before fitting; `uprise index` refuses an
indexed directory without --overwrite and bad options before loading anything; index files
get the umask's mode, not mkstemp's 0600."""

from __future__ import annotations

import json
import os
import stat

import pytest

import retriever.cli as cli
from flan_data.schema import write_jsonl
from retriever.export import export_retriever
from retriever.model import BiEncoder


def _no_model(*args, **kwargs):
    pytest.fail("a model was built before the export directory was checked")


def test_train_refuses_a_non_empty_export_dir_before_building_the_model(
        train_files, tiny_bert_path, tmp_path, monkeypatch):
    export = tmp_path / "exp"
    export.mkdir()
    (export / "keep.txt").write_text("mine")
    monkeypatch.setattr(cli, "BiEncoder", _no_model)
    args = ["fit", "--encoder.base_model", str(tiny_bert_path),
            "--data.scores_path", str(train_files["scores"]),
            "--data.queries_path", str(train_files["queries"]),
            "--data.pool_path", str(train_files["pool"]),
            "--trainer.accelerator", "cpu", "--trainer.fast_dev_run", "true",
            "--trainer.default_root_dir", str(tmp_path / "run"), "--export_dir", str(export)]
    with pytest.raises(FileExistsError, match=f"--export_dir {export} is not empty; pass "
                                              "--overwrite_export=true"):
        cli.train_main(args)
    with pytest.raises(FileExistsError, match="is not empty"):
        cli.train_retriever(train_files["scores"], train_files["queries"], train_files["pool"],
                            out_dir=tmp_path / "run2", export_dir=export,
                            encoder=str(tiny_bert_path), accelerator="cpu", progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()
    assert [p.name for p in export.iterdir()] == ["keep.txt"]


@pytest.fixture
def indexed(tiny_config, tmp_path, make_pool):
    out = export_retriever(BiEncoder(tiny_config), tmp_path / "exp", {})
    write_jsonl(tmp_path / "pool.jsonl", make_pool(10))
    cli.index_main(["--retriever", str(out), "--pool", str(tmp_path / "pool.jsonl"),
                    "--no-progress"])
    return out


def test_index_refuses_an_indexed_directory_unless_overwrite(indexed, tmp_path, capsys,
                                                             make_pool):
    write_jsonl(tmp_path / "other.jsonl", make_pool(14))
    argv = ["--retriever", str(indexed), "--pool", str(tmp_path / "other.jsonl"), "--no-progress"]
    with pytest.raises(SystemExit) as exit_info:
        cli.index_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{indexed} already holds an index" in err and "--overwrite" in err
    assert json.loads((indexed / "manifest.json").read_text())["n_prompts"] == 10
    cli.index_main([*argv, "--overwrite"])
    assert json.loads((indexed / "manifest.json").read_text())["n_prompts"] == 14


@pytest.mark.parametrize(("extra", "message"), [
    (["--batch-size", "0"], "--batch-size 0: expected a positive integer"),
    (["--nprobe", "0"], "--nprobe 0"),
    (["--ef-search", "-1"], "--ef-search -1"),
    (["--seed", "-1"], "--seed -1"),
    (["--add", "--overwrite"], "--add appends"),
])
def test_index_refuses_bad_options_before_loading(tiny_config, tmp_path, capsys, make_pool,
                                                  extra, message):
    out = export_retriever(BiEncoder(tiny_config), tmp_path / "exp", {})
    write_jsonl(tmp_path / "pool.jsonl", make_pool(4))
    with pytest.raises(SystemExit):
        cli.index_main(["--retriever", str(out), "--pool", str(tmp_path / "pool.jsonl"),
                        "--output-dir", str(tmp_path / "idx"), *extra])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()


def test_index_refuses_a_missing_pool_or_retriever_before_making_the_folder(tmp_path, capsys):
    (tmp_path / "exp").mkdir()
    for argv, message in (
        (["--retriever", str(tmp_path / "exp"), "--pool", str(tmp_path / "no.jsonl")],
         f"--pool {tmp_path / 'no.jsonl'}: no such file"),
        (["--retriever", str(tmp_path / "none"), "--pool", str(tmp_path / "no.jsonl")],
         f"--retriever {tmp_path / 'none'}: no such directory"),
    ):
        with pytest.raises(SystemExit):
            cli.index_main([*argv, "--output-dir", str(tmp_path / "idx")])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def test_index_files_get_the_umask_mode(indexed, umask_022, tmp_path, make_pool):
    write_jsonl(tmp_path / "p.jsonl", make_pool(6))
    cli.index_main(["--retriever", str(indexed), "--pool", str(tmp_path / "p.jsonl"),
                    "--overwrite", "--no-progress"])
    for name in ("index.faiss", "prompts.jsonl", "manifest.json"):
        assert stat.S_IMODE((indexed / name).stat().st_mode) == 0o644, name
