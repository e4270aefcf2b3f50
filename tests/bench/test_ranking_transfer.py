"""bench/ranking_transfer.py: the training-side rankers' pieces against hand-computed cases."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from bench_scripts import load_script


def _module():
    return load_script("ranking_transfer")


def test_zscored_standardises_each_row_over_its_scored_prompts():
    m = _module()
    nan = float("nan")
    z = m.zscored(np.array([[1.0, 2.0, 3.0], [nan, 4.0, 8.0], [5.0, 5.0, nan], [nan, nan, 1.0]]))
    s = np.sqrt(2 / 3)  # population std of (1, 2, 3)
    assert z[0] == pytest.approx([-1 / s, 0.0, 1 / s])
    assert z[1, 1:] == pytest.approx([-1.0, 1.0]) and np.isnan(z[1, 0])
    assert np.isnan(z[2]).all() and np.isnan(z[3]).all()  # constant, single: no order


def test_cross_knn_mean_averages_scored_entries_of_the_nearest_training_queries():
    m = _module()
    nan = float("nan")
    z = np.array([[1.0, nan, -1.0], [3.0, 2.0, nan], [-5.0, 0.0, 5.0]])
    assert m.nan_mean_rows(z, np.array([0, 1])) == pytest.approx([2.0, 2.0, -1.0])
    assert m.nan_mean_rows(z[:, [1]], np.array([0])) == pytest.approx([0.0])  # none scored
    train_emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    held_emb = np.array([[1.0, 0.1], [0.0, 1.0]])
    # similarities: held-out 0 -> (1.0, 0.86, 0.1), held-out 1 -> (0.0, 0.6, 1.0); each prompt's
    # neighbours are taken among the training queries that scored it (prompt 1: rows 1 and 2)
    got = m.cross_knn_mean(z, train_emb, held_emb, 2)
    assert got[0] == pytest.approx([2.0, 1.0, 2.0])
    assert got[1] == pytest.approx([-1.0, 1.0, 2.0])
    assert m.cross_knn_mean(z, train_emb, held_emb, 1)[1] == pytest.approx(z[2])
    nobody = m.cross_knn_mean(np.full((3, 1), np.nan), train_emb, held_emb, 2)
    assert nobody.tolist() == [[0.0], [0.0]]  # nobody scored the prompt: 0, the mean

def test_ridge_loo_is_the_ridge_solution_and_picks_the_penalty_by_leave_one_out():
    m = _module()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 3.0  # noiseless: the smallest penalty fits best
    alpha, coef, intercept = m.ridge_loo(x, y, (0.01, 10.0, 1000.0))
    assert alpha == 0.01
    xc, yc = x - x.mean(axis=0), y - y.mean()
    assert coef == pytest.approx(np.linalg.solve(xc.T @ xc + 0.01 * np.eye(3), xc.T @ yc))
    assert intercept == pytest.approx(y.mean() - x.mean(axis=0) @ coef)
    # pure noise: leave-one-out prefers shrinking the slope away
    alpha, coef, _ = m.ridge_loo(x, rng.normal(size=40), (0.01, 1e6))
    assert alpha == 1e6 and np.abs(coef).max() < 1e-3


def test_ridge_loo_error_is_the_refit_without_each_row():
    m = _module()
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 2)), rng.normal(size=12)
    # brute force: refit without row i (intercept unpenalised), predict it
    def refit_error(alpha):
        errs = []
        for i in range(12):
            keep = np.arange(12) != i
            xm, ym = x[keep].mean(axis=0), y[keep].mean()
            xc = x[keep] - xm
            coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(2), xc.T @ (y[keep] - ym))
            errs.append((y[i] - ym - (x[i] - xm) @ coef) ** 2)
        return np.mean(errs)
    best = min((0.5, 50.0), key=refit_error)
    assert m.ridge_loo(x, y, (0.5, 50.0))[0] == best


def test_subsample_curve_judges_prompt_means_of_drawn_training_queries():
    m = _module()
    held = np.array([[0.0, 1.0, 2.0], [0.0, 2.0, 1.0]])
    # every training query agrees with held-out query 0's order: any draw ranks it perfectly
    z = np.tile([-1.0, 0.0, 1.0], (6, 1))
    curve = m.subsample_curve(z, held, ["t", "t"], sizes=(2, 4, 6), reps=3)
    assert set(curve) == {"2", "4"}  # a draw of every row is the full mean, reported apart
    assert curve["2"]["spearman_mean"] == pytest.approx(0.75)  # (1 + 0.5) / 2
    assert curve["2"]["spearman_sd"] == pytest.approx(0.0)



def _score(query_id, prompt_id, score):
    return SimpleNamespace(query_id=query_id, prompt_id=prompt_id, score=score)


def test_cross_cluster_z_drops_own_cluster_pairs_then_standardises_per_query():
    m = _module()
    pool = {pid: SimpleNamespace(cluster=pid[0].upper(), task="t" + pid[0])
            for pid in ("a1", "b1", "b2", "c1")}
    records = [_score("qa", "a1", 9.0), _score("qa", "b1", 1.0), _score("qa", "c1", 3.0),
               _score("qb", "b1", 5.0), _score("qb", "a1", 2.0),  # one cross pair: no order
               _score("qc", "b2", 0.5), _score("qc", "a1", 0.5)]  # constant: no order
    rows = m.cross_cluster_z(records, pool, {"qa": "A", "qb": "B", "qc": "C"})
    assert rows == [("b1", pytest.approx(-1.0)), ("c1", pytest.approx(1.0))]
    prompts = [pool["b2"], pool["c1"], pool["a1"]]
    assert m.task_prior([("b1", -1.0), ("b2", 0.5), ("c1", 2.0)], pool, prompts) == \
        pytest.approx([-0.25, 2.0, 0.0])  # tb: mean(-1, 0.5); ta: none scored


def test_a_prior_folder_of_another_held_out_cluster_is_refused(tmp_path):
    from flan_data import write_stage_data
    from flan_data.protocol import StageData
    from flan_data.schema import Prompt

    m = _module()
    pool = [Prompt("t:1", "t", "sentiment", 0, "a"), Prompt("t:2", "t", "sentiment", 0, "b")]
    manifest = {"held_out_cluster": "nli", "counts": {"pool": 2, "train_queries": 0,
                                                      "eval_queries": 0}}
    write_stage_data(StageData(pool, [], [], [], manifest), tmp_path / "data")
    assert m.prior_stage_data(tmp_path, "nli", pool[:1]).pool == pool
    with pytest.raises(SystemExit, match="holds out 'nli', not 'struct_to_text'"):
        m.prior_stage_data(tmp_path, "struct_to_text", pool)
    with pytest.raises(SystemExit, match="its pool lacks the section's prompts"):
        m.prior_stage_data(tmp_path, "nli", [Prompt("u:9", "u", "nli", 0, "c")])
