"""bench/labels.py --exports: a retriever trained elsewhere is measured only when it held out
exactly the validation queries measured here (its recorded seed and val_fraction on the same
scored queries), so no measured query can be one it trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_scripts import load_script

from flan_data.schema import Score, write_jsonl
from retriever.data import validation_query_ids


@pytest.fixture(scope="module")
def labels():
    return load_script("labels")


def _scores(path: Path, query_ids: list[str]) -> Path:
    write_jsonl(path, [Score(query_id=q, prompt_id="p0", lm="tiny", template=0,
                             option_losses=[0.5, 1.0], score=0.5, correct=True)
                       for q in query_ids])
    return path


def _export(folder: Path, scores: Path, seed: int, val_fraction: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "uprise_config.json").write_text(json.dumps({"metadata": {
        "scores_path": str(scores), "seed": seed, "val_fraction": val_fraction}}))
    return folder


def test_an_export_with_the_same_split_is_accepted_another_is_refused(tmp_path, labels):
    ids = [f"q{i}" for i in range(20)]
    held_out = validation_query_ids(ids, 0.25, 42)  # the split measured (--seed 42, 0.25)
    # a later round scores other candidates of the same queries: the same split
    same = _export(tmp_path / "round2", _scores(tmp_path / "round2.jsonl", ids), 42, 0.25)
    labels.check_held_out("round2", same, held_out)
    assert validation_query_ids(ids, 0.25, 42) != validation_query_ids(ids, 0.25, 7)
    for name, seed, fraction, scored in (("seed", 7, 0.25, ids), ("fraction", 42, 0.1, ids),
                                         ("queries", 42, 0.25, ids[:12])):
        other = _export(tmp_path / name, _scores(tmp_path / f"{name}.jsonl", scored), seed,
                        fraction)
        with pytest.raises(SystemExit, match=f"--exports {name}: .* another validation split"):
            labels.check_held_out(name, other, held_out)


def test_export_specs_are_parsed_in_order_and_bad_ones_refused(tmp_path, labels):
    one = _export(tmp_path / "one", tmp_path / "s.jsonl", 42, 0.1)
    two = _export(tmp_path / "two", tmp_path / "s.jsonl", 42, 0.1)
    assert list(labels.parse_exports([f"r1={one}", f"r2={two}"]).items()) == [
        ("r1", one), ("r2", two)]
    for specs, message in ((["round2"], "is not a new NAME=DIR"),
                           ([f"a={one}", f"a={two}"], "'a=.*two' is not a new NAME=DIR"),
                           ([f"a={tmp_path / 'missing'}"], "holds no uprise_config.json")):
        with pytest.raises(SystemExit, match=message):
            labels.parse_exports(specs)
