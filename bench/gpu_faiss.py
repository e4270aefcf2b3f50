"""Section 4 of the GPU check (bench/gpu_check.py): FAISS Flat and IVF build + search on
clustered synthetic unit vectors, on the CPU and, with faiss-gpu, on the GPU in the same run;
recall@K against Flat. `bench_faiss` returns the section's JSON; faiss is imported inside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from gpu_common import Clock, Sizes, is_cuda
from scoring import timed

K = 3  # neighbours searched per query


def unit_vectors(n: int, dim: int, seed: int, device: str):
    """(n, dim) float32 numpy unit vectors around `n // 100` centres (seed 0), as in
    bench/retrieval.py `synthetic`, drawn with torch on `device`."""
    centres = torch.randn(max(10, n // 100), dim, generator=torch.Generator(device).manual_seed(0),
                          device=device)
    gen = torch.Generator(device).manual_seed(seed)
    parts = []
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        pick = torch.randint(len(centres), (m,), generator=gen, device=device)
        x = centres[pick] + 0.7 * torch.randn(m, dim, generator=gen, device=device)  # (m, dim)
        parts.append(F.normalize(x, dim=-1).cpu())
    return torch.cat(parts).numpy()  # (n, dim)


def bench_index(faiss, x, q, factory: str, nprobe: int, gpu_res, device: str) -> dict:
    """Train (IVF: on 39 vectors per list) + add + search one index; "_ids" kept for recall."""
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if gpu_res is not None:
        index = faiss.index_cpu_to_gpu(gpu_res, 0, index)
    ivf = factory.startswith("IVF")
    n_train = min(len(x), 39 * int(factory.split(",")[0][3:])) if ivf else 0
    _, train_s = timed(lambda: index.train(x[:n_train]) if ivf else None, device)
    _, add_s = timed(lambda: index.add(x), device)
    if ivf:
        space = faiss.GpuParameterSpace() if gpu_res is not None else faiss.ParameterSpace()
        space.set_index_parameter(index, "nprobe", nprobe)
    index.search(q[:10], K)  # warm-up
    (_, ids), search_s = timed(lambda: index.search(q, K), device)
    return {"train_s": train_s, "add_s": add_s, "build_s": train_s + add_s,
            "search_s": search_s, "search_qps": len(q) / search_s, "_ids": ids,
            **({"nprobe": nprobe, "n_train": n_train} if ivf else {})}


def recall(ids, exact) -> float:
    return float(sum(len(set(a) & set(b)) for a, b in zip(ids, exact, strict=True)) / exact.size)


def bench_faiss(sizes: Sizes, device: str, clock: Clock) -> dict:
    import faiss

    has_gpu = hasattr(faiss, "StandardGpuResources")
    gpu_ok = has_gpu and faiss.get_num_gpus() > 0
    gen_on = device if is_cuda(device) else "cpu"
    x, q = unit_vectors(sizes.n_vectors, 768, 1, gen_on), unit_vectors(sizes.n_search, 768, 2,
                                                                       gen_on)
    out = {"n_vectors": len(x), "dim": x.shape[1], "n_queries": len(q), "k": K,
           "faiss_threads": faiss.omp_get_max_threads(),
           "gpu": "ok" if gpu_ok else ("faiss-gpu sees no GPU" if has_gpu
                                       else "faiss-gpu not installed"),
           "indexes": {}, "cut": []}
    res = faiss.StandardGpuResources() if gpu_ok else None
    sides = ["gpu", "cpu"] if gpu_ok else ["cpu"]
    runs = [(factory, side) for factory in ("Flat", sizes.ivf) for side in sides]
    for factory, side in runs:
        if clock.left() <= 0:
            out["cut"].append(f"{side} {factory} skipped: out of time")
            continue
        gpu = side == "gpu"
        out["indexes"][f"{side}-{factory}"] = bench_index(faiss, x, q, factory, sizes.nprobe,
                                                          res if gpu else None,
                                                          device if gpu else "cpu")
    add_recalls(out["indexes"], sizes.ivf)
    return out


def add_recalls(indexes: dict, ivf: str) -> None:
    """recall@K of each index against its side's Flat, and GPU Flat against CPU Flat."""
    for side in ("cpu", "gpu"):
        flat, approx = indexes.get(f"{side}-Flat"), indexes.get(f"{side}-{ivf}")
        if flat and approx:
            approx["recall_vs_flat"] = recall(approx["_ids"], flat["_ids"])
    if "gpu-Flat" in indexes and "cpu-Flat" in indexes:
        indexes["gpu-Flat"]["recall_vs_cpu_flat"] = recall(indexes["gpu-Flat"]["_ids"],
                                                           indexes["cpu-Flat"]["_ids"])
    for row in indexes.values():
        row.pop("_ids")
