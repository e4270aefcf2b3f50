"""An indexed retriever directory as a whole: `index_pool`, `add_prompts` and its manifest.

Contract: `index_pool` encodes a pool with an export's prompt tower and writes `index.faiss`,
`prompts.jsonl` and, when the index cannot give the embeddings back exactly (PQ, SQ, PCA...),
`prompt_embeddings.safetensors`; `add_prompts` appends new prompts to such a directory, keeping
row i of `prompts.jsonl` = FAISS id i = row i of the embeddings. Both commit the same way: every
new file is written under a temporary name first, the old `manifest.json` is removed, the files
are renamed into place, and a new manifest (dim, factory, index class, search parameters, prompt
count, sha256 of the index files and of the export's weights and config) is written last. A
directory without a manifest is incomplete and loaders refuse it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flan_data.schema import Prompt, read_jsonl, write_json, write_jsonl
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
    sha256_file,
)

log = logging.getLogger(__name__)

MANIFEST_FORMAT, MANIFEST_VERSION = "uprise-index", 2
_EXPORT_FILES = ("uprise_config.json",)


def read_manifest(folder: str | os.PathLike[str], required: bool = True) -> dict[str, Any] | None:
    """`manifest.json` of an index directory; None when absent and not `required`."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        if not required:
            return None
        raise FileNotFoundError(
            f"{Path(folder)} has no {MANIFEST_FILE}, so its index is missing or incomplete; build "
            f"it with `uprise index --retriever {Path(folder)} --pool POOL.jsonl`."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg}); rebuild the index with "
                         "`uprise index`.") from err


def vouched_files(folder: Path, embeddings: bool) -> list[str]:
    """Files the manifest checksums: the index files, plus the export's config and weights."""
    names = [INDEX_FILE, PROMPTS_FILE] + ([EMBEDDINGS_FILE] if embeddings else [])
    names += [n for n in _EXPORT_FILES if (folder / n).is_file()]
    names += sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.safetensors"))
    return names


def write_manifest(folder: Path, index: Any, n_prompts: int, factory: str,
                   extra: dict[str, Any]) -> dict[str, Any]:
    """Writes `manifest.json` (atomically) describing the files now in `folder`."""
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
        "sha256": {n: sha256_file(folder / n) for n in vouched_files(folder, embeddings)},
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
    _check_files_unchanged(folder, manifest)
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


def _check_files_unchanged(folder: Path, manifest: dict[str, Any]) -> None:
    for name in (INDEX_FILE, PROMPTS_FILE):
        expected = manifest.get("sha256", {}).get(name)
        if expected is not None and sha256_file(folder / name) != expected:
            raise ValueError(f"{folder / name} changed since it was indexed (sha256 differs from "
                             f"{MANIFEST_FILE}); rebuild the index with `uprise index` first.")


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
