"""Loading a task's raw rows, from the offline mirror or from the Hugging Face Hub.

Contract: `load_rows(task, split, data_dir)` returns the rows of one split as dicts in the Hub's
column schema. With a `data_dir` (a folder laid out as `<mirror_name>/<split>.jsonl.gz`, like
`../shared/data`) it reads local files with `datasets`; with `data_dir=None` it asks the Hub
(`datasets.load_dataset(hf_path, hf_config, split=...)`). `default_data_dir()` finds the mirror.

Integrity: a mirror file listed in the mirror's `MANIFEST.json` is checked against the sha256
recorded there before it is read (`MirrorIntegrityError` on a mismatch). Each file is hashed once
per process (cached by path, size and mtime_ns), and the `datasets` cache is keyed on that content
hash, so a file whose content changed with its mtime kept never serves old rows.
"""

from __future__ import annotations

import json
import logging
import os
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from flan_data.catalogue import Task
from flan_data.schema import sha256_file

log = logging.getLogger(__name__)

DATA_ENV = "UPRISE_DATA_DIR"
MIRROR_MANIFEST = "MANIFEST.json"
HUB = "hub"
"""Pass as data_dir to read from the Hugging Face Hub even when a mirror exists."""


class MissingSplitError(FileNotFoundError):
    """The data source has no such split for the task."""


class MirrorIntegrityError(ValueError):
    """A mirror file's content does not match the sha256 in the mirror's MANIFEST.json."""


def default_data_dir() -> Path | None:
    """`$UPRISE_DATA_DIR`, else `../shared/data` (from the working directory or this checkout)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base.parent / "shared" / "data"
        if (candidate / MIRROR_MANIFEST).is_file():
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
    return _load_file(path, data_dir)


def _load_file(path: Path, data_dir: Path) -> list[dict[str, Any]]:
    return list(_load_file_cached(str(path), verified_sha256(path, data_dir)))


def verified_sha256(path: Path, data_dir: Path) -> str:
    """`path`'s sha256, checked against `data_dir/MANIFEST.json` when that lists the file.

    Hashed once per process per (path, size, mtime_ns). A file the manifest does not list (a
    custom task's folder, a mirror without a manifest) is hashed but not verified.
    """
    digest = _file_sha256(*_stat_key(path))
    expected = _manifest_sums(*_stat_key(data_dir / MIRROR_MANIFEST)).get(_relative(path, data_dir))
    if expected is None:
        _note_unverified(str(path))
    elif expected != digest:
        raise MirrorIntegrityError(
            f"{path}: sha256 is {digest} but {data_dir / MIRROR_MANIFEST} records {expected}; "
            "the file changed since the mirror was built. Restore it from the mirror, or update "
            "its sha256 (and rows) in MANIFEST.json if the change is intended."
        )
    return digest


def _stat_key(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return str(path), -1, -1
    return str(path), st.st_size, st.st_mtime_ns


def _relative(path: Path, data_dir: Path) -> str | None:
    try:
        return path.relative_to(data_dir).as_posix()
    except ValueError:
        return None


@cache
def _note_unverified(path: str) -> None:
    log.info("%s is not listed in a mirror %s; its sha256 is not verified", path, MIRROR_MANIFEST)


@cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


@lru_cache(maxsize=16)
def _manifest_sums(path: str, size: int, mtime_ns: int) -> dict[str, str]:
    """`<name>/<split>.jsonl.gz` -> sha256 from a mirror's MANIFEST.json ({} if it has none)."""
    if size < 0:
        return {}
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
        sums = {
            f"{d['name']}/{split}.jsonl.gz": info["sha256"]
            for d in manifest["datasets"]
            for split, info in d["splits"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise MirrorIntegrityError(
            f"{path}: not a mirror manifest ({type(err).__name__}: {err}); expected JSON with "
            "datasets[].name and datasets[].splits.<split>.sha256. Restore it from the mirror."
        ) from err
    return sums


@lru_cache(maxsize=64)
def _load_file_cached(path: str, sha256: str) -> tuple[dict[str, Any], ...]:
    import datasets

    datasets.disable_progress_bars()  # small local files: the bars are noise
    try:
        # The config name keys the `datasets` cache on the content: its own key for a local
        # file is the mtime only, which a changed file can keep.
        ds = datasets.load_dataset(
            "json", name=f"sha256-{sha256[:32]}", data_files=path, split="train"
        )
    except Exception as err:  # datasets wraps parse errors in several types
        raise ValueError(
            f"{path}: could not be read as gzip JSON Lines ({type(err).__name__}: {err}). "
            "Restore the file from the mirror (its sha256 is in MANIFEST.json)."
        ) from err
    return tuple(ds.to_list())


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
