"""`k2v-hub bench --scale`: search latency and memory of synthetic indexes, 1k to 1M models."""

from __future__ import annotations

import time

import numpy as np

from ..index import K2VIndex


def run_scale_bench(sizes=(1_000, 10_000, 100_000, 1_000_000), dim: int = 256, queries: int = 20, top_k: int = 5,
                    seed: int = 0) -> list[dict]:
    """Search latency and memory of synthetic indexes through the product's search (:class:`K2VIndex`).

    ``matmul``: the flat matrix product used below ``FAISS_THRESHOLD`` rows; ``faiss``: the exact inner-product
    FAISS index built through ``datasets.Dataset.add_faiss_index``. Medians over ``queries`` searches.
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
            index.search(q[i], top_k)
            times.append(time.perf_counter() - t0)
        row = {"models": n, "dim": dim, "memory_mb": round(emb.nbytes / 2**20, 1),
               "matmul_ms_median": round(float(np.median(times)) * 1000, 3)}
        try:
            t0 = time.perf_counter()
            index.use_faiss()
            row["faiss_build_s"] = round(time.perf_counter() - t0, 3)
            ft = []
            for i in range(queries):
                t0 = time.perf_counter()
                index.search(q[i], top_k)
                ft.append(time.perf_counter() - t0)
            row["faiss_ms_median"] = round(float(np.median(ft)) * 1000, 3)
        except ImportError:
            row["faiss_ms_median"] = None
        rows.append(row)
        del emb, index
    return rows
