"""FAISS index over prompt embeddings: build, save, load, search, and indexing a pool.

Contract: an index directory holds `index.faiss` (a CPU index written by `faiss.write_index`,
inner-product metric) and `prompts.jsonl` (Prompt records; row i is FAISS id i). `index_pool`
writes them next to an exported retriever and then `manifest.json` (embedding dim, factory,
prompt count, sha256 of both files) last, as the completion marker. No pickle.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from flan_data.schema import Prompt, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

INDEX_FILE, PROMPTS_FILE, MANIFEST_FILE = "index.faiss", "prompts.jsonl", "manifest.json"


def _as_matrix(x: Any, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"{name} has shape {arr.shape}; expected a 2-d (n, dim) array.")
    return arr


def build_index(p_emb: np.ndarray, factory: str = "Flat") -> Any:
    """(n_prompts, dim) embeddings -> a trained, filled inner-product `faiss.Index`.

    `factory` is a `faiss.index_factory` string ("Flat" = exact search; e.g. "HNSW32", "IVF64,Flat"
    for large pools). Row i of `p_emb` gets FAISS id i.
    """
    import faiss

    p_emb = _as_matrix(p_emb, "p_emb")  # (n_prompts, dim)
    try:
        index = faiss.index_factory(p_emb.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"faiss cannot build index factory {factory!r}: {err}") from err
    if not index.is_trained:
        index.train(p_emb)
    index.add(p_emb)
    return index


def search(index: Any, q_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_queries, dim) -> (scores, ids), each (n_queries, min(k, ntotal)), best first."""
    if k < 1:
        raise ValueError(f"k={k}; expected a positive integer.")
    q_emb = _as_matrix(q_emb, "q_emb")  # (n_queries, dim)
    if q_emb.shape[1] != index.d:
        raise ValueError(f"q_emb has dim {q_emb.shape[1]} but the index has dim {index.d}.")
    return index.search(q_emb, min(k, index.ntotal))


def save_index(index: Any, prompts: list[Prompt], out_dir: str | os.PathLike[str]) -> Path:
    """Writes `index.faiss` (CPU copy) and `prompts.jsonl` into `out_dir`, each atomically."""
    import faiss

    if index.ntotal != len(prompts):
        raise ValueError(f"index holds {index.ntotal} vectors but {len(prompts)} prompts were "
                         "given; row i of prompts must be FAISS id i.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        index = faiss.index_gpu_to_cpu(index)
    write_jsonl(out / PROMPTS_FILE, prompts)
    fd, tmp = tempfile.mkstemp(prefix=f".{INDEX_FILE}.", suffix=".tmp", dir=out)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        os.replace(tmp, out / INDEX_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def load_index(index_dir: str | os.PathLike[str]) -> tuple[Any, list[Prompt]]:
    """Reads an index directory -> (faiss index, prompts), checking that their counts agree."""
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
    return index, prompts


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def index_pool(
    encoder_dir: str | os.PathLike[str],
    pool_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    factory: str = "Flat",
    device: str | None = None,
    progress: bool = False,
) -> Path:
    """Encodes the pool with an export's prompt tower and writes the index (default: beside it)."""
    from retriever.export import load_retriever_encoder

    out = Path(out_dir) if out_dir is not None else Path(encoder_dir)
    st, _ = load_retriever_encoder(encoder_dir, device=device)
    prompts = read_jsonl(pool_path, Prompt)
    if not prompts:
        raise ValueError(f"{pool_path} holds no prompts; nothing to index.")
    p_emb = st.encode_document(
        [p.text for p in prompts], batch_size=batch_size, convert_to_numpy=True,
        show_progress_bar=progress,
    )  # (n_prompts, dim)
    index = build_index(p_emb, factory)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # a stale marker must not outlive new files
    save_index(index, prompts, out)
    write_json(out / MANIFEST_FILE, {
        "embedding_dim": int(p_emb.shape[1]),
        "index_factory": factory,
        "metric": "inner_product",
        "n_prompts": len(prompts),
        "pool_path": str(pool_path),
        "encoder_dir": str(Path(encoder_dir)),
        "sha256": {INDEX_FILE: sha256_file(out / INDEX_FILE),
                   PROMPTS_FILE: sha256_file(out / PROMPTS_FILE)},
    })
    log.info("indexed %d prompts (dim %d, %s) into %s", len(prompts), p_emb.shape[1], factory, out)
    return out
