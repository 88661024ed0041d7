"""Tables 1 and 2 of the paper: every method on the NNR evaluation tasks (per setting, and label-blind), and its
correlation with the fine-tuned accuracy on the transfer tasks.

``retrievers``: the run's Know2Vec retrievers by method name (``know2vec``, ``know2vec-ssl``, ``know2vec-adapted``);
``fp``: the forward passes of the tasks (:meth:`~k2v_hub.bench.data.BenchData.forward_passes`).
"""

from __future__ import annotations

import numpy as np

from ..methods import ESTIMATORS
from .data import BenchData, Splits
from .methods import ACCESS, method_scores, with_hybrids
from .scoring import correlations, pool_task_metrics, summarise
from .uncertainty import paired_difference

#: The differences the targets compare, as (method, reference): paired bootstrap over the same tasks.
COMPARISONS = (("know2vec", "leep"), ("two-stage-leep@3", "leep"), ("data", "know2vec"),
               ("two-stage-data-leep@3", "leep"), ("data", "data-fingerprint"), ("data", "leep"),
               ("fused-data-leep@3", "two-stage-data-leep@3"), ("fused-data-leep@3", "leep"),
               ("two-stage-data-head-accuracy@3", "two-stage-data-leep@3"), ("two-stage-data-head-accuracy@3", "leep"),
               ("data+know2vec", "know2vec"), ("data+know2vec", "data"), ("data+know2vec", "leep"),
               ("data", "data-no-hubness"))
_ESTIMATOR_NAMES = {m.name for m in ESTIMATORS}


def method_table(data: BenchData, task_ids, meths: dict, secs: dict, seed: int, columns=None) -> dict:
    """Per method: its metrics on ``task_ids`` (candidates: the model ``columns``, default all) with 95 % bootstrap
    intervals (``ci95``), seconds per search, access, and for estimators how many (task, model) estimates failed
    (they rank last)."""
    table = {}
    for name, S in meths.items():
        row = summarise(pool_task_metrics(data, name, S, task_ids, columns, seed), intervals=True, seed=seed)
        row.update({"search_s": round(secs[name], 5), "access": ACCESS.get(name, "")})
        if name in _ESTIMATOR_NAMES:
            row["failed_estimates"] = int(np.isnan(S).sum())
        table[name] = row
    return table


def comparisons(data: BenchData, task_ids, meths: dict, seed: int, columns=None) -> dict:
    """Paired bootstrap differences of R@1 and rel@1 for :data:`COMPARISONS` on the same tasks."""
    out = {}
    for a, b in COMPARISONS:
        if a in meths and b in meths:
            ma, mb = (pool_task_metrics(data, n, meths[n], task_ids, columns, seed) for n in (a, b))
            out[f"{a} - {b}"] = {k: paired_difference(ma[k], mb[k], seed=seed) for k in ("r@1", "rel@1")}
    return out


def nnr_tables(data: BenchData, fp: dict, retrievers: dict, graphs: dict, splits: Splits, seed: int, *,
               label_blind: bool = False, ks=(3,), label_weight: float | None = None,
               fusion: float | None = None) -> dict:
    """Table 1: every method on the NNR eval tasks, and per setting (``seen``, ``inductive``, ``seen_pool``: the
    seen tasks with the seen models as the only candidates).

    Returns ``{"methods", "settings", "comparisons", "secs"}``: the tables, the paired differences per setting
    (``all`` for every task) and each method's seconds per search.
    """
    eval_all, n_models = splits.eval_all, len(data.models)
    trained = np.isin(data.models, splits.seen)
    base_scores, base_secs, lab = method_scores(data, fp, retrievers, graphs, eval_all, label_blind=label_blind)
    meths, secs = with_hybrids(base_scores, base_secs, lab, n_models=n_models, ks=ks, label_weight=label_weight,
                               fusion=fusion, trained=trained, vector_weight=data.trained_vector_weight)
    settings, compared = {}, {"all": comparisons(data, eval_all, meths, seed)}
    for name, ids in (("seen", splits.eval_seen), ("inductive", splits.eval_inductive)):
        if ids:
            sub = [eval_all.index(t) for t in ids]
            scores = {k: v[sub] for k, v in meths.items()}
            settings[name] = method_table(data, ids, scores, secs, seed)
            compared[name] = comparisons(data, ids, scores, seed)
    if splits.eval_seen:
        # the paper's Table 1: the candidates are the models the retriever was trained on
        sub, cols = [eval_all.index(t) for t in splits.eval_seen], [data.col[m] for m in splits.seen]
        pool_scores, pool_secs = with_hybrids({k: v[sub][:, cols] for k, v in base_scores.items()}, base_secs,
                                              lab[sub][:, cols], n_models=n_models, ks=ks, label_weight=label_weight,
                                              fusion=fusion, trained=trained[cols],
                                              vector_weight=data.trained_vector_weight)
        settings["seen_pool"] = method_table(data, splits.eval_seen, pool_scores, pool_secs, seed, columns=cols)
        compared["seen_pool"] = comparisons(data, splits.eval_seen, pool_scores, seed, columns=cols)
    return {"methods": method_table(data, eval_all, meths, secs, seed), "settings": settings,
            "comparisons": compared, "secs": secs}


def transfer_table(data: BenchData, fp: dict, retrievers: dict, graphs: dict, task_ids, *,
                   label_weight: float | None = None, fusion: float | None = None, seen=None) -> dict:
    """Table 2: each method's correlation with the fine-tuned accuracy over the transfer tasks (``random``: the
    expectation of a random ranking, 0). ``seen``: the models the retrievers trained on (for ``data+know2vec``)."""
    meths, _ = with_hybrids(*method_scores(data, fp, retrievers, graphs, task_ids), n_models=len(data.models),
                            label_weight=label_weight, fusion=fusion,
                            trained=None if seen is None else np.isin(data.models, seen),
                            vector_weight=data.trained_vector_weight)
    table = {name: correlations(S, data.rows(task_ids, data.ft)) for name, S in meths.items()}
    if "random" in table:
        table["random"] = {k: 0.0 for k in table["random"]}
    return table


def label_blind_table(data: BenchData, fp: dict, retrievers: dict, graphs: dict, splits: Splits, seed: int, *,
                      ks=(3,), label_weight: float | None = None, fusion: float | None = None) -> dict:
    """Table 1 with the tasks' label names replaced by ``class_0..``: every task, and per setting."""
    tables = nnr_tables(data, fp, retrievers, graphs, splits, seed, label_blind=True, ks=ks,
                        label_weight=label_weight, fusion=fusion)
    return {"methods": tables["methods"], "settings": tables["settings"], "comparisons": tables["comparisons"]}
