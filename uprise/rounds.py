"""Iterative mining rounds (LLM-R, UDR) after a run's first round, for the quickstart and LOCO.

Contract: round 1 is the plain run folder (data/, scores/, retriever/). With
`cfg.mining_rounds = R > 1`, round r in 2..R lives in `run_dir/round<r>/`: its data folder is
mined from round r-1's trained retriever (`retriever.mining.mine_round`: per training query the
retriever's `mining_top_k` best same-task prompts, then `n_candidates - mining_top_k` random
same-task ones), then scored (pairs seen before come from the score cache), trained and indexed
like round 1. Each stage is skipped when its output is complete; a round folder mined with other
settings is refused (its data manifest records them). Round r's retriever is evaluated as the
method `round_method(r)` ("trained_r2", ...), beside round 1's "trained". `cfg` is a
`uprise.quickstart.QuickstartConfig` (typed `Any` here: quickstart imports this module).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flan_data import read_stage_data
from flan_data.score_folder import ZERO_SHOT_FILE, is_complete
from flan_data.stage_io import DATA_MANIFEST, POOL, read_manifest
from uprise.stages import score_stage, train_stage

log = logging.getLogger(__name__)


def round_method(r: int) -> str:
    """The method name of round r's trained retriever in reports (round 1 is 'trained')."""
    return "trained" if r == 1 else f"trained_r{r}"


def round_methods(rounds: dict[int, Path], k: int) -> dict[str, Any]:
    """Each mined round's retriever ({r: round folder}) as an evaluation method with `k` prompts,
    named `round_method(r)`."""
    from serve import PromptRetriever
    from uprise.evaluation.methods import retrieved_prompts

    return {round_method(r): retrieved_prompts(
        PromptRetriever.from_pretrained(str(folder / "retriever")), k)
        for r, folder in rounds.items()}


def round_dirs(run_dir: Path, rounds: int) -> dict[int, Path]:
    """{r: folder} of rounds 2..rounds (round 1 is `run_dir` itself)."""
    return {r: run_dir / f"round{r}" for r in range(2, rounds + 1)}


def mining_settings(cfg: Any, r: int) -> dict[str, Any]:
    """What round r's data manifest must record under `mining` for `cfg`."""
    return {"round": r - 1, "top_k": cfg.mining_top_k,
            "n_random": cfg.n_candidates - cfg.mining_top_k, "seed": cfg.seed}


def check_rounds(cfg: Any, run_dir: Path) -> None:
    """Every round folder of `cfg` that already has data must have been mined with `cfg`'s
    settings (cheap: run it before any expensive stage)."""
    for r, folder in round_dirs(run_dir, cfg.mining_rounds).items():
        if (folder / "data" / DATA_MANIFEST).is_file():
            _check_round(cfg, r, folder)


def _check_round(cfg: Any, r: int, folder: Path) -> None:
    saved = read_manifest(folder / "data").get("mining", {})
    want = mining_settings(cfg, r)
    changed = sorted(k for k, v in want.items() if saved.get(k) != v)
    if changed:
        raise ValueError(
            f"{folder / 'data' / DATA_MANIFEST}: mined with other settings (changed: {changed}; "
            f"saved {[saved.get(k) for k in changed]}, now {[want[k] for k in changed]}). "
            f"Delete {folder} to mine it again, or use the settings it was mined with.")


def mining_stages(cfg: Any, run_dir: Path, scoring_lm: Callable[[], Any], metadata: dict[str, Any],
                  progress: bool) -> dict[int, Path]:
    """Mines, scores, trains and indexes rounds 2..cfg.mining_rounds (module docstring), each
    stage skipped when complete; returns {r: round folder}."""
    from retriever import index_pool
    from retriever.index_manifest import is_indexed
    from retriever.mining import mine_round

    check_rounds(cfg, run_dir)
    folders = round_dirs(run_dir, cfg.mining_rounds)
    previous = run_dir
    for r, folder in folders.items():
        if not (folder / "data" / DATA_MANIFEST).is_file():
            log.info("mining round %d from %s", r, previous / "retriever")
            mine_round(previous / "data", previous / "retriever", folder / "data",
                       top_k=cfg.mining_top_k, n_random=cfg.n_candidates - cfg.mining_top_k,
                       seed=cfg.seed, overwrite=True)
        scores = folder / "scores"
        if not is_complete(scores) or not (scores / ZERO_SHOT_FILE).is_file():
            score_stage(scoring_lm(), read_stage_data(folder / "data"), scores,
                        cfg.score_batch_size, progress)
        train_stage(cfg.train_settings(), folder, {**metadata, "mining_round": r}, progress)
        if not is_indexed(folder / "retriever"):
            index_pool(folder / "retriever", folder / "data" / POOL)
        previous = folder
    return folders
