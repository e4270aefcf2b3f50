"""Benchmark: the in-task rung (EPR-style). Does the trained retriever beat BM25 and the
untrained encoder when pool, training queries and evaluation come from one task?

    .venv/bin/python bench/intask.py --run /path/to/runs/intask --tasks sst2 openbookqa
    .venv/bin/python bench/intask.py --run RUN --tasks sst2 openbookqa \
        --eval-lm embedded:qwen2.5-coder-0.5b-instruct     # + a stronger evaluated LM
    .venv/bin/python bench/intask.py --run RUN --tasks e2e_nlg --hybrid  # + trained mixed with BM25
    .venv/bin/python bench/intask.py --run RUN --tasks e2e_nlg --rounds 2  # + a mined round
    .venv/bin/python bench/intask.py --run RUN --tasks e2e_nlg --bm25-candidates 8  # + EPR's
    .venv/bin/python bench/intask.py --run RUN --tasks dart --bm25-candidates 8 --dev 150

Per task, the documented pipeline through the `uprise` CLI, one stage at a time (one heavy
process, as a 2-core machine needs), each stage skipped when its output exists, so a rerun
resumes: `uprise data --in-task TASK`, `uprise score`, `uprise train fit --config
configs/train.yaml` (the defaults, nothing tuned), `uprise index`, `uprise eval --k K` (zero-shot,
random, BM25, untrained, trained on the task's evaluation split; the ranking section ranks a
shared sample of pool prompts for held-out queries against the LM's own scores). Collects each
task's accuracy table with paired-bootstrap CIs, how often prompts change the LM's answer,
the ranking section, the validation ranking history of training, stage wall times and the
machine, prints a short table and writes JSON to --out. `--eval-lm` adds the paper's
cross-model question: the same retrievers (labels from the scoring LM) in front of another LM,
on a seeded subset of the evaluation split. `--hybrid` adds `uprise eval --methods hybrid` (the
trained retriever mixed with BM25, its weight chosen on training's validation queries) on the
same evaluation queries, with its CIs against BM25 and the untrained encoder. `--rounds 2`
adds iterative mining (LLM-R, UDR): `uprise mine` takes round 1's retriever's top
`--mine-top-k` same-task prompts plus random ones as each query's candidates, then score (pairs
seen before come from the cache), train, index and evaluate again into `*_r2` folders; the
table reports `trained_r2` (and `hybrid_r2`) against BM25, the untrained encoder and round 1.
`--bm25-candidates K` adds EPR's candidate source beside round 1: `uprise mine --bm25` gives
each training query its task's K best BM25 prompts plus random ones, then the same stages into
`*_bm25c` folders, reported as `trained_bm25c` (and `hybrid_bm25c`) with the same comparisons.
`--dev N` withholds N rows of the training split (whole inputs) from pool and training queries
(`uprise data --dev-per-task N`), evaluates BM25, the untrained encoder and every trained variant
(with --hybrid, their hybrids too) on them before the evaluation split (`uprise eval --on dev`,
`eval_dev_k*` folders) and records, per task, the variant with the highest development average
(`selection`): the recipe is chosen there, and its evaluation numbers are the ones claimed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flan_data import write_json  # noqa: E402
from flan_data.stage_io import DATA_MANIFEST, POOL, TRAIN_QUERIES  # noqa: E402
from proxy_lm.loading import cpu_has_native_bf16, cpu_name  # noqa: E402
from retriever.index_manifest import is_indexed  # noqa: E402
from retriever.settings import latest_ranking  # noqa: E402
from uprise.evaluation.report import REPORT_FILE  # noqa: E402
from uprise.evaluation.run import read_predictions  # noqa: E402
from uprise.evaluation.stats import format_diff, paired_bootstrap  # noqa: E402

UPRISE = [sys.executable, "-m", "uprise"]


def task_dir(args, task: str) -> Path:
    """RUN/TASK, or RUN/TASK@LM when another LM scores (and evaluates) than the default."""
    return args.run / (task if not args.scoring_lm else f"{task}@{_tag(args.scoring_lm)}")


def _tag(lm: str) -> str:
    return lm.removeprefix("embedded:").replace("/", "_")


def scoring_lm_args(args) -> list[str]:
    """`--lm LM` for the stages that score or evaluate with --scoring-lm; nothing by default."""
    return ["--lm", args.scoring_lm] if args.scoring_lm else []


def data_argv(args, task: str, out: Path, n_eval: int) -> list:
    return ["data", "--in-task", task, "--output-dir", out, "--seed", args.seed,
            "--pool-per-task", args.pool, "--queries-per-task", args.queries,
            "--n-candidates", args.candidates, "--eval-per-task", n_eval,
            "--max-prompt-chars", args.max_prompt_chars, "--dev-per-task", args.dev]


def stages(args, task: str) -> list[tuple[str, bool, list]]:
    """(name, whether its output is already complete, argv) of each stage of one task, in
    order; `uprise score` always runs (it resumes, and returns at once when complete)."""
    t = task_dir(args, task)
    return [
        ("data", (t / "data" / DATA_MANIFEST).is_file(),
         data_argv(args, task, t / "data", args.eval)),
        *round_stages(args, task, 1),
        *(s for r in range(2, args.rounds + 1) for s in round_stages(args, task, r)),
        *bm25_candidate_stages(args, task),
        *cross_model_stages(args, task),
    ]


BM25C = "_bm25c"  # folder suffix (and method-name suffix) of the BM25-candidate variant


def suffix(r: int) -> str:
    """Folder suffix of mining round r: none for the first round (the plain pipeline)."""
    return "" if r == 1 else f"_r{r}"


def variants(args) -> list[str]:
    """The folder suffix of every trained retriever of a task: the rounds, then BM25's."""
    return [suffix(r) for r in range(1, args.rounds + 1)] + [BM25C] * bool(args.bm25_candidates)


def round_stages(args, task: str, r: int) -> list[tuple[str, bool, list]]:
    """One training round: (round >= 2: `uprise mine` the candidates from the previous round's
    retriever), then `train_stages`; round 1 evaluates every method, later rounds the trained
    retriever alone, on the same evaluation queries (the mined folder keeps them)."""
    t = task_dir(args, task)
    mine = [] if r == 1 else [mine_stage(args, task, suffix(r), args.mine_top_k, [
        "--data", t / f"data{suffix(r - 1)}", "--retriever", t / f"retriever{suffix(r - 1)}"])]
    return [*mine, *train_stages(args, task, suffix(r), args.methods if r == 1 else ["trained"])]


def bm25_candidate_stages(args, task: str) -> list[tuple[str, bool, list]]:
    """With --bm25-candidates K: EPR's candidate source. Each training query of round 1's data
    gets its task's K best BM25 prompts plus random ones (`uprise mine --bm25`), then score,
    train, index and evaluate the trained retriever alone into `*_bm25c` folders."""
    if not args.bm25_candidates:
        return []
    src = ["--data", task_dir(args, task) / "data", "--bm25"]
    return [mine_stage(args, task, BM25C, args.bm25_candidates, src),
            *train_stages(args, task, BM25C, ["trained"])]


def mine_stage(args, task: str, x: str, top_k: int, src: list) -> tuple[str, bool, list]:
    data = task_dir(args, task) / f"data{x}"
    return (f"mine{x}", (data / DATA_MANIFEST).is_file(),
            ["mine", *src, "--output-dir", data, "--top-k", top_k,
             "--n-random", args.candidates - top_k, "--seed", args.seed])


def train_stages(args, task: str, x: str, methods: list[str]) -> list[tuple[str, bool, list]]:
    """Score the candidates of folder `data{x}`, train, index and evaluate `methods`."""
    t, lm = task_dir(args, task), scoring_lm_args(args)
    data, retriever, out = t / f"data{x}", t / f"retriever{x}", t / f"eval_k{args.k}{x}"
    return [
        (f"score{x}", False, ["score", "--data", data, "--output-dir", t / f"scores{x}", *lm]),
        (f"train{x}", (retriever / "uprise_config.json").is_file(),
         ["train", "fit", "--config", REPO / "configs" / "train.yaml",
          "--data.scores_path", t / f"scores{x}", "--data.queries_path",
          data / TRAIN_QUERIES, "--data.pool_path", data / POOL,
          "--trainer.default_root_dir", t / f"train{x}", "--export_dir", retriever]),
        (f"index{x}", is_indexed(retriever), ["index", "--retriever", retriever, "--pool",
                                              data / POOL]),
        *dev_stages(args, task, x, methods),  # the choice's numbers exist before the evaluation
        (f"eval{x}", (out / REPORT_FILE).is_file(),
         ["eval", "--data", data, "--retriever", retriever, "--k", args.k,
          "--ranking-per-task", args.ranking, "--ranking-prompts", args.ranking_prompts,
          "--output-dir", out, "--no-progress", "--methods", *methods, *lm]),
        *hybrid_stages(args, task, x),
    ]


def dev_stages(args, task: str, x: str, methods: list[str]) -> list[tuple[str, bool, list]]:
    """With --dev N: the retriever of folder suffix x (round 1: with BM25 and the untrained
    encoder; with --hybrid: and its hybrid, own folder) on the development queries, rows of the
    training split withheld from pool and training queries, where `selection` chooses the
    variant reported."""
    if not args.dev:
        return []
    t, lm = task_dir(args, task), scoring_lm_args(args)
    runs = [("", [m for m in methods if m in DEV_METHODS])]
    runs += [("_hybrid", ["hybrid"])] * args.hybrid
    return [(f"eval_dev{h}{x}", (dev_dir(args, task, h + x) / REPORT_FILE).is_file(),
             ["eval", "--data", t / f"data{x}", "--on", "dev", "--retriever",
              t / f"retriever{x}", "--k", args.k, "--ranking-per-task", 0, "--output-dir",
              dev_dir(args, task, h + x), "--no-progress", "--methods", *names, *lm])
            for h, names in runs]


DEV_METHODS = ("bm25", "untrained", "trained")


def dev_dir(args, task: str, x: str = "") -> Path:
    return task_dir(args, task) / f"eval_dev_k{args.k}{x}"


def hybrid_stages(args, task: str, x: str) -> list[tuple[str, bool, list]]:
    """With --hybrid: the trained retriever of folder suffix x mixed with BM25, its weight
    chosen by `uprise eval` on training's validation queries, on the same evaluation queries
    (own folder)."""
    if not args.hybrid:
        return []
    t, lm = task_dir(args, task), scoring_lm_args(args)
    out = hybrid_dir(args, task, x)
    return [(f"eval_hybrid{x}", (out / REPORT_FILE).is_file(),
             ["eval", "--data", t / f"data{x}", "--retriever", t / f"retriever{x}", "--k",
              args.k, "--methods", "hybrid", "--ranking-per-task", 0, "--output-dir", out,
              "--no-progress", *lm])]


def hybrid_dir(args, task: str, x: str = "") -> Path:
    return task_dir(args, task) / f"eval_k{args.k}_hybrid{x}"


def cross_model_stages(args, task: str) -> list[tuple[str, bool, list]]:
    """With --eval-lm: the same retrievers (trained on the scoring LM's labels) evaluated with
    another LM on a seeded subset of the evaluation split (same pool, so the same index)."""
    if not args.eval_lm:
        return []
    t, n = task_dir(args, task), args.eval_lm_queries
    out = cross_model_dir(args, task)
    return [
        ("data_subset", (t / f"data_e{n}" / DATA_MANIFEST).is_file(),
         data_argv(args, task, t / f"data_e{n}", n)),
        ("eval_lm", (out / REPORT_FILE).is_file(),
         ["eval", "--data", t / f"data_e{n}", "--retriever", t / "retriever", "--k", args.k,
          "--lm", args.eval_lm, "--ranking-per-task", 0, "--output-dir", out, "--no-progress"]),
    ]


def cross_model_dir(args, task: str) -> Path:
    return task_dir(args, task) / f"eval_{_tag(args.eval_lm)}_e{args.eval_lm_queries}_k{args.k}"


def run_task(args, task: str) -> dict[str, float]:
    """Runs the stages not done yet; returns their wall times in seconds."""
    times = {}
    log = task_dir(args, task) / "stages.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    for name, done, argv in stages(args, task):
        if done:
            continue
        print(f"[{task}] {name} ...", flush=True)
        start = time.perf_counter()
        with log.open("a") as out:
            subprocess.run([*UPRISE, *map(str, argv)], check=True, cwd=REPO, stdout=out,
                           stderr=subprocess.STDOUT)
        times[name] = round(time.perf_counter() - start, 1)
    return times


def summary(args, task: str) -> dict:
    """The task's evaluation reports (methods, CIs, changed answers, ranking; each trained
    retriever after round 1's named with its folder suffix: `trained_r2`, `hybrid_r2`,
    `trained_bm25c`, ...), training's validation ranking history per retriever, and with
    --eval-lm the other LM's evaluation."""
    t, xs = task_dir(args, task), variants(args)
    folders = [(t / f"eval_k{args.k}{x}", x) for x in xs]
    folders += [(hybrid_dir(args, task, x), x) for x in xs if args.hybrid]
    out = evaluation(args, task, folders)
    for x in xs:
        out[f"validation_ranking{x}"] = latest_ranking(t / f"train{x}")  # the exporting run
    if args.dev:
        out["selection"] = selection(args, task, out["methods"])
    if args.eval_lm:
        out["cross_model"] = {"lm": args.eval_lm,
                              **evaluation(args, task, [(cross_model_dir(args, task), "")])}
    return out


def evaluation(args, task: str, folders: list[tuple[Path, str]]) -> dict:
    """`uprise eval` reports on the same queries, each (folder, suffix of its retriever); a
    method of a later round or of the BM25-candidate variant is named with that suffix. Per
    method the average, CIs, changed answers; trained and hybrid minus BM25, minus the untrained
    encoder and (other variants) minus the same method of round 1, paired bootstrap over the
    same queries, at --level."""
    reports = [(json.loads((f / REPORT_FILE).read_text()), f, x) for f, x in folders]
    report, part = reports[0][0], _part(reports[0][0])
    keep = ("average", "vs_zero_shot", "changed_vs_zero_shot")
    methods, values, base, rank = {}, {}, {}, part.get("ranking")
    for rep, f, x in reports:
        for m, result in _part(rep)["methods"].items():
            name = m + x
            base[name] = m
            methods[name] = {k: result[k] for k in keep if k in result}
            if m == "hybrid":
                methods[name]["weight"] = rep.get("hybrid")
            rows = read_predictions(f, m)
            values[name] = {row["query_id"]: row["value"] for row in rows}
        later = (_part(rep).get("ranking") or {}).get("methods", {})
        if x and rank and "trained" in later:
            rank["methods"]["trained" + x] = later["trained"]
    order = list(values[next(iter(values))])
    if any(list(v) != order for v in values.values()):
        raise ValueError(f"{[f for f, _ in folders]}: the reports' queries differ; evaluate "
                         "every method on the same evaluation queries")
    for name, m in base.items():  # the in-task claim: each minus the bases (and minus round 1)
        if m not in ("trained", "hybrid"):
            continue
        for ref in [b for b in ("bm25", "untrained") if b in methods] + [m] * (name != m):
            methods[name][f"vs_{ref}"] = paired_bootstrap(list(values[name].values()),
                                                          list(values[ref].values()),
                                                          seed=args.seed, level=args.level)
    return {"n_eval": part["tasks"][task]["n"], "metric": part["tasks"][task]["metric"],
            "methods": methods, "ranking": rank, "eval_wall_s": report.get("wall_time_s")}


def selection(args, task: str, methods: dict) -> dict:
    """The variant chosen on the development queries, a rule fixed before any run: of the
    trained retrievers (round 1, later rounds, BM25 candidates) and, with --hybrid, their
    hybrids, the one with the highest development average, the earlier listed on a tie; with its
    evaluation comparisons."""
    xs = variants(args)
    folders = [(dev_dir(args, task, x), x) for x in xs]
    folders += [(dev_dir(args, task, "_hybrid" + x), x) for x in xs if args.hybrid]
    dev = evaluation(args, task, folders)
    averages = {m: v["average"] for m, v in dev["methods"].items()}
    variant = [m for m in averages if m.startswith(("trained", "hybrid"))]
    chosen = max(variant, key=lambda m: (averages[m], -variant.index(m)))
    return {"rule": "highest development average among the trained variants (and their "
                    "hybrids); the earlier listed on a tie",
            "n_dev": dev["n_eval"], "dev": dev["methods"], "chosen": chosen,
            "eval": methods[chosen]}


def _part(report: dict) -> dict:
    """A single run's report, or the first cluster's part of a multi-cluster one."""
    return report["clusters"][next(iter(report["clusters"]))] if "clusters" in report else report


def machine() -> dict:
    return {"cpu": cpu_name(), "cpu_native_bf16": cpu_has_native_bf16(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.machine()}


def print_table(results: dict) -> None:
    print(f"{'task (LM)':24s} {'n':>4s} {'method':13s} {'metric':>7s} {'vs bm25':>22s} "
          f"{'vs untrained':>22s} {'changed':>8s} {'ndcg@3':>7s} {'top1':>6s}")
    for task, r in results["tasks"].items():
        print_rows(f"{task} (scoring LM)", r)
        if r.get("cross_model"):
            print_rows(f"{task} ({r['cross_model']['lm'].removeprefix('embedded:')[:12]})",
                       r["cross_model"])
        if r.get("selection"):
            sel = r["selection"]
            dev = ", ".join(f"{m} {100 * v['average']:.1f}" for m, v in sel["dev"].items())
            print(f"{task}: chosen on {sel['n_dev']} development queries ({dev}): "
                  f"{sel['chosen']}")


def print_rows(label: str, r: dict) -> None:
    methods, rank = r["methods"], (r.get("ranking") or {}).get("methods", {})
    for m, v in methods.items():
        diffs = [_diff(methods, m, b) for b in ("bm25", "untrained")]
        ch = v.get("changed_vs_zero_shot")
        changed = "" if not ch else f"{100 * ch['rate']:.1f}"
        rk = rank.get(m, {})
        print(f"{label:24s} {r['n_eval']:4d} {m:13s} {100 * v['average']:7.1f} "
              f"{diffs[0]:>22s} {diffs[1]:>22s} {changed:>8s} "
              f"{rk.get('ndcg@3', {}).get('mean', float('nan')):7.3f} "
              f"{rk.get('top1', {}).get('mean', float('nan')):6.3f}")


def _diff(methods: dict, a: str, b: str) -> str:
    """a - b in points with its paired-bootstrap 95% CI, where computed (trained, hybrid)."""
    d = methods[a].get(f"vs_{b}")
    if d is None:
        return ""
    return format_diff(d, sep=",")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="folder of the per-task runs")
    ap.add_argument("--tasks", nargs="+", default=["sst2", "openbookqa"])
    ap.add_argument("--pool", type=int, default=1000, help="pool prompts per task")
    ap.add_argument("--queries", type=int, default=300, help="training queries per task")
    ap.add_argument("--candidates", type=int, default=10, help="L, scored candidates per query")
    ap.add_argument("--eval", type=int, default=500, help="evaluation queries per task")
    ap.add_argument("--max-prompt-chars", type=int, default=1500,
                    help="longest demonstration (and training query) kept; 1,500 as `uprise "
                         "data`")
    ap.add_argument("--ranking", type=int, default=100, help="ranking-section queries")
    ap.add_argument("--ranking-prompts", type=int, default=20)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--scoring-lm", help="score (and evaluate) with this LM instead of the "
                    "embedded default; runs under RUN/TASK@LM")
    ap.add_argument("--methods", nargs="+", default=["zero_shot", "random", "bm25", "untrained",
                                                     "trained"])
    ap.add_argument("--hybrid", action="store_true",
                    help="also evaluate the trained retriever mixed with BM25 (weight chosen on "
                         "training's validation queries)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="training rounds; each after the first mines its candidates from the "
                         "previous round's retriever (`uprise mine`), scores, retrains, evaluates")
    ap.add_argument("--mine-top-k", type=int, default=5,
                    help="retrieved candidates per query in a mined round; the rest of "
                         "--candidates are random same-task prompts")
    ap.add_argument("--bm25-candidates", type=int, default=0, metavar="K",
                    help="also train on EPR's candidates: each query's K best BM25 prompts of "
                         "its task plus random ones (--candidates in all), into *_bm25c folders")
    ap.add_argument("--dev", type=int, default=0, metavar="N",
                    help="withhold N rows of the training split as development queries; every "
                         "trained variant is evaluated on them and the best one is reported as "
                         "the task's choice (`selection`), never chosen on the evaluation split")
    ap.add_argument("--eval-lm", help="also evaluate with this LM (e.g. "
                    "embedded:qwen2.5-coder-0.5b-instruct after `uprise fetch-lm`)")
    ap.add_argument("--eval-lm-queries", type=int, default=200,
                    help="evaluation queries per task for --eval-lm")
    ap.add_argument("--level", type=float, default=0.95,
                    help="level of the paired intervals of trained and hybrid (e.g. 0.9875: "
                         "Bonferroni for four variants compared)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "intask.json")
    args = ap.parse_args()
    if args.rounds < 1 or not 1 <= args.mine_top_k <= args.candidates:
        ap.error(f"--rounds {args.rounds}, --mine-top-k {args.mine_top_k}: expected --rounds >= 1 "
                 f"and 1 <= --mine-top-k <= --candidates ({args.candidates})")
    if not 0 <= args.bm25_candidates <= args.candidates:
        ap.error(f"--bm25-candidates {args.bm25_candidates}: expected 0 (off) to --candidates "
                 f"({args.candidates})")
    results = {"setup": {**{k: str(v) if isinstance(v, Path) else v
                            for k, v in vars(args).items()}, **machine()}, "tasks": {}}
    if args.out.exists():  # one file for every task run so far, each with its own settings
        results["tasks"] = json.loads(args.out.read_text()).get("tasks", {})
    for task in args.tasks:
        times, name = run_task(args, task), task_dir(args, task).name
        earlier = results["tasks"].get(name, {}).get("stage_wall_s", {})
        results["tasks"][name] = {  # wall time of each stage where it ran, over resumed calls
            **summary(args, task), "stage_wall_s": {**earlier, **times},
            "stage_wall_s_this_call": times, "settings": results["setup"]}
    write_json(args.out, results)
    print_table(results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
