"""The held-out ranking section: an oracle ranker scores 1, its reverse -1, on real LM scores."""

from __future__ import annotations

import pytest

from flan_data.schema import Prompt, Query
from proxy_lm import read_scores
from uprise.evaluation.ranking import ranking_section, sample_queries


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
