"""The held-out ranking section: an oracle ranker scores 1, its reverse -1, on real LM scores;
the crossed bootstrap against the paired one and on a gain that one prompt carries; pooled
intervals of several sections."""

from __future__ import annotations

import numpy as np
import pytest

from flan_data.schema import Prompt, Query
from proxy_lm import read_scores
from uprise.evaluation.ranking import (
    _per_query,
    add_crossed,
    crossed_bootstrap,
    crossed_resamples,
    interval,
    judge_rankers,
    ranking_section,
    sample_queries,
)
from uprise.evaluation.stats import paired_bootstrap


def _queries():
    return [Query(id=f"{t}:{i}", task=t, cluster="held", template=0,
                  input=f"{t} question {i}: is the {w} red?", options=["yes", "no"], gold=i % 2)
            for t in ("ta", "tb") for i, w in enumerate(["cat", "sky", "fox", "mat"])]


def _pool():
    return [Prompt(id=f"p{i}", task="other", cluster="train", template=0,
                   text=f"Is the {w} blue? {'yes' if i % 2 else 'no'}")
            for i, w in enumerate(["sea", "sun", "dog", "car", "tree"])]


def test_sample_queries_is_seeded_and_per_task():
    got = sample_queries(_queries(), 2, seed=1)
    assert [q.task for q in got] == ["ta", "ta", "tb", "tb"]
    assert got == sample_queries(_queries(), 2, seed=1)
    assert len(sample_queries(_queries(), 10, seed=1)) == 8


def test_an_oracle_ranks_perfectly_and_its_reverse_worst(tiny_gpt_neo_path, tmp_path):
    from proxy_lm import load_lm

    tiny_lm = load_lm(str(tiny_gpt_neo_path), dtype="float32")
    queries, pool = _queries(), _pool()
    first = ranking_section(tiny_lm, queries, pool, {"untrained": lambda q, p: _zeros(q, p)},
                            tmp_path / "scores", per_task=3, n_prompts=4, seed=0,
                            progress=False)
    (folder,) = (tmp_path / "scores").iterdir()
    lm = {(s.query_id, s.prompt_id): s.score for s in read_scores(folder)}
    text_q = {q.input: q.id for q in queries}
    text_p = {p.text: p.id for p in pool}

    def oracle(sign):
        return lambda qs, ps: [[sign * lm[text_q[q], text_p[p]] for p in ps] for q in qs]

    got = ranking_section(tiny_lm, queries, pool,
                          {"untrained": oracle(-1.0), "oracle": oracle(1.0)},
                          tmp_path / "scores", per_task=3, n_prompts=4, seed=0, progress=False)
    assert first["n_queries"] == got["n_queries"] == 6 and got["n_prompts"] == 4
    best, worst = got["methods"]["oracle"], got["methods"]["untrained"]
    assert best["ndcg@3"]["mean"] == pytest.approx(1.0)
    assert best["top1"]["mean"] == 1.0 and worst["top1"]["mean"] == 0.0
    assert best["spearman"]["mean"] == pytest.approx(1.0)
    assert worst["spearman"]["mean"] == pytest.approx(-1.0)
    assert best["spearman"]["vs_untrained"]["diff"] == pytest.approx(2.0)
    assert best["spearman"]["vs_untrained"]["low"] == pytest.approx(2.0)
    # other evaluation rows with the same settings (another --eval-per-task) into the same
    # folder: their own scores, not a clash with the finished run's
    fewer = [q for q in queries if q.id.endswith((":0", ":1"))]
    again = ranking_section(tiny_lm, fewer, pool, {"untrained": _zeros}, tmp_path / "scores",
                            per_task=3, n_prompts=4, seed=0, progress=False)
    assert again["n_queries"] == 4 and len(list((tmp_path / "scores").iterdir())) == 2
    with pytest.raises(ValueError, match="reference ranker 'untrained'"):
        ranking_section(tiny_lm, queries, pool, {"x": _zeros}, tmp_path / "s2", progress=False)


def _zeros(queries, prompts):
    import numpy as np

    return np.zeros((len(queries), len(prompts)))


def _section(n_q=120, n_p=10, seed=0):
    rng = np.random.default_rng(seed)
    lm = rng.normal(size=(n_q, n_p))  # (n_q, n_p)
    return lm, rng.normal(size=(n_q, n_p)), ["ta" if i % 3 else "tb" for i in range(n_q)]


def test_crossed_bootstrap_without_prompt_draws_is_the_paired_bootstrap():
    lm, ref, tasks = _section()
    other = ref + lm  # partly follows the LM
    got = crossed_bootstrap({"untrained": ref, "trained": other}, "untrained", lm, tasks,
                            n_resamples=300, seed=4, resample_prompts=False)
    judged = judge_rankers({"untrained": ref, "trained": other}, lm, tasks, "untrained", 4)
    for m in ("ndcg@3", "top1"):  # no undefined values, so the same queries
        a = _per_query(other, lm)[m]
        b = _per_query(ref, lm)[m]
        assert got["trained"][m] == pytest.approx(
            paired_bootstrap(a, b, n_resamples=300, seed=4, groups=tasks))
        same = judged["trained"][m]["vs_untrained"]["diff"]
        assert got["trained"][m]["diff"] == pytest.approx(same)


def test_a_gain_from_one_prompt_is_certain_only_while_that_prompt_is_never_redrawn():
    lm, ref, tasks = _section()
    lm[:, 0] = lm.max() + 1.0  # prompt 0 is every query's best
    lucky = ref.copy()
    lucky[:, 0] = ref.max() + 1.0  # and this ranker puts it first everywhere
    rel = {"untrained": ref, "lucky": lucky}
    queries_only = judge_rankers(rel, lm, tasks, "untrained", 0)["lucky"]["top1"]["vs_untrained"]
    crossed = crossed_bootstrap(rel, "untrained", lm, tasks, n_resamples=300, seed=0)
    assert queries_only["low"] > 0.7  # the queries agree: a sure gain on these 10 prompts
    assert crossed["lucky"]["top1"]["diff"] == pytest.approx(queries_only["diff"])
    # a third of the prompt draws miss prompt 0 (0.9 ** 10), and with it the gain
    assert crossed["lucky"]["top1"]["low"] < 0.1 < 0.7 < crossed["lucky"]["top1"]["high"]


def test_add_crossed_puts_each_interval_beside_the_query_only_one():
    lm, ref, tasks = _section()
    rel = {"untrained": ref, "trained": ref + lm, "bm25": lm - ref}
    judged = judge_rankers(rel, lm, tasks, "bm25", 2)
    add_crossed(judged, rel, "bm25", ["trained"], lm, tasks, n_resamples=50, seed=2)
    want = crossed_bootstrap({"bm25": rel["bm25"], "trained": rel["trained"]}, "bm25", lm,
                             tasks, n_resamples=50, seed=2)["trained"]
    for m, ci in want.items():
        assert judged["trained"][m]["vs_bm25_crossed"] == ci
        assert "vs_bm25" in judged["trained"][m]
    assert all("vs_bm25_crossed" not in row for row in judged["untrained"].values())


def test_every_pair_sees_the_same_draws():
    lm, ref, tasks = _section()
    rel = {"a": ref + lm, "b": ref, "c": lm - ref}
    got = crossed_resamples(rel, [("a", "b"), ("b", "c"), ("a", "c")], lm, tasks,
                            n_resamples=40, seed=1)
    for m in ("ndcg@3", "top1", "spearman"):  # differences of one draw add up
        (ab, ab_draws), (bc, bc_draws), (ac, ac_draws) = (got[p][m] for p in got)
        assert ab + bc == pytest.approx(ac)
        np.testing.assert_allclose(ab_draws + bc_draws, ac_draws)
    alone = crossed_bootstrap({"b": ref, "a": rel["a"]}, "b", lm, tasks, n_resamples=40, seed=1)
    assert alone["a"]["ndcg@3"] == interval([got["a", "b"]["ndcg@3"]])


def test_pooled_interval_averages_the_draws_resample_by_resample():
    up, down = np.array([0.0, 1.0, 2.0, 3.0, 4.0]), np.array([4.0, 3.0, 2.0, 1.0, 0.0])
    assert interval([(2.0, up)], level=0.5) == {"diff": 2.0, "low": 1.0, "high": 3.0}
    # opposite draws cancel: the mean of each resample is 2
    assert interval([(1.0, up), (4.0, down)], level=0.5) == {"diff": 2.5, "low": 2.0,
                                                              "high": 2.0}
    with pytest.raises(ValueError, match="same number of draws"):
        interval([(1.0, up), (1.0, up[:3])])
    with pytest.raises(ValueError, match="at least one part"):
        interval([])


def test_pooling_independent_sections_narrows_the_interval():
    parts, widths = [], []
    for i in range(4):
        lm, ref, tasks = _section(n_q=60, seed=10 + i)
        got = crossed_resamples({"t": ref + lm, "u": ref}, [("t", "u")], lm, tasks,
                                n_resamples=300, seed=i)["t", "u"]["ndcg@3"]
        one = interval([got])
        parts.append(got)
        widths.append(one["high"] - one["low"])
    pooled = interval(parts)
    assert pooled["diff"] == pytest.approx(np.mean([p for p, _ in parts]))
    # four independent sections: about half as wide as one (1 / sqrt(4))
    assert pooled["high"] - pooled["low"] < 0.7 * np.mean(widths)
