"""A second stage that keeps the first stage's evidence: re-rank the data stage's k candidates by LEEP + lambda x data.

    python benchmarks/fused_rerank.py [--work DIR] [--eval] [--out FILE]

`find_model`'s two-stage search re-ranked the first stage's ``k`` candidates by LEEP alone
(``two-stage-data-leep@k`` in the bench). Here the candidates are re-ranked by ``z(LEEP) + lambda * z(data)``, both
standardised over the ``k`` candidates (what a search can compute: LEEP exists for the candidates only), label-blind,
every model a candidate: `find_model`'s own :func:`k2v_hub.rerank.fuse_scores`, through the bench's
``two_stage(..., fusion=lambda)`` (``fused-data-leep@k`` in the bench). ``lambda = 0`` is LEEP alone. ``k`` and
``lambda`` are chosen on the validation split (R@1, ties: the first listed); ``--eval`` then scores the evaluation
split, the unseen-domain folds and the transfer tasks once with the chosen pair, and with `find_model`'s defaults
(``rerank_k`` candidates, :data:`k2v_hub.rerank.FUSION_WEIGHT`).

``--work`` is the bench's work folder (default ``$K2V_HUB_HOME/bench-bench``); the forward passes of every model on
the tasks scored are recomputed (about 5 s per task on 2 cores).
"""

from __future__ import annotations

import inspect
import time

import numpy as np

from k2v_hub.baselines import leep
from k2v_hub.bench.data import BenchData
from k2v_hub.bench.folds import domain_folds, fold_split
from k2v_hub.bench.methods import declared_scores, two_stage
from k2v_hub.bench.scoring import pool_task_metrics, score_method
from k2v_hub.find import find_model
from k2v_hub.rerank import FUSION_WEIGHT
from study import bench_data, study_arguments, write_result

KS = (3, 5, 10)
#: `find_model`'s default number of re-ranked candidates.
DEFAULT_K = inspect.signature(find_model).parameters["rerank_k"].default
LAMBDAS = (0.0, 0.25, 0.5, 1.0, 2.0)


def _r1(data: BenchData, S: np.ndarray, tasks: list[str]) -> float:
    return round(float(np.mean(pool_task_metrics(data, "x", S, tasks)["r@1"])), 4)


def scores(data: BenchData, tasks: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The data stage's scores (`find_model`'s) and LEEP of every model, ``[tasks, models]``."""
    fp = data.forward_passes(tasks)
    L = np.asarray([[leep(fp["probs"][(t, m)], fp["labels"][t]) for m in data.models] for t in tasks])
    return declared_scores(data, tasks)[0], L


def table(data: BenchData, tasks: list[str], D: np.ndarray, L: np.ndarray, k: int, lam: float,
          base_k: int) -> dict:
    """R@1 of LEEP over every model, the data stage, the bench's two-stage (``base_k``), the fused one, and
    `find_model`'s defaults (its ``rerank_k`` candidates, by LEEP alone and fused with its default weight)."""
    rows = {"leep": L, "data": D, f"two-stage-data-leep@{base_k}": two_stage(D, L, base_k),
            f"two-stage-data-leep@{k}": two_stage(D, L, k), f"fused@{k} lambda={lam}": two_stage(D, L, k, fusion=lam),
            f"two-stage-data-leep@{DEFAULT_K}": two_stage(D, L, DEFAULT_K),
            f"find_model default: fused@{DEFAULT_K} lambda={FUSION_WEIGHT}": two_stage(D, L, DEFAULT_K,
                                                                                    fusion=FUSION_WEIGHT)}
    return {"n": len(tasks), **{name: _r1(data, S, tasks) for name, S in rows.items()}}


def main() -> None:
    """Choose ``k`` and ``lambda`` on validation; with ``--eval`` score the evaluation split, folds, transfer once."""
    args = study_arguments(__doc__.splitlines()[0], "Also score the evaluation split, folds and transfer.")
    work = args.work
    t0 = time.perf_counter()
    data, splits = bench_data(work)
    val = list(splits.val)
    D, L = scores(data, val)
    grid = {f"k={k}, lambda={lam}": {"val_r@1": _r1(data, two_stage(D, L, k, fusion=lam), val), "k": k,
                                     "lambda": lam}
            for k in KS for lam in LAMBDAS}
    best = max(row["val_r@1"] for row in grid.values())
    chosen = next(row for row in grid.values() if row["val_r@1"] == best)
    k, lam = chosen["k"], chosen["lambda"]
    out: dict = {"criterion": "validation R@1, label-blind, every model a candidate; ties: the first listed",
                 "grid": grid, "chosen": {"k": k, "lambda": lam},
                 "val": table(data, val, D, L, k, lam, 3)}
    for part, ids in (("val_seen", splits.val_seen), ("val_unseen", splits.val_unseen)):
        rows = [val.index(t) for t in ids]
        out[part] = table(data, list(ids), D[rows], L[rows], k, lam, 3) if ids else None
    if args.eval:
        tasks = list(dict.fromkeys(splits.eval_all + splits.transfer))
        De, Le = scores(data, tasks)
        pick = lambda ids: ([tasks.index(t) for t in ids], list(ids))  # noqa: E731
        for part, ids in (("eval_all", splits.eval_all), ("eval_seen", splits.eval_seen),
                          ("eval_inductive", splits.eval_inductive)):
            rows, ids = pick(ids)
            out[part] = table(data, ids, De[rows], Le[rows], k, lam, 3) if ids else None
        out["folds"] = []
        for domains in domain_folds(data, 5):
            rows, ids = pick(fold_split(data, domains)["tasks"])
            if ids:
                out["folds"].append({"domains": domains, **table(data, ids, De[rows], Le[rows], k, lam, 3)})
        rows, ids = pick(splits.transfer)
        truth, v, ft = data.truth(ids), data.rows(ids, data.v), data.rows(ids, data.ft)
        out["transfer_tau_w"] = {name: score_method(S, truth, v, ft)["tau_w"] for name, S in (
            ("leep", Le[rows]), ("data", De[rows]), ("two-stage-data-leep@3", two_stage(De[rows], Le[rows], 3)),
            (f"fused@{k} lambda={lam}", two_stage(De[rows], Le[rows], k, fusion=lam)),
            (f"find_model default: fused@{DEFAULT_K} lambda={FUSION_WEIGHT}",
             two_stage(De[rows], Le[rows], DEFAULT_K, fusion=FUSION_WEIGHT)))}
    write_result(out, args, t0)


if __name__ == "__main__":
    main()
