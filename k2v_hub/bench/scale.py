"""`k2v-hub bench --scale`: search latency and memory of synthetic indexes, 1k to 1M models."""

from __future__ import annotations

import time

import datasets
import numpy as np
from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

from ..index import K2VIndex, best_first

try:  # optional: the comparison column only (`pip install k2v-hub[faiss]`)
    import faiss
except ImportError:  # pragma: no cover - faiss-cpu is in the test extras
    faiss = None


def run_scale_bench(sizes=(1_000, 10_000, 100_000, 1_000_000), dim: int = 256, queries: int = 20, top_k: int = 5,
                    seed: int = 0) -> list[dict]:
    """Search latency and memory of synthetic indexes through the product's search.

    ``matmul``: :meth:`K2VIndex.first_stage` then :func:`best_first` (one matrix product, then the top ``top_k``),
    the path `find_model` takes for an index without data fingerprints;
    ``faiss``: for comparison, an exact inner-product FAISS index built through ``datasets.Dataset.add_faiss_index``
    (``faiss-cpu``, optional). Medians over ``queries`` searches.
    """
    rows = []
    rng = np.random.default_rng(seed)
    for n in sizes:
        emb = rng.standard_normal((n, dim), dtype=np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        q = rng.standard_normal((queries, dim), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        index = K2VIndex([None] * n, emb, {}, "synthetic")
        times = []
        for i in range(queries):
            t0 = time.perf_counter()
            best_first(index.first_stage(q[i]).scores, top_k)
            times.append(time.perf_counter() - t0)
        row = {"models": n, "dim": dim, "memory_mb": round(emb.nbytes / 2**20, 1),
               "matmul_ms_median": round(float(np.median(times)) * 1000, 3)}
        if faiss is None:
            row["faiss_ms_median"] = None
        else:
            row.update(_faiss_timings(emb, q, top_k))
        rows.append(row)
        del emb, index
    return rows


def _faiss_timings(emb: np.ndarray, q: np.ndarray, top_k: int) -> dict:
    """Build time and median search time of an exact inner-product FAISS index over ``emb``."""
    bars = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        t0 = time.perf_counter()
        ds = datasets.Dataset.from_dict({"embedding": emb})
        ds.add_faiss_index("embedding", metric_type=faiss.METRIC_INNER_PRODUCT)
        build_s = time.perf_counter() - t0
    finally:
        if bars:
            enable_progress_bar()
    times = []
    for i in range(len(q)):
        t0 = time.perf_counter()
        ds.search("embedding", q[i], k=top_k)
        times.append(time.perf_counter() - t0)
    return {"faiss_build_s": round(build_s, 3), "faiss_ms_median": round(float(np.median(times)) * 1000, 3)}
