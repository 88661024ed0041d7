"""How high R@1 can go on this bench: every model run, with the task's label names, on the task's support images.

A task's best model is the one with the highest V.Acc on the task's *query* images (a few dozen). Every method
sees only the *support* images. The strongest evidence those hold is each model's own V.Acc measured on them
(:func:`~k2v_hub.zoo.tasks.head_accuracy`, the truth's own definition, run on every model with the true label
names: neither label-blind nor cheap). How often that picks the query split's best model is a reference for what
any method can reach from the support images: the best model on a few dozen images is partly chance (near ties
between siblings decided by one or two images).
"""

from __future__ import annotations

import numpy as np

from ..zoo.tasks import head_accuracy
from .data import BenchData, Splits
from .scoring import pool_task_metrics


def support_accuracy(data: BenchData, fp: dict, task_ids) -> np.ndarray:
    """``[tasks, models]``: each model's V.Acc on each task's support images (``fp``: the forward passes)."""
    S = np.zeros((len(task_ids), len(data.models)))
    for i, t in enumerate(task_ids):
        names = list(data.zoo.task(t)["class_names"])
        for j, m in enumerate(data.models):
            S[i, j] = head_accuracy(fp["probs"][(t, m)], data.labels[m], names, fp["labels"][t])
    return S


def ceiling_report(data: BenchData, fp: dict, splits: Splits, seed: int) -> dict:
    """R@1 of ranking every model by its V.Acc on the support images, per NNR split, every model a candidate."""
    out = {"ranking": "V.Acc on the task's support images, every model run, label names known",
           "truth": "V.Acc on the task's query images"}
    for name, ids in (("seen", splits.eval_seen), ("inductive", splits.eval_inductive),
                      ("val_seen", splits.val_seen), ("val_unseen", splits.val_unseen)):
        if ids:
            r1 = pool_task_metrics(data, "support-v-acc", support_accuracy(data, fp, ids), ids, seed=seed)["r@1"]
            out[name] = {"r@1": round(float(np.mean(r1)), 4), "n": len(ids)}
    return out
