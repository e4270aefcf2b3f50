"""Benchmark: which labels and losses teach the retriever to rank prompts the way the LM does.

    .venv/bin/python bench/labels.py --run RUN            # RUN holds data/ and scores/
    .venv/bin/python bench/labels.py --run RUN --variants uprise,copy --epochs 1
    .venv/bin/python bench/labels.py --run RUN --variants "" \
        --exports round1=RUN/retriever round2=RUN/round2/retriever  # measure, train nothing

Trains one retriever per variant on the same scores (`train_retriever`, the `uprise train`
path) and measures, on the same validation queries (a seeded share of the *training*
clusters' scored queries that no variant trains on), how well each ranks every scored
candidate of a query against the LM's own scores: NDCG@3, top-1 agreement and Spearman per
query (`retriever.ranking`), next to the untrained encoder, with paired bootstrap 95% CIs
stratified by task. Nothing here touches a held-out cluster: this is where label and loss
defaults are chosen. Each variant's export is kept under RUN/bench_labels/, so a rerun only
trains the variants not done yet. Also recorded: the LM's accuracy per training task, each
variant's number of training queries, each later variant's paired difference from the first one
listed (`vs_<first>`, the default when it comes first) and, when the score folder holds zero-shot
scores, per task what the candidates add over zero-shot (`zero_shot_gain`). `--exports
NAME=DIR` measures retrievers trained elsewhere (e.g. the mining rounds of a run,
`uprise.rounds`) on the same queries, listed before the variants; each must have held out the
same validation queries (its recorded seed and val_fraction on the same scored queries), else it
is refused. Prints a table and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import write_json  # noqa: E402
from flan_data.stage_io import POOL, TRAIN_QUERIES  # noqa: E402
from proxy_lm.loading import cpu_has_native_bf16, cpu_name  # noqa: E402
from retriever import BiEncoder, BiEncoderConfig, export_retriever  # noqa: E402
from retriever.cli import train_retriever  # noqa: E402
from retriever.data import RetrieverDataModule, validation_query_ids  # noqa: E402
from retriever.export import load_retriever_encoder  # noqa: E402
from retriever.labels import task_accuracy  # noqa: E402
from retriever.ranking import METRICS, ranking_metrics  # noqa: E402
from retriever.settings import latest_ranking  # noqa: E402
from uprise.evaluation.stats import format_diff, paired_bootstrap  # noqa: E402

VARIANTS = {  # name -> train_retriever options (over --epochs/--batch-size/--lr)
    "uprise": {},
    "uprise_lr1e-5": {"lr": 1e-5, "epochs": 4},
    "copy": {"label_copy_correction": True},
    "chance": {"drop_chance_tasks": True},
    "zs_gain": {"zero_shot_relative": True},
    "random_neg": {"n_random_negatives": 4},
    "kd": {"loss": "info_nce+kl", "lm_temperature": 0.1},
    "kd_t0.5": {"loss": "info_nce+kl", "lm_temperature": 0.5},
    "copy+kd": {"label_copy_correction": True, "loss": "info_nce+kl", "lm_temperature": 0.1},
    "top3": {"positive_top_k": 3},
    "kd_top3": {"loss": "info_nce+kl", "lm_temperature": 0.1, "positive_top_k": 3},  # LLM-R
}


def val_items(run: Path, val_fraction: float, seed: int) -> list[dict]:
    data = RetrieverDataModule(run / "scores", run / "data" / TRAIN_QUERIES, run / "data" / POOL,
                               val_fraction=val_fraction, seed=seed)
    data.setup("fit")
    return data.val_set.items


def n_train_queries(run: Path, options: dict, args: argparse.Namespace) -> int:
    """How many training queries a variant's labels keep (its options that shape the data)."""
    keys = ("label_copy_correction", "drop_chance_tasks", "zero_shot_relative")
    data = RetrieverDataModule(run / "scores", run / "data" / TRAIN_QUERIES, run / "data" / POOL,
                               val_fraction=args.val_fraction, seed=args.seed,
                               **{k: v for k, v in options.items() if k in keys})
    data.setup("fit")
    return len(data.train_set)


def parse_exports(specs: list[str]) -> dict[str, Path]:
    """NAME=DIR pairs, in order; a missing export or a repeated name is refused."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not (sep and name and folder) or name in out:
            raise SystemExit(f"--exports: {spec!r} is not a new NAME=DIR (e.g. round2=RUN/round2"
                             "/retriever)")
        if not (Path(folder) / "uprise_config.json").is_file():
            raise SystemExit(f"--exports {name}: {folder} holds no uprise_config.json; pass a "
                             "retriever exported by `uprise train`")
        out[name] = Path(folder)
    return out


def check_held_out(name: str, export: Path, held_out: set[str]) -> None:
    """The export must have held out exactly `held_out`, the validation queries measured here."""
    from flan_data.score_folder import read_scores

    meta = json.loads((export / "uprise_config.json").read_text())["metadata"]
    theirs = None
    if "scores_path" in meta and "val_fraction" in meta and "seed" in meta:
        theirs = validation_query_ids({s.query_id for s in read_scores(meta["scores_path"])},
                                      meta["val_fraction"], meta["seed"])
    if theirs != held_out:
        raise SystemExit(
            f"--exports {name}: {export} was trained with another validation split (its "
            f"metadata: seed {meta.get('seed')}, val_fraction {meta.get('val_fraction')}, "
            f"scores {meta.get('scores_path')}), so it may have trained on the queries measured "
            f"here; pass the --seed and --val-fraction it was trained with.")


def per_query(export: Path, items: list[dict]) -> dict[str, np.ndarray]:
    """Each metric per validation query for one exported retriever (the serving encoders)."""
    st, _ = load_retriever_encoder(export, device="cpu")
    q = st.encode_query([it["query"] for it in items], convert_to_tensor=True)  # (n, dim)
    texts = sorted({t for it in items for t in it["scored_texts"]})
    row = {t: i for i, t in enumerate(texts)}
    p = st.encode_document(texts, convert_to_tensor=True)  # (n_texts, dim)
    width = max(len(it["scored_texts"]) for it in items)
    retr = torch.zeros(len(items), width)  # (n, width)
    lm = torch.zeros(len(items), width)  # (n, width)
    mask = torch.zeros(len(items), width, dtype=torch.bool)  # (n, width)
    for i, it in enumerate(items):
        n = len(it["scored_texts"])
        retr[i, :n] = p[[row[t] for t in it["scored_texts"]]] @ q[i]
        lm[i, :n] = torch.tensor(it["scored_lm"])
        mask[i, :n] = True
    return {k: v.numpy() for k, v in ranking_metrics(retr, lm, mask).items()}


def compare(values: dict[str, np.ndarray], base: dict[str, np.ndarray], tasks: list[str],
            label: str = "vs_untrained") -> dict:
    """Per metric: the variant's mean and its paired difference from `base` under `label`
    (queries where either is undefined left out)."""
    out = {}
    for name in METRICS:
        ok = ~np.isnan(values[name]) & ~np.isnan(base[name])
        kept = [t for t, keep in zip(tasks, ok, strict=True) if keep]
        out[name] = {"mean": float(np.mean(values[name][ok])), "n": int(ok.sum()),
                     label: paired_bootstrap(values[name][ok], base[name][ok], groups=kept)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="folder with data/ and scores/")
    p.add_argument("--variants", default="uprise,copy,chance,kd,random_neg")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--val-fraction", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--exports", nargs="+", default=[], metavar="NAME=DIR",
                   help="exported retrievers to measure as they are (no training), first")
    p.add_argument("--out", default=REPO / "bench" / "results" / "labels.json")
    args = p.parse_args()
    run, work = Path(args.run), Path(args.run) / "bench_labels"
    exports = parse_exports(args.exports)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    if not names and not exports:
        raise SystemExit("nothing to measure: pass --variants and/or --exports")
    if set(names) & set(exports):
        raise SystemExit(f"--exports: {sorted(set(names) & set(exports))} also named in "
                         "--variants; give the export another name")
    if exports:
        from flan_data.score_folder import read_scores

        held_out = validation_query_ids({s.query_id for s in read_scores(run / "scores")},
                                        args.val_fraction, args.seed)
        for name, export in exports.items():
            check_held_out(name, export, held_out)
    items = val_items(run, args.val_fraction, args.seed)
    queries = {json.loads(line)["input"]: json.loads(line)["task"]
               for line in (run / "data" / TRAIN_QUERIES).read_text().splitlines()}
    tasks = [queries[it["query"]] for it in items]
    untrained = work / "untrained"
    if not (untrained / "uprise_config.json").is_file():
        export_retriever(BiEncoder(BiEncoderConfig()), untrained, {"trained": False},
                         overwrite=True)
    base = per_query(untrained, items)
    report = {"setup": {**vars(args), "n_val_queries": len(items), "cpu": cpu_name(),
                        "cpu_native_bf16": cpu_has_native_bf16(),
                        "threads": torch.get_num_threads(), "torch": torch.__version__,
                        "machine": platform.machine()},
              "untrained": {m: float(np.nanmean(base[m])) for m in METRICS},
              "lm_task_accuracy": _task_accuracy(run),
              "zero_shot_gain": _zero_shot_gain(run), "variants": {}}
    first: dict[str, np.ndarray] | None = None  # the first listed is the reference
    order = [*exports, *names]
    for name in order:
        t0 = time.perf_counter()
        if name in exports:
            export, row = exports[name], {"export": str(exports[name]),
                                          "trained_this_call": False}
        else:
            export = work / name / "retriever"
            row = {"options": VARIANTS[name],
                   "trained_this_call": not (export / "uprise_config.json").is_file()}
            if row["trained_this_call"]:
                train_retriever(run / "scores", run / "data" / TRAIN_QUERIES,
                                run / "data" / POOL, out_dir=work / name, export_dir=export,
                                overwrite=True, progress=False,
                                **{"epochs": args.epochs, "batch_size": args.batch_size,
                                   "lr": args.lr, "seed": args.seed,
                                   "val_fraction": args.val_fraction, **VARIANTS[name]})
            row["n_train_queries"] = n_train_queries(run, VARIANTS[name], args)
            row["validation_curve"] = _curve(work / name)
        values = per_query(export, items)
        first = first if first is not None else values
        if name not in exports:
            row["seconds_this_call"] = round(time.perf_counter() - t0, 1)  # train (if) + measure
        report["variants"][name] = {**row, **_measured(export, values, base, first, tasks, name,
                                                       order[0])}
        _print(report)
        write_json(args.out, report)


def _measured(export: Path, values: dict[str, np.ndarray], base: dict[str, np.ndarray],
              first: dict[str, np.ndarray], tasks: list[str], name: str, first_name: str) -> dict:
    """A measured retriever's exported epoch, its metrics against the untrained encoder and
    (unless it is the first listed) against the first one, and its NDCG@3 per task."""
    config = json.loads((export / "uprise_config.json").read_text())["metadata"]
    return {
        "exported_epoch": (config.get("validation_ranking", {}).get("exported") or {}
                           ).get("epoch"),
        "metrics": compare(values, base, tasks),
        **({f"vs_{first_name}": compare(values, first, tasks, f"vs_{first_name}")}
           if name != first_name else {}),
        "by_task_ndcg@3": {t: float(np.nanmean([v for v, tt in zip(values["ndcg@3"], tasks,
                                                                    strict=True) if tt == t]))
                           for t in sorted(set(tasks))},
    }


def _curve(run_dir: Path) -> list[dict]:
    """Every validation pass of the newest training log (the reference pass first)."""
    record = latest_ranking(run_dir) or {"history": []}
    return [{k: h[k] for k in ("stage", "epoch", "global_step", *METRICS)}
            for h in record["history"]]


def _task_accuracy(run: Path) -> dict:
    from flan_data.schema import Query, read_jsonl
    from flan_data.score_folder import read_scores

    queries = {q.id: q for q in read_jsonl(run / "data" / TRAIN_QUERIES, Query)}
    return {t: {"accuracy": round(a.accuracy, 3), "chance": round(a.chance, 3),
                "z": round(a.z, 2), "n_queries": a.n_queries, "above_chance": a.above_chance}
            for t, a in task_accuracy(read_scores(run / "scores"), queries).items()}


def _zero_shot_gain(run: Path) -> dict | None:
    """Per task, what the candidates add over zero-shot (label value minus the zero-shot one):
    the share of candidates with a positive gain, the share of queries with at least one, and
    the median over queries of the best candidate's gain. None without zero-shot scores."""
    from flan_data.schema import Query, read_jsonl
    from flan_data.score_folder import ZERO_SHOT_FILE, read_scores, read_zero_shot
    from retriever.labels import value

    if not (run / "scores" / ZERO_SHOT_FILE).is_file():
        return None
    queries = {q.id: q for q in read_jsonl(run / "data" / TRAIN_QUERIES, Query)}
    zero = read_zero_shot(run / "scores")
    gains: dict[str, list[float]] = {}
    for s in read_scores(run / "scores"):
        gains.setdefault(s.query_id, []).append(value(s) - value(zero[s.query_id]))
    by_task: dict[str, list[list[float]]] = {}
    for qid, g in gains.items():
        by_task.setdefault(queries[qid].task, []).append(g)
    return {t: {"n_queries": len(rows),
                "candidates_above_zero_shot": round(float(np.mean([x > 0 for g in rows
                                                                   for x in g])), 3),
                "queries_with_a_gain": round(float(np.mean([max(g) > 0 for g in rows])), 3),
                "median_best_gain": round(float(np.median([max(g) for g in rows])), 3)}
            for t, rows in sorted(by_task.items())}


def _print(report: dict) -> None:
    print(f"\n{report['setup']['n_val_queries']} validation queries; untrained: "
          + ", ".join(f"{m} {v:.3f}" for m, v in report["untrained"].items()))
    print(f"{'variant':<12}" + "".join(f"{m:>28}" for m in METRICS))
    for name, row in report["variants"].items():
        cells = []
        for m in METRICS:
            d = row["metrics"][m]["vs_untrained"]
            cells.append(f"{row['metrics'][m]['mean']:.3f} ({format_diff(d, 1, 3, ',')})")
        print(f"{name:<12}" + "".join(f"{c:>28}" for c in cells))
    for name, row in report["variants"].items():
        vs = next((k for k in row if k.startswith("vs_")), None)
        if vs:
            print(f"{name} {vs.replace('_', ' ', 1)}: " + ", ".join(
                f"{m} {format_diff(d, 1, 3, ',')}"
                for m, d in ((m, row[vs][m][vs]) for m in METRICS)))


if __name__ == "__main__":
    main()
