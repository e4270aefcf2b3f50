"""Collation (prompt union, false-negative mask) and the DataModule. Reading score folders is
tested in tests/flan_data/test_score_folder.py."""

from __future__ import annotations

import json

import pytest
import torch

from flan_data.schema import Prompt, Query, Score, write_json, write_jsonl
from flan_data.score_folder import SCORE_MANIFEST, ZERO_SHOT_FILE, ZERO_SHOT_ID, shard_name
from flan_data.stage_io import read_stage_file
from retriever.data import RetrieverDataModule, collate_examples, prompt_key


def s(q, p, score, correct):
    return Score(query_id=q, prompt_id=p, lm="lm", template=0, option_losses=[0.0], score=score,
                 correct=correct)


def test_collate_dedupes_prompts_and_indexes_positives():
    items = [
        {"query": "q1", "prompt_ids": ["a", "b"], "prompt_texts": ["A", "B"]},
        {"query": "q2", "prompt_ids": ["b", "c", "a"], "prompt_texts": ["B", "C", "A"]},
    ]
    batch = collate_examples(items)
    assert batch["prompts"] == ["A", "B", "C"]
    assert batch["positive_idx"].tolist() == [0, 1]
    assert batch["candidate_idx"].tolist() == [[0, 1, -1], [1, 2, 0]]
    assert batch["scored_idx"].shape == (2, 0) and not batch["ignore"].any()


def test_collate_adds_scored_candidates_and_masks_those_as_good_as_the_positive():
    # q1's positive "a" (made the LM correct) has value -0.5; "x" scored higher but was wrong,
    # so it must not be q1's negative; "b" (-2.0) is a real negative. q2 scored nothing.
    items = [
        {"query": "q1", "prompt_ids": ["a", "b"], "prompt_texts": ["A", "B"],
         "scored_ids": ["a", "b", "x"], "scored_texts": ["A", "B", "X"],
         "scored_lm": [0.6, 0.1, 0.7], "scored_values": [-0.5, -2.0, -0.3]},
        {"query": "q2", "prompt_ids": ["x", "c"], "prompt_texts": ["X", "C"]},
    ]
    batch = collate_examples(items)
    assert batch["prompts"] == ["A", "B", "X", "C"]
    assert batch["scored_idx"].tolist() == [[0, 1, 2], [-1, -1, -1]]
    assert torch.allclose(batch["scored_lm"], torch.tensor([[0.6, 0.1, 0.7], [0.0, 0.0, 0.0]]))
    assert batch["scored_values"][0].tolist() == pytest.approx([-0.5, -2.0, -0.3])
    assert batch["ignore"].tolist() == [[False, False, True, False], [False] * 4]


def test_collate_masks_another_querys_prompt_the_query_itself_scored_as_good():
    # Default training batches carry no scored texts, only each query's label values. q1 scored
    # q2's positive "x" above its own positive "a": "x" must not be q1's in-batch negative. q1
    # scored "c" lower, so "c" stays a negative; q2 never scored "a", so "a" stays q2's negative;
    # q2 scored q1's "b" above its positive: masked for q2 as well.
    items = [
        {"query": "q1", "prompt_ids": ["a", "b"], "prompt_texts": ["A", "B"],
         "values": {"a": -0.5, "b": -2.0, "x": -0.3, "c": -0.9}},
        {"query": "q2", "prompt_ids": ["x", "c"], "prompt_texts": ["X", "C"],
         "values": {"x": -1.0, "c": -3.0, "b": -1.0}},
    ]
    batch = collate_examples(items)
    assert batch["prompts"] == ["A", "B", "X", "C"]
    assert batch["scored_idx"].shape == (2, 0)
    assert batch["ignore"].tolist() == [[False, False, True, False],
                                        [False, True, False, False]]
    # for another device's prompts: every key valued as high as the positive, batched or not
    k = {pid: prompt_key(pid) for pid in "abcx"}
    assert batch["prompt_keys"].tolist() == [k["a"], k["b"], k["x"], k["c"]]
    assert batch["as_good_keys"].tolist() == [[k["x"]], [k["b"]]]


def test_as_good_keys_include_prompts_this_batch_does_not_hold():
    items = [{"query": "q1", "prompt_ids": ["a", "b"], "prompt_texts": ["A", "B"],
              "values": {"a": -0.5, "b": -2.0, "y": -0.5, "z": 0.0}},
             {"query": "q2", "prompt_ids": ["b"], "prompt_texts": ["B"]}]
    batch = collate_examples(items)
    assert not batch["ignore"].any()  # neither "y" nor "z" is in this batch
    assert batch["as_good_keys"].tolist() == [[prompt_key("y"), prompt_key("z")], [-1, -1]]
    keys = {prompt_key(f"task_{i}") for i in range(10_000)}
    assert len(keys) == 10_000 and min(keys) >= 0  # distinct, non-negative int64


def test_default_training_batches_mask_false_negatives_without_batching_scores(train_files,
                                                                             make_pool):
    dm = RetrieverDataModule(train_files["scores"], train_files["queries"], train_files["pool"],
                             batch_size=6, n_hard_negatives=1, val_fraction=0.25, seed=1)
    dm.setup("fit")
    items = {it["query"]: it for it in dm.train_set.items}
    assert all("scored_ids" not in it and it["values"] for it in items.values())
    text_id = {p.text: p.id for p in make_pool()}
    masked = 0
    for batch in dm.train_dataloader():  # the fixture's queries share candidates
        assert batch["scored_idx"].shape[1] == 0
        for row, query in enumerate(batch["queries"]):
            values, positive = items[query]["values"], items[query]["prompt_ids"][0]
            for col, text in enumerate(batch["prompts"]):
                pid = text_id[text]
                as_good = pid != positive and values.get(pid, -1e9) >= values[positive]
                assert bool(batch["ignore"][row, col]) == as_good, (query, pid)
                masked += as_good
    assert masked > 0


def _batches(dm):
    return [json.dumps(b["queries"] + b["prompts"]) for b in dm.train_dataloader()]


def test_datamodule_is_deterministic_with_the_seed(train_files):
    def make(seed):
        dm = RetrieverDataModule(train_files["scores"], train_files["queries"],
                                 train_files["pool"], batch_size=3, n_hard_negatives=2,
                                 val_fraction=0.25, seed=seed)
        dm.setup("fit")
        return dm

    a, b, c = make(1), make(1), make(2)
    assert len(a.train_set) == 6 and len(a.val_set) == 2
    assert _batches(a) == _batches(b)
    assert _batches(a) != _batches(c)
    batch = next(iter(a.train_dataloader()))
    assert batch["positive_idx"].shape == (3,)
    assert all(len(row) == 3 for row in batch["candidate_idx"].tolist())


def test_datamodule_with_nothing_to_learn_is_a_clear_error(tmp_path, train_files):
    write_jsonl(tmp_path / "bad.jsonl", [s("q0", "p0", 0.1, False)])
    dm = RetrieverDataModule(tmp_path / "bad.jsonl", train_files["queries"], train_files["pool"])
    with pytest.raises(ValueError, match="no training query has a usable positive"):
        dm.setup("fit")


def test_validation_queries_do_not_depend_on_label_options(train_files, make_pool):
    def make(**options):
        dm = RetrieverDataModule(train_files["scores"], train_files["queries"],
                                 train_files["pool"], batch_size=4, val_fraction=0.25, seed=3,
                                 **options)
        dm.setup("fit")
        return dm

    plain = make()
    other = make(label_copy_correction=True, n_random_negatives=2, batch_all_candidates=True)
    assert plain.val_set.items == other.val_set.items
    assert all(len(item["scored_ids"]) == 4 for item in plain.val_set.items)
    assert "scored_ids" not in plain.train_set.items[0]
    item = other.train_set.items[0]
    assert len(item["scored_ids"]) == 4 and len(item["prompt_ids"]) == 1 + 3 + 2
    pool_task = {p.id: p.task for p in make_pool()}
    assert all(pool_task[pid] != "rte" for pid in item["prompt_ids"][-2:])  # other tasks only


def test_tasks_at_chance_are_recorded_and_give_no_training_labels(tmp_path, make_pool):
    pool = make_pool()
    queries, scores = [], []
    for task, correct in (("rte", lambda j: j != 1), ("coin", lambda j: j % 2 == 0)):
        for i in range(8):  # rte: 3 of 4 candidates make the LM correct; coin: 2 of 4 (chance)
            q = Query(id=f"{task}{i}", task=task, cluster="nli", template=0, input=f"{task} {i}",
                      options=["yes", "no"], gold=0)
            queries.append(q)
            scores += [Score(query_id=q.id, prompt_id=pool[j].id, lm="tiny", template=0,
                             option_losses=[0.5, 1.0], score=0.9 - j / 10, correct=correct(j))
                       for j in range(4)]
    paths = {name: tmp_path / f"{name}.jsonl" for name in ("pool", "queries", "scores")}
    for name, records in (("pool", pool), ("queries", queries), ("scores", scores)):
        write_jsonl(paths[name], records)

    def setup(drop: bool) -> RetrieverDataModule:
        dm = RetrieverDataModule(paths["scores"], paths["queries"], paths["pool"],
                                 val_fraction=0.25, drop_chance_tasks=drop)
        dm.setup("fit")
        return dm

    dropped, kept = setup(True), setup(False)
    assert dropped.tasks_at_chance == ["coin"] and kept.tasks_at_chance is None
    assert {it["query"].split()[0] for it in dropped.train_set.items} == {"rte"}
    assert {it["query"].split()[0] for it in kept.train_set.items} == {"rte", "coin"}
    assert len(dropped.val_set) == len(kept.val_set)  # validation is never filtered


def test_zero_shot_relative_reads_the_folders_zero_shot_scores(tmp_path, train_files):
    scores = [Score(**json.loads(line)) for line in train_files["scores"].open()]
    folder = tmp_path / "scores"
    folder.mkdir()
    write_jsonl(folder / shard_name(0), scores)
    write_json(folder / SCORE_MANIFEST, {"complete": True})

    def make(path, **options):
        dm = RetrieverDataModule(path, train_files["queries"], train_files["pool"],
                                 val_fraction=0.25, seed=3, **options)
        dm.setup("fit")
        return dm

    with pytest.raises(ValueError, match="zero_shot_relative needs the score folder"):
        make(train_files["scores"], zero_shot_relative=True)
    with pytest.raises(FileNotFoundError, match=f"{ZERO_SHOT_FILE} not found"):
        make(folder, zero_shot_relative=True)
    # Zero-shot at each query's median candidate score: only the candidates above it qualify.
    by_query: dict[str, list[float]] = {}
    for x in scores:
        by_query.setdefault(x.query_id, []).append(x.score)
    write_jsonl(folder / ZERO_SHOT_FILE, [
        Score(query_id=q, prompt_id=ZERO_SHOT_ID, lm="tiny", template=0,
              option_losses=[1.0, 1.0], score=sorted(v)[len(v) // 2], correct=False)
        for q, v in by_query.items()])
    plain, gain = make(folder), make(folder, zero_shot_relative=True)
    assert plain.val_set.items == gain.val_set.items  # validation keeps the plain labels
    zero = {q: sorted(v)[len(v) // 2] for q, v in by_query.items()}
    lm = {(x.query_id, x.prompt_id): x.score for x in scores}
    queries = {json.loads(line)["input"]: json.loads(line)["id"]
               for line in train_files["queries"].open()}
    for item in gain.train_set.items:
        q = queries[item["query"]]
        assert lm[(q, item["prompt_ids"][0])] > zero[q]  # the positive beats zero-shot
    # Where the best candidate made the LM wrong, UPRISE's positive is another one.
    assert [it["prompt_ids"][0] for it in gain.train_set.items] != [
        it["prompt_ids"][0] for it in plain.train_set.items]
    kept = {queries[it["query"]] for it in gain.train_set.items}
    assert kept == {queries[it["query"]] for it in plain.train_set.items
                    if max(v for (qq, _), v in lm.items() if qq == queries[it["query"]])
                    > zero[queries[it["query"]]]}


@pytest.mark.parametrize("num_workers", [0, 1])
def test_top_k_positives_change_with_the_loaders_epoch(train_files, num_workers):
    dm = RetrieverDataModule(train_files["scores"], train_files["queries"], train_files["pool"],
                             batch_size=3, n_hard_negatives=2, val_fraction=0.25, seed=1,
                             positive_top_k=3, num_workers=num_workers)
    dm.setup("fit")
    ts = dm.train_set
    by_query = {ts.items[i]["query"]: ex for i, ex in enumerate(ts.examples)}
    pool = {p.id: p.text for p in read_stage_file(train_files["pool"], Prompt)}
    loader, seen = dm.train_dataloader(), []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        got = {}
        for batch in loader:
            for row, query in enumerate(batch["queries"]):
                got[query] = batch["prompts"][batch["positive_idx"][row]]
        assert got == {q: pool[ex.positive_for(epoch)] for q, ex in by_query.items()}
        seen.append(got)
    assert seen[0] != seen[1] != seen[2]  # the fixture's queries have several top candidates
    assert all(len(ex.top_ids) > 1 for ex in ts.examples)
