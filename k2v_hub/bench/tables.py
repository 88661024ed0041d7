"""Tables 1 and 2 of the paper: every method on the NNR evaluation tasks (per setting, and label-blind), and its
correlation with the fine-tuned accuracy on the transfer tasks.

``retrievers``: the run's Know2Vec retrievers by method name (``know2vec``, ``know2vec-ssl``, ``know2vec-adapted``);
``fp``: the forward passes of the tasks (:meth:`~k2v_hub.bench.data.BenchData.forward_passes`).
"""

from __future__ import annotations

from .data import BenchData, Splits
from .methods import ACCESS, method_scores, with_hybrids
from .scoring import correlations, score_pool


def method_table(data: BenchData, task_ids, meths: dict, secs: dict, seed: int, columns=None) -> dict:
    """Per method: its metrics on ``task_ids`` (candidates: the model ``columns``, default all), seconds per search
    and access."""
    return {name: {**score_pool(data, S, task_ids, columns, seed), "search_s": round(secs[name], 5),
                   "access": ACCESS.get(name, "")} for name, S in meths.items()}


def nnr_tables(data: BenchData, fp: dict, retrievers: dict, graphs: dict, splits: Splits,
               seed: int) -> tuple[dict, dict, dict]:
    """Table 1: every method on the NNR eval tasks, and per setting (``seen``, ``inductive``, ``seen_pool``: the
    seen tasks with the seen models as the only candidates); with each method's seconds per search."""
    eval_all, n_models = splits.eval_all, len(data.models)
    base_scores, base_secs, lab = method_scores(data, fp, retrievers, graphs, eval_all)
    meths, secs = with_hybrids(base_scores, base_secs, lab, n_models=n_models)
    settings = {}
    for name, ids in (("seen", splits.eval_seen), ("inductive", splits.eval_inductive)):
        if ids:
            sub = [eval_all.index(t) for t in ids]
            settings[name] = method_table(data, ids, {k: v[sub] for k, v in meths.items()}, secs, seed)
    if splits.eval_seen:
        # the paper's Table 1: the candidates are the models the retriever was trained on
        sub, cols = [eval_all.index(t) for t in splits.eval_seen], [data.col[m] for m in splits.seen]
        pool_scores, pool_secs = with_hybrids({k: v[sub][:, cols] for k, v in base_scores.items()}, base_secs,
                                              lab[sub][:, cols], n_models=n_models)
        settings["seen_pool"] = method_table(data, splits.eval_seen, pool_scores, pool_secs, seed, columns=cols)
    return method_table(data, eval_all, meths, secs, seed), settings, secs


def transfer_table(data: BenchData, fp: dict, retrievers: dict, graphs: dict, task_ids) -> dict:
    """Table 2: each method's correlation with the fine-tuned accuracy over the transfer tasks."""
    meths, _ = with_hybrids(*method_scores(data, fp, retrievers, graphs, task_ids), n_models=len(data.models))
    return {name: correlations(S, data.rows(task_ids, data.ft)) for name, S in meths.items()}


def label_blind_table(data: BenchData, fp: dict, retrievers: dict, graphs: dict, task_ids, seed: int) -> dict:
    """Table 1 with the tasks' label names replaced by ``class_0..``."""
    meths, secs = with_hybrids(*method_scores(data, fp, retrievers, graphs, task_ids, label_blind=True),
                               n_models=len(data.models))
    return {"methods": method_table(data, task_ids, meths, secs, seed)}
