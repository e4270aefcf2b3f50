"""An indexed retriever directory as a whole: `index_pool`, `add_prompts` and its manifest.

Contract: `index_pool` encodes a pool with an export's prompt tower and writes `index.faiss`,
`prompts.jsonl` and, when the index cannot give the embeddings back exactly (PQ, SQ, PCA...),
`prompt_embeddings.safetensors`; `add_prompts` appends new prompts to such a directory, keeping
row i of `prompts.jsonl` = FAISS id i = row i of the embeddings. Both commit the same way: every
new file is written under a temporary name first, the old `manifest.json` is removed, the files
are renamed into place, and a new manifest (dim, factory, index class, search parameters, prompt
count, and the sha256 of every other file in the directory, recursively: the export's configs,
weights, tokenizers and model card as well as the index files) is written last. A directory
without a manifest is incomplete and loaders refuse it.

`verify_files` is the one check of that table: the table must be there, every listed file must
exist with its recorded sha256, and a file the table does not list is refused. The only files it
passes over (with a warning) are the temporaries of an interrupted commit (`TEMPORARY_PATTERNS`),
which the next commit deletes. A manifest of another format version is refused with the command
that rebuilds it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np

from flan_data.schema import Prompt, read_jsonl, sha256_file, write_json, write_jsonl
from retriever.index import (
    EMBEDDINGS_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    PROMPTS_FILE,
    _write_index_tmp,
    build_index,
    get_search_params,
    index_class,
    load_index,
    reconstructs_exactly,
    set_search_params,
)

log = logging.getLogger(__name__)

MANIFEST_FORMAT, MANIFEST_VERSION = "uprise-index", 3
FILES_KEY = "sha256"
"""The manifest's table {path relative to the directory: sha256} of every file but itself."""
INDEX_FILES = (INDEX_FILE, PROMPTS_FILE, EMBEDDINGS_FILE)
TEMPORARY_PATTERNS = (f".{INDEX_FILE}.*.tmp", f".{PROMPTS_FILE}.new", f".{EMBEDDINGS_FILE}.new",
                      f".{MANIFEST_FILE}.*.tmp")
"""Top-level names `_commit` writes before renaming (`_write_index_tmp`, `write_json`)."""


def read_manifest(folder: str | os.PathLike[str], required: bool = True) -> dict[str, Any] | None:
    """`manifest.json` of an index directory (this format version only); None when absent and
    not `required`."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        if not required:
            return None
        raise FileNotFoundError(
            f"{Path(folder)} has no {MANIFEST_FILE}, so its index is missing or incomplete; build "
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
        if name == MANIFEST_FILE:
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
    write_json(folder / MANIFEST_FILE, manifest)
    return manifest


def load_embeddings(folder: str | os.PathLike[str]) -> np.ndarray | None:
    """The saved exact prompt embeddings (n_prompts, dim), or None when the index holds them."""
    path = Path(folder) / EMBEDDINGS_FILE
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    return load_file(str(path))["p_emb"]  # (n_prompts, dim)


def encode_prompts(encoder: Any, prompts: Sequence[Prompt], batch_size: int = 64,
                   progress: bool = False) -> np.ndarray:
    """The prompt tower's embeddings of `prompts` -> (n_prompts, dim) float32."""
    p_emb = encoder.encode_document([p.text for p in prompts], batch_size=batch_size,
                                    convert_to_numpy=True, show_progress_bar=progress)
    return np.ascontiguousarray(p_emb, dtype=np.float32)  # (n_prompts, dim)


def _commit(folder: Path, index: Any, prompts: Sequence[Prompt], p_emb: np.ndarray | None,
            factory: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Temp-writes every file, drops the old manifest, renames the files in, writes the new one."""
    from safetensors.numpy import save_file

    assert index.ntotal == len(prompts), (index.ntotal, len(prompts))
    folder.mkdir(parents=True, exist_ok=True)
    for name in directory_files(folder)[1]:  # left by an interrupted commit
        log.info("removing %s, left by an interrupted `uprise index`", folder / name)
        (folder / name).unlink()
    staged = {INDEX_FILE: _write_index_tmp(index, folder)}
    staged[PROMPTS_FILE] = str(folder / f".{PROMPTS_FILE}.new")
    write_jsonl(staged[PROMPTS_FILE], prompts)
    if p_emb is not None:
        staged[EMBEDDINGS_FILE] = str(folder / f".{EMBEDDINGS_FILE}.new")
        save_file({"p_emb": np.ascontiguousarray(p_emb)}, staged[EMBEDDINGS_FILE])
    (folder / MANIFEST_FILE).unlink(missing_ok=True)  # a stale marker must not outlive new files
    for name, tmp in staged.items():
        os.replace(tmp, folder / name)
    if p_emb is None:
        (folder / EMBEDDINGS_FILE).unlink(missing_ok=True)
    return write_manifest(folder, index, len(prompts), factory, extra)


def index_pool(
    encoder_dir: str | os.PathLike[str],
    pool_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    factory: str = "Flat",
    device: str | None = None,
    progress: bool = False,
    search_params: dict[str, int] | None = None,
    seed: int = 0,
    save_embeddings: bool | None = None,
) -> Path:
    """Encodes the pool with an export's prompt tower and writes the index (default: beside it).

    `search_params` (`nprobe` / `efSearch`) override the factory's defaults and are recorded.
    `save_embeddings` None saves them only when the index cannot reconstruct them exactly.
    """
    from retriever.export import load_retriever_encoder

    out = Path(out_dir) if out_dir is not None else Path(encoder_dir)
    st, _ = load_retriever_encoder(encoder_dir, device=device)
    prompts = read_jsonl(pool_path, Prompt)
    if not prompts:
        raise ValueError(f"{pool_path} holds no prompts; nothing to index.")
    _check_unique_ids(prompts, [], pool_path)
    p_emb = encode_prompts(st, prompts, batch_size, progress)  # (n_prompts, dim)
    index = build_index(p_emb, factory, seed=seed)
    set_search_params(index, search_params)
    if save_embeddings is None:
        save_embeddings = not reconstructs_exactly(index, p_emb)
    _commit(out, index, prompts, p_emb if save_embeddings else None, factory, {
        "seed": seed, "pool_path": str(pool_path), "encoder_dir": str(Path(encoder_dir)),
    })
    log.info("indexed %d prompts (dim %d, %s) into %s", len(prompts), p_emb.shape[1], factory, out)
    return out


def add_prompts(
    index_dir: str | os.PathLike[str],
    new_prompts: Sequence[Prompt] | str | os.PathLike[str],
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = False,
) -> Path:
    """Appends `new_prompts` (records or a JSONL path) to an indexed directory; returns it.

    The new prompts get FAISS ids n..n+m-1 in the given order; ids already in the pool are
    refused. The encoder is the export in `index_dir` (or the manifest's `encoder_dir`).
    """
    from retriever.export import CONFIG_NAME, load_retriever_encoder

    folder = Path(index_dir)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)  # a rewritten manifest must not vouch for edited files
    if not isinstance(new_prompts, Sequence) or isinstance(new_prompts, str):
        new_prompts = read_jsonl(new_prompts, Prompt)
    new_prompts = list(new_prompts)
    if not new_prompts:
        raise ValueError("add_prompts got no prompts; nothing to add.")
    index, prompts = load_index(folder)
    _check_unique_ids(new_prompts, prompts, folder / PROMPTS_FILE)
    encoder_dir = folder if (folder / CONFIG_NAME).is_file() else Path(manifest["encoder_dir"])
    st, _ = load_retriever_encoder(encoder_dir, device=device)
    p_new = encode_prompts(st, new_prompts, batch_size, progress)  # (n_new, dim)
    if p_new.shape[1] != index.d:
        raise ValueError(f"{encoder_dir} embeds in dim {p_new.shape[1]} but {folder / INDEX_FILE} "
                         f"has dim {index.d}; re-index with `uprise index`.")
    index.add(p_new)
    p_emb = None
    if manifest.get("embeddings_file"):
        p_emb = np.concatenate([load_embeddings(folder), p_new])  # (n_prompts + n_new, dim)
    keep = {k: v for k, v in manifest.items() if k in ("seed", "pool_path", "encoder_dir")}
    keep["n_added"] = int(manifest.get("n_added", 0)) + len(new_prompts)
    _commit(folder, index, prompts + new_prompts, p_emb, manifest["index_factory"], keep)
    log.info("added %d prompts to %s (now %d)", len(new_prompts), folder, index.ntotal)
    return folder


def _check_unique_ids(new: Sequence[Prompt], old: Sequence[Prompt], where: Any) -> None:
    seen = {p.id for p in old}
    dupes = []
    for p in new:
        if p.id in seen:
            dupes.append(p.id)
        seen.add(p.id)
    if dupes:
        raise ValueError(f"prompt id(s) {dupes[:5]} occur more than once (in {where} or the new "
                         "prompts); each prompt needs a unique id.")


def verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    """Refuses `folder` unless its files are exactly the manifest's table, each with its sha256.

    Missing table, listed file missing, unlisted file: refused before anything is hashed; then
    every listed file is hashed once. Leftover commit temporaries are only logged.
    """
    table = manifest.get(FILES_KEY)
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{folder / MANIFEST_FILE} has no {FILES_KEY!r} table of file checksums, "
                         f"so nothing in {folder} can be verified; rebuild the index with "
                         f"{reindex_command(folder, manifest)}.")
    files, temporaries = directory_files(folder)
    missing = sorted(set(table) - set(files))
    if missing:
        raise ValueError(f"{folder / missing[0]} is missing but {MANIFEST_FILE} lists it "
                         f"(missing: {missing[:5]}); {_fix(folder, manifest, missing[0])}.")
    unlisted = [n for n in files if n not in table]
    if unlisted:
        raise ValueError(
            f"{folder / unlisted[0]} is not listed in {MANIFEST_FILE} (unlisted: {unlisted[:5]}), "
            "so nothing vouches for it; delete it, or if it belongs there rebuild the index with "
            f"{reindex_command(folder, manifest)} to record it."
        )
    for name in sorted(table):
        actual = sha256_file(folder / name)
        if actual != table[name]:
            raise ValueError(f"{folder / name}: sha256 is {actual} but {MANIFEST_FILE} records "
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
        write_json(folder / MANIFEST_FILE, manifest)


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
            f"{folder}: {MANIFEST_FILE} says index_factory {factory!r} "
            f"({index_class(factory, index.d)}) but {INDEX_FILE} is a {type(index).__name__}; "
            "the files come from different runs. Rebuild the index with `uprise index`."
        )
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError(f"{folder / INDEX_FILE} does not use the inner-product metric; "
                         "rebuild it with `uprise index`.")
