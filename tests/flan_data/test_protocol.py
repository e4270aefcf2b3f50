"""The held-out-cluster protocol on the offline mirror: leakage, candidates, carving, seeds."""

from __future__ import annotations

import pytest

from flan_data import (
    LeakageError,
    Prompt,
    Query,
    UnknownNameError,
    build_stage_data,
    check_no_leakage,
    clusters,
    read_stage_data,
    sample_candidates,
    tasks_in,
    write_stage_data,
)

SMALL = dict(pool_per_task=40, queries_per_task=10, n_candidates=5, eval_per_task=20)


@pytest.fixture(scope="module")
def stage(shared_data_dir):
    return build_stage_data("sentiment", shared_data_dir, seed=3, **SMALL)


def test_held_out_cluster_never_reaches_pool_queries_or_candidates(stage):
    held = {t.name for t in tasks_in("sentiment")}
    assert stage.pool and stage.train_queries and stage.candidates
    assert not {p.task for p in stage.pool} & held
    assert not {q.task for q in stage.train_queries} & held
    used = {pid for c in stage.candidates for pid in [c.query_id, *c.prompt_ids]}
    assert not {i.split(":")[0] for i in used} & held
    assert {q.task for q in stage.eval_queries} == held
    assert set(stage.manifest["train_clusters"]) == set(clusters()) - {"sentiment"}


def test_leakage_guard_raises_on_a_planted_prompt(stage):
    planted = Prompt("sst2:train:0", "sst2", "sentiment", 0, "a great film positive")
    with pytest.raises(LeakageError, match="sentiment"):
        check_no_leakage("sentiment", [*stage.pool, planted], stage.train_queries, stage.candidates)


def test_candidates_are_same_task_and_exclude_the_query(stage):
    task_of = {p.id: p.task for p in stage.pool}
    by_id = {q.id: q for q in stage.train_queries}
    for c in stage.candidates:
        assert c.query_id not in c.prompt_ids
        assert len(c.prompt_ids) == len(set(c.prompt_ids)) <= SMALL["n_candidates"]
        assert {task_of[p] for p in c.prompt_ids} == {by_id[c.query_id].task}


def test_sample_candidates_excludes_itself_when_pool_is_tiny():
    pool = [Prompt(f"t:train:{i}", "t", "c", 0, f"p{i}") for i in range(3)]
    q = Query("t:train:1", "t", "c", 0, "x", ["a", "b"], 0)
    (cands,) = sample_candidates([q], pool, n_candidates=10, seed=0)
    assert sorted(cands.prompt_ids) == ["t:train:0", "t:train:2"]


def test_cross_cluster_candidates_mix_own_task_and_other_clusters():
    pool = [Prompt(f"a:train:{i}", "a", "c1", 0, f"a{i}") for i in range(4)]
    pool += [Prompt(f"b:train:{i}", "b", "c1", 0, f"b{i}") for i in range(4)]
    pool += [Prompt(f"x:train:{i}", "x", "c2", 0, f"x{i}") for i in range(4)]
    q = Query("a:train:1", "a", "c1", 0, "in", ["y", "n"], 0)
    (mixed,) = sample_candidates([q], pool, n_candidates=3, seed=0, cross_cluster=2)
    assert len(mixed.prompt_ids) == 3 and mixed.prompt_ids[0].startswith("a:")
    assert mixed.prompt_ids[0] != q.id and all(p.startswith("x:") for p in mixed.prompt_ids[1:])
    (cross,) = sample_candidates([q], pool, n_candidates=6, seed=0, cross_cluster=6)
    assert sorted(cross.prompt_ids) == [f"x:train:{i}" for i in range(4)]  # capped, never c1
    assert sample_candidates([q], pool, 3, seed=0, cross_cluster=2) == [mixed]  # seeded
    with pytest.raises(ValueError, match="no prompt outside cluster 'c1'"):
        sample_candidates([q], pool[:8], n_candidates=3, seed=0, cross_cluster=1)
    with pytest.raises(ValueError, match=r"cross_cluster_candidates 4: .*n_candidates = 3"):
        sample_candidates([q], pool, n_candidates=3, seed=0, cross_cluster=4)


def test_a_cross_cluster_build_never_draws_from_the_querys_cluster(shared_data_dir, stage):
    cross = build_stage_data("sentiment", shared_data_dir, seed=3, cross_cluster_candidates=5,
                             **SMALL)
    cluster_of = {p.id: p.cluster for p in cross.pool}
    by_id = {q.id: q for q in cross.train_queries}
    assert cross.pool == stage.pool and cross.train_queries == stage.train_queries
    assert cross.manifest["cross_cluster_candidates"] == 5
    for c in cross.candidates:
        assert len(c.prompt_ids) == len(set(c.prompt_ids)) == SMALL["n_candidates"]
        assert by_id[c.query_id].cluster not in {cluster_of[p] for p in c.prompt_ids}


def test_build_is_deterministic_per_seed(shared_data_dir, stage):
    again = build_stage_data("sentiment", shared_data_dir, seed=3, **SMALL)
    other = build_stage_data("sentiment", shared_data_dir, seed=4, **SMALL)
    assert again.pool == stage.pool and again.candidates == stage.candidates
    assert [p.id for p in other.pool] != [p.id for p in stage.pool]


def test_carved_tasks_are_recorded_and_pool_is_class_balanced(stage):
    carved = {c["task"] for c in stage.manifest["carves"]}
    assert {"qnli", "piqa", "boolq", "arc_easy", "nq_open"} <= carved
    rte = [p for p in stage.pool if p.task == "rte"]
    yes = sum(p.text.endswith(" yes") for p in rte)
    assert len(rte) == SMALL["pool_per_task"] and yes == len(rte) // 2


def test_templates_are_deterministic_and_varied(stage):
    templates = {p.template for p in stage.pool if p.task == "rte"}
    assert len(templates) == 3


def test_stage_files_round_trip(stage, tmp_path):
    write_stage_data(stage, tmp_path)
    back = read_stage_data(tmp_path)
    assert back.pool == stage.pool and back.eval_queries == stage.eval_queries
    assert back.candidates == stage.candidates and back.manifest == stage.manifest


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(held_out_cluster="sentimnet"), "unknown cluster 'sentimnet'"),
        (dict(held_out_cluster="nli", train_clusters=["nli", "paraphrase"]), "also listed"),
        (dict(held_out_cluster="nli", train_clusters=["paraphrase", "bogus"]), "unknown cluster"),
    ],
)
def test_bad_cluster_names_are_named_in_the_error(shared_data_dir, kwargs, match):
    with pytest.raises((UnknownNameError, ValueError), match=match):
        build_stage_data(data_dir=shared_data_dir, **kwargs, **SMALL)


def test_empty_pool_is_an_error(shared_data_dir):
    with pytest.raises(ValueError, match="empty prompt pool"):
        build_stage_data("nli", shared_data_dir, ["paraphrase"], max_prompt_chars=5, **SMALL)


def test_in_task_data_uses_the_training_split_for_pool_and_queries(shared_data_dir):
    from flan_data.protocol import build_in_task_data

    stage = build_in_task_data("rte", shared_data_dir, seed=3, pool_size=30, queries=8,
                               n_candidates=4, eval_size=12)
    assert stage.manifest["mode"] == "in_task" and stage.manifest["task"] == "rte"
    assert {p.id.rsplit(":", 1)[0] for p in stage.pool} == {"rte:train"}
    assert {q.id.rsplit(":", 1)[0] for q in stage.train_queries} == {"rte:train"}
    assert {q.id.rsplit(":", 1)[0] for q in stage.eval_queries} == {"rte:validation"}
    assert len(stage.eval_queries) == 12 and len(stage.pool) == 30
    pool_ids = {p.id for p in stage.pool}
    for c in stage.candidates:
        assert len(c.prompt_ids) == 4 and c.query_id not in c.prompt_ids
        assert set(c.prompt_ids) <= pool_ids
    assert stage.manifest["pool_split"] == "train" and stage.manifest["carves"] == []


def test_in_task_data_of_a_task_with_only_its_evaluation_split_carves_it(shared_data_dir):
    from flan_data.catalogue import get_task
    from flan_data.loading import load_rows
    from flan_data.protocol import build_in_task_data, carve_rows, in_task_carved_ids

    # the mirror's CommonGen has nothing but validation, one row per (concept set, reference)
    stage = build_in_task_data("common_gen", shared_data_dir, seed=3, pool_size=None,
                               queries=20, n_candidates=3, eval_size=None, carve_fraction=0.4)
    (carve,) = stage.manifest["carves"]
    rows = load_rows(get_task("common_gen"), "validation", shared_data_dir)
    assert carve["rows"] == len(rows) and carve["carved"] == round(0.4 * len(rows))
    pooled = [int(p.id.rsplit(":", 1)[1]) for p in stage.pool]
    evaluated = [int(q.id.rsplit(":", 1)[1]) for q in stage.eval_queries]
    carved, kept = carve_rows(get_task("common_gen"), len(rows), 3, 0.4)
    assert set(pooled) <= set(carved) and set(evaluated) <= set(kept)
    assert in_task_carved_ids(stage.manifest) == {f"common_gen:validation:{i}" for i in carved}
    # no concept set is both a demonstration and an evaluated query; the repeats were dropped
    concepts = {tuple(rows[i]["concepts"]) for i in carved}
    assert not any(tuple(rows[i]["concepts"]) in concepts for i in evaluated)
    dropped = sum(tuple(rows[i]["concepts"]) in concepts for i in kept)
    assert carve["eval_dropped_as_duplicates"] == dropped > 0
    assert len(evaluated) == len(kept) - dropped
    with pytest.raises(ValueError, match="--carve-fraction 1.0 .* leaves no evaluation rows"):
        build_in_task_data("common_gen", shared_data_dir, carve_fraction=1.0)


def test_in_task_data_without_a_training_split_uses_another_non_evaluation_split(
        shared_data_dir):
    from flan_data.protocol import build_in_task_data

    # the mirror's E2E NLG has validation and test (evaluated), no train
    stage = build_in_task_data("e2e_nlg", shared_data_dir, seed=3, pool_size=20, queries=5,
                               n_candidates=3, eval_size=6)
    assert stage.manifest["pool_split"] == "validation"
    assert {p.id.rsplit(":", 1)[0] for p in stage.pool} == {"e2e_nlg:validation"}
    assert {q.id.rsplit(":", 1)[0] for q in stage.train_queries} == {"e2e_nlg:validation"}
    assert {q.id.rsplit(":", 1)[0] for q in stage.eval_queries} == {"e2e_nlg:test"}


def test_withheld_development_rows_take_whole_inputs_with_them():
    from flan_data.catalogue import get_task
    from flan_data.examples import convert_rows
    from flan_data.protocol import withhold_dev

    task = get_task("common_gen")  # one row per (concept set, reference): inputs repeat
    rows = [{"concepts": [c, "dog"], "target": f"{c} dog {n}"}
            for c in "abcdef" for n in range(1 + (c in "ace"))]  # a, c, e twice: 9 rows
    examples = convert_rows(task, "validation", rows, seed=0)
    rest, dev = withhold_dev(task, examples, 4, seed=5)

    def inputs(part):
        return {e.example.fields["concepts"] for e in part}

    assert len(examples) == 9 and len(inputs(examples)) == 6
    assert len(dev) == 4 and not inputs(dev) & inputs(rest)
    assert inputs(dev) | inputs(rest) == inputs(examples)
    # whole inputs: 4 rows, or 5 where the last input taken has a second row (evaluated once)
    assert len(examples) - len(rest) in (4, 5)
    assert dev == [e for e in examples if e in dev]  # source order
    assert withhold_dev(task, examples, 4, seed=5) == (rest, dev)  # seeded
    assert withhold_dev(task, examples, 4, seed=6) != (rest, dev)
    assert withhold_dev(task, examples, 0, seed=5) == (examples, [])
    with pytest.raises(ValueError, match="--dev-per-task 9 needs more rows than the 9"):
        withhold_dev(task, examples, 9, seed=5)


def test_in_task_development_queries_are_withheld_from_pool_and_training_queries(
        shared_data_dir, tmp_path):
    from flan_data.catalogue import get_task
    from flan_data.loading import load_rows
    from flan_data.protocol import build_in_task_data

    # E2E NLG's validation split (pool source) repeats each meaning representation
    stage = build_in_task_data("e2e_nlg", shared_data_dir, seed=3, pool_size=None, queries=40,
                               n_candidates=3, eval_size=6, dev_size=25)
    assert len(stage.dev_queries) == 25 == stage.manifest["counts"]["dev_queries"]
    assert stage.manifest["dev_per_task"] == 25
    assert {q.id.rsplit(":", 1)[0] for q in stage.dev_queries} == {"e2e_nlg:validation"}
    dev_refs = {q.id for q in stage.dev_queries}
    assert not dev_refs & ({p.id for p in stage.pool} | {q.id for q in stage.train_queries})
    source = load_rows(get_task("e2e_nlg"), "validation", shared_data_dir)

    def meaning(example_id):
        return source[int(example_id.rsplit(":", 1)[1])]["meaning_representation"]

    assert not {meaning(i) for i in dev_refs} & {meaning(p.id) for p in stage.pool}
    assert not {meaning(i) for i in dev_refs} & {meaning(q.id) for q in stage.train_queries}
    write_stage_data(stage, tmp_path / "d")
    assert read_stage_data(tmp_path / "d").dev_queries == stage.dev_queries
    plain = build_in_task_data("e2e_nlg", shared_data_dir, seed=3, pool_size=None, queries=40,
                               n_candidates=3, eval_size=6)
    assert plain.dev_queries == [] and len(plain.pool) > len(stage.pool)
    write_stage_data(plain, tmp_path / "p")
    assert not (tmp_path / "p" / "dev_queries.jsonl").exists()
    assert read_stage_data(tmp_path / "p").dev_queries == []
