"""The bench's ``finetune-fit`` method: Ft.Acc predicted from the cards alone (:mod:`k2v_hub.finetune_fit`).

Trained on the training split's tasks (NNR and transfer) and the seen models only: the measured Ft.Acc of the
validation-unseen and unseen models is never read. Its configuration (:data:`GRID`) is chosen on the validation
split (:func:`k2v_hub.bench.validation.choose_finetune`).
"""

from __future__ import annotations

import time

import numpy as np

from ..finetune_fit import FinetunePredictor, finetune_features, train_finetune_predictor
from .data import BenchData, Splits

#: Full-batch training steps by zoo profile (the tiny zoo's few rows fit in far fewer; unknown profiles: the bench's).
STEPS = {"tiny": 300, "bench": 2000}
#: The configurations tried on validation, smallest first.
GRID = tuple(dict(hidden=h, depth=d, weight_decay=w) for d in (1, 2) for h in (16, 32) for w in (1e-3, 1e-1))


def task_features(data: BenchData, task_ids) -> list[np.ndarray]:
    """Per task, every model's :func:`~k2v_hub.finetune_fit.finetune_features` (label-blind: no class name),
    computed once per run (``data.finetune_features``)."""
    cache = data.finetune_features
    for t in task_ids:
        if t not in cache:
            cache[t] = finetune_features(data.means[t], data.fingerprints, data.reported_accuracies)
    return [cache[t] for t in task_ids]


def train_on_bench(data: BenchData, splits: Splits, *, seed: int = 0, **config) -> FinetunePredictor:
    """A predictor trained on the training split's tasks, the seen models' rows only, for the zoo profile's
    :data:`STEPS`."""
    seen = np.isin(data.models, splits.seen)
    features = [np.where(seen[:, None], x, np.nan) for x in task_features(data, splits.train)]
    steps = STEPS.get(data.zoo.manifest.get("profile"), STEPS["bench"])
    return train_finetune_predictor(features, list(data.rows(splits.train, data.ft)), seed=seed, steps=steps,
                                    feature_space=data.extractor.name, **config)


def finetune_scores(data: BenchData, predictor: FinetunePredictor, task_ids) -> tuple[np.ndarray, float]:
    """Predicted Ft.Acc ``[tasks, models]`` and the mean seconds per task of computing it."""
    t0 = time.perf_counter()
    S = (np.stack([predictor.predict(x) for x in task_features(data, task_ids)]) if len(task_ids)
         else np.zeros((0, len(data.models))))
    return S, (time.perf_counter() - t0) / max(1, len(task_ids))
