"""Loading a task's raw rows, from the offline mirror or from the Hugging Face Hub.

Contract: `load_rows(task, split, data_dir)` returns the rows of one split as dicts in the Hub's
column schema. With a `data_dir` (a folder laid out as `<mirror_name>/<split>.jsonl.gz`, like
`../shared/data`) it reads local files with `datasets`; with `data_dir=None` it asks the Hub
(`datasets.load_dataset(hf_path, hf_config, split=...)`). `default_data_dir()` finds the mirror.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from flan_data.catalogue import Task

log = logging.getLogger(__name__)

DATA_ENV = "UPRISE_DATA_DIR"
HUB = "hub"
"""Pass as data_dir to read from the Hugging Face Hub even when a mirror exists."""


class MissingSplitError(FileNotFoundError):
    """The data source has no such split for the task."""


def default_data_dir() -> Path | None:
    """`$UPRISE_DATA_DIR`, else `../shared/data` (from the working directory or this checkout)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base.parent / "shared" / "data"
        if (candidate / "MANIFEST.json").is_file():
            return candidate
    return None


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """None -> the default mirror (or the Hub if none); "hub" -> the Hub; else a checked folder."""
    if data_dir is None:
        found = default_data_dir()
        log.info("data source: %s", found or "Hugging Face Hub")
        return found
    if str(data_dir) == HUB:
        return None
    path = Path(data_dir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"data dir {str(path)!r} does not exist; pass a folder laid out as "
            "<dataset>/<split>.jsonl.gz (like ../shared/data), or 'hub' for the Hugging Face Hub."
        )
    return path


def available_splits(task: Task, data_dir: Path | None) -> set[str]:
    """Splits the source has for `task` (the Hub is assumed to have train and eval splits)."""
    if data_dir is None:
        return {s for s in (task.train_split, task.eval_split) if s}
    folder = data_dir / task.mirror_name
    return {p.name.removesuffix(".jsonl.gz") for p in folder.glob("*.jsonl.gz")}


def load_rows(task: Task, split: str, data_dir: Path | None) -> list[dict[str, Any]]:
    if data_dir is None:
        return _load_hub(task.hf_path, task.hf_config, split)
    path = data_dir / task.mirror_name / f"{split}.jsonl.gz"
    if not path.is_file():
        have = sorted(available_splits(task, data_dir))
        raise MissingSplitError(
            f"{path}: no {split!r} split for task {task.name!r} in the mirror (it has {have}). "
            "Use a split that exists, or data_dir='hub' for the full dataset."
        )
    return _load_file(str(path))


@lru_cache(maxsize=64)
def _load_file_cached(path: str, mtime: float) -> tuple[dict[str, Any], ...]:
    import datasets

    datasets.disable_progress_bars()  # small local files: the bars are noise
    try:
        ds = datasets.load_dataset("json", data_files=path, split="train")
    except Exception as err:  # datasets wraps parse errors in several types
        raise ValueError(
            f"{path}: could not be read as gzip JSON Lines ({type(err).__name__}: {err}). "
            "Restore the file from the mirror (its sha256 is in MANIFEST.json)."
        ) from err
    return tuple(ds.to_list())


def _load_file(path: str) -> list[dict[str, Any]]:
    return list(_load_file_cached(path, os.path.getmtime(path)))


def _load_hub(hf_path: str, hf_config: str | None, split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(hf_path, hf_config, split=split)
    except Exception as err:
        raise MissingSplitError(
            f"could not load {hf_path!r} (config {hf_config!r}, split {split!r}) from the Hub: "
            f"{err}. Check your connection, or point --data-dir at a local mirror."
        ) from err
    return ds.to_list()
