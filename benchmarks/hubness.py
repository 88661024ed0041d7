"""The data score with its hubs discounted: how much of a fingerprint class's closeness to the user's is closeness to
everything.

    python benchmarks/hubness.py [--work DIR] [--out FILE]

The data score (:func:`k2v_hub.declared.data_scores`) ranks a model by the mean over the user's classes of the best
cosine between the class mean and one of the model's declared-data class means. In the frozen backbone (ImageNet
photographs), glyphs of any script sit close together: a model declaring Hebrew letters scored above the digits model
on a digits task, and such wrong-domain picks (accuracy 0 on the task) were half of the first stage's misses on the
second zoo's validation split. CSLS (Conneau et al., 2018) discounts each class by its mean cosine to its ``k``
nearest class means of the index's other data (:func:`k2v_hub.declared.hubness`). Here, on the validation split
(label-blind, every model a candidate), for each weight ``w`` of that discount (0: the score before; 0.5: CSLS's)
and ``k``:

- ``data``: the data score alone;
- ``data+know2vec``: `find_model`'s first stage (the vector orders the two best when the best is a trained model);
- ``two-stage``: LEEP on its first 3 candidates (`find_model --rerank leep`);
- ``half-cards-inferred``: the first stage and the two-stage with a seeded half of the cards hiding their data and
  the index inferring it (the bench's ``data-half-cards-inferred``, ``min_ratio`` as `k2v-hub index` uses it);

on seen and unseen models' tasks. ``w`` and ``k`` are chosen on R@1 of the two-stage, then of the first stage,
pooled over the bench zoo and, when the bench built it (``--zoo-seeds 2``), the second zoo (ties: the smaller
weight, then the smaller ``k``). The evaluation split is left to ``k2v-hub bench``.
"""

from __future__ import annotations

import time

import numpy as np

from k2v_hub.bench.data import BenchData, Splits
from k2v_hub.bench.methods import data_know2vec, declared_scores, half_cards_inferred, know2vec_scores, two_stage
from k2v_hub.bench.scoring import pool_task_metrics
from k2v_hub.bench.studies import leep_matrix
from study import per_zoo, pooled_rate, study_arguments, write_result

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the score before first: it wins ties
NEIGHBOURS = (10, 20, 40)  # CSLS's first: it wins ties


def _r1(data: BenchData, S: np.ndarray, tasks: list[str], rows: list[str]) -> float:
    return round(float(np.mean(pool_task_metrics(data, "x", S[[tasks.index(t) for t in rows]], rows)["r@1"])), 4)


def zoo_rows(data: BenchData, splits: Splits, retriever, knowledge) -> dict:
    """R@1 of each score, first stage and two-stage, on the validation split's seen, unseen and all tasks."""
    val = list(splits.val)
    V = know2vec_scores(retriever, knowledge.graphs, data, val)[0]
    L = leep_matrix(data, data.forward_passes(val), val)
    trained = np.isin(data.models, splits.seen)
    held = data.half_cards
    parts = {"seen": list(splits.val_seen), "unseen": list(splits.val_unseen), "all": val}
    rows = {}
    for k in NEIGHBOURS:
        for w in WEIGHTS:
            D = declared_scores(data, val, hubness_weight=w, neighbours=k)[0]
            M = data_know2vec(V, D, trained, data.trained_vector_weight)
            stages = {"data": D, "data+know2vec": M, "two-stage": two_stage(M, L, 3)}
            if k == NEIGHBOURS[0]:  # the product's path with half the cards hidden, at CSLS's k
                H = half_cards_inferred(data, V, val, held, hubness_weight=w)[0]
                stages.update({"half-cards-inferred": H, "half-cards-inferred two-stage": two_stage(H, L, 3)})
            rows[f"k={k} w={w:g}"] = {stage: {part: _r1(data, S, val, ids) for part, ids in parts.items() if ids}
                                      for stage, S in stages.items()}
            rows[f"k={k} w={w:g}"]["n"] = len(val)
    return rows


def main() -> None:
    """Score the data score with each hubness discount on each zoo's validation split and choose one."""
    args = study_arguments(__doc__.splitlines()[0], "Not used: the evaluation split is scored by k2v-hub bench.")
    t0 = time.perf_counter()
    out: dict = {"criterion": "validation R@1 of the two-stage, then of data+know2vec, pooled over zoos; ties: the "
                              "smaller weight, then the smaller k", "zoos": per_zoo(args.work, zoo_rows)}
    zoos = list(out["zoos"].values())
    weights = [z[next(iter(z))]["n"] for z in zoos]
    pooled = {name: {stage: pooled_rate([z[name][stage]["all"] for z in zoos], weights)
                     for stage in zoos[0][name] if stage != "n"} for name in zoos[0]}
    out["pooled"] = pooled
    grid = [(pooled[f"k={k} w={w:g}"]["two-stage"], pooled[f"k={k} w={w:g}"]["data+know2vec"], -w, -k, w, k)
            for k in NEIGHBOURS for w in WEIGHTS]
    out["chosen"] = dict(zip(("hubness_weight", "neighbours"), max(grid)[4:]))
    write_result(out, args, t0)


if __name__ == "__main__":
    main()
