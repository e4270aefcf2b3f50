"""FAISS indexes over prompt embeddings, in memory: build, search (optionally on a subset of
ids), search parameters, reconstruction.

Contract: indexes use the inner-product metric; `build_index(p_emb, factory, seed)` builds
(and trains, seeded) one from a faiss factory string, on a GPU when faiss has one, returning a
CPU index; `search` returns (scores, ids), -1-padded, restricted to `allowed` ids when given;
`set_search_params` / `get_search_params` handle `nprobe` / `efSearch`; `reconstruct` gives back
stored vectors where the index can. Everything on disk (the index directory, its files and
manifest, `save_index` / `load_index`) is `retriever.index_dir`'s; this module never imports it.
The file names of that directory are named here, beside the index they describe.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

INDEX_FILE, PROMPTS_FILE, INDEX_MANIFEST = "index.faiss", "prompts.jsonl", "manifest.json"
EMBEDDINGS_FILE = "prompt_embeddings.safetensors"
SEARCH_PARAMS = ("nprobe", "efSearch")
"""Search-time parameters recorded in the manifest and applied at load."""
_DEFAULT_EF_SEARCH = 128


def _as_matrix(x: Any, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"{name} has shape {arr.shape}; expected a 2-d (n, dim) array.")
    return arr


def _empty_index(dim: int, factory: str) -> Any:
    import faiss

    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"faiss cannot build index factory {factory!r}: {err}. Use e.g. 'Flat', "
                         "'HNSW32', 'IVF1024,Flat' or 'IVF1024,PQ48'.") from err


def index_class(factory: str, dim: int) -> str:
    """The faiss class that `factory` builds (e.g. 'IndexHNSWFlat'), to check a loaded index."""
    import faiss

    empty = faiss.deserialize_index(faiss.serialize_index(_empty_index(dim, factory)))
    return type(empty).__name__  # as `faiss.read_index` returns it (IndexFlat -> IndexFlatIP)


def build_index(p_emb: np.ndarray, factory: str = "Flat", seed: int = 0,
                gpu: bool | None = None) -> Any:
    """(n_prompts, dim) embeddings -> a trained, filled inner-product CPU `faiss.Index`.

    `factory` is a `faiss.index_factory` string ("Flat" = exact search; "HNSW32", "IVF1024,Flat",
    "IVF1024,PQ48" for large pools). IVF/PQ training is seeded by `seed`. With `gpu` None or True
    and a faiss GPU build with a device, training and adding run on GPU 0. Row i gets FAISS id i.
    """
    import faiss

    p_emb = _as_matrix(p_emb, "p_emb")  # (n_prompts, dim)
    index = _empty_index(p_emb.shape[1], factory)
    _seed(index, seed)
    work = to_gpu(index) if gpu is not False else None
    target = work if work is not None else index
    if not target.is_trained:
        target.train(p_emb)
    target.add(p_emb)
    if work is not None:
        index = faiss.index_gpu_to_cpu(work)
    set_search_params(index, default_search_params(index))
    return index


def _seed(index: Any, seed: int) -> None:
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.seed = seed
        pq = getattr(faiss.downcast_index(ivf), "pq", None)
        if pq is not None:
            pq.cp.seed = seed
    elif hasattr(faiss.downcast_index(index), "pq"):
        faiss.downcast_index(index).pq.cp.seed = seed


def to_gpu(index: Any) -> Any | None:
    """A copy of `index` on GPU 0 when faiss has GPU support and a device, else None."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return None
    try:
        gpu_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    except RuntimeError as err:  # e.g. HNSW has no GPU implementation
        log.info("faiss cannot move %s to the GPU (%s); using the CPU", type(index).__name__, err)
        return None
    return gpu_index


def default_search_params(index: Any) -> dict[str, int]:
    """Search parameters a fresh approximate index gets: nprobe = nlist/16 (>= 8), efSearch 128."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return {"nprobe": int(min(ivf.nlist, max(8, ivf.nlist // 16)))}
    if hasattr(faiss.downcast_index(index), "hnsw"):
        return {"efSearch": _DEFAULT_EF_SEARCH}
    return {}


def get_search_params(index: Any) -> dict[str, int]:
    """The index's current `nprobe` / `efSearch` (only those that apply to it)."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return {"nprobe": int(ivf.nprobe)}
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    return {"efSearch": int(hnsw.efSearch)} if hnsw is not None else {}


def set_search_params(index: Any, params: dict[str, int] | None) -> None:
    """Applies `{"nprobe": n}` (IVF) or `{"efSearch": n}` (HNSW); names the ones that do not fit."""
    import faiss

    applicable = set(get_search_params(index))
    for name, value in (params or {}).items():
        if name not in applicable:
            raise ValueError(
                f"search parameter {name!r} does not apply to a {type(index).__name__}; it takes "
                f"{sorted(applicable) or 'none'} (known: {list(SEARCH_PARAMS)})."
            )
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"search parameter {name}={value!r}; expected a positive integer.")
        faiss.ParameterSpace().set_index_parameter(index, name, value)


def _search_parameters(index: Any, selector: Any) -> Any:
    """faiss SearchParameters carrying `selector` and the index's own nprobe / efSearch."""
    import faiss

    current = get_search_params(index)
    if "nprobe" in current:
        return faiss.SearchParametersIVF(sel=selector, nprobe=current["nprobe"])
    if "efSearch" in current:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=current["efSearch"])
    return faiss.SearchParameters(sel=selector)


def search(index: Any, q_emb: np.ndarray, k: int, allowed: np.ndarray | None = None,
           vectors: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n_queries, dim) -> (scores, ids), each (n_queries, min(k, n_searchable)), best first.

    `allowed` (a bool mask over FAISS ids) restricts the search to a subset: small subsets are
    searched exactly on their vectors; large ones through a faiss IDSelector, with an exact
    subset search for any query the approximate search left short of k. `vectors(ids)` returns
    exact embeddings (default: `reconstruct`). Unused slots hold id -1.
    """
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k={k!r}; expected a positive integer.")
    q_emb = _as_matrix(q_emb, "q_emb")  # (n_queries, dim)
    if q_emb.shape[1] != index.d:
        raise ValueError(f"q_emb has dim {q_emb.shape[1]} but the index has dim {index.d}.")
    if allowed is None:
        return index.search(q_emb, min(k, index.ntotal))
    subset = np.flatnonzero(allowed)  # (n_allowed,)
    k = min(k, len(subset))
    if k == 0:
        return np.zeros((len(q_emb), 0), np.float32), np.zeros((len(q_emb), 0), np.int64)
    vectors = vectors or (lambda ids: reconstruct(index, ids))
    if len(subset) <= max(4096, index.ntotal // 100):
        return exact_subset_search(q_emb, subset, vectors(subset), k)
    scores, ids = _selector_search(index, q_emb, k, allowed)
    short = np.flatnonzero((ids < 0).any(axis=1))  # queries the approximate search left short
    if len(short):
        scores[short], ids[short] = exact_subset_search(q_emb[short], subset, vectors(subset), k)
    return scores, ids


def _selector_search(index: Any, q_emb: np.ndarray, k: int, allowed: np.ndarray):
    import faiss

    bits = np.packbits(allowed.astype(bool), bitorder="little")  # kept alive during the search
    selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
    try:
        return index.search(q_emb, k, params=_search_parameters(index, selector))
    except RuntimeError:  # an index type without selector support: search it exactly
        full = np.full((len(q_emb), k), -1, dtype=np.int64)
        return np.zeros((len(q_emb), k), np.float32), full


def exact_subset_search(q_emb: np.ndarray, subset: np.ndarray, p_emb: np.ndarray, k: int):
    """Exact top-k inner product of (n_queries, dim) queries over the rows `subset` of a pool."""
    sims = q_emb @ _as_matrix(p_emb, "p_emb").T  # (n_queries, n_subset)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (n_queries, k)
    return np.take_along_axis(sims, top, axis=1).astype(np.float32), subset[top].astype(np.int64)


def reconstruct(index: Any, ids: np.ndarray) -> np.ndarray:
    """Stored vectors for FAISS `ids` -> (len(ids), dim); builds an IVF direct map if needed."""
    import faiss

    ids = np.asarray(ids, dtype=np.int64)
    try:
        return index.reconstruct_batch(ids)
    except RuntimeError:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is None:
            raise
        ivf.make_direct_map()
        return index.reconstruct_batch(ids)


def reconstructs_exactly(index: Any, p_emb: np.ndarray, n_check: int = 64) -> bool:
    """Whether the index gives back `p_emb` (rows 0..n_check) unchanged (Flat, HNSW, IVF-Flat)."""
    ids = np.arange(min(n_check, index.ntotal))
    try:
        return bool(np.allclose(reconstruct(index, ids), p_emb[ids], atol=1e-6))
    except RuntimeError:
        return False
