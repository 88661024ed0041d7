"""`k2v-hub bench`: every method side by side on the offline zoo, in one run (Tables 1 and 2 of the paper).

What one run does, in order:

1. builds (or reuses) the zoo of the profile, with its tasks and measured ground truth;
2. queries every model as a black box on the probe set (knowledge records, cached), for each oracle view;
3. trains the retriever (supervised, on the ``train`` tasks of the ``seen`` models) and, from the index alone,
   a self-supervised one and a supervised+self-supervised (adapted) one;
4. builds the index through the product path (``build_index``) and times ``find_model`` on real task folders;
5. runs every baseline from real forward passes (LogME, LEEP, NCE, H-score, NLEEP, LogME on probabilities),
   the trivial rankings (random, popularity, size, label_match, card_dataset) and the two-stage hybrid;
6. scores each method per task against the ground truth and writes JSON + Markdown + a picture.

Evaluation sets. ``methods``: NNR evaluation tasks (``eval`` tasks of seen models and ``inductive`` tasks of unseen
models), the best model being the one with the highest measured V.Acc over the whole zoo. ``settings`` splits them
(``seen``, ``inductive``), and ``seen_pool`` scores the seen tasks with the trained models as the only candidates,
the zoo of the paper's Table 1 (where no model is new to the retriever). ``transfer``: correlation with Ft.Acc on
transfer tasks. ``label_blind``: the same with the tasks' label names replaced by ``class_0..``.
``unseen_domains``: whole source domains kept out of retriever training and out of the probe set. Ties in a method's
scores are broken by a fixed random permutation per task (never by model name), so a constant method scores like
``random``.

Timing. ``find_model_s``: median of 8 whole ``find_model`` calls in one process (load, features, encode, search; the
backbone stays in memory after the first call, as in a notebook or a service). ``brute_force_logme_s``: per search,
every model loaded once, run on the task's images and scored with LogME; ``speedup_vs_logme_models_in_memory``
leaves the loads out, as if every model of the org stayed in memory.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import __version__
from .find import LABEL_WEIGHT
from .utils import logger, progress

PROFILE_STEPS = {"tiny": 200, "bench": 800}
ADAPT_STEPS = {"tiny": 60, "bench": 200}
HELD_OUT_DOMAINS = {"tiny": ("textures",), "bench": ("emoji", "textures")}
SETTING_NOTES = {
    "seen": " (eval tasks of models the retriever trained on; candidates: every model)",
    "inductive": " (tasks of models the retriever never saw; candidates: every model)",
    "seen_pool": " (eval tasks of trained models; candidates: the trained models only, the paper's Table 1)",
}
ACCESS = {
    "know2vec": "black-box", "know2vec+labels": "black-box", "know2vec-ssl": "black-box",
    "know2vec-adapted": "black-box", "know2vec+leep@3": "black-box (predictions on 3 models)",
    "two-stage-leep@3": "black-box (predictions on 3 models)", "logme": "grey-box (features)",
    "h_score": "grey-box (features)", "h_score_reg": "grey-box (features)", "nleep": "grey-box (features)",
    "leep": "black-box (predictions, all models)", "nce": "black-box (predictions, all models)",
    "logme_probs": "black-box (predictions, all models)", "random": "none", "popularity": "metadata",
    "size": "metadata (safetensors header)", "label_match": "metadata (labels)", "card_dataset": "metadata (card)",
}


# ------------------------------------------------------------------ metrics
def _order(scores: np.ndarray, rng_seed: int) -> np.ndarray:
    """Models best first; ties broken by a fixed random permutation."""
    perm = np.random.default_rng(rng_seed).permutation(len(scores))
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64)[perm], nan=-np.inf)
    return perm[np.argsort(-s, kind="stable")]


def score_method(S: np.ndarray, truth: np.ndarray, v_acc: np.ndarray, ft_acc: np.ndarray, seed: int = 0) -> dict:
    """Metrics of one method over tasks: ``S``, ``truth``, ``v_acc``, ``ft_acc`` are ``[tasks, models]``."""
    from .baselines import weighted_kendall_tau

    out = {k: [] for k in ("r@1", "r@3", "rel@1", "rel@3", "v_acc", "ft_acc", "tau_w")}
    for i in range(len(S)):
        order = _order(S[i], seed + i)
        best = truth[i].max()
        winners = set(np.flatnonzero(truth[i] >= best - 1e-9))
        out["r@1"].append(float(order[0] in winners))
        out["r@3"].append(float(bool(winners & set(order[:3]))))
        denom = best if best > 0 else 1.0
        out["rel@1"].append(float(truth[i][order[0]] / denom))
        out["rel@3"].append(float(truth[i][order[:3]].max() / denom))
        out["v_acc"].append(float(v_acc[i][order[0]]))
        out["ft_acc"].append(float(ft_acc[i][order[0]]))
        s = np.nan_to_num(S[i], nan=-1e9) + 1e-9 * np.random.default_rng(seed + i).random(len(S[i]))
        out["tau_w"].append(float(weighted_kendall_tau(s, truth[i])))
    return {k: round(float(np.mean(v)), 4) if v else None for k, v in out.items()}


def score_pool(data: "BenchData", S: np.ndarray, task_ids, columns=None, seed: int = 0) -> dict:
    """:func:`score_method` of ``S [tasks, models]`` against ``task_ids``' truth, the candidates being the model
    ``columns`` (default: every model)."""
    truth, v, ft = data.truth(task_ids), data.rows(task_ids, data.v), data.rows(task_ids, data.ft)
    if columns is not None:
        truth, v, ft = truth[:, columns], v[:, columns], ft[:, columns]
    return score_method(S, truth, v, ft, seed)


def correlations(S: np.ndarray, truth: np.ndarray) -> dict:
    """Mean Pearson, Spearman and weighted tau between scores and truth over tasks (rows)."""
    from .baselines import pearson, spearman, weighted_kendall_tau

    vals = {"pearson": [], "spearman": [], "tau_w": []}
    for s, t in zip(S, truth):
        s = np.nan_to_num(s, nan=np.nanmin(s) if np.isfinite(s).any() else 0.0)
        vals["pearson"].append(pearson(s, t))
        vals["spearman"].append(spearman(s, t))
        vals["tau_w"].append(weighted_kendall_tau(s, t))
    return {k: round(float(np.mean(v)), 4) for k, v in vals.items()}


# ------------------------------------------------------------------ data
class BenchData:
    """Everything one bench run needs, computed once: zoo, features, knowledge, forward passes."""

    def __init__(self, zoo_dir: Path, work: Path, *, seed: int, show_progress: bool):
        from .features import FeatureExtractor
        from .hub import LocalSource
        from .zoo.data import ZooData

        self.zoo = ZooData(zoo_dir)
        self.work = work
        self.seed = seed
        self.show = show_progress
        self.source = LocalSource(zoo_dir)
        self.models = self.zoo.model_ids
        self.extractor = FeatureExtractor.from_pretrained(None)
        self.task_ids = [t["task_id"] for t in self.zoo.tasks]
        self.means = self.zoo.task_means(self.task_ids, self.extractor, show_progress=show_progress)
        self.v = self.zoo.scores(self.task_ids, self.models, "v_acc")
        self.ft = self.zoo.scores(self.task_ids, self.models, "ft_acc")
        self.row = {t: i for i, t in enumerate(self.task_ids)}
        self.col = {m: j for j, m in enumerate(self.models)}
        self.labels = {m: list(json.loads((self.zoo.root / m / "config.json").read_text())["id2label"].values())
                       for m in self.models}

    def truth(self, task_ids) -> np.ndarray:
        """Per task, the accuracy that defines its best model (V.Acc for NNR, Ft.Acc for transfer)."""
        return np.stack([self.v[self.row[t]] if self.zoo.task(t)["kind"] == "nnr" else self.ft[self.row[t]]
                         for t in task_ids])

    def rows(self, task_ids, mat):
        """Rows of a ``[all tasks, models]`` matrix."""
        return mat[[self.row[t] for t in task_ids]]

    def supervised(self, graphs: dict, model_ids, task_ids):
        """Supervised training data: ``task_ids`` against ``model_ids`` with their measured ground truth."""
        from .train import supervised_data

        rows = [self.truth([t])[0][[self.col[m] for m in model_ids]] for t in task_ids]
        return supervised_data([graphs[m] for m in model_ids], model_ids, [self.means[t] for t in task_ids], rows)

    def knowledge(self, retriever, *, probe=None, view="full"):
        """Records and graphs of every model for a probe set and view (queries cached on disk)."""
        from .pipeline import make_indexer

        indexer = make_indexer(retriever, retriever_id="bench", probe=probe, oracle_view=view,
                               extractor=self.extractor, cache_dir=self.work / "knowledge")
        records, graphs, queries = {}, {}, {}
        for m in progress(self.models, desc=f"Knowledge ({view})", disable=not self.show or None):
            record, _ = indexer.knowledge_for(self.source, self.source.model_ref(m))
            records[m], graphs[m], queries[m] = record, indexer.graph(record), record.n_queries
        return indexer, records, graphs, queries

    def forward_passes(self, task_ids) -> dict:
        """Per model: probs and penultimate features on every task's support images, and seconds per task.

        A task's seconds include the model's whole load time: a user with one dataset loads every model once.
        """
        import datasets
        import torch
        from transformers import AutoModelForImageClassification
        from transformers.utils import logging as hf_logging

        from .zoo.models import images_to_pixel_values, predict_logits_and_features

        hf_logging.disable_progress_bar()
        cache = self.work / "forward.npz"
        support = {}
        for t in task_ids:
            ds = datasets.load_from_disk(str(self.zoo.task_path(t)))["support"]
            support[t] = (images_to_pixel_values(list(ds["image"])), np.asarray(ds["label"]))
        out = {"probs": {}, "feats": {}, "labels": {t: support[t][1] for t in task_ids}, "seconds": {}, "load_s": {}}
        for m in progress(self.models, desc="Forward passes (baselines)", disable=not self.show or None):
            t0 = time.perf_counter()
            model = AutoModelForImageClassification.from_pretrained(self.zoo.root / m, use_safetensors=True,
                                                                    local_files_only=True).eval()
            load_s = out["load_s"][m] = time.perf_counter() - t0
            for t in task_ids:
                t1 = time.perf_counter()
                logits, feats = predict_logits_and_features(model, support[t][0])
                out["probs"][(t, m)] = torch.softmax(torch.from_numpy(logits), -1).numpy()
                out["feats"][(t, m)] = feats
                out["seconds"][(t, m)] = time.perf_counter() - t1 + load_s
        logger.info("forward passes cached in memory (%s)", cache)
        return out


def baseline_scores(data: BenchData, fp: dict, task_ids, *, label_blind: bool = False) -> tuple[dict, dict]:
    """Score matrices ``[tasks, models]`` of every baseline, and seconds per task for each."""
    from . import baselines as B
    from .hub import read_card_metadata

    methods, secs = {}, {}
    n, m = len(task_ids), len(data.models)
    cache = data.__dict__.setdefault("_estimates", {})
    key = tuple(task_ids)
    if key in cache:
        methods, secs = {k: v.copy() for k, v in cache[key][0].items()}, dict(cache[key][1])
    estimators = (("logme", B.logme, "feats"), ("h_score", B.h_score, "feats"),
                  ("h_score_reg", lambda f, y: B.h_score(f, y, shrinkage="ledoit_wolf"), "feats"),
                  ("nleep", B.nleep, "feats"),
                  ("leep", B.leep, "probs"), ("nce", B.nce_from_probs, "probs"), ("logme_probs", B.logme_probs, "probs"))
    for name, fn, kind in ([] if key in cache else estimators):
        S, T = np.zeros((n, m)), np.zeros(n)
        for i, t in enumerate(progress(task_ids, desc=name, disable=not data.show or None)):
            y = fp["labels"][t]
            for j, model in enumerate(data.models):
                t0 = time.perf_counter()
                try:
                    S[i, j] = fn(fp[kind][(t, model)], y)
                except Exception as exc:  # noqa: BLE001 - a failed estimate ranks last
                    logger.info("%s failed on %s/%s: %s", name, t, model, exc)
                    S[i, j] = np.nan
                T[i] += time.perf_counter() - t0 + fp["seconds"][(t, model)]
        methods[name], secs[name] = S, float(T.mean())
    cache[key] = ({k: v.copy() for k, v in methods.items()}, dict(secs))
    meta = {mid: data.zoo.models[mid] for mid in data.models}
    pop = B.popularity_scores({k: {"downloads": v.get("downloads", 0), "likes": v.get("likes", 0)}
                               for k, v in meta.items()})
    sizes = B.size_scores({mid: B.param_count_from_safetensors(data.zoo.root / mid / "model.safetensors")
                           for mid in data.models})
    cards = {mid: read_card_metadata(data.zoo.root / mid / "README.md").get("datasets") or [] for mid in data.models}
    rows = {"random": [], "popularity": [], "size": [], "label_match": [], "card_dataset": []}
    for i, t in enumerate(task_ids):
        task = data.zoo.task(t)
        names = [f"class_{k}" for k in range(len(task["class_names"]))] if label_blind else task["class_names"]
        rnd = B.random_scores(data.models, data.seed + i)
        lm = B.label_match_scores(names, data.labels)
        cd = B.card_dataset_scores(f"{data.zoo.org}/{task['source']}", cards)
        for key, d in (("random", rnd), ("popularity", pop), ("size", sizes), ("label_match", lm),
                       ("card_dataset", cd)):
            rows[key].append([d[mid] for mid in data.models])
    for key, r in rows.items():
        methods[key], secs[key] = np.asarray(r, dtype=np.float64), 0.0
    return methods, secs


def label_scores(data: BenchData, task_ids, *, label_blind: bool) -> np.ndarray:
    """Label-name overlap ``[tasks, models]`` (zero everywhere in label-blind mode)."""
    from .baselines import label_match_scores

    out = []
    for t in task_ids:
        names = data.zoo.task(t)["class_names"]
        if label_blind:
            names = [f"class_{k}" for k in range(len(names))]
        d = label_match_scores(names, data.labels)
        out.append([d[m] for m in data.models])
    return np.asarray(out)


def know2vec_scores(retriever, graphs: dict, data: BenchData, task_ids) -> tuple[np.ndarray, float]:
    """Cosine scores ``[tasks, models]`` and the mean seconds per task (encode + search)."""
    M = retriever.embed_models([graphs[m] for m in data.models])
    t0 = time.perf_counter()
    T = np.stack([retriever.embed_task(data.means[t]) for t in task_ids]) if task_ids else np.zeros((0, M.shape[1]))
    S = T @ M.T
    return S, (time.perf_counter() - t0) / max(1, len(task_ids))


def _candidates(vector: np.ndarray, labels: np.ndarray | None, i: int) -> np.ndarray:
    """Task ``i``'s first-stage order: the vector ranking, or `find_model`'s vectors + label names interleaved."""
    from .find import first_stage_order

    return _order(vector[i], i) if labels is None else first_stage_order(vector[i], labels[i])


def two_stage(first: np.ndarray, second: np.ndarray, k: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Re-rank ``k`` candidates of ``first`` by ``second``; the rest keep their first-stage order below them.

    With ``labels`` (label-name overlap ``[tasks, models]``) the candidates are those `find_model` takes: vectors
    and label names interleaved (:func:`k2v_hub.find.first_stage_order`); without, the top-k of ``first``.
    """
    out = np.full_like(first, -1e6, dtype=np.float64)
    for i in range(len(first)):
        order = _candidates(first, labels, i)
        top = order[:k]
        rest = order[k:]
        sec = np.nan_to_num(second[i][top], nan=-1e5)
        out[i, top] = 1e3 + (sec - sec.min()) / (np.ptp(sec) + 1e-12)
        out[i, rest] = -np.arange(len(rest), dtype=np.float64)
    return out


# ------------------------------------------------------------------ the run
def with_hybrids(meths: dict, secs: dict, lab: np.ndarray, *, n_models: int, ks=(3,)) -> tuple[dict, dict]:
    """Add the label and two-stage hybrids to base score matrices (``lab``: label-name overlap, same shape).

    The LEEP hybrids (``know2vec+leep@k``: vector candidates; ``two-stage-leep@k``: `find_model`'s candidates) need
    a ``leep`` matrix; each is charged ``k`` of the ``n_models`` forward passes.
    """
    meths, secs = dict(meths), dict(secs)
    meths["know2vec+labels"] = meths["know2vec"] + LABEL_WEIGHT * lab
    secs["know2vec+labels"] = secs["know2vec"]
    for k in ks if "leep" in meths else ():
        meths[f"know2vec+leep@{k}"] = two_stage(meths["know2vec"], meths["leep"], k)
        meths[f"two-stage-leep@{k}"] = two_stage(meths["know2vec"], meths["leep"], k, labels=lab)
        for name in (f"know2vec+leep@{k}", f"two-stage-leep@{k}"):
            secs[name] = secs["know2vec"] + secs["leep"] * k / n_models
    return meths, secs


def run_bench(profile: str = "tiny", *, out_dir="benchmarks/results", work_dir=None, label_blind: bool = True,
              steps: int | None = None, seed: int = 0, show_progress: bool = True, command: str = "",
              ablation: bool = False, seeds: int = 1) -> tuple:
    """Run the benchmark; return ``(results, {"json": path, "markdown": path, "picture": path})``."""
    from .index import build_index
    from .pipeline import k2v_home, new_retriever
    from .plots import plot_embedding_space
    from .train import TrainingArguments, combine_training_data, self_supervised_data, train_retriever
    from .zoo.build import build_zoo

    t_start = time.perf_counter()
    work = Path(work_dir or k2v_home() / f"bench-{profile}")
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = steps or PROFILE_STEPS[profile]
    t0 = time.perf_counter()
    build_zoo(work / "zoo", profile, seed=seed, show_progress=show_progress)
    zoo_s = time.perf_counter() - t0
    data = BenchData(work / "zoo", work, seed=seed, show_progress=show_progress)
    zoo, models = data.zoo, data.models
    seen = [m for m in models if zoo.models[m].get("role", "seen") == "seen"]
    train_tasks = zoo.task_ids(split="train")
    eval_seen = zoo.task_ids(split="eval", kind="nnr")
    eval_ind = zoo.task_ids(split="inductive", kind="nnr")
    eval_all = eval_seen + eval_ind
    transfer = zoo.task_ids(kind="transfer")
    transfer_eval = [t for t in transfer if zoo.task(t)["split"] != "train"] or transfer

    from .knowledge import load_probe_set

    _, fingerprint, spec = load_probe_set(None)
    base = new_retriever(data.extractor, probe_spec=spec, probe_fingerprint=fingerprint)
    indexer, records, graphs, queries = data.knowledge(base)
    args = TrainingArguments(steps=steps, seed=seed)

    def fresh(**kw):
        return new_retriever(data.extractor, probe_spec=spec, probe_fingerprint=fingerprint, seed=seed, **kw)

    # --- supervised retriever (the main method), trained on seen models' train tasks
    supervised = data.supervised(graphs, seen, train_tasks)
    retriever = fresh()
    t0 = time.perf_counter()
    train_info = train_retriever(retriever, supervised, args, show_progress=show_progress)
    train_s = time.perf_counter() - t0
    retriever.save_pretrained(work / "retriever")
    # --- self-supervised only (from the index alone), and supervised + self-supervised adaptation
    from PIL import Image

    probe_feats = data.extractor([Image.fromarray(p) for p in indexer.probes], show_progress=False)
    ssl = self_supervised_data([graphs[m] for m in models], models, [records[m] for m in models], probe_feats,
                               seed=seed)
    ssl_retriever = fresh()
    train_retriever(ssl_retriever, ssl, args, show_progress=show_progress)
    adapted = fresh()
    adapted.load_state_dict(retriever.state_dict())
    train_retriever(adapted, combine_training_data(supervised, ssl),
                    replace(args, steps=ADAPT_STEPS[profile], lr=5e-4), show_progress=show_progress)

    # --- the product path: index + find_model timings on real task folders
    from .find import find_model
    from .pipeline import make_indexer

    prod = make_indexer(retriever, retriever_id=str((work / "retriever").resolve()), extractor=data.extractor,
                        cache_dir=work / "knowledge")
    t0 = time.perf_counter()
    report = build_index(data.source, zoo.org, work / "index", prod, show_progress=show_progress)
    index_s = time.perf_counter() - t0
    timing_tasks = eval_all[: min(8, len(eval_all))]
    find_times, feat_times = [], []
    for t in timing_tasks:
        matches = find_model(zoo.task_path(t), work / "index", top_k=5, rerank=None, show_progress=False)
        tm = matches.timings
        find_times.append(tm["load_s"] + tm["features_s"] + tm["encode_s"] + tm["search_s"])
        feat_times.append(tm["features_s"])

    # --- brute-force baselines from real forward passes
    all_eval = list(dict.fromkeys(eval_all + transfer_eval))
    fp = data.forward_passes(all_eval)
    results = {"profile": profile, "command": command or f"k2v-hub bench --profile {profile}",
               "k2v_hub_version": __version__, "seed": seed,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "counts": {"models": len(models), "seen_models": len(seen), "unseen_models": len(models) - len(seen),
                          "train_tasks": len(train_tasks), "eval_tasks_seen": len(eval_seen),
                          "eval_tasks_inductive": len(eval_ind), "transfer_tasks": len(transfer_eval),
                          "sources": len(zoo.manifest.get("sources", []))}}

    def base_methods(task_ids, *, blind=False):
        meths, secs = baseline_scores(data, fp, task_ids, label_blind=blind)
        for name, r in (("know2vec", retriever), ("know2vec-ssl", ssl_retriever), ("know2vec-adapted", adapted)):
            meths[name], secs[name] = know2vec_scores(r, graphs, data, task_ids)
        return meths, secs, label_scores(data, task_ids, label_blind=blind)

    def all_methods(task_ids, *, blind=False):
        return with_hybrids(*base_methods(task_ids, blind=blind), n_models=len(models))

    def table(task_ids, meths, secs, columns=None):
        return {name: {**score_pool(data, S, task_ids, columns, seed), "search_s": round(secs[name], 5),
                       "access": ACCESS.get(name, "")} for name, S in meths.items()}

    base, base_secs, lab = base_methods(eval_all)
    meths, secs = with_hybrids(base, base_secs, lab, n_models=len(models))
    results["methods"] = table(eval_all, meths, secs)
    results["settings"] = {}
    for name, ids in (("seen", eval_seen), ("inductive", eval_ind)):
        if ids:
            sub = [eval_all.index(t) for t in ids]
            results["settings"][name] = table(ids, {k: v[sub] for k, v in meths.items()}, secs)
    if eval_seen:
        # the paper's Table 1: the candidates are the models the retriever was trained on
        sub, cols = [eval_all.index(t) for t in eval_seen], [data.col[m] for m in seen]
        pool = with_hybrids({k: v[sub][:, cols] for k, v in base.items()}, base_secs, lab[sub][:, cols],
                            n_models=len(models))
        results["settings"]["seen_pool"] = table(eval_seen, *pool, columns=cols)
    tm, ts = all_methods(transfer_eval)
    results["transfer"] = {name: correlations(S, data.rows(transfer_eval, data.ft)) for name, S in tm.items()}
    if label_blind:
        bm, bs = all_methods(eval_all, blind=True)
        results["label_blind"] = {"methods": table(eval_all, bm, bs)}

    # --- oracle views: one trained retriever, knowledge rebuilt from what each view shows
    views = {}
    for view in ("full", "top5", "label"):
        _, _, g_view, q_view = data.knowledge(retriever, view=view) if view != "full" else (None, None, graphs, queries)
        S, _ = know2vec_scores(retriever, g_view, data, eval_all)
        views[view] = {"r@1": score_method(S, data.truth(eval_all), data.rows(eval_all, data.v),
                                           data.rows(eval_all, data.ft), seed)["r@1"],
                       "queries_per_model": round(float(np.mean(list(q_view.values()))), 1)}
    results["oracle_views"] = views

    # --- unseen domains: domains out of retriever training and out of the probe set
    results["unseen_domains"] = unseen_domains(data, profile, fp, args, seed, show_progress)

    if ablation:
        results["ablation"] = run_ablation(data, graphs, seen, supervised, eval_all, spec, fingerprint, args,
                                           show_progress, seen_tasks=eval_seen)
    if seeds > 1:
        results["seed_spread"] = seed_spread(data, graphs, seen, supervised, eval_all, eval_seen, eval_ind, spec,
                                             fingerprint, args, list(range(seed, seed + seeds)), show_progress,
                                             trained={seed: retriever})

    # --- timing
    logme_per_task = secs["logme"]
    find_s = float(np.median(find_times)) if find_times else float("nan")
    results["timing"] = {
        "find_model_s": round(find_s, 4), "feature_pass_s": round(float(np.median(feat_times)), 4),
        "brute_force_logme_s": round(logme_per_task, 4),
        "speedup_vs_logme": round(logme_per_task / find_s, 2) if find_s else None,
        "brute_force_logme_s_per_model": round(logme_per_task / len(models), 4),
        "brute_force_model_load_s": round(float(sum(fp["load_s"].values())), 4),
        "speedup_vs_logme_models_in_memory": round((logme_per_task - sum(fp["load_s"].values())) / find_s, 2)
        if find_s else None,
        "models_for_100x": int(np.ceil(100 * find_s / (logme_per_task / len(models)))) if find_s else None,
        "ratio_vs_feature_pass": round(find_s / float(np.median(feat_times)), 3) if feat_times else None,
        "vector_search_s": round(secs["know2vec"], 6),
        "zoo_build_s": round(zoo_s, 1), "train_s": round(train_s, 1), "index_s": round(index_s, 1),
        "queries_per_model_mean": round(float(np.mean(list(queries.values()))), 1),
        "queries_per_model_max": int(max(queries.values())),
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    results["training"] = {k: v for k, v in train_info.items() if k != "args"}
    results["index_report"] = {k: (len(v) if isinstance(v, (list, dict)) else v)
                               for k, v in report.to_dict().items() if k != "path"}
    M = retriever.embed_models([graphs[m] for m in models])
    picture = plot_embedding_space(M, [zoo.models[m].get("domain", "?") for m in models],
                                   out_dir / f"{profile}-embedding-space.png", names=models,
                                   method="tsne" if len(models) > 20 else "pca",
                                   title=f"Know2Vec model vectors ({profile} zoo), colour = source domain")
    paths = {"json": out_dir / f"{profile}.json", "markdown": out_dir / f"{profile}.md", "picture": picture}
    results["picture"] = str(picture)
    paths["json"].write_text(json.dumps(results, indent=2))
    paths["markdown"].write_text(to_markdown(results))
    return results, paths


def run_ablation(data: BenchData, graphs, seen, train, eval_tasks, spec, fingerprint, args,
                 show_progress, *, seen_tasks=()) -> dict:
    """Table 3-4 of the paper: encoder variants (LSTM / concat / average) and losses (without L_MKC, contrastive).

    Each variant reports R@1/R@3 over ``eval_tasks`` (all candidates) and over ``seen_tasks`` with the trained models
    as candidates (the paper's setting, keys ``seen_pool_r@1``/``seen_pool_r@3``).
    """
    from .pipeline import new_retriever
    from .train import train_retriever

    variants = [(me, qe, args) for me in ("lstm", "concat", "average") for qe in ("lstm", "concat", "average")]
    variants += [("lstm", "lstm", replace(args, use_mkc=False)), ("lstm", "lstm", replace(args, sal="contrastive"))]
    out = {}
    for me, qe, a in progress(variants, desc="Ablation", disable=not show_progress or None):
        r = new_retriever(data.extractor, probe_spec=spec, probe_fingerprint=fingerprint, model_encoder=me,
                          query_encoder=qe, seed=data.seed)
        train_retriever(r, train, a, show_progress=False)
        name = f"M_EXT={me}, Q_EXT={qe}" + ("" if a.use_mkc else ", without L_MKC") + \
            (", L_SAL contrastive" if a.sal == "contrastive" else "")
        out[name] = retriever_recall(r, graphs, data, eval_tasks, seen, seen_tasks)
    return out


def retriever_recall(retriever, graphs, data: BenchData, eval_tasks, seen, seen_tasks=(), ind_tasks=()) -> dict:
    """R@1/R@3 of a retriever's vectors on ``eval_tasks``, and on its ``seen_tasks`` / ``ind_tasks`` subsets.

    ``seen_pool_*``: the seen tasks with only the ``seen`` (trained) models as candidates, the paper's setting.
    """
    S, _ = know2vec_scores(retriever, graphs, data, eval_tasks)

    def recall(tasks, cols=None):
        sub = S[[eval_tasks.index(t) for t in tasks]]
        return score_pool(data, sub if cols is None else sub[:, cols], tasks, cols, data.seed)

    s = recall(eval_tasks)
    out = {"r@1": s["r@1"], "r@3": s["r@3"]}
    if seen_tasks:
        p = recall(seen_tasks, [data.col[m] for m in seen])
        out.update({"seen_pool_r@1": p["r@1"], "seen_pool_r@3": p["r@3"], "seen_r@1": recall(seen_tasks)["r@1"]})
    if ind_tasks:
        out["inductive_r@1"] = recall(ind_tasks)["r@1"]
    return out


def seed_spread(data: BenchData, graphs, seen, train, eval_tasks, seen_tasks, ind_tasks, spec, fingerprint,
                args, seeds, show_progress, *, trained=None) -> dict:
    """The main retriever retrained with each seed: how much its recall moves from run to run.

    ``trained``: retrievers already trained with ``args`` per seed (the bench's main one), reused as they are.
    """
    from .pipeline import new_retriever
    from .train import train_retriever

    per_seed = {}
    for s in progress(seeds, desc="Seeds", disable=not show_progress or None):
        r = (trained or {}).get(s)
        if r is None:
            r = new_retriever(data.extractor, probe_spec=spec, probe_fingerprint=fingerprint, seed=s)
            train_retriever(r, train, replace(args, seed=s), show_progress=False)
        per_seed[str(s)] = retriever_recall(r, graphs, data, eval_tasks, seen, seen_tasks, ind_tasks)
    summary = {}
    for key in ("seen_pool_r@1", "seen_r@1", "inductive_r@1", "r@1"):
        vals = [row[key] for row in per_seed.values() if key in row]
        if vals:
            summary[key] = {"mean": round(float(np.mean(vals)), 4), "std": round(float(np.std(vals)), 4),
                            "min": min(vals), "max": max(vals)}
    return {"per_seed": per_seed, "summary": summary}


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
    from .knowledge import load_probe_set
    from .pipeline import new_retriever
    from .train import train_retriever

    _, fingerprint, spec = load_probe_set(probe)
    r = new_retriever(data.extractor, probe_spec=spec, probe_fingerprint=fingerprint, seed=args.seed)
    _, _, graphs, queries = data.knowledge(r, probe=spec)
    models, tasks = split["train_models"], split["train_tasks"]
    train_retriever(r, data.supervised(graphs, models, tasks), args, show_progress=show_progress)
    return r, graphs, queries, fingerprint


def unseen_domains(data: BenchData, profile: str, fp: dict, args, seed: int, show_progress: bool) -> dict:
    """Domains held out of retriever training and probes; every method on their NNR tasks."""
    split = held_out_split(data, profile)
    if split is None:
        return {"held_out_domains": [], "methods": {}}
    models, tasks, held, held_sources = data.models, split["tasks"], split["domains"], split["sources"]
    spec = {"source": "builtin", "n": 256, "size": 32, "seed": 0, "kinds": None, "exclude_sources": held_sources}
    r, graphs, queries, fingerprint = train_on_probes(data, split, spec, args, show_progress)
    meths, secs = baseline_scores(data, fp, tasks) if all((t, models[0]) in fp["probs"] for t in tasks) else ({}, {})
    meths["know2vec"], secs["know2vec"] = know2vec_scores(r, graphs, data, tasks)
    lab = label_scores(data, tasks, label_blind=False)
    n_models = len(models)
    meths, secs = with_hybrids(meths, secs, lab, n_models=n_models, ks=(3, 5, 10))
    truth = data.truth(tasks)
    first_recall, with_labels = {}, {}
    for k in (3, 5, 10):
        for out, lab_i in ((first_recall, None), (with_labels, lab)):
            out[f"recall@{k}"] = _first_stage_recall(meths["know2vec"], truth, k, lab_i)
    images = float(np.mean([len(fp["labels"][t]) for t in tasks])) if fp.get("labels") and tasks[0] in fp["labels"] \
        else 0.0
    v, ft = data.rows(tasks, data.v), data.rows(tasks, data.ft)
    brute = ("leep", "nce", "logme_probs", "logme", "h_score", "h_score_reg", "nleep")
    table = {}
    for name, S in meths.items():
        s = score_method(S, truth, v, ft, seed)
        k = int(name.split("@")[1]) if "@" in name else None
        run = n_models if name in brute else (k or 0)
        table[name] = {"r@1": s["r@1"], "r@3": s["r@3"], "rel@1": s["rel@1"], "tau_w": s["tau_w"],
                       "models_run_per_search": run, "queries_per_search": int(round(run * images)),
                       "seconds_per_search": round(float(secs.get(name, 0.0)), 4)}
    return {"held_out_domains": held, "held_out_sources": held_sources, "tasks": len(tasks),
            "images_per_task": round(images, 1), "probe_fingerprint": fingerprint, "first_stage": first_recall,
            "first_stage_with_labels": with_labels,
            "queries_per_model": round(float(np.mean(list(queries.values()))), 1), "methods": table}


PROBE_ABLATION = {
    "tiny": [{"n": 64}, {"n": 256}, {"n": 256, "kinds": ("shapes",)}],
    "bench": [{"n": 64}, {"n": 128}, {"n": 256}, {"n": 512},
              {"n": 256, "kinds": ("shapes",)}, {"n": 256, "kinds": ("photos",)},
              {"n": 256, "kinds": ("glyphs",)}, {"n": 256, "kinds": ("shapes", "photos")}],
}


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
    from .baselines import leep

    leep_scores = np.asarray([[leep(fp["probs"][(t, m)], fp["labels"][t]) for m in data.models] for t in tasks])
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
        rows[name] = {"r@1": s["r@1"], "r@3": s["r@3"], "recall@10": _first_stage_recall(S, truth, 10, None),
                      "two-stage-leep@3 r@1": two["r@1"], "queries_per_model": round(float(np.mean(list(
                          queries.values()))), 1), "probe_fingerprint": fingerprint}
    return rows


def run_probe_bench(profile: str = "tiny", *, out_dir="benchmarks/results", work_dir=None, steps: int | None = None,
                    seed: int = 0, show_progress: bool = True, command: str = "") -> tuple:
    """`k2v-hub bench --probes`: the probe ablation alone; writes ``<profile>-probes.json`` and ``.md``."""
    from .pipeline import k2v_home
    from .train import TrainingArguments
    from .zoo.build import build_zoo

    t_start = time.perf_counter()
    work = Path(work_dir or k2v_home() / f"bench-{profile}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build_zoo(work / "zoo", profile, seed=seed, show_progress=show_progress)
    data = BenchData(work / "zoo", work, seed=seed, show_progress=show_progress)
    split = held_out_split(data, profile) or {"tasks": [], "domains": []}
    fp = data.forward_passes(split["tasks"]) if split["tasks"] else {}
    args = TrainingArguments(steps=steps or PROFILE_STEPS[profile], seed=seed)
    rows = probe_ablation(data, profile, fp, args, seed, show_progress)
    results = {"profile": profile, "command": command or f"k2v-hub bench --profile {profile} --probes",
               "k2v_hub_version": __version__, "seed": seed, "held_out_domains": split["domains"],
               "tasks": len(split["tasks"]), "rows": rows, "total_s": round(time.perf_counter() - t_start, 1)}
    cols = ["r@1", "r@3", "recall@10", "two-stage-leep@3 r@1", "queries_per_model"]
    md = [f"# Probe-set ablation, profile `{profile}`", "", f"Command: `{results['command']}`", "",
          f"Unseen domains {', '.join(split['domains'])} ({len(split['tasks'])} NNR tasks): kept out of retriever "
          "training and out of every probe set. Vector search (r@1, r@3, first-stage recall@10) and the two-stage "
          "search (candidates from vectors + label names, LEEP on 3).", "",
          *_rows_table("probe set", rows, cols)]
    paths = {"json": out_dir / f"{profile}-probes.json", "markdown": out_dir / f"{profile}-probes.md"}
    paths["json"].write_text(json.dumps(results, indent=2))
    paths["markdown"].write_text("\n".join(md) + "\n")
    return results, paths


def _first_stage_recall(vector: np.ndarray, truth: np.ndarray, k: int, labels: np.ndarray | None) -> float | None:
    """Fraction of tasks whose best model is among the first stage's ``k`` candidates."""
    hits = []
    for i in range(len(truth)):
        order = _candidates(vector, labels, i)
        hits.append(bool(set(np.flatnonzero(truth[i] >= truth[i].max() - 1e-9)) & set(order[:k])))
    return round(float(np.mean(hits)), 4) if hits else None


def _rows_table(first: str, rows: dict, columns) -> list[str]:
    """A Markdown table: one line per ``rows`` item (its name first, then its ``columns``)."""
    return (["| " + " | ".join([first, *columns]) + " |", "|---" * (len(columns) + 1) + "|"]
            + [f"| {name} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for name, row in rows.items()])


def to_markdown(r: dict) -> str:
    """Tables 1 and 2 (and the extra views) as Markdown."""
    cols = ["r@1", "r@3", "rel@1", "rel@3", "v_acc", "ft_acc", "tau_w", "search_s", "access"]

    def tab(methods: dict, columns=cols) -> list[str]:
        lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for name, row in sorted(methods.items(), key=lambda kv: -(kv[1].get("r@1") or 0)):
            lines.append(f"| {name} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
        return lines

    c = r["counts"]
    out = [f"# k2v-hub bench: profile `{r['profile']}`", "", f"Command: `{r['command']}` (k2v-hub {r['k2v_hub_version']}, "
           f"{r['machine']})", "", f"{c['models']} models ({c['seen_models']} seen, {c['unseen_models']} unseen), "
           f"{c['eval_tasks_seen']} + {c['eval_tasks_inductive']} NNR eval tasks (seen + inductive), "
           f"{c['transfer_tasks']} transfer tasks.", "", "## Table 1: NNR evaluation tasks", ""]
    out += tab(r["methods"])
    for name, methods in r.get("settings", {}).items():
        out += ["", f"### Setting: {name}{SETTING_NOTES.get(name, '')}", ""] + tab(methods, ["r@1", "r@3", "rel@1",
                                                                                           "tau_w"])
    out += ["", "## Table 2: transfer tasks (correlation with Ft.Acc)", "", "| method | pearson | spearman | tau_w |",
            "|---|---|---|---|"]
    for name, row in sorted(r["transfer"].items(), key=lambda kv: -kv[1]["tau_w"]):
        out.append(f"| {name} | {row['pearson']} | {row['spearman']} | {row['tau_w']} |")
    if "label_blind" in r:
        out += ["", "## Label-blind (task label names replaced by class_0..)", ""]
        out += tab(r["label_blind"]["methods"], ["r@1", "r@3", "rel@1", "rel@3", "tau_w"])
    out += ["", "## Oracle views (one retriever, knowledge rebuilt from each view)", "", "| view | r@1 | queries/model |",
            "|---|---|---|"]
    for view, row in r["oracle_views"].items():
        out.append(f"| {view} | {row['r@1']} | {row['queries_per_model']} |")
    u = r.get("unseen_domains", {})
    if u.get("methods"):
        out += ["", f"## Unseen domains: {', '.join(u['held_out_domains'])} ({u['tasks']} tasks; out of training and "
                f"probes)", "", f"First-stage recall, vectors alone: {u['first_stage']}; vectors + label names "
                f"(the candidates `find_model` re-ranks): {u.get('first_stage_with_labels')}", ""]
        out += tab(u["methods"], ["r@1", "r@3", "rel@1", "tau_w", "models_run_per_search", "queries_per_search",
                                  "seconds_per_search"])
    if r.get("ablation"):
        out += ["", "## Ablation (NNR eval tasks: all candidates; seen_pool: seen tasks, trained models as candidates)",
                ""] + _rows_table("variant", r["ablation"], ["r@1", "r@3", "seen_pool_r@1", "seen_pool_r@3"])
    if r.get("seed_spread"):
        keys = list(r["seed_spread"]["summary"])
        out += ["", "## Seed spread (the main retriever retrained with each seed)", ""]
        out += _rows_table("seed", r["seed_spread"]["per_seed"], keys)
        out.append("| mean ± std | " + " | ".join(f"{v['mean']} ± {v['std']}"
                                                  for v in r["seed_spread"]["summary"].values()) + " |")
    out += ["", "## Timing", "", "| what | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in r["timing"].items()]
    return "\n".join(out) + "\n"


def run_scale_bench(sizes=(1_000, 10_000, 100_000, 1_000_000), dim: int = 256, queries: int = 20, top_k: int = 5,
                    seed: int = 0) -> list[dict]:
    """Search latency and memory of synthetic indexes through the product's search (:class:`K2VIndex`).

    ``matmul``: the flat matrix product used below ``FAISS_THRESHOLD`` rows; ``faiss``: the exact inner-product
    FAISS index built through ``datasets.Dataset.add_faiss_index``. Medians over ``queries`` searches.
    """
    from .index import K2VIndex

    rows = []
    rng = np.random.default_rng(seed)
    for n in sizes:
        emb = rng.standard_normal((n, dim), dtype=np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        q = rng.standard_normal((queries, dim), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        index = K2VIndex([None] * n, emb, {}, "synthetic")
        times = []
        for i in range(queries):
            t0 = time.perf_counter()
            index.search(q[i], top_k)
            times.append(time.perf_counter() - t0)
        row = {"models": n, "dim": dim, "memory_mb": round(emb.nbytes / 2**20, 1),
               "matmul_ms_median": round(float(np.median(times)) * 1000, 3)}
        try:
            t0 = time.perf_counter()
            index.use_faiss()
            row["faiss_build_s"] = round(time.perf_counter() - t0, 3)
            ft = []
            for i in range(queries):
                t0 = time.perf_counter()
                index.search(q[i], top_k)
                ft.append(time.perf_counter() - t0)
            row["faiss_ms_median"] = round(float(np.median(ft)) * 1000, 3)
        except ImportError:
            row["faiss_ms_median"] = None
        rows.append(row)
        del emb, index
    return rows
