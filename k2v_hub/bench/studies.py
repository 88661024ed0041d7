"""The bench's studies beyond Tables 1 and 2: oracle views, encoder/loss ablation, seed spread and probe sets
(unseen domains: :mod:`k2v_hub.bench.folds`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..baselines import leep
from ..options import ORACLE_VIEWS
from ..train import train_retriever
from ..utils import progress
from .data import BenchData, Knowledge, ProbeSet
from .methods import data_know2vec, declared_scores, know2vec_scores, label_scores, two_stage
from .scoring import first_stage_recall, score_method, score_pool

#: Source domains kept out of retriever training and out of the probe set in the probe ablation, per profile.
HELD_OUT_DOMAINS = {"tiny": ("textures",), "bench": ("emoji", "textures")}
#: The probe sets of the probe ablation, per profile (``kinds`` not given: every kind).
PROBE_ABLATION = {
    "tiny": [{"n": 64}, {"n": 256}, {"n": 256, "kinds": ("shapes",)}],
    "bench": [{"n": 64}, {"n": 128}, {"n": 256}, {"n": 512},
              {"n": 256, "kinds": ("shapes",)}, {"n": 256, "kinds": ("photos",)},
              {"n": 256, "kinds": ("glyphs",)}, {"n": 256, "kinds": ("shapes", "photos")}],
}


def oracle_views(data: BenchData, retriever, knowledge: Knowledge, task_ids, seed: int) -> dict:
    """One trained retriever, knowledge rebuilt from what each oracle view shows: R@1 and queries per model.

    ``knowledge``: the full view's, already computed.
    """
    truth, v, ft = data.truth(task_ids), data.rows(task_ids, data.v), data.rows(task_ids, data.ft)
    views = {}
    for view in ORACLE_VIEWS:
        shown = knowledge if view == "full" else data.knowledge(retriever, view=view)
        S, _ = know2vec_scores(retriever, shown.graphs, data, task_ids)
        views[view] = {"r@1": score_method(S, truth, v, ft, seed)["r@1"],
                       "queries_per_model": round(float(np.mean(list(shown.queries.values()))), 1)}
    return views


def run_ablation(data: BenchData, graphs, seen, train, eval_tasks, probe: ProbeSet, args, show_progress, *,
                 seen_tasks=()) -> dict:
    """Table 3-4 of the paper: encoder variants (LSTM / concat / average) and losses (without L_MKC, contrastive).

    Each variant reports R@1/R@3 over ``eval_tasks`` (all candidates) and over ``seen_tasks`` with the trained models
    as candidates (the paper's setting, keys ``seen_pool_r@1``/``seen_pool_r@3``).
    """
    variants = [(me, qe, args) for me in ("lstm", "concat", "average") for qe in ("lstm", "concat", "average")]
    variants += [("lstm", "lstm", replace(args, use_mkc=False)), ("lstm", "lstm", replace(args, sal="contrastive"))]
    out = {}
    for me, qe, a in progress(variants, desc="Ablation", disable=not show_progress or None):
        r = data.new_retriever(probe, model_encoder=me, query_encoder=qe, seed=data.seed)
        train_retriever(r, train, a, show_progress=False)
        name = f"M_EXT={me}, Q_EXT={qe}" + ("" if a.use_mkc else ", without L_MKC") + \
            (", L_SAL contrastive" if a.sal == "contrastive" else "")
        out[name] = retriever_recall(r, graphs, data, eval_tasks, seen, seen_tasks)
    return out


def retriever_recall(retriever, graphs, data: BenchData, eval_tasks, seen, seen_tasks=(), ind_tasks=(), *,
                     first_stages: bool = False, leep: np.ndarray | None = None, fusion: float | None = None) -> dict:
    """R@1/R@3 of a retriever's vectors on ``eval_tasks``, and on its ``seen_tasks`` / ``ind_tasks`` subsets.

    ``seen_pool_*``: the seen tasks with only the ``seen`` (trained) models as candidates, the paper's setting.
    ``first_stages``: also `find_model`'s first stage with this retriever (``data+know2vec``: the data score, the
    vector ordering the two best when the best is one of the ``seen`` models), keys ``"data+know2vec <key>"``. With
    ``leep`` (``[eval_tasks, models]``) also the data stage, LEEP over every model and the label-blind two-stage
    (LEEP on 3 candidates of ``data+know2vec``, ``"two-stage-data+know2vec-leep@3 <key>"``); with ``fusion`` too,
    those candidates ordered as `find_model --rerank leep` orders them, LEEP fused with the first stage
    (``"fused-data+know2vec-leep@3 <key>"``).
    """
    S, _ = know2vec_scores(retriever, graphs, data, eval_tasks)

    def recall(M, tasks, cols=None):
        sub = M[[eval_tasks.index(t) for t in tasks]]
        return score_pool(data, sub if cols is None else sub[:, cols], tasks, cols, data.seed)

    def rows(M, prefix="", pool=True):
        s = recall(M, eval_tasks)
        out = {f"{prefix}r@1": s["r@1"], f"{prefix}r@3": s["r@3"]}
        if seen_tasks and pool:
            p = recall(M, seen_tasks, [data.col[m] for m in seen])
            out.update({f"{prefix}seen_pool_r@1": p["r@1"], f"{prefix}seen_pool_r@3": p["r@3"]})
        if seen_tasks:
            out[f"{prefix}seen_r@1"] = recall(M, seen_tasks)["r@1"]
        if ind_tasks:
            out[f"{prefix}inductive_r@1"] = recall(M, ind_tasks)["r@1"]
        return out

    out = rows(S)
    if first_stages or leep is not None:
        declared, _ = declared_scores(data, eval_tasks)
        trained = np.isin(data.models, list(seen))
        mixed = data_know2vec(S, declared, trained, data.trained_vector_weight)
        out.update(rows(mixed, "data+know2vec "))
        if leep is not None:
            blind = label_scores(data, eval_tasks, label_blind=True)
            out.update(rows(declared, "data "))
            out.update(rows(leep, "leep ", pool=False))
            out.update(rows(two_stage(mixed, leep, 3, labels=blind), "two-stage-data+know2vec-leep@3 ", pool=False))
            if fusion is not None:
                out.update(rows(two_stage(mixed, leep, 3, labels=blind, fusion=fusion), "fused-data+know2vec-leep@3 ",
                                pool=False))
    return out


def seed_spread(data: BenchData, graphs, seen, train, eval_tasks, seen_tasks, ind_tasks, probe: ProbeSet, args, seeds,
                show_progress, *, trained=None) -> dict:
    """The main retriever retrained with each seed: how much its recall moves from run to run.

    ``trained``: retrievers already trained with ``args`` per seed (the bench's main one), reused as they are.
    """
    per_seed = {}
    for s in progress(seeds, desc="Seeds", disable=not show_progress or None):
        r = (trained or {}).get(s)
        if r is None:
            r = data.new_retriever(probe, seed=s)
            train_retriever(r, train, replace(args, seed=s), show_progress=False)
        per_seed[str(s)] = retriever_recall(r, graphs, data, eval_tasks, seen, seen_tasks, ind_tasks,
                                            first_stages=True)
    return {"per_seed": per_seed, "summary": spread_summary(per_seed)}


def leep_matrix(data: BenchData, fp: dict, tasks) -> np.ndarray:
    """LEEP of every model on every task, ``[tasks, models]``, from :meth:`BenchData.forward_passes`' ``fp``."""
    return np.asarray([[leep(fp["probs"][(t, m)], fp["labels"][t]) for m in data.models] for t in tasks])


def spread_summary(per_seed: dict) -> dict:
    """Mean, std, min and max over seeds of each R@1 every row of :func:`retriever_recall` has."""
    rows = list(per_seed.values())
    keys = [k for k in rows[0] if k.endswith("r@1") and all(k in row for row in rows)] if rows else []
    return {k: {"mean": round(float(np.mean([row[k] for row in rows])), 4),
                "std": round(float(np.std([row[k] for row in rows])), 4),
                "min": min(row[k] for row in rows), "max": max(row[k] for row in rows)} for k in keys}


def held_out_split(data: BenchData, profile: str) -> dict | None:
    """The domain-held-out split: held domains and sources, their NNR eval tasks, and what trains the retriever."""
    zoo, models = data.zoo, data.models
    dom = {m: zoo.models[m].get("domain", "") for m in models}
    held = {d for d in HELD_OUT_DOMAINS[profile] if any(dom[m].startswith(d) or d in dom[m] for m in models)}
    if not held:
        return None
    in_held = lambda d: any(h in d for h in held)  # noqa: E731
    return {
        "domains": sorted(held),
        "sources": [s["name"] for s in zoo.manifest.get("sources", []) if in_held(s.get("domain", ""))],
        "tasks": [t for t in zoo.task_ids(kind="nnr") if in_held(zoo.task(t)["domain"])
                  and zoo.task(t)["split"] != "train"],
        "train_tasks": [t for t in zoo.task_ids(split="train") if not in_held(zoo.task(t)["domain"])],
        "train_models": [m for m in models if not in_held(dom[m]) and zoo.models[m].get("role", "seen") == "seen"],
    }


def train_on_probes(data: BenchData, split: dict, probe: dict, args, show_progress: bool):
    """Query every model on a probe set, train a retriever on the split's training side; ``(retriever, graphs,
    queries per model, probe fingerprint)``."""
    probe_set = ProbeSet.load(probe)
    r = data.new_retriever(probe_set, seed=args.seed)
    knowledge = data.knowledge(r, probe=probe_set.spec)
    models, tasks = split["train_models"], split["train_tasks"]
    train_retriever(r, data.supervised(knowledge, models, tasks), args, show_progress=show_progress)
    return r, knowledge.graphs, knowledge.queries, probe_set.fingerprint


def probe_ablation(data: BenchData, profile: str, fp: dict, args, seed: int, show_progress: bool) -> dict:
    """Probe-set size and composition against unseen-domain retrieval and black-box queries per model.

    Each row re-queries every model on its probe set and retrains the retriever on the held-out split's training
    side; it reports the vector search (R@1, R@3, first-stage recall@10) and the two-stage LEEP@3 on the
    unseen-domain tasks. ``kinds`` not given: every kind the machine can build that the held-out domains leave.
    """
    split = held_out_split(data, profile)
    if split is None:
        return {}
    tasks = split["tasks"]
    truth, v, ft = data.truth(tasks), data.rows(tasks, data.v), data.rows(tasks, data.ft)
    leep_scores = leep_matrix(data, fp, tasks)
    lab = label_scores(data, tasks, label_blind=False)
    rows = {}
    for cfg in progress(PROBE_ABLATION[profile], desc="Probe ablation", disable=not show_progress or None):
        spec = {"source": "builtin", "size": 32, "seed": 0, "kinds": cfg.get("kinds"), "n": cfg["n"],
                "exclude_sources": split["sources"]}
        r, graphs, queries, fingerprint = train_on_probes(data, split, spec, args, show_progress=False)
        S, _ = know2vec_scores(r, graphs, data, tasks)
        s = score_method(S, truth, v, ft, seed)
        two = score_method(two_stage(S, leep_scores, 3, labels=lab), truth, v, ft, seed)
        name = f"n={cfg['n']}, kinds={'+'.join(cfg['kinds']) if cfg.get('kinds') else 'all'}"
        rows[name] = {"r@1": s["r@1"], "r@3": s["r@3"], "recall@10": first_stage_recall(S, truth, 10, None),
                      "two-stage-leep@3 r@1": two["r@1"], "queries_per_model": round(float(np.mean(list(
                          queries.values()))), 1), "probe_fingerprint": fingerprint}
    return rows
