"""Study for the inductive retriever: rank models by the data they declare, label-blind, no model run.

    python benchmarks/declared_data.py [--work DIR] [--per-class 8] [--eval] [--out FILE]

Each model of the bench zoo gets a *data fingerprint*: the class means, in the retriever's frozen feature space, of
``--per-class`` images per class of the model's own training data (what a card's ``datasets:`` names; in the offline
zoo, the first training images of each of its classes). A task ranks the models by the mean over its classes of the
best cosine between its class mean and the model's class means. Task images come from the held-out evaluation or
validation parts of each class's pool, so no fingerprint image is a task image.

``--work`` is the bench's work folder (default ``$K2V_HUB_HOME/bench-bench``, built by ``k2v-hub bench --profile
bench``); the fingerprints are cached there (``declared-fp-<per-class>.npz``; about 2 CPU-hours the first time, since
every source is rendered again). Without ``--eval`` only the validation split is scored: choose there, then score the
evaluation split and the unseen-domain folds once with ``--eval``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from k2v_hub.bench.data import BenchData, Splits
from k2v_hub.bench.folds import domain_folds, fold_split
from k2v_hub.bench.scoring import first_stage_recall, pool_task_metrics, pool_truth
from k2v_hub.features import k2v_home
from k2v_hub.zoo.build import _build_source_arrays
from k2v_hub.zoo.plan import get_profile, plan_zoo

RANKINGS = ("meanmax", "sym")


def fingerprints(data: BenchData, per_class: int) -> dict[str, np.ndarray]:
    """Per model: ``[classes, F]`` means of ``per_class`` of its training images per class (cached in ``work``)."""
    cache = data.work / f"declared-fp-{per_class}.npz"
    if cache.exists():
        return np.load(cache, allow_pickle=True)["fps"].item()
    prof = get_profile(data.zoo.manifest["profile"])
    specs = {f"{data.zoo.org}/{m.name}": m for m in plan_zoo(prof.name, seed=0).models}
    by_source: dict[str, list[str]] = {}
    for m in data.models:
        by_source.setdefault(data.zoo.models[m]["source"], []).append(m)
    fps = {}
    for source, models in by_source.items():
        images, labels = _build_source_arrays(source, prof.n_train + prof.n_val, 0, 0)
        for m in models:
            means = []
            for c in specs[m].class_index:
                idx = np.flatnonzero(labels == c)[:min(per_class, prof.n_train)]
                means.append(np.asarray(data.extractor([images[i] for i in idx], show_progress=False)).mean(0))
            fps[m] = np.stack(means)
    np.savez(cache, fps=np.array(fps, dtype=object))
    return fps


def _unit(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def scores(data: BenchData, fps: dict, tasks: list[str], ranking: str) -> np.ndarray:
    """``[tasks, models]``: ``meanmax`` = mean over the task's classes of the best cosine to a model class;
    ``sym`` = its average with the same taken over the model's classes."""
    units = {m: _unit(fps[m]) for m in data.models}
    S = np.zeros((len(tasks), len(data.models)))
    for i, t in enumerate(tasks):
        T = _unit(data.means[t])
        for j, m in enumerate(data.models):
            C = T @ units[m].T
            S[i, j] = C.max(1).mean() if ranking == "meanmax" else (C.max(1).mean() + C.max(0).mean()) / 2
    return S


def report(data: BenchData, fps: dict, tasks: list[str], ranking: str) -> dict | None:
    """R@1 (every model a candidate) and recall@5/10 of the best model among the first candidates."""
    if not tasks:
        return None
    S = scores(data, fps, tasks, ranking)
    truth = pool_truth(data, tasks)[0]
    return {"n": len(tasks), "r@1": round(float(np.mean(pool_task_metrics(data, "declared_data", S, tasks)["r@1"])), 4),
            "recall@5": first_stage_recall(S, truth, 5, None), "recall@10": first_stage_recall(S, truth, 10, None)}


def main() -> None:
    """Score the rankings on the validation split (and with ``--eval`` on the evaluation split and folds)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="The bench work folder (default: bench-bench).")
    parser.add_argument("--per-class", type=int, default=8, help="Fingerprint images per class.")
    parser.add_argument("--eval", action="store_true", help="Also score the evaluation split and the folds.")
    parser.add_argument("--out", type=Path, default=None, help="Write the JSON result here too.")
    args = parser.parse_args()
    work = args.work or k2v_home() / "bench-bench"
    t0 = time.perf_counter()
    data = BenchData(work / "zoo", work, seed=0, show_progress=False)
    splits = Splits.of(data.zoo)
    fps = fingerprints(data, args.per_class)
    out: dict = {"per_class": args.per_class, "work": str(work)}
    for ranking in RANKINGS:
        res = {"val": report(data, fps, splits.val, ranking),
               "val_unseen": report(data, fps, splits.val_unseen, ranking)}
        if args.eval:
            res["eval_seen"] = report(data, fps, splits.eval_seen, ranking)
            res["eval_inductive"] = report(data, fps, splits.eval_inductive, ranking)
            res["folds"] = [report(data, fps, fold_split(data, d)["tasks"], ranking) for d in domain_folds(data, 5)]
        out[ranking] = res
    out["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(out, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
