"""Where the vector's place in `find_model`'s data stage was chosen: among the models the retriever trained on.

    python benchmarks/trained_vector.py [--work DIR] [--out FILE]

Label-blind, on the validation split, with the bench's main retriever (``<work>/retriever``, saved by the last
``k2v-hub bench --profile bench``), every model a candidate. Compared, each by R@1 (all validation tasks, the seen
models', the unseen models'; and the seen models' tasks with the trained models the only candidates, the paper's
setting), by the recall of the best model among the first 3 and 10, and by LEEP re-ranking the first 3 (what a
re-rank is handed):

- ``data``: the declared-data score alone;
- ``top T, w W``: :func:`k2v_hub.declared.first_stage_scores` with the trained models marked: when the best data
  match is one of them, the ``T`` best data matches (``every``: all models) take their scores in the order of the
  data score plus ``W`` x its spread x the standardised vector;
- ``always, top T, w W``: the same on every task (every model marked as trained: no condition).

The evaluation split is the bench's to score (``data+know2vec``); this study reads only the validation tasks.
"""

from __future__ import annotations

import time

import numpy as np

from k2v_hub.baselines import leep
from k2v_hub.bench.data import ProbeSet
from k2v_hub.bench.methods import declared_scores, know2vec_scores, two_stage
from k2v_hub.bench.scoring import first_stage_recall, pool_task_metrics, pool_truth
from k2v_hub.declared import first_stage_scores
from k2v_hub.retriever import Retriever
from study import bench_data, study_arguments, write_result

WEIGHTS = (0.25, 0.5, 1.0)
TOPS = (2, 3, 5, None)


def _r1(data, S: np.ndarray, tasks: list[str], columns=None) -> float:
    return round(float(np.mean(pool_task_metrics(data, "", S, tasks, columns, data.seed)["r@1"])), 4)


def _mix(vector, declared, trained, w, top) -> np.ndarray:
    return np.stack([first_stage_scores(v, d, trained, vector_weight=w, top=top) for v, d in zip(vector, declared)])


def main() -> None:
    """Score the data stage alone and with the vector ordering its best matches, on the validation split."""
    args = study_arguments(__doc__.splitlines()[0], "Unused: the evaluation split is the bench's to score.")
    t0 = time.perf_counter()
    data, splits = bench_data(args.work)
    retriever = Retriever.from_pretrained(str(args.work / "retriever"))
    graphs = data.knowledge(data.new_retriever(ProbeSet.load(), seed=0)).graphs
    tasks, trained = splits.val, np.isin(data.models, splits.seen)
    cols = np.flatnonzero(trained).tolist()
    seen_rows = [tasks.index(t) for t in splits.val_seen]
    unseen_rows = [tasks.index(t) for t in splits.val_unseen]
    vector, _ = know2vec_scores(retriever, graphs, data, tasks)
    declared, _ = declared_scores(data, tasks)
    fp = data.forward_passes(tasks)
    leeps = np.asarray([[leep(fp["probs"][(t, m)], fp["labels"][t]) for m in data.models] for t in tasks])
    truth = pool_truth(data, tasks)[0]
    rows = {"data": (declared, declared[seen_rows][:, cols])}
    for top in TOPS:
        for w in WEIGHTS:
            name = f"top {top or 'every'}, w {w}"
            rows[name] = (_mix(vector, declared, trained, w, top),
                          _mix(vector[seen_rows][:, cols], declared[seen_rows][:, cols], trained[cols], w, top))
            rows[f"always, {name}"] = (_mix(vector, declared, np.ones_like(trained), w, top), None)
    table = {}
    for name, (S, pool) in rows.items():
        rerank = two_stage(S, leeps, 3)
        table[name] = {"val_r@1": _r1(data, S, tasks), "val_seen_r@1": _r1(data, S[seen_rows], splits.val_seen),
                       "val_unseen_r@1": _r1(data, S[unseen_rows], splits.val_unseen),
                       "val_seen_trained_only_r@1": None if pool is None else _r1(data, pool, splits.val_seen, cols),
                       "recall@3": first_stage_recall(S, truth, 3, None),
                       "recall@10": first_stage_recall(S, truth, 10, None),
                       "leep_on_first_3_r@1": _r1(data, rerank, tasks)}
    write_result({"work": str(args.work), "label_blind": True, "tasks": len(tasks),
                  "trained_models": int(trained.sum()), "models": len(data.models),
                  "criterion": "validation R@1, then the recall of the first candidates", "rankings": table}, args, t0)


if __name__ == "__main__":
    main()
