"""Where the vector's place in `find_model`'s data stage was chosen: among the models the retriever trained on.

    python benchmarks/trained_vector.py [--work DIR] [--out FILE]

Label-blind, on the validation split, with the bench's main retriever (``<work>/retriever``, saved by the last
``k2v-hub bench --profile bench``). Compared, each with every model a candidate and, on the seen models' tasks,
with the trained models the only candidates (the paper's setting):

- ``data``: the declared-data score alone (`find_model`'s first stage without the condition);
- ``gated w``: :func:`k2v_hub.declared.first_stage_scores` with the trained models marked: when the best data
  match is one of them, every score gains ``w`` x the standardised vector (in the scores' spread);
- ``always w``: the same mix on every task (every model marked as trained, so the condition always holds).

The evaluation split is the bench's to score (``data+know2vec``); this study reads only the validation tasks.
"""

from __future__ import annotations

import time

import numpy as np

from k2v_hub.bench.data import ProbeSet
from k2v_hub.bench.methods import declared_scores, know2vec_scores
from k2v_hub.bench.scoring import pool_task_metrics
from k2v_hub.declared import first_stage_scores
from k2v_hub.retriever import Retriever
from study import bench_data, study_arguments, write_result

WEIGHTS = (0.1, 0.25, 0.5, 1.0, 2.0)


def _r1(data, S: np.ndarray, tasks: list[str], columns=None) -> float:
    return round(float(np.mean(pool_task_metrics(data, "", S, tasks, columns, data.seed)["r@1"])), 4)


def main() -> None:
    """Score the data stage alone, gated and always mixed with the vector, on the validation split."""
    args = study_arguments(__doc__.splitlines()[0], "Unused: the evaluation split is the bench's to score.")
    t0 = time.perf_counter()
    data, splits = bench_data(args.work)
    retriever = Retriever.from_pretrained(str(args.work / "retriever"))
    graphs = data.knowledge(data.new_retriever(ProbeSet.load(), seed=0)).graphs
    trained = np.isin(data.models, splits.seen)
    cols = np.flatnonzero(trained).tolist()
    parts = {"val": splits.val, "val_seen": splits.val_seen, "val_unseen": splits.val_unseen}
    out: dict = {"work": str(args.work), "label_blind": True, "criterion": "validation R@1 (every model a candidate)",
                 "trained_models": int(trained.sum()), "models": len(data.models)}
    for part, tasks in parts.items():
        vector, _ = know2vec_scores(retriever, graphs, data, tasks)
        declared, _ = declared_scores(data, tasks)
        rows = {"data": declared, "vector": vector}
        for w in WEIGHTS:
            rows[f"gated {w}"] = np.stack([first_stage_scores(v, d, trained, vector_weight=w)
                                           for v, d in zip(vector, declared)])
            rows[f"always {w}"] = np.stack([first_stage_scores(v, d, np.ones_like(trained), vector_weight=w)
                                            for v, d in zip(vector, declared)])
        out[part] = {"n": len(tasks), **{name: _r1(data, S, tasks) for name, S in rows.items()}}
        if part == "val_seen":  # an index of the trained models only: every candidate is one, the mix always holds
            only = {"data": declared[:, cols], "vector": vector[:, cols]}
            for w in WEIGHTS:
                only[f"gated {w}"] = np.stack([first_stage_scores(v, d, trained[cols], vector_weight=w)
                                               for v, d in zip(vector[:, cols], declared[:, cols])])
            out["val_seen_trained_only"] = {"n": len(tasks), **{name: _r1(data, S, tasks, cols)
                                                                for name, S in only.items()}}
    write_result(out, args, t0)


if __name__ == "__main__":
    main()
