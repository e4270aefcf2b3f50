"""Benchmark: is there anything to learn in the held-out ranking section's LM scores?

    .venv/bin/python bench/ranking_ceiling.py --cluster-dir RUN/cache/struct_to_text \
        --out bench/results/ranking_ceiling_struct_to_text.json

Reads the ranking section's scores of one `uprise eval --clusters` cluster folder (every
sampled held-out query x one shared sample of pool prompts, `uprise.evaluation.ranking`) and
asks how predictable the LM's preferences are, from two sides:

- variance: per query, the scores minus the query's mean; the share of that within-query
  variance which is a prompt main effect (the same prompts good for every query), overall and
  within each held-out task;
- reference rankers that look at *other held-out queries' LM scores* (never a method: the
  cross-task protocol has no LM scores of held-out queries): each prompt's mean centred score
  over all other queries (`prompt_mean`), over the other queries of the same task
  (`task_mean`), and over the k queries nearest by the untrained query encoder (`knn<k>`);
- with `--train-queries`, rankers that see only what cross-task training can see: the LM's
  scores of the same prompts on the folder's *training-cluster* queries (scored here, into
  resumable shards under `--train-scores-dir`, the score cache shared). A pair whose prompt
  comes from the query's own cluster is left out (the held-out situation), and each training
  query's scores are z-scored over its remaining prompts (choice probabilities and generation
  log-likelihoods differ in scale). `train_prompt_mean`: each prompt's mean z-score over the
  training queries; `train_knn<k>`: over the k training queries nearest to the held-out query
  by the untrained query encoder (a prompt none of them scored gets 0, the mean); and how
  `train_prompt_mean` grows with the number of training queries it averages (seeded draws);
- with `--prior-dir`, query-independent *prompt priors* that need no score of the section's
  prompts, so a retriever could carry them to any pool prompt: from another cluster folder of
  the same pool whose training candidates were drawn across clusters (`uprise eval
  --cross-cluster-candidates`), each scored query's cross-cluster candidates z-scored, then
  `prior_task` (a prompt's value: the mean z of its task's scored prompts) and `prior_ridge`
  (ridge regression of z on the untrained prompt tower's embedding, the penalty chosen by
  leave-one-out error on those training pairs).

Every ranker, with the folder's untrained and trained retrievers, BM25 and random, is judged
as in the ranking section (`retriever.ranking`: NDCG@3, top-1 agreement, Spearman per query)
with paired bootstrap 95% CIs against the untrained encoder, stratified by task. A reference
ranker far above the untrained encoder says the LM's preferences are consistent across
held-out queries (a ranker could learn them); a similarity ranker at the random level says the
retriever did not. Prints a table, writes JSON. Runs the untrained and trained query/prompt
towers on CPU (seconds).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import evaluation_queries, read_stage_data, resolve_data_dir, write_json  # noqa: E402
from flan_data.protocol import StageData  # noqa: E402
from flan_data.schema import Prompt, Query  # noqa: E402
from flan_data.score_folder import read_scores  # noqa: E402
from uprise.evaluation.ranking import (  # noqa: E402
    Ranker,
    bm25_ranker,
    dense_ranker,
    judge_rankers,
    lm_score_matrix,
    random_ranker,
)
from uprise.evaluation.stats import format_diff  # noqa: E402
from uprise.quickstart import RUN_CONFIG  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from ranking_transfer import transfer_rankers  # noqa: E402  (bench/, put on sys.path above)

KNN = (5, 20, 50)


def centred(scores: np.ndarray) -> np.ndarray:
    """Each query's scores minus its mean: (n_q, n_p); rankings per query are unchanged."""
    return scores - scores.mean(axis=1, keepdims=True)


def prompt_effect_share(c: np.ndarray) -> float:
    """Share of the within-query sum of squares of `c` (centred, (n_q, n_p)) that the prompt
    main effect (each prompt's mean over the queries) explains."""
    effect = c.mean(axis=0)  # (n_p,)
    return float(len(c) * (effect ** 2).sum() / (c ** 2).sum())


def others_mean(c: np.ndarray, groups: list[str] | None = None) -> np.ndarray:
    """Row i: the mean of the other rows of `c` (of the same group when `groups` is given)."""
    out = np.zeros_like(c)
    keys = np.asarray(groups if groups is not None else [""] * len(c))
    for g in set(keys.tolist()):
        rows = np.flatnonzero(keys == g)
        if len(rows) < 2:
            raise ValueError(f"group {g!r} has {len(rows)} query; need two or more")
        out[rows] = (c[rows].sum(axis=0) - c[rows]) / (len(rows) - 1)
    return out


def knn_mean(c: np.ndarray, embeddings: np.ndarray, k: int) -> np.ndarray:
    """Row i: the mean of `c` over the k other rows whose embeddings have the largest inner
    product with row i's (ties broken by row order)."""
    sim = embeddings @ embeddings.T  # (n_q, n_q)
    np.fill_diagonal(sim, -np.inf)
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]  # (n_q, k)
    return c[nearest].mean(axis=1)


def ranking_folder(cluster_dir: Path, tag: str | None) -> Path:
    found = sorted(p for p in (cluster_dir / "ranking_scores").glob("*") if p.is_dir())
    if tag:
        found = [p for p in found if p.name == tag]
    if len(found) != 1:
        raise SystemExit(f"{cluster_dir}/ranking_scores: expected one ranking folder"
                         f"{' named ' + tag if tag else ''}, found {[p.name for p in found]}; "
                         "run `uprise eval --ranking-per-task N` first, or pass --tag")
    return found[0]


@dataclass
class Section:
    """The ranking section of a finished cluster folder: its score folder and records, the
    queries in input order and prompts as sampled (so that random relevance and ties rank
    exactly as in its report), the LM's (n_q, n_p) score matrix, the folder's config and stage."""

    folder: Path
    records: list
    config: dict
    stage: StageData
    held_out: str
    queries: list[Query]
    prompts: list[Prompt]
    scores: np.ndarray

    def relevance(self, rankers: dict[str, Ranker]) -> dict[str, np.ndarray]:
        """Each ranker's (n_q, n_p) relevance of the section's queries x prompts."""
        texts = [q.input for q in self.queries], [p.text for p in self.prompts]
        return {name: rank(*texts) for name, rank in rankers.items()}


def section(cluster_dir: Path, tag: str | None = None, eval_seed: int | None = None,
            ranking_seed: int | None = None) -> Section:
    """Reads the ranking section of a finished `uprise eval --clusters` cluster folder whose
    held-out rows were drawn with `eval_seed` and whose section with `ranking_seed` (None, each:
    the folder's seed, as `uprise eval`)."""
    folder = ranking_folder(cluster_dir, tag)
    records = read_scores(folder)
    config = json.loads((cluster_dir / RUN_CONFIG).read_text())["config"]
    stage = read_stage_data(cluster_dir / "data")
    held_out, seed = stage.manifest["held_out_cluster"], config["seed"]
    seed_eval = seed if eval_seed is None else eval_seed
    scored = {s.query_id: s.template for s in records}
    queries = [q for q in evaluation_queries(held_out, resolve_data_dir(config["data_dir"]),
                                             seed_eval, None) if q.id in scored]
    missing = sorted(set(scored) - {q.id for q in queries if q.template == scored[q.id]})
    if missing:
        raise SystemExit(f"{folder}: query {missing[0]} is not among {held_out}'s evaluation "
                         f"rows with the template it was scored with (evaluation seed "
                         f"{seed_eval}); pass the --eval-seed its `uprise eval` run had")
    prompt_ids = {s.prompt_id for s in records}
    seed_ranking = seed if ranking_seed is None else ranking_seed
    prompts = random.Random(f"{seed_ranking}:ranking-prompts").sample(
        stage.pool, min(len(prompt_ids), len(stage.pool)))
    if {p.id for p in prompts} != prompt_ids:
        raise SystemExit(f"{folder}: its prompts are not the ranking section's sample of "
                         f"{cluster_dir / 'data'} with seed {seed_ranking}; pass the "
                         "--ranking-seed its `uprise eval` run had")
    scores = lm_score_matrix(records, queries, prompts)  # (n_q, n_p)
    if np.isnan(scores).any():
        raise SystemExit(f"{folder}: {int(np.isnan(scores).sum())} (query, prompt) pairs have "
                         "no score; the ranking section scores every pair, so this is not one")
    return Section(folder, records, config, stage, held_out, queries, prompts, scores)


def measure(cluster_dir: Path, tag: str | None = None, seed: int = 42,
            train_queries: bool = False, train_scores_dir: Path | None = None,
            batch_size: int = 16, prior_dir: Path | None = None,
            eval_seed: int | None = None) -> dict:
    got = section(cluster_dir, tag, eval_seed)
    folder, records, config, stage = got.folder, got.records, got.config, got.stage
    held_out, queries, prompts, scores = got.held_out, got.queries, got.prompts, got.scores
    texts = [q.input for q in queries], [p.text for p in prompts]
    tasks = [q.task for q in queries]
    c = centred(scores)

    from retriever.export import load_retriever_encoder

    # the untrained towers, loaded once: the section's `untrained` ranker (`dense_ranker`'s
    # inner products) and the query embeddings the kNN references use
    st, _ = load_retriever_encoder(cluster_dir / "untrained_retriever", device="cpu")
    embeddings = st.encode_query(texts[0], convert_to_numpy=True)  # (n_q, dim)
    rankers = {"random": random_ranker(seed)(*texts), "bm25": bm25_ranker(*texts),
               "untrained": embeddings @ st.encode_document(texts[1], convert_to_numpy=True).T}
    if (cluster_dir / "retriever").is_dir():
        rankers["trained"] = dense_ranker(cluster_dir / "retriever")(*texts)
    rankers["prompt_mean"] = others_mean(c)
    rankers["task_mean"] = others_mean(c, tasks)
    for k in KNN:
        rankers[f"knn{k}"] = knn_mean(c, embeddings, k)
    references = ["prompt_mean", "task_mean", *(f"knn{k}" for k in KNN)]
    extra: dict = {}
    if train_queries or prior_dir is not None:
        found, extra = transfer_rankers(
            held_out, (config["lm"], config["lm_dtype"]), stage.train_queries, prompts, scores,
            tasks, (lambda t: st.encode_query(t, convert_to_numpy=True),
                    lambda t: st.encode_document(t, convert_to_numpy=True)), embeddings,
            (train_scores_dir or cluster_dir / "ranking_train_scores") if train_queries else None,
            prior_dir, KNN, batch_size, seed)
        rankers.update(found)
        references += list(found)
    methods = judge_rankers(rankers, scores, tasks, "untrained", seed)
    return {
        "cluster_dir": str(cluster_dir), "ranking_folder": folder.name,
        "held_out_cluster": held_out, "n_queries": len(queries), "n_prompts": len(prompts),
        "lm": records[0].lm,
        "prompt_effect_share": {"all": prompt_effect_share(c),
                                **{t: prompt_effect_share(c[np.asarray(tasks) == t])
                                   for t in sorted(set(tasks))}},
        "reference_rankers": references, **extra,
        "methods": methods,
    }


def table(result: dict) -> str:
    lines = [f"{result['held_out_cluster']}: {result['n_queries']} queries x "
             f"{result['n_prompts']} prompts; prompt main effect "
             f"{result['prompt_effect_share']['all']:.1%} of within-query variance",
             f"{'ranker':12} {'ndcg@3':>24} {'top1':>24} {'spearman':>24}"]
    for name, metrics in result["methods"].items():
        cells = []
        for m in ("ndcg@3", "top1", "spearman"):
            row = metrics[m]
            d = row.get("vs_untrained")
            cells.append(f"{row['mean']:.3f}" + (f" ({d['diff']:+.3f} [{d['low']:+.3f},"
                                                  f"{d['high']:+.3f}])" if d else ""))
        lines.append(f"{name:12} " + " ".join(f"{x:>24}" for x in cells))
    return "\n".join(lines)


def mean_rows(base: dict, metrics: tuple[str, ...]) -> list[str]:
    """The section benches' table head: a header line, then one line per ranker of `base`
    (judge_rankers' result) with each metric's mean."""
    return [f"{'ranker':10} " + " ".join(f"{m:>8}" for m in metrics),
            *(f"{name:10} " + " ".join(f"{row[m]['mean']:8.3f}" for m in metrics)
              for name, row in base.items())]


def diff_cells(row: dict, key: str, metrics: tuple[str, ...]) -> str:
    """The section benches' difference cells: `row[m][key]` (a `vs_<reference>` interval of
    judge_rankers' result) per metric as '+0.012 [-0.003, +0.027]', '-' where it is missing."""
    return "  ".join(format_diff(row[m][key], scale=1, digits=3) if row[m].get(key) else "-"
                     for m in metrics)


def add_section_arguments(parser: argparse.ArgumentParser) -> None:
    """--cluster-dir, --tag and --eval-seed: which section `section` reads; --seed."""
    parser.add_argument("--cluster-dir", type=Path, required=True,
                        help="a `uprise eval --clusters` cluster folder (under --work-dir)")
    parser.add_argument("--tag", help="ranking_scores subfolder when there are several")
    parser.add_argument("--eval-seed", type=int,
                        help="the run's `uprise eval --eval-seed` (default: the folder's seed)")
    parser.add_argument("--seed", type=int, default=42, help="bootstrap and random ranker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_section_arguments(parser)
    parser.add_argument("--train-queries", action="store_true",
                        help="also score the section's prompts on the folder's training "
                             "queries (cross-cluster pairs) and add the train_* rankers")
    parser.add_argument("--train-scores-dir", type=Path,
                        help="where those scores go (default CLUSTER_DIR/ranking_train_scores)")
    parser.add_argument("--batch-size", type=int, default=16, help="scoring batch size")
    parser.add_argument("--prior-dir", type=Path,
                        help="a cluster folder of the same pool trained on cross-cluster "
                             "candidates: adds the prior_* rankers from its scores")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = measure(args.cluster_dir, args.tag, args.seed, args.train_queries,
                     args.train_scores_dir, args.batch_size, args.prior_dir, args.eval_seed)
    print(table(result))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
