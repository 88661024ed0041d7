"""Models whose cards name no dataset: their data inferred from their answers on the index's declared data.

    python benchmarks/inferred_data.py [--work DIR] [--out FILE]

`find_model` ranks a model whose card names its data by that data's fingerprint; a model whose card names none by
its knowledge vector, which does not travel to models the retriever never trained on. :mod:`k2v_hub.inferred` asks
such a model about the datasets the other cards of the index name and lets the one it labels best (at least
``min_ratio`` times as well as chance) stand for its data. Here, on the validation split (label-blind, every model a
candidate), with a seeded half of the cards hiding their data (the bench's ``data-half-cards``):

- ``data``: every card names its data (the bench's ``data``, the ceiling here);
- ``data-half-cards place=p``: the hidden half scored by the vector placed on the data scale (before);
- ``data-half-cards-inferred min_ratio=r place=p``: the hidden half's data inferred, for ``r`` in 1.5, 2, 3;

with ``p`` how a model left without data is placed on the data scores' scale
(:func:`k2v_hub.declared.place_vector`: ``moment``, the same mean and spread, as before; ``quantile``, the data
score at its cosine's quantile), each as a first stage and under LEEP on its first 3 candidates (`find_model
--rerank leep`). ``min_ratio`` and the placement are chosen together on R@1 of the two-stage, then of the first
stage, pooled over the bench zoo and, when the bench built it (``--zoo-seeds 2``), the second zoo (ties: the stricter
ratio, then ``moment``). The evaluation split is left to ``k2v-hub bench`` (``data-half-cards``,
``data-half-cards-inferred`` and their ``two-stage-...-leep@3``).
"""

from __future__ import annotations

import time

import numpy as np

from k2v_hub.bench.data import BenchData
from k2v_hub.bench.methods import declared_scores, half_cards, half_cards_inferred, know2vec_scores, two_stage
from k2v_hub.bench.scoring import pool_task_metrics
from k2v_hub.bench.studies import leep_matrix
from study import per_zoo, pooled_rate, study_arguments, write_result

RATIOS = (3.0, 2.0, 1.5)  # the stricter first: it wins ties
PLACES = ("moment", "quantile")  # the placement used before first: it wins ties


def _r1(data: BenchData, S: np.ndarray, tasks: list[str]) -> float:
    return round(float(np.mean(pool_task_metrics(data, "x", S, tasks)["r@1"])), 4)


def zoo_rows(data: BenchData, retriever, knowledge, val: list[str]) -> dict:
    """R@1 of each first stage and of LEEP on its first 3 candidates, on ``val``, and what inference cost."""
    V = know2vec_scores(retriever, knowledge.graphs, data, val)[0]
    D = declared_scores(data, val)[0]
    L = leep_matrix(data, data.forward_passes(val), val)
    stages = {"data": D}
    for p in PLACES:
        stages[f"data-half-cards place={p}"] = half_cards(V, D, data.hidden_cards(), place=p)
    cost = {}
    for r in RATIOS:
        held = data.inferred_half_cards(min_ratio=r)
        for p in PLACES:
            stages[f"data-half-cards-inferred min_ratio={r:g} place={p}"] = half_cards_inferred(data, V, val, held,
                                                                                               place=p)[0]
        cost[f"min_ratio={r:g}"] = {k: held[k] for k in ("hidden", "inferred", "queries", "seconds")}
    rows = {name: {"first_stage_r@1": _r1(data, S, val), "two-stage-leep@3_r@1": _r1(data, two_stage(S, L, 3), val),
                   "n": len(val)} for name, S in stages.items()}
    return {"rows": rows, "inference": cost}


def main() -> None:
    """Score the half-card first stages on each zoo's validation split and choose ``min_ratio``."""
    args = study_arguments(__doc__.splitlines()[0], "Not used: the evaluation split is scored by k2v-hub bench.")
    t0 = time.perf_counter()
    out: dict = {"criterion": "validation R@1 of the two-stage, then of the first stage, pooled over zoos; "
                              "ties: the stricter min_ratio, then moment",
                 "zoos": per_zoo(args.work, lambda data, splits, retriever, knowledge: zoo_rows(
                     data, retriever, knowledge, list(splits.val)))}
    zoos = list(out["zoos"].values())
    pooled = {name: {key: pooled_rate([z["rows"][name][key] for z in zoos], [z["rows"][name]["n"] for z in zoos])
                     for key in ("first_stage_r@1", "two-stage-leep@3_r@1")} for name in zoos[0]["rows"]}
    out["pooled"] = pooled
    grid = [(pooled[f"data-half-cards-inferred min_ratio={r:g} place={p}"]["two-stage-leep@3_r@1"],
             pooled[f"data-half-cards-inferred min_ratio={r:g} place={p}"]["first_stage_r@1"], -i, -j, r, p)
            for i, r in enumerate(RATIOS) for j, p in enumerate(PLACES)]
    out["chosen"] = dict(zip(("min_ratio", "place"), max(grid)[4:]))
    write_result(out, args, t0)


if __name__ == "__main__":
    main()
