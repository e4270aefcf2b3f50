"""The manifest of an indexed retriever directory: its one reader, writer and checker.

Contract: `manifest.json` is written last by every commit (`write_manifest`) and marks a complete
directory: format and version, dim, factory, index class, search parameters, prompt count, and
the sha256 of every other file in the directory, recursively (the export's configs, weights,
tokenizers and model card as well as the index files). `read_manifest` refuses one of another
format version with the command that rebuilds it (`reindex_command`). `verify_files` is the one
check of the checksum table: the table must be there, every listed file must exist with its
recorded sha256, and a file the table does not list is refused; the only files it passes over
(with a warning) are the temporaries of an interrupted commit (`TEMPORARY_PATTERNS`), which the
next commit deletes. `record_rewrite(folder, name)` lets one file of an indexed directory be
rewritten (verified before, recorded after). `check_index_class` compares the loaded index with
the manifest.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from flan_data.schema import sha256_file, write_json
from retriever.index import (
    EMBEDDINGS_FILE,
    INDEX_FILE,
    INDEX_MANIFEST,
    PROMPTS_FILE,
    get_search_params,
    index_class,
)

log = logging.getLogger(__name__)

MANIFEST_FORMAT, MANIFEST_VERSION = "uprise-index", 3
FILES_KEY = "sha256"
"""The manifest's table {path relative to the directory: sha256} of every file but itself."""
INDEX_FILES = (INDEX_FILE, PROMPTS_FILE, EMBEDDINGS_FILE)
TEMPORARY_PATTERNS = (f".{INDEX_FILE}.*.tmp", f".{PROMPTS_FILE}.new", f".{EMBEDDINGS_FILE}.new",
                      f".{INDEX_MANIFEST}.*.tmp")
"""Top-level names `_commit` writes before renaming (`_write_index_tmp`, `write_json`)."""


def read_manifest(folder: str | os.PathLike[str], required: bool = True) -> dict[str, Any] | None:
    """`manifest.json` of an index directory (this format version only); None when absent and
    not `required`."""
    path = Path(folder) / INDEX_MANIFEST
    if not path.is_file():
        if not required:
            return None
        raise FileNotFoundError(
            f"{Path(folder)} has no {INDEX_MANIFEST}, so its index is missing or incomplete; build "
            f"it with `uprise index --retriever {Path(folder)} --pool POOL.jsonl`."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg}); rebuild the index with "
                         f"`uprise index --retriever {Path(folder)} --pool POOL.jsonl`.") from err
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} holds a JSON {type(manifest).__name__}, not a manifest object; "
                         f"rebuild the index with `uprise index --retriever {Path(folder)} "
                         "--pool POOL.jsonl`.")
    found = (manifest.get("format"), manifest.get("format_version"))
    if found != (MANIFEST_FORMAT, MANIFEST_VERSION):
        raise ValueError(
            f"{path} is format {found[0]!r} version {found[1]!r}, but this uprise reads "
            f"{MANIFEST_FORMAT!r} version {MANIFEST_VERSION} (which checksums every file of the "
            f"directory); rebuild it with {reindex_command(Path(folder), manifest)}."
        )
    return manifest


def is_indexed(folder: str | os.PathLike[str]) -> bool:
    """Whether `folder` holds a complete index of this manifest version (the pipeline's "index
    stage done" test: an older version is indexed again rather than refused at load)."""
    try:
        read_manifest(folder)
    except (OSError, ValueError):  # missing, unreadable, or not this format version
        return False
    return True


def reindex_command(folder: Path, manifest: dict[str, Any]) -> str:
    """The `uprise index` command that rebuilds `folder` as `manifest` records it (pool, factory,
    search parameters, prompts added since), for error messages."""
    from retriever.export import CONFIG_NAME

    in_place = (folder / CONFIG_NAME).is_file() or not manifest.get("encoder_dir")
    encoder_dir = folder if in_place else Path(manifest["encoder_dir"])
    parts = ["uprise index --retriever", str(encoder_dir)]
    if not in_place:
        parts += ["--output-dir", str(folder)]
    parts += ["--pool", str(manifest.get("pool_path") or "POOL.jsonl")]
    if manifest.get("index_factory") not in (None, "Flat"):
        parts += ["--factory", repr(manifest["index_factory"])]
    if manifest.get("seed") not in (None, 0):
        parts += ["--seed", str(manifest["seed"])]
    params = manifest.get("search_params")
    for name, flag in (("nprobe", "--nprobe"), ("efSearch", "--ef-search")):
        if isinstance(params, dict) and name in params:
            parts += [flag, str(params[name])]
    added = (f", then add the {manifest['n_added']} prompts added since with `--add`"
             if manifest.get("n_added") else "")
    return f"`{' '.join(parts)}`{added}"


def directory_files(folder: Path) -> tuple[list[str], list[str]]:
    """(every file under `folder` but the manifest, leftover commit temporaries), each a sorted
    list of paths relative to `folder`. Refuses what is not a file or a directory (a link to a
    directory, a broken link), since no checksum can vouch for it."""
    files, temporaries = [], []
    for path in sorted(folder.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue  # its files are listed themselves
        name = path.relative_to(folder).as_posix()
        if not path.is_file():
            raise ValueError(
                f"{path} is not a regular file (a link to a directory, a broken link or a special "
                "file), so the index manifest cannot vouch for it; replace it with a copy of what "
                "it points to, or delete it."
            )
        if name == INDEX_MANIFEST:
            continue
        is_temporary = "/" not in name and any(fnmatchcase(name, p) for p in TEMPORARY_PATTERNS)
        (temporaries if is_temporary else files).append(name)
    return files, temporaries


def write_manifest(folder: Path, index: Any, n_prompts: int, factory: str,
                   extra: dict[str, Any]) -> dict[str, Any]:
    """Writes `manifest.json` (atomically) describing the files now in `folder`, with the
    sha256 of every one of them (`directory_files`)."""
    import faiss

    embeddings = (folder / EMBEDDINGS_FILE).is_file()
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "embedding_dim": int(index.d),
        "index_factory": factory,
        "index_class": index_class(factory, int(index.d)),
        "metric": "inner_product",
        "search_params": get_search_params(index),
        "n_prompts": n_prompts,
        "embeddings_file": EMBEDDINGS_FILE if embeddings else None,
        "faiss_version": faiss.__version__,
        **extra,
        FILES_KEY: {n: sha256_file(folder / n) for n in directory_files(folder)[0]},
    }
    write_json(folder / INDEX_MANIFEST, manifest)
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    """Refuses `folder` unless its files are exactly the manifest's table, each with its sha256.

    Missing table, listed file missing, unlisted file: refused before anything is hashed; then
    every listed file is hashed once. Leftover commit temporaries are only logged.
    """
    table = manifest.get(FILES_KEY)
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{folder / INDEX_MANIFEST} has no {FILES_KEY!r} table of file checksums, "
                         f"so nothing in {folder} can be verified; rebuild the index with "
                         f"{reindex_command(folder, manifest)}.")
    files, temporaries = directory_files(folder)
    missing = sorted(set(table) - set(files))
    if missing:
        raise ValueError(f"{folder / missing[0]} is missing but {INDEX_MANIFEST} lists it "
                         f"(missing: {missing[:5]}); {_fix(folder, manifest, missing[0])}.")
    unlisted = [n for n in files if n not in table]
    if unlisted:
        raise ValueError(
            f"{folder / unlisted[0]} is not listed in {INDEX_MANIFEST} (unlisted: {unlisted[:5]}), "
            "so nothing vouches for it; delete it, or if it belongs there rebuild the index with "
            f"{reindex_command(folder, manifest)} to record it."
        )
    for name in sorted(table):
        actual = sha256_file(folder / name)
        if actual != table[name]:
            raise ValueError(f"{folder / name}: sha256 is {actual} but {INDEX_MANIFEST} records "
                             f"{table[name]}, so the file changed since it was indexed; "
                             f"{_fix(folder, manifest, name)}.")
    if temporaries:
        log.warning("%s: ignoring %s, left by an interrupted `uprise index` (the next one deletes "
                    "them)", folder, temporaries)


@contextmanager
def record_rewrite(folder: Path, name: str) -> Iterator[None]:
    """For a deliberate rewrite of one file of an indexed directory (e.g. the model card): the
    directory is verified before, and the manifest records the file's new sha256 after. Without
    a manifest (not indexed yet) it only runs the rewrite."""
    manifest = read_manifest(folder, required=False)
    if manifest is not None:
        verify_files(folder, manifest)
    yield
    if manifest is not None:
        manifest[FILES_KEY][name] = sha256_file(folder / name)
        write_json(folder / INDEX_MANIFEST, manifest)


def _fix(folder: Path, manifest: dict[str, Any], name: str) -> str:
    if name in INDEX_FILES:
        return f"rebuild the index with {reindex_command(folder, manifest)}"
    return ("restore it from the exported retriever (written by `uprise train ... --export_dir`), "
            f"or, if the change is deliberate, record it with {reindex_command(folder, manifest)}")


def check_index_class(folder: Path, manifest: dict[str, Any], index: Any) -> None:
    """Refuses an index whose class or metric differs from what the manifest's factory builds."""
    import faiss

    factory = manifest.get("index_factory")
    if factory is not None and index_class(factory, index.d) != type(index).__name__:
        raise ValueError(
            f"{folder}: {INDEX_MANIFEST} says index_factory {factory!r} "
            f"({index_class(factory, index.d)}) but {INDEX_FILE} is a {type(index).__name__}; "
            "the files come from different runs. Rebuild the index with `uprise index`."
        )
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError(f"{folder / INDEX_FILE} does not use the inner-product metric; "
                         "rebuild it with `uprise index`.")
