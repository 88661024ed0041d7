"""Where the bench makes its choices: on the validation split, never on the evaluation tasks.

The validation split is the zoo's ``val`` tasks: one per seen model (new class sets, images from the pool's
validation part) and every task of the validation-unseen models (models the retriever never trains on). The bench
chooses, by R@1 there (candidates: every model):

- the retriever's training length and task augmentation (the encoders and losses stay the paper's);
- the weight of the label-name evidence in ``know2vec+labels``;
- ``rerank_k``, how many first-stage candidates the two-stage search re-ranks with LEEP (``data_rerank_k``: the
  same for the declared-data first stage, label-blind), and how much of the data score that re-rank keeps
  (``data_fusion``, the weight of :func:`k2v_hub.rerank.fuse_scores`; `find_model`'s default first);
- the weight of the vector in the data stage among the models the retriever trained on (``trained_vector_weight``,
  :func:`k2v_hub.declared.first_stage_scores`);
- the configuration of ``finetune-fit`` (:mod:`k2v_hub.bench.finetune`), by weighted Kendall tau against Ft.Acc
  (it predicts fine-tuned accuracy, not R@1).

Ties go to the first candidate in the order listed (the configuration the bench used before it had a validation
split, then the cheaper one).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from ..baselines import leep
from ..declared import ACCURACY_WEIGHT, TRAINED_VECTOR_WEIGHT
from ..rerank import FUSION_WEIGHT
from ..train import TrainingArguments, train_retriever
from ..utils import progress
from ..finetune_fit import FinetunePredictor
from .data import BenchData, Knowledge, ProbeSet, Splits
from .finetune import GRID, finetune_scores, train_on_bench
from .methods import data_know2vec, declared_scores, know2vec_scores, label_scores, two_stage
from .scoring import pool_task_metrics, score_method

#: Task augmentation settings tried, by name (the first is `TrainingArguments`' default).
AUGMENTATION = {"class subsets + noise": {}, "none": {"task_class_dropout": 0.0, "task_noise": 0.0}}
STEP_FRACTIONS = (1.0, 0.5)
LABEL_WEIGHTS = (0.5, 0.0, 0.25, 1.0)
RERANK_KS = (3, 5, 10)
#: Weights of the cards' reported accuracy in the data score; `find_model`'s first (it wins ties).
ACCURACY_WEIGHTS = (ACCURACY_WEIGHT, 0.0, 0.005, 0.01, 0.05, 0.1)
#: Weights of the data score in the fused re-rank; `find_model`'s first (it wins ties), 0 is LEEP alone.
FUSION_WEIGHTS = (FUSION_WEIGHT, 0.0, 0.25, 1.0, 2.0)
#: Weights of the vector among the models the retriever trained on; `find_model`'s first, 0 is the data stage alone.
TRAINED_VECTOR_WEIGHTS = (TRAINED_VECTOR_WEIGHT, 0.0, 0.25, 1.0, 2.0)


def _r1(data: BenchData, S: np.ndarray, task_ids, seed: int) -> float:
    return round(float(np.mean(pool_task_metrics(data, "", S, task_ids, None, seed)["r@1"])), 4)


def _pick(grid: dict, key: str = "val_r@1"):
    """The first grid entry with the best value of ``key``."""
    best = max(row[key] for row in grid.values())
    return next(name for name, row in grid.items() if row[key] == best)


def choose_training(data: BenchData, splits: Splits, knowledge: Knowledge, probe: ProbeSet, args: TrainingArguments,
                    show_progress: bool):
    """Train one retriever per training setting of the grid on the seen models' training tasks and keep the one
    with the best validation R@1. Returns ``(retriever, its TrainingArguments, training report, grid report)``."""
    supervised = data.supervised(knowledge, splits.seen, splits.train)
    grid, trained = {}, {}
    settings = [(f"steps={max(1, int(args.steps * f))}, augmentation={aug}", replace(args, steps=max(1, int(
        args.steps * f)), **kw)) for aug, kw in AUGMENTATION.items() for f in STEP_FRACTIONS]
    for name, a in progress(settings, desc="Validation: training settings", disable=not show_progress or None):
        r = data.new_retriever(probe, seed=a.seed)
        info = train_retriever(r, supervised, a, show_progress=False)
        S, _ = know2vec_scores(r, knowledge.graphs, data, splits.val)
        row = {"val_r@1": _r1(data, S, splits.val, data.seed), "steps": a.steps,
               "task_class_dropout": a.task_class_dropout, "task_noise": a.task_noise}
        for part, ids in (("val_seen_r@1", splits.val_seen), ("val_unseen_r@1", splits.val_unseen)):
            if ids:
                row[part] = _r1(data, S[[splits.val.index(t) for t in ids]], ids, data.seed)
        grid[name] = row
        trained[name] = (r, a, info)
    chosen = _pick(grid)
    retriever, chosen_args, info = trained[chosen]
    return retriever, chosen_args, supervised, info, {"grid": grid, "chosen": chosen}


def choose_search(data: BenchData, splits: Splits, fp: dict, retriever, knowledge: Knowledge, seed: int) -> dict:
    """The label weight and ``rerank_k`` with the best validation R@1 for the chosen retriever (``fp``: forward
    passes of at least the validation tasks, for LEEP)."""
    tasks = splits.val
    vector, _ = know2vec_scores(retriever, knowledge.graphs, data, tasks)
    lab = label_scores(data, tasks, label_blind=False)
    weights = {str(w): {"val_r@1": _r1(data, vector + w * lab, tasks, seed), "label_weight": w}
               for w in LABEL_WEIGHTS}
    leep_scores = np.asarray([[leep(fp["probs"][(t, m)], fp["labels"][t]) for m in data.models] for t in tasks])
    ks = {str(k): {"val_r@1": _r1(data, two_stage(vector, leep_scores, k, labels=lab), tasks, seed), "rerank_k": k}
          for k in RERANK_KS}
    # the declared-data first stage, label-blind (no label evidence to interleave): its accuracy weight, then k
    accuracy = {str(w): {"val_r@1": _r1(data, declared_scores(data, tasks, accuracy_weight=w)[0], tasks, seed),
                         "accuracy_weight": w} for w in ACCURACY_WEIGHTS}
    chosen_weight = accuracy[_pick(accuracy)]["accuracy_weight"]
    declared, _ = declared_scores(data, tasks, accuracy_weight=chosen_weight)
    data_ks = {str(k): {"val_r@1": _r1(data, two_stage(declared, leep_scores, k), tasks, seed), "rerank_k": k}
               for k in RERANK_KS}
    data_k = data_ks[_pick(data_ks)]["rerank_k"]
    fusion = {str(w): {"val_r@1": _r1(data, two_stage(declared, leep_scores, data_k, fusion=w), tasks, seed),
                       "fusion": w} for w in FUSION_WEIGHTS}
    trained = np.isin(data.models, splits.seen)
    mixed = {}
    for w in TRAINED_VECTOR_WEIGHTS:
        S = data_know2vec(vector, declared, trained, w)
        mixed[str(w)] = {"val_r@1": _r1(data, S, tasks, seed), "vector_weight": w}
        for part, ids in (("val_seen_r@1", splits.val_seen), ("val_unseen_r@1", splits.val_unseen)):
            mixed[str(w)][part] = _r1(data, S[[tasks.index(t) for t in ids]], ids, seed) if ids else None
    return {"label_weight": {"grid": weights, "chosen": weights[_pick(weights)]["label_weight"]},
            "rerank_k": {"grid": ks, "chosen": ks[_pick(ks)]["rerank_k"]},
            "data_accuracy_weight": {"grid": accuracy, "chosen": chosen_weight},
            "data_rerank_k": {"grid": data_ks, "chosen": data_k},
            "data_fusion": {"grid": fusion, "chosen": fusion[_pick(fusion)]["fusion"], "rerank_k": data_k},
            "trained_vector_weight": {"grid": mixed, "chosen": mixed[_pick(mixed)]["vector_weight"]}}



def _val_tau(data: BenchData, S: np.ndarray, task_ids, seed: int) -> float:
    """Mean weighted Kendall tau of ``S`` against Ft.Acc over ``task_ids``."""
    ft = data.rows(task_ids, data.ft)
    return score_method(S, ft, data.rows(task_ids, data.v), ft, seed)["tau_w"]


def choose_finetune(data: BenchData, splits: Splits, seed: int) -> tuple[FinetunePredictor, dict]:
    """Train each ``finetune-fit`` configuration (:data:`~k2v_hub.bench.finetune.GRID`) and keep the best by
    validation tau_w against Ft.Acc; returns the predictor and ``{"grid", "chosen", "data_val_tau_w"}`` (the data
    stage's tau_w there, for comparison)."""
    grid, trained = {}, {}
    for config in GRID:
        name = json.dumps(config)
        trained[name] = train_on_bench(data, splits, seed=seed, **config)
        grid[name] = {"val_tau_w": _val_tau(data, finetune_scores(data, trained[name], splits.val)[0], splits.val,
                                            seed), **config}
    chosen = _pick(grid, "val_tau_w")
    baseline = _val_tau(data, declared_scores(data, splits.val)[0], splits.val, seed)
    return trained[chosen], {"grid": grid, "chosen": json.loads(chosen), "data_val_tau_w": baseline}
