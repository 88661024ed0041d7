"""Which model fine-tunes best: Ft.Acc predicted from the declared data's match and the card, no model run.

    python benchmarks/finetune_fit.py [--work DIR] [--eval] [--out FILE]

The bench's transfer tasks rank every model by its measured fine-tuned accuracy (Ft.Acc, weighted Kendall tau).
The data stage (`find_model`'s first stage) ranks by how close a model's declared data is to the task's; here
:class:`k2v_hub.finetune_fit.FinetunePredictor` learns Ft.Acc from :func:`k2v_hub.finetune_fit.finetune_features`
(fingerprint match, coverage, breadth, the card's reported accuracy). It trains on the training split's tasks
(NNR and transfer) and the seen models only (the models the retriever trains on: the measured Ft.Acc of the other
models is never used); its configuration is chosen on the validation split by tau_w against Ft.Acc (ties: the
first listed, the smallest); ``--eval`` then scores the transfer tasks once, with the chosen configuration trained
with three seeds, beside the data score, LEEP and exact LogME (every model run on each task's images), with paired
95 % bootstrap intervals over tasks. Label-blind (no class name is read) and every model a candidate.

``--work`` is the bench's work folder (default ``$K2V_HUB_HOME/bench-bench``). About 4 minutes on 2 cores without
``--eval``; ``--eval`` adds the forward passes of every model on the transfer tasks.
"""

from __future__ import annotations

import time

import numpy as np

from k2v_hub.bench.finetune import finetune_scores, train_on_bench
from k2v_hub.bench.methods import declared_scores
from k2v_hub.bench.scoring import task_metrics
from k2v_hub.bench.uncertainty import paired_difference
from k2v_hub.bench.validation import choose_finetune
from k2v_hub.methods import METHODS
from study import bench_data, study_arguments, write_result

#: The estimators scored beside it on the transfer tasks (they run every model): the bench's best two there.
ESTIMATED = ("leep", "logme_exact")


def main() -> None:
    """Choose the predictor's configuration on validation; with ``--eval`` score the transfer tasks once."""
    args = study_arguments(__doc__.splitlines()[0], "Also score the transfer tasks (evaluation split) once.")
    t0 = time.perf_counter()
    data, splits = bench_data(args.work)
    _, chosen = choose_finetune(data, splits, seed=0)
    out: dict = {"criterion": "validation tau_w against Ft.Acc, every model a candidate; ties: the first listed",
                 "train": {"tasks": len(splits.train), "models": len(splits.seen)}, **chosen}
    if args.eval:
        tasks = list(splits.transfer)
        truth, v, ft = data.truth(tasks), data.rows(tasks, data.v), data.rows(tasks, data.ft)

        def per_task(S):
            return task_metrics(S, truth, v, ft)["tau_w"]

        fits = [per_task(finetune_scores(data, train_on_bench(data, splits, seed=seed, **chosen["chosen"]),
                                         tasks)[0]) for seed in (0, 1, 2)]
        fp = data.forward_passes(tasks)
        taus = {"finetune-fit": fits[0], "data": per_task(declared_scores(data, tasks)[0])}
        for method in METHODS:
            if method.name in ESTIMATED:
                y = fp["labels"]
                taus[method.name] = per_task(np.asarray([[method.estimator(fp[method.inputs][(t, m)], y[t])
                                                          for m in data.models] for t in tasks]))
        out["transfer"] = {
            "tasks": len(tasks), "tau_w": {k: round(float(np.mean(x)), 4) for k, x in taus.items()},
            "finetune-fit_per_seed": [round(float(np.mean(x)), 4) for x in fits],
            "finetune-fit_seed_std": round(float(np.std([np.mean(x) for x in fits])), 4),
            "paired": {f"finetune-fit - {k}": paired_difference(taus["finetune-fit"], x)
                       for k, x in taus.items() if k != "finetune-fit"}}
    write_result(out, args, t0)


if __name__ == "__main__":
    main()
