"""An indexed retriever directory as a whole: `index_pool`, `add_prompts`, its files on disk.

Contract: `index_pool` encodes a pool with an export's prompt tower and writes `index.faiss`,
`prompts.jsonl` and, when the index cannot give the embeddings back exactly (PQ, SQ, PCA...),
`prompt_embeddings.safetensors`; `add_prompts` appends new prompts to such a directory, keeping
row i of `prompts.jsonl` = FAISS id i = row i of the embeddings. Both commit the same way: every
new file is written under a temporary name first, the old `manifest.json` is removed, the files
are renamed into place, and a new manifest (`retriever.index_manifest`) is written last. A
directory without a manifest is incomplete and loaders refuse it. The directory's files are read
and written here only: `save_index` / `load_index` (the index and prompts; `load_index` applies
the manifest's search parameters), `load_embeddings`, and `update_model_card` (the export's card
with evaluation numbers, verified before and recorded after in an indexed directory).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flan_data.schema import Prompt, atomic_write, new_file_mode, read_jsonl, write_jsonl
from retriever.index import (
    EMBEDDINGS_FILE,
    INDEX_FILE,
    INDEX_MANIFEST,
    PROMPTS_FILE,
    build_index,
    reconstructs_exactly,
    set_search_params,
)
from retriever.index_manifest import (
    directory_files,
    read_manifest,
    record_rewrite,
    verify_files,
    write_manifest,
)

log = logging.getLogger(__name__)

def load_embeddings(folder: str | os.PathLike[str]) -> np.ndarray | None:
    """The saved exact prompt embeddings (n_prompts, dim), or None when the index holds them."""
    path = Path(folder) / EMBEDDINGS_FILE
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    return load_file(str(path))["p_emb"]  # (n_prompts, dim)


def save_index(index: Any, prompts: list[Prompt], out_dir: str | os.PathLike[str],
               factory: str = "Flat") -> Path:
    """Writes a complete index directory: `index.faiss` (CPU copy), `prompts.jsonl` and the
    manifest, committed as `index_pool` commits (`factory`: the string `index` was built from,
    `build_index`'s default as default)."""
    if index.ntotal != len(prompts):
        raise ValueError(f"index holds {index.ntotal} vectors but {len(prompts)} prompts were "
                         "given; row i of prompts must be FAISS id i.")
    out = Path(out_dir)
    _commit(out, index, prompts, None, factory, {})
    return out


def _write_index_tmp(index: Any, out: Path) -> str:
    import faiss

    if "Gpu" in type(index).__name__:
        index = faiss.index_gpu_to_cpu(index)
    fd, tmp = tempfile.mkstemp(prefix=f".{INDEX_FILE}.", suffix=".tmp", dir=out)
    try:
        try:
            os.fchmod(fd, new_file_mode())  # mkstemp's 0o600 -> what open() would give
        finally:
            os.close(fd)
        faiss.write_index(index, tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def load_index(index_dir: str | os.PathLike[str]) -> tuple[Any, list[Prompt]]:
    """Reads an index directory -> (faiss index with the manifest's search parameters, prompts)."""
    import faiss

    folder = Path(index_dir)
    if not (folder / INDEX_FILE).is_file():
        raise FileNotFoundError(f"{folder / INDEX_FILE} not found; build it with `uprise index "
                                f"--retriever {folder} --pool POOL.jsonl`.")
    index = faiss.read_index(str(folder / INDEX_FILE))
    prompts = read_jsonl(folder / PROMPTS_FILE, Prompt)
    if index.ntotal != len(prompts):
        raise ValueError(
            f"{folder}: {INDEX_FILE} holds {index.ntotal} vectors but {PROMPTS_FILE} has "
            f"{len(prompts)} prompts; the files are from different runs. "
            "Rebuild them with `uprise index`."
        )
    manifest = read_manifest(folder, required=False) or {}
    set_search_params(index, manifest.get("search_params"))
    return index, prompts


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
    (folder / INDEX_MANIFEST).unlink(missing_ok=True)  # a stale marker must not outlive new files
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


def update_model_card(export_dir: str | os.PathLike[str],
                      report: dict[str, Any] | str | os.PathLike[str]) -> Path:
    """Rewrites the export's README.md with the evaluation numbers of `report` (dict or a path
    to report.json) in its YAML front matter (`model-index` for the Hub, `uprise.evaluation`) and
    an Evaluation table. In an indexed directory the files are verified first and the manifest
    then records the new card (`retriever.index_manifest.record_rewrite`)."""
    from retriever.export import CONFIG_NAME, evaluation_summary, model_card

    folder = Path(export_dir)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} is not a uprise retriever export (no {CONFIG_NAME}); "
                                "pass the directory written by `uprise train`.")
    if not isinstance(report, dict):
        report = json.loads(Path(report).read_text(encoding="utf-8"))
    config = json.loads(config_path.read_text(encoding="utf-8"))
    with record_rewrite(folder, "README.md"):  # an indexed directory stays verifiable
        atomic_write(folder / "README.md", [model_card(config, evaluation_summary(report))])
    log.info("model card %s updated with evaluation numbers", folder / "README.md")
    return folder / "README.md"
