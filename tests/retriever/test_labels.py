"""Labels from LM scores: UPRISE positives, label values, label-copy correction, chance filter."""

from __future__ import annotations

import math

import pytest

from flan_data.schema import Prompt, Query, Score
from retriever.labels import (
    build_training_examples,
    candidate_answer,
    task_accuracy,
    value,
)


def s(q, p, score, correct):
    return Score(query_id=q, prompt_id=p, lm="lm", template=0, option_losses=[0.0], score=score,
                 correct=correct)


def test_positive_is_best_correct_and_negatives_are_lowest(caplog):
    scores = [
        s("q1", "a", 0.9, False),  # best score but wrong: never the positive
        s("q1", "b", 0.7, True),
        s("q1", "c", 0.8, True),
        s("q1", "d", 0.1, False),
        s("q1", "e", 0.2, True),
        s("q2", "a", 0.5, False),  # q2: no correct candidate -> dropped
        s("q2", "b", 0.6, False),
        s("q3", "x", -1.0, None),  # generation: any candidate qualifies
        s("q3", "y", -0.5, None),
    ]
    with caplog.at_level("INFO", logger="retriever.labels"):
        examples = build_training_examples(scores, n_hard_negatives=2)
    assert [ex.query_id for ex in examples] == ["q1", "q3"]
    q1, q3 = examples
    assert q1.positive_id == "c" and q1.negative_ids == ("d", "e")
    assert q1.candidate_ids == ("a", "b", "c", "d", "e")
    assert q1.candidate_lm == (0.9, 0.7, 0.8, 0.1, 0.2)
    assert q1.candidate_values == pytest.approx([math.log(x) for x in (0.9, 0.7, 0.8, 0.1, 0.2)])
    assert q3.positive_id == "y" and q3.negative_ids == ("x",)
    assert q3.candidate_values == (-1.0, -0.5)  # generation: the score is already a log-lik.
    assert "1 dropped" in caplog.text


def test_ties_do_not_depend_on_input_order():
    scores = [s("q", "b", 0.5, True), s("q", "a", 0.5, True), s("q", "c", 0.5, True)]
    first = build_training_examples(scores, 1)
    assert first == build_training_examples(scores[::-1], 1)
    assert first[0].positive_id == "a" and first[0].negative_ids == ("b",)


def test_value_is_log_probability_for_choice_and_score_for_generation():
    assert value(s("q", "p", 0.25, True)) == pytest.approx(math.log(0.25))
    assert value(s("q", "p", 0.0, False)) == pytest.approx(math.log(1e-12))
    assert value(s("q", "p", -2.5, None)) == -2.5


QUERY = Query(id="q", task="rte", cluster="nli", template=0, input="premise ... hypothesis?",
              options=["yes", "no"], gold=0)


def _prompt(pid, answer):
    return Prompt(id=pid, task="rte", cluster="nli", template=0, text=f"premise {pid}? {answer}")


def test_candidate_answer_is_the_option_the_prompt_ends_with():
    assert candidate_answer(_prompt("a", "yes"), QUERY) == "yes"
    assert candidate_answer(_prompt("a", "no"), QUERY) == "no"
    assert candidate_answer(_prompt("a", "maybe"), QUERY) is None
    long = Query(id="q", task="t", cluster="c", template=0, input="x", options=["not", "is not"],
                 gold=0)
    assert candidate_answer(Prompt("p", "t", "c", 0, "it is not"), long) == "is not"


def test_label_copy_correction_judges_each_prompt_within_its_answer_group():
    # Gold is "yes": the "yes" demonstrations score high because of their label. Values are
    # log-probabilities; within "yes": a=log .9, b=log .6; within "no": c=log .3, d=log .1.
    pool = {"a": _prompt("a", "yes"), "b": _prompt("b", "yes"), "c": _prompt("c", "no"),
            "d": _prompt("d", "no")}
    scores = [s("q", "a", 0.9, True), s("q", "b", 0.6, True), s("q", "c", 0.3, False),
              s("q", "d", 0.1, False)]
    plain = build_training_examples(scores, 1)[0]
    assert plain.positive_id == "a" and plain.negative_ids == ("d",)
    fixed = build_training_examples(scores, 1, {"q": QUERY}, pool, label_copy_correction=True)[0]
    yes_mean = (math.log(0.9) + math.log(0.6)) / 2
    no_mean = (math.log(0.3) + math.log(0.1)) / 2
    want = [math.log(0.9) - yes_mean, math.log(0.6) - yes_mean,
            math.log(0.3) - no_mean, math.log(0.1) - no_mean]
    assert fixed.candidate_values == pytest.approx(want)
    # c beats a ((log 3)/2 vs (log 1.5)/2 above its group mean); d is worst within its group.
    assert fixed.positive_id == "c" and fixed.negative_ids == ("d",)
    assert fixed.candidate_lm == (0.9, 0.6, 0.3, 0.1)  # the raw scores stay for diagnostics


def test_label_copy_correction_leaves_single_answer_queries_alone():
    pool = {"a": _prompt("a", "yes"), "b": _prompt("b", "yes")}
    scores = [s("q", "a", 0.9, True), s("q", "b", 0.6, True)]
    fixed = build_training_examples(scores, 1, {"q": QUERY}, pool, label_copy_correction=True)[0]
    assert fixed.candidate_values == pytest.approx([math.log(0.9), math.log(0.6)])


def test_tasks_at_chance_give_no_labels(caplog):
    queries = {f"{t}{i}": Query(id=f"{t}{i}", task=t, cluster="c", template=0, input="x",
                                options=["yes", "no"], gold=0)
               for t in ("good", "coin") for i in range(4)}
    scores = []
    for i in range(4):  # good: 3 of 4 candidates correct for every query; coin: 2 of 4
        scores += [s(f"good{i}", f"p{j}", 0.9 - j / 10, j < 3) for j in range(4)]
        scores += [s(f"coin{i}", f"p{j}", 0.9 - j / 10, j % 2 == 0) for j in range(4)]
    accuracy = task_accuracy(scores, queries)
    assert accuracy["good"].accuracy == 0.75 and accuracy["good"].chance == 0.5
    assert accuracy["good"].above_chance and accuracy["good"].z == math.inf  # no spread at all
    assert accuracy["coin"].accuracy == 0.5 and not accuracy["coin"].above_chance
    with caplog.at_level("INFO", logger="retriever.labels"):
        kept = build_training_examples(scores, 1, queries, drop_chance_tasks=True)
    assert sorted(ex.query_id for ex in kept) == [f"good{i}" for i in range(4)]
    assert "coin LM accuracy 0.500" in caplog.text and "4 from tasks at chance" in caplog.text
    assert len(build_training_examples(scores, 1, queries)) == 8


def test_task_accuracy_uses_queries_as_the_unit():
    # Two queries at 1.0 and two at 0.25 correct: mean 0.625 vs chance 0.5; the differences
    # (0.5, 0.5, -0.25, -0.25) have sd 0.433, se 0.2165: z = 0.577, not above chance.
    queries = {f"q{i}": Query(id=f"q{i}", task="t", cluster="c", template=0, input="x",
                              options=["a", "b"], gold=0) for i in range(4)}
    scores = [s(f"q{i}", f"p{j}", 0.5, (j == 0) or i < 2) for i in range(4) for j in range(4)]
    got = task_accuracy(scores, queries)["t"]
    assert got.accuracy == pytest.approx(0.625)
    assert got.z == pytest.approx(0.125 / (math.sqrt(0.1875) / 2), rel=1e-6)
    assert not got.above_chance


def test_options_need_their_inputs():
    with pytest.raises(ValueError, match="need the queries"):
        build_training_examples([s("q", "a", 0.5, True)], 1, drop_chance_tasks=True)
    with pytest.raises(ValueError, match="needs the pool"):
        build_training_examples([s("q", "a", 0.5, True)], 1, {"q": QUERY},
                                label_copy_correction=True)


def zs(q, score, correct):
    return s(q, "", score, correct)


def test_zero_shot_relative_labels_by_gain(caplog):
    scores = [
        s("q1", "a", 0.6, True),  # gain log(.6/.5) > 0: the only candidate that adds
        s("q1", "b", 0.45, True),  # correct, but lowers the gold answer: not a positive now
        s("q1", "c", 0.2, False),
        s("q2", "a", 0.7, True),  # q2: zero-shot 0.8, every candidate lowers it -> dropped
        s("q2", "b", 0.6, True),
        s("q3", "a", 0.3, False),  # q3: no candidate made the LM correct (UPRISE drops it),
        s("q3", "b", 0.2, False),  # but a raises the gold option above zero-shot's 0.1
        s("g", "x", -1.2, None),
        s("g", "y", -0.8, None),
    ]
    zero = {"q1": zs("q1", 0.5, True), "q2": zs("q2", 0.8, True), "q3": zs("q3", 0.1, False),
            "g": zs("g", -1.0, None)}
    assert [ex.query_id for ex in build_training_examples(scores, 1)] == ["q1", "q2", "g"]
    assert build_training_examples(scores, 1)[0].positive_id == "a"
    with caplog.at_level("INFO", logger="retriever.labels"):
        got = build_training_examples(scores, 1, zero_shot=zero)
    assert [ex.query_id for ex in got] == ["q1", "q3", "g"]
    q1, q3, g = got
    assert q1.positive_id == "a" and q1.negative_ids == ("c",)
    assert q1.candidate_values == pytest.approx(
        [math.log(0.6 / 0.5), math.log(0.45 / 0.5), math.log(0.2 / 0.5)])
    assert q1.candidate_lm == (0.6, 0.45, 0.2)  # raw scores stay for the diagnostics
    assert q3.positive_id == "a" and q3.negative_ids == ("b",)
    assert g.positive_id == "y" and g.candidate_values == pytest.approx([-0.2, 0.2])
    assert "1 dropped (no eligible positive: no candidate beat zero-shot)" in caplog.text


def test_zero_shot_relative_prefers_a_gain_over_an_already_correct_answer():
    # Both candidates make the LM correct; UPRISE takes the best raw score. Relative to a
    # zero-shot of 0.95, neither adds anything, so the query teaches nothing.
    scores = [s("q", "a", 0.9, True), s("q", "b", 0.7, True)]
    assert build_training_examples(scores, 1)[0].positive_id == "a"
    assert build_training_examples(scores, 1, zero_shot={"q": zs("q", 0.95, True)}) == []


def test_zero_shot_relative_with_label_copy_correction():
    # Gain decides who may be the positive; the corrected value ranks the eligible ones.
    pool = {"a": _prompt("a", "yes"), "b": _prompt("b", "yes"), "c": _prompt("c", "no"),
            "d": _prompt("d", "no")}
    scores = [s("q", "a", 0.9, True), s("q", "b", 0.6, True), s("q", "c", 0.3, False),
              s("q", "d", 0.1, False)]
    corrected = build_training_examples(scores, 1, {"q": QUERY}, pool, label_copy_correction=True)
    assert corrected[0].positive_id == "c"  # best within its answer group (see above)
    both = build_training_examples(scores, 1, {"q": QUERY}, pool, label_copy_correction=True,
                                   zero_shot={"q": zs("q", 0.5, True)})[0]
    assert both.positive_id == "a"  # c (0.3) is below zero-shot's 0.5: not eligible
    assert both.candidate_values == corrected[0].candidate_values
    both = build_training_examples(scores, 1, {"q": QUERY}, pool, label_copy_correction=True,
                                   zero_shot={"q": zs("q", 0.2, False)})[0]
    assert both.positive_id == "c"  # now c adds to zero-shot, and it ranks first


def test_zero_shot_relative_keeps_the_kd_target():
    # A constant shift per query: the softmax over candidate values is the same.
    scores = [s("q", p, v, True) for p, v in (("a", 0.9), ("b", 0.6), ("c", 0.3))]
    plain = build_training_examples(scores, 2)[0]
    gain = build_training_examples(scores, 2, zero_shot={"q": zs("q", 0.4, True)})[0]
    shift = [x - y for x, y in zip(plain.candidate_values, gain.candidate_values, strict=True)]
    assert shift == pytest.approx([math.log(0.4)] * 3)
    assert gain.negative_ids == plain.negative_ids == ("c", "b")  # lowest first


def test_zero_shot_relative_needs_every_scored_query():
    with pytest.raises(KeyError, match="no zero-shot score for query 'q2'"):
        build_training_examples([s("q1", "a", 0.5, True), s("q2", "a", 0.5, True)], 1,
                                zero_shot={"q1": zs("q1", 0.4, True)})


def test_top_k_positives_take_turns_by_epoch_and_leave_the_negatives_below_them():
    scores = [
        s("q1", "a", 0.9, False),  # best value but wrong: never a positive
        s("q1", "b", 0.7, True),
        s("q1", "c", 0.8, True),
        s("q1", "d", 0.1, False),
        s("q1", "e", 0.2, True),
        s("q1", "f", 0.3, True),
        s("q2", "x", -1.0, None),  # generation: both eligible, fewer than k = 3
        s("q2", "y", -0.5, None),
    ]
    q1, q2 = build_training_examples(scores, n_hard_negatives=3, positive_top_k=3)
    assert q1.top_ids == ("c", "b", "f") and q1.positive_id == "c"
    assert q1.negative_ids == ("d", "e", "a")  # lowest values outside the top 3
    assert [q1.positive_for(e) for e in range(4)] == ["c", "b", "f", "c"]
    assert q2.top_ids == ("y", "x") and [q2.positive_for(e) for e in range(3)] == ["y", "x", "y"]
    assert q2.negative_ids == ()
    (plain, _) = build_training_examples(scores, n_hard_negatives=3)  # k = 1: UPRISE
    assert plain.top_ids == () and plain.negative_ids == ("d", "e", "f")
    assert {plain.positive_for(e) for e in range(3)} == {"c"}
    with pytest.raises(ValueError, match="positive_top_k=0"):
        build_training_examples(scores, n_hard_negatives=3, positive_top_k=0)
