"""bench/round_ranking.py: which mined rounds of a cluster folder it judges."""

from __future__ import annotations

import pytest
from bench_scripts import load_script

from retriever.export import CONFIG_NAME


def _export(folder):
    (folder / "retriever").mkdir(parents=True)
    (folder / "retriever" / CONFIG_NAME).write_text("{}")


def test_mined_rounds_in_numeric_order(tmp_path):
    m = load_script("round_ranking")
    for r in (10, 2, 3):
        _export(tmp_path / f"round{r}")
    (tmp_path / "rounds_notes").mkdir()  # not a round folder
    got = m.mined_rounds(tmp_path)
    assert list(got) == [2, 3, 10]
    assert got[10] == tmp_path / "round10" / "retriever"


def test_mined_rounds_refuses_a_folder_without_rounds_or_an_unfinished_round(tmp_path):
    m = load_script("round_ranking")
    with pytest.raises(SystemExit, match="no mined round.*--mining-rounds 2"):
        m.mined_rounds(tmp_path)
    assert m.mined_rounds(tmp_path, required=False) == {}  # bench/train_seeds.py: round 1 only
    _export(tmp_path / "round2")
    (tmp_path / "round3" / "data").mkdir(parents=True)
    with pytest.raises(SystemExit, match="round3/retriever: no exported retriever"):
        m.mined_rounds(tmp_path)
