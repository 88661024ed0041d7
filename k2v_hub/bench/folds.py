"""Unseen domains as a k-fold over the zoo's source domains.

Each fold holds out whole domains (every source of them): their models, their tasks and their probe kinds are out
of the retriever's training and out of the probe set it queries models on. The fold's retriever is then scored on
the held-out domains' evaluation tasks (images from the pool's evaluation part), the candidates being every model
of the zoo. Every domain is held out once; the bench reports each fold and the mean ± std over folds, and one
table over all folds' tasks (each scored by its own fold's retriever).
"""

from __future__ import annotations

import numpy as np

from ..methods import ESTIMATORS
from ..utils import progress
from .data import BenchData
from .methods import (baseline_scores, data_know2vec, declared_scores, know2vec_scores, label_scores,
                      with_hybrids)
from .scoring import first_stage_recall, pool_task_metrics, score_method, summarise
from .studies import train_on_probes

N_FOLDS = 5
FOLD_METRICS = ("know2vec r@1", "know2vec recall@10", "two-stage-leep@3 r@1", "two-stage-leep@3 label-blind r@1",
                "leep r@1", "data r@1", "data recall@10", "two-stage-data-leep@3 label-blind r@1",
                "fused-data-leep@3 label-blind r@1", "data+know2vec r@1", "data+know2vec recall@10")


def domain_folds(data: BenchData, n_folds: int = N_FOLDS) -> list[list[str]]:
    """The trained domains in at most ``n_folds`` groups of about equal model counts (largest domain first)."""
    counts: dict[str, int] = {}
    for m in data.models:
        d = data.zoo.models[m].get("domain", "")
        counts[d] = counts.get(d, 0) + 1
    folds: list[list[str]] = [[] for _ in range(min(n_folds, len(counts)))]
    sizes = [0] * len(folds)
    for d in sorted(counts, key=lambda d: (-counts[d], d)):
        i = int(np.argmin(sizes))
        folds[i].append(d)
        sizes[i] += counts[d]
    return [sorted(f) for f in folds]


def fold_split(data: BenchData, domains: list[str]) -> dict:
    """What a fold holds out (its domains' sources, with the held-out sources of those domains, and their
    evaluation tasks) and what trains its retriever (the other seen models and their training tasks)."""
    zoo, held = data.zoo, set(domains)
    return {
        "domains": domains,
        "sources": [s["name"] for s in zoo.manifest.get("sources", []) if s.get("domain") in held],
        "tasks": [t for t in zoo.task_ids(kind="nnr") if zoo.task(t)["domain"] in held
                  and zoo.task(t)["split"] in ("eval", "inductive")],
        "train_tasks": [t for t in zoo.task_ids(split="train") if zoo.task(t)["domain"] not in held],
        "train_models": [m for m in data.models if zoo.models[m].get("domain") not in held
                         and zoo.models[m].get("role", "seen") == "seen"],
    }


def unseen_domains(data: BenchData, fp: dict, args, seed: int, show_progress: bool, *,
                   n_folds: int = N_FOLDS) -> dict:
    """Every method on unseen domains, fold by fold (``folds``, ``summary``) and over all folds' tasks."""
    folds, vectors, mixed, tasks, queries = [], [], [], [], []
    for domains in progress(domain_folds(data, n_folds), desc="Unseen-domain folds", disable=not show_progress or None):
        split = fold_split(data, domains)
        if not split["tasks"]:
            continue
        spec = {"source": "builtin", "n": 256, "size": 32, "seed": 0, "kinds": None,
                "exclude_sources": split["sources"]}
        r, graphs, q, fingerprint = train_on_probes(data, split, spec, args, show_progress=False)
        S, _ = know2vec_scores(r, graphs, data, split["tasks"])
        trained = np.isin(data.models, split["train_models"])
        declared, _ = declared_scores(data, split["tasks"])
        M = data_know2vec(S, declared, trained, data.trained_vector_weight)
        folds.append(_fold_row(data, fp, split, S, M, fingerprint, q, seed))
        vectors.append(S)
        mixed.append(M)
        tasks += split["tasks"]
        queries.append(float(np.mean(list(q.values()))))
    if not tasks:
        return {"held_out_domains": [], "methods": {}, "folds": []}
    out = _pooled(data, fp, tasks, np.concatenate(vectors), np.concatenate(mixed), seed)
    out.update({"held_out_domains": sorted(d for f in folds for d in f["domains"]),
                "held_out_sources": sorted(s for f in folds for s in f["sources"]),
                "probe_fingerprint": [f["probe_fingerprint"] for f in folds],
                "queries_per_model": round(float(np.mean(queries)), 1), "folds": folds,
                "summary": {k: {"mean": round(float(np.mean([f[k] for f in folds])), 4),
                                "std": round(float(np.std([f[k] for f in folds])), 4)} for k in FOLD_METRICS}})
    return out


def _fold_row(data: BenchData, fp: dict, split: dict, S: np.ndarray, mixed: np.ndarray, fingerprint: str,
              queries: dict, seed: int) -> dict:
    """One fold: what it held out, and R@1 / first-stage recall of the vectors, LEEP, the data stage (alone and
    ``mixed``: ``data+know2vec`` with the fold's retriever) and the two-stage search."""
    tasks = split["tasks"]
    truth, v, ft = data.truth(tasks), data.rows(tasks, data.v), data.rows(tasks, data.ft)
    base, _ = baseline_scores(data, fp, tasks)
    row = {"domains": split["domains"], "sources": split["sources"], "tasks": len(tasks),
           "train_models": len(split["train_models"]), "train_tasks": len(split["train_tasks"]),
           "probe_fingerprint": fingerprint, "queries_per_model": round(float(np.mean(list(queries.values()))), 1),
           "know2vec r@1": score_method(S, truth, v, ft, seed)["r@1"],
           "know2vec recall@10": first_stage_recall(S, truth, 10, None),
           "leep r@1": score_method(base["leep"], truth, v, ft, seed)["r@1"]}
    declared, _ = declared_scores(data, tasks)
    row["data r@1"] = score_method(declared, truth, v, ft, seed)["r@1"]
    row["data recall@10"] = first_stage_recall(declared, truth, 10, None)
    row["data+know2vec r@1"] = score_method(mixed, truth, v, ft, seed)["r@1"]
    row["data+know2vec recall@10"] = first_stage_recall(mixed, truth, 10, None)
    fingerprint_only, _ = declared_scores(data, tasks, accuracy_weight=0.0)
    row["data-fingerprint r@1"] = score_method(fingerprint_only, truth, v, ft, seed)["r@1"]
    plain, _ = declared_scores(data, tasks, hubness_weight=0.0)
    row["data-no-hubness r@1"] = score_method(plain, truth, v, ft, seed)["r@1"]
    row["data-no-hubness recall@10"] = first_stage_recall(plain, truth, 10, None)
    for blind, key in ((False, "two-stage-leep@3 r@1"), (True, "two-stage-leep@3 label-blind r@1")):
        lab = label_scores(data, tasks, label_blind=blind)
        hybrid, _ = with_hybrids({"know2vec": S, "leep": base["leep"], "data": declared},
                                 {"know2vec": 0.0, "leep": 0.0, "data": 0.0}, lab, n_models=len(data.models))
        row[key] = score_method(hybrid["two-stage-leep@3"], truth, v, ft, seed)["r@1"]
        if blind:
            for name in ("two-stage-data-leep@3", "fused-data-leep@3"):
                row[f"{name} label-blind r@1"] = score_method(hybrid[name], truth, v, ft, seed)["r@1"]
    return row


def _pooled(data: BenchData, fp: dict, tasks: list[str], vector: np.ndarray, mixed: np.ndarray, seed: int) -> dict:
    """The table over every fold's tasks: each method's R@1, its cost per search, the first stage's recall
    (``vector``, ``mixed``: each task's by its own fold's retriever)."""
    meths, secs = baseline_scores(data, fp, tasks)
    meths["know2vec"], secs["know2vec"] = vector, data.feature_pass_s
    meths["data"], secs["data"] = declared_scores(data, tasks)
    secs["data"] += data.feature_pass_s
    lab = label_scores(data, tasks, label_blind=False)
    n_models = len(data.models)
    meths, secs = with_hybrids(meths, secs, lab, n_models=n_models, ks=(3, 5, 10))
    meths["data+know2vec"], secs["data+know2vec"] = mixed, secs["data"] + data.feature_pass_s
    truth = data.truth(tasks)
    first, with_labels, with_data, with_both = {}, {}, {}, {}
    for k in (3, 5, 10):
        first[f"recall@{k}"] = first_stage_recall(vector, truth, k, None)
        with_labels[f"recall@{k}"] = first_stage_recall(vector, truth, k, lab)
        with_data[f"recall@{k}"] = first_stage_recall(meths["data"], truth, k, None)
        with_both[f"recall@{k}"] = first_stage_recall(mixed, truth, k, None)
    images = float(np.mean([len(fp["labels"][t]) for t in tasks]))
    brute_force = {m.name for m in ESTIMATORS}  # they run every model
    table = {}
    for name, S in meths.items():
        s = summarise(pool_task_metrics(data, name, S, tasks, None, seed))
        k = int(name.split("@")[1]) if "@" in name else None
        run = n_models if name in brute_force else (k or 0)
        table[name] = {"r@1": s["r@1"], "r@3": s["r@3"], "rel@1": s["rel@1"], "tau_w": s["tau_w"],
                       "models_run_per_search": run, "queries_per_search": int(round(run * images)),
                       "seconds_per_search": round(float(secs.get(name, 0.0)), 4)}
    return {"tasks": len(tasks), "images_per_task": round(images, 1), "first_stage": first,
            "first_stage_with_labels": with_labels, "first_stage_data": with_data,
            "first_stage_data_know2vec": with_both, "methods": table}
