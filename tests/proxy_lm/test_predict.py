"""Downstream predictions from demonstrations given as data."""

from __future__ import annotations

import dataclasses

from proxy_lm_data import make_prompts, make_queries

from flan_data import answer_budget
from flan_data.schema import join_context
from proxy_lm import Prediction, continuation_losses, generate, predict
from proxy_lm.evaluate import first_line


def test_predict_choice_and_generation(tiny_lm):
    queries = make_queries()
    demos = [[p.text for p in make_prompts()[: i % 3]] for i in range(len(queries))]
    preds = predict(tiny_lm, queries, demos, batch_size=3, max_new_tokens=6, progress=False)
    assert [p.query_id for p in preds] == [q.id for q in queries]
    for q, p in zip(queries, preds, strict=True):
        assert isinstance(p, Prediction)
        if q.is_choice:
            assert isinstance(p.prediction, int) and 0 <= p.prediction < len(q.options)
            assert p.text == q.options[p.prediction]
            assert p.correct is (p.prediction == q.gold)
        else:
            assert isinstance(p.prediction, str) and p.prediction == p.text
            assert "\n" not in p.text and p.correct is None


def test_choice_prediction_is_argmin_of_losses_with_demonstrations(tiny_lm):
    query = make_queries()[1]
    demos = [p.text for p in make_prompts()[:2]]
    zero, few = continuation_losses(
        tiny_lm, [query.input, join_context(demos, query.input)], [query.options] * 2)
    assert max(abs(a - b) for a, b in zip(zero, few, strict=True)) > 1e-6
    [zero_pred, few_pred] = predict(tiny_lm, [query, query], [[], demos], progress=False)
    assert zero_pred.prediction == min(range(2), key=zero.__getitem__)
    assert few_pred.prediction == min(range(2), key=few.__getitem__)


def test_generation_budget_is_the_task_s_unless_given(tiny_lm):
    assert (answer_budget("e2e_nlg"), answer_budget("common_gen")) == (64, 32)
    assert answer_budget("a-task-the-catalogue-does-not-know") == 32
    g = make_queries()[-1]
    queries = [g, dataclasses.replace(g, id="e2e", task="e2e_nlg", cluster="struct_to_text"),
               dataclasses.replace(g, id="mine", task="my_own_task")]
    demos = [[make_prompts()[0].text]] * 3
    expected = [generate(tiny_lm, [join_context(demos[0], g.input)], max_new_tokens=n)[0]
                for n in (32, 64, 32)]
    assert expected[1] != expected[0]  # the tiny LM writes no newline: the budget shows
    assert [p.text for p in predict(tiny_lm, queries, demos, progress=False)] == expected
    forced = generate(tiny_lm, [join_context(demos[0], g.input)], max_new_tokens=5)[0]
    assert [p.text for p in predict(tiny_lm, queries, demos, max_new_tokens=5,
                                    progress=False)] == [forced] * 3


def test_batched_generation_equals_one_at_a_time(tiny_lm):
    contexts = ["the cat", "the quick brown fox jumps over a lazy dog", "film"]
    batched = generate(tiny_lm, contexts, batch_size=3, max_new_tokens=8)
    assert batched == [generate(tiny_lm, [c], max_new_tokens=8)[0] for c in contexts]


def test_first_line():
    assert first_line("\n  Paris.\n\nThe answer") == "Paris."
    assert first_line("  yes ") == "yes"
    assert first_line("\n\n") == ""
