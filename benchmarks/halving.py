"""A second stage that widens: successive halving over more of the first stage's candidates.

    python benchmarks/halving.py [--work DIR] [--eval] [--out FILE]

`find_model --rerank leep` asks its first ``k`` candidates (``rerank_k``, 5 by default; the bench's headline row:
3, `fused-data+know2vec-leep@3`) about every image of the task and orders them by LEEP fused with the first stage's
score (:func:`k2v_hub.rerank.fuse_scores`).
Successive halving (Jamieson & Talwalkar, 2016; the recall-then-select schedules of model search) asks more
candidates, ``k1``, about a seeded part of the images (a fraction ``f`` of each class, at least one image), keeps the
``k2`` best by the same fused value and asks only those about the rest; the survivors are ordered by the fused value
on every image, the others stay below them (the dropped in their first-round order, then the first stage's). Cost:
``k1 x n1 + k2 x (N - n1)`` queries for ``N`` images, ``n1`` of them in the first round, and ``k1`` models loaded.
The schedule is chosen among those within a tenth of LEEP over every model's queries.

Label-blind, every model a candidate, the first stage `find_model`'s with the bench's retriever (``data+know2vec``),
the fusion weight `find_model`'s. The schedule is chosen on the validation split by R@1 pooled over the bench zoo and,
when it is there, the second zoo (``zoo-seed1``; ties: fewer queries); ``--eval`` then scores the evaluation split
of each zoo once, and the unseen-domain folds of the bench zoo (first stage: the data score, as the bench's folds).
Beside each schedule: LEEP over every model, the bench's fused re-rank of 3 (``fused-data+know2vec-leep@3``) and the
plain wider ones (``fused@5``, ``@6``, ``@8``: every image asked of every candidate).
"""

from __future__ import annotations

import time

import numpy as np

from k2v_hub.baselines import leep
from k2v_hub.bench.data import BenchData, Splits
from k2v_hub.bench.folds import domain_folds, fold_split
from k2v_hub.bench.methods import data_know2vec, declared_scores, know2vec_scores, two_stage
from k2v_hub.bench.scoring import pool_task_metrics
from k2v_hub.bench.studies import leep_matrix
from k2v_hub.rerank import FUSION_WEIGHT, fuse_scores
from study import pooled_rate, study_arguments, write_result, zoos_with_retrievers

#: (k1, k2, f): candidates asked first, survivors, fraction of each class's images in the first round.
SCHEDULES = [(k1, k2, f) for k1 in (4, 5, 6, 8, 10, 12) for k2 in (2, 3) for f in (0.125, 0.25, 1 / 3, 0.5)
             if k2 < k1]
#: At most this share of LEEP over every model's queries.
BUDGET = 0.1
SEED = 0


def first_round(labels: np.ndarray, fraction: float, seed: int = SEED) -> np.ndarray:
    """A seeded mask over a task's images: ``ceil(fraction x n_c)`` of each class ``c`` (at least one)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        mask[rng.choice(idx, size=max(1, int(np.ceil(fraction * len(idx)))), replace=False)] = True
    return mask


def halving(first: np.ndarray, probs: list, labels: list[np.ndarray], k1: int, k2: int, fraction: float,
            fusion: float = FUSION_WEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``[tasks, models]`` of the halving schedule on ``first``'s candidates, and the queries per task.

    ``probs[i][j]``: model ``j``'s predictions on task ``i``'s images; ``labels[i]``: that task's labels."""
    out = np.full_like(first, -1e6, dtype=np.float64)
    queries = np.zeros(len(first))
    for i, (f, y) in enumerate(zip(first, labels)):
        order = np.argsort(-f, kind="stable")
        cand, rest = order[:k1], order[k1:]
        part = first_round(y, fraction)
        r1 = fuse_scores([leep(probs[i][j][part], y[part]) for j in cand], f[cand], fusion)
        ranked = cand[np.argsort(-r1, kind="stable")]
        keep, dropped = ranked[:k2], ranked[k2:]
        r2 = fuse_scores([leep(probs[i][j], y) for j in keep], f[keep], fusion)
        final = keep[np.argsort(-r2, kind="stable")]
        for rank, j in enumerate(np.concatenate([final, dropped, rest])):
            out[i, j] = -rank
        queries[i] = len(cand) * part.sum() + len(keep) * (len(y) - part.sum())
    return out, queries


def _r1(data: BenchData, S: np.ndarray, tasks: list[str]) -> float:
    return round(float(np.mean(pool_task_metrics(data, "x", S, tasks)["r@1"])), 4)


def passes(data: BenchData, tasks: list[str]) -> dict:
    """Every model's predictions on each task's images (``probs[i][j]``), the labels and LEEP ``[tasks, models]``."""
    fp = data.forward_passes(tasks)
    probs = [[fp["probs"][(t, m)] for m in data.models] for t in tasks]
    labels = [fp["labels"][t] for t in tasks]
    return {"tasks": tasks, "probs": probs, "labels": labels, "leep": leep_matrix(data, fp, tasks)}


def scored(data: BenchData, run: dict, ids: list[str], first: np.ndarray, schedules) -> dict:
    """On the tasks ``ids`` of ``run`` (:func:`passes`; ``first``: the first stage over ``run``'s tasks): R@1,
    queries per search and models loaded of LEEP over every model, the fused re-rank of ``k`` candidates (the
    bench's 3, and the wider 5, 6 and 8 that ask every image) and each halving schedule."""
    rows = [run["tasks"].index(t) for t in ids]
    first, L = first[rows], run["leep"][rows]
    probs, labels = [run["probs"][i] for i in rows], [run["labels"][i] for i in rows]
    n = float(np.mean([len(y) for y in labels]))
    out = {"leep": {"r@1": _r1(data, L, ids), "queries": round(n * len(data.models), 1),
                    "models_loaded": len(data.models)}}
    for k in (3, 5, 6, 8):
        out[f"fused@{k}"] = {"r@1": _r1(data, two_stage(first, L, k, fusion=FUSION_WEIGHT), ids),
                             "queries": round(k * n, 1), "models_loaded": k}
    for k1, k2, f in schedules:
        S, q = halving(first, probs, labels, k1, k2, f)
        out[f"halving k1={k1} k2={k2} f={f:.3g}"] = {"r@1": _r1(data, S, ids), "queries": round(float(q.mean()), 1),
                                                      "models_loaded": k1}
    return {"n": len(ids), "rows": out}


def first_stage(data: BenchData, splits: Splits, retriever, knowledge, tasks: list[str]) -> np.ndarray:
    """`find_model`'s first stage with the bench's retriever (``data+know2vec``), label-blind, on ``tasks``."""
    V = know2vec_scores(retriever, knowledge.graphs, data, tasks)[0]
    D = declared_scores(data, tasks)[0]
    return data_know2vec(V, D, np.isin(data.models, splits.seen), data.trained_vector_weight)


def main() -> None:
    """Choose a schedule on each zoo's validation split, pooled; with ``--eval`` score the evaluation split once."""
    args = study_arguments(__doc__.splitlines()[0], "Also score the evaluation split and the folds once.")
    t0 = time.perf_counter()
    out: dict = {"criterion": f"validation R@1 pooled over zoos, label-blind, every model a candidate, within "
                              f"{BUDGET:g} of LEEP's queries; ties: fewer queries", "zoos": {}}
    zoos = list(zoos_with_retrievers(args.work))
    for seed, data, splits, retriever, knowledge in zoos:
        val = list(splits.val)
        out["zoos"][str(seed)] = {"val": scored(data, passes(data, val), val,
                                                first_stage(data, splits, retriever, knowledge, val), SCHEDULES)}
    vals = [z["val"] for z in out["zoos"].values()]
    ns = [v["n"] for v in vals]
    pooled = {name: {"r@1": pooled_rate([v["rows"][name]["r@1"] for v in vals], ns),
                     "queries": round(float(np.average([v["rows"][name]["queries"] for v in vals], weights=ns)), 1),
                     "models_loaded": vals[0]["rows"][name]["models_loaded"]} for name in vals[0]["rows"]}
    out["pooled_val"] = pooled
    budget = BUDGET * pooled["leep"]["queries"]
    within = {name: row for name, row in pooled.items() if name.startswith("halving") and row["queries"] <= budget}
    chosen = max(within, key=lambda name: (within[name]["r@1"], -within[name]["queries"]))
    out["chosen"] = {"schedule": chosen, **within[chosen], "budget_queries": round(budget, 1)}
    if args.eval:
        k1, k2, f = next(s for s in SCHEDULES if f"halving k1={s[0]} k2={s[1]} f={s[2]:.3g}" == chosen)
        for seed, data, splits, retriever, knowledge in zoos:
            tasks = list(splits.eval_all)
            run = passes(data, tasks)
            first = first_stage(data, splits, retriever, knowledge, tasks)
            for part, ids in (("eval_all", tasks), ("eval_seen", list(splits.eval_seen)),
                              ("eval_inductive", list(splits.eval_inductive))):
                out["zoos"][str(seed)][part] = scored(data, run, ids, first, [(k1, k2, f)])
            if seed == 0:
                D = declared_scores(data, tasks)[0]
                out["folds"] = [{"domains": domains, **scored(data, run, ids, D, [(k1, k2, f)])}
                                for domains in domain_folds(data, 5)
                                if (ids := [t for t in fold_split(data, domains)["tasks"] if t in tasks])]
    write_result(out, args, t0)


if __name__ == "__main__":
    main()
