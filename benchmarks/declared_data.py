"""Where `find_model`'s declared-data first stage was chosen: rank models by the data their cards name, label-blind.

    python benchmarks/declared_data.py [--work DIR] [--eval] [--out FILE]

Each model of the bench zoo gets the data fingerprint an index stores (:func:`k2v_hub.index.data_columns`: class
means, in the frozen feature space, of 8 images per class of the dataset repo its card names; in the offline zoo,
images of the source's training split, which no task draws from). The rankings compared, each label-blind and
with every model a candidate:

- ``data``: the mean over the task's classes of the best cosine to one of the model's class means, plus 0.02 x
  the accuracy the card reports on that data (what `find_model` uses); ``data-fingerprint``: without the reported
  accuracy; ``sym``: the fingerprint's cosine averaged with the same taken over the model's classes;
- ``vector``: the knowledge vector of the bench's main retriever (``<work>/retriever``, saved by the last
  ``k2v-hub bench --profile bench``);
- ``z(data)+w*z(vector)``: the two standardised per task and summed;
- ``vector if its top cosine >= t else data``: per task, the vector's ranking when it is sure (its best cosine
  reaches ``t``: on the validation split it reaches 0.9 mostly for tasks of models it trained on), else the data's.

``--work`` is the bench's work folder (default ``$K2V_HUB_HOME/bench-bench``). Without ``--eval`` only the
validation split is scored: choose there, then score the evaluation split and the unseen-domain folds once with
``--eval``.
"""

from __future__ import annotations

import time

import numpy as np

from k2v_hub.bench.data import BenchData, ProbeSet
from k2v_hub.bench.folds import domain_folds, fold_split
from k2v_hub.bench.methods import declared_scores, know2vec_scores
from k2v_hub.bench.scoring import first_stage_recall, pool_task_metrics, pool_truth
from k2v_hub.declared import data_scores
from k2v_hub.retriever import Retriever
from study import bench_data, study_arguments, write_result

WEIGHTS = (0.25, 0.5, 1.0, 2.0)
GATES = (0.85, 0.9, 0.95)


def _z(S: np.ndarray) -> np.ndarray:
    return (S - S.mean(1, keepdims=True)) / (S.std(1, keepdims=True) + 1e-12)


def _sym(data: BenchData, tasks: list[str]) -> np.ndarray:
    """``data`` averaged with the mean over the model's classes of the best cosine to one of the task's."""
    S = np.zeros((len(tasks), len(data.models)))
    for i, t in enumerate(tasks):
        fwd = data_scores(data.means[t], data.fingerprints)
        back = [data_scores(fp, [data.means[t]])[0] for fp in data.fingerprints]
        S[i] = (fwd + np.asarray(back)) / 2
    return S


def rankings(data: BenchData, retriever, graphs, tasks: list[str], *, with_vector: bool = True) -> dict:
    """Score matrices ``[tasks, models]`` of every ranking compared."""
    D, _ = declared_scores(data, tasks)
    out = {"data": D, "data-fingerprint": declared_scores(data, tasks, accuracy_weight=0.0)[0],
           "sym": _sym(data, tasks)}
    if with_vector:
        V, _ = know2vec_scores(retriever, graphs, data, tasks)
        out["vector"] = V
        for w in WEIGHTS:
            out[f"z(data)+{w}*z(vector)"] = _z(D) + w * _z(V)
        for th in GATES:
            out[f"vector if its top cosine >= {th} else data"] = _gate(D, V, th)
    return out


def _gate(D: np.ndarray, V: np.ndarray, th: float) -> np.ndarray:
    """Per task, the vector's ranking where its best cosine reaches ``th`` (it recognises a model it trained on),
    else the data's."""
    return np.where(V.max(1, keepdims=True) >= th, V, D)


def report(data: BenchData, scores: dict, tasks: list[str]) -> dict | None:
    """Per ranking: R@1 (every model a candidate) and recall@3/5/10 of the best model among the first candidates."""
    if not tasks:
        return None
    truth = pool_truth(data, tasks)[0]
    return {"n": len(tasks), **{name: {
        "r@1": round(float(np.mean(pool_task_metrics(data, name, S, tasks)["r@1"])), 4),
        **{f"recall@{k}": first_stage_recall(S, truth, k, None) for k in (3, 5, 10)}} for name, S in scores.items()}}


def main() -> None:
    """Score the rankings on the validation split (and with ``--eval`` on the evaluation split and folds)."""
    args = study_arguments(__doc__.splitlines()[0], "Also score the evaluation split and the folds.")
    work = args.work
    t0 = time.perf_counter()
    data, splits = bench_data(work)
    t1 = time.perf_counter()
    sizes = [len(fp) for fp in data.fingerprints]  # what indexing adds per model: read the card's data, featurise
    cost = {"models": len(sizes), "seconds_per_model": round((time.perf_counter() - t1) / len(sizes), 3),
            "classes_per_model": round(float(np.mean(sizes)), 1), "images_per_class": 8,
            "stored_bytes_per_model": round(float(np.mean([2 * 1280 * n for n in sizes])))}
    retriever = Retriever.from_pretrained(str(work / "retriever"))
    graphs = data.knowledge(data.new_retriever(ProbeSet.load(), seed=0)).graphs
    out: dict = {"fingerprint": "k2v_hub.index.data_columns (8 images per class)", "work": str(work),
                 "criterion": "validation R@1, then recall@3", "label_blind": True, "index_cost": cost}
    parts = {"val": splits.val, "val_seen": splits.val_seen, "val_unseen": splits.val_unseen}
    if args.eval:
        parts |= {"eval_seen": splits.eval_seen, "eval_inductive": splits.eval_inductive}
    for name, tasks in parts.items():
        out[name] = report(data, rankings(data, retriever, graphs, tasks), tasks)
    if args.eval:  # each fold's retriever is the bench's to train: the data rankings alone here
        out["folds"] = [{"domains": d, **report(data, rankings(data, None, None, fold_split(data, d)["tasks"],
                                                                with_vector=False), fold_split(data, d)["tasks"])}
                        for d in domain_folds(data, 5)]
    write_result(out, args, t0)


if __name__ == "__main__":
    main()
