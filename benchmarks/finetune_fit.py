"""Which model fine-tunes best: Ft.Acc predicted from the declared data's match and the card, no model run.

    python benchmarks/finetune_fit.py [--work DIR] [--eval] [--out FILE]

The bench's transfer tasks rank every model by its measured fine-tuned accuracy (Ft.Acc, weighted Kendall tau).
The data stage (`find_model`'s first stage) ranks by how close a model's declared data is to the task's; here
:class:`k2v_hub.finetune_fit.FinetunePredictor` learns Ft.Acc from :func:`k2v_hub.finetune_fit.finetune_features`
(fingerprint match, coverage, breadth, the card's reported accuracy). It trains on the training split's tasks
(NNR and transfer) and the seen models only (the models the retriever trains on: the measured Ft.Acc of the other
models is never used); its configuration is chosen on the validation split by tau_w against Ft.Acc (ties: the
first listed, the smallest); ``--eval`` then scores the transfer tasks once, with the chosen configuration trained
with three seeds. Label-blind (no class name is read) and every model a candidate.

``--work`` is the bench's work folder (default ``$K2V_HUB_HOME/bench-bench``). No forward pass is needed: about a
minute on 2 cores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from k2v_hub.bench.finetune import finetune_scores, train_on_bench
from k2v_hub.bench.methods import declared_scores
from k2v_hub.bench.scoring import score_method
from k2v_hub.bench.validation import choose_finetune
from study import bench_data, study_arguments, write_result

#: The estimators' tau_w on the same transfer tasks, read from the bench's last run for comparison.
BENCH_JSON = Path(__file__).parent / "results" / "bench.json"


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
        tau = lambda S: score_method(S, truth, v, ft)["tau_w"]  # noqa: E731
        per_seed = [tau(finetune_scores(data, train_on_bench(data, splits, seed=seed, **chosen["chosen"]), tasks)[0])
                    for seed in (0, 1, 2)]
        bench = json.loads(BENCH_JSON.read_text())["transfer"] if BENCH_JSON.exists() else {}
        out["transfer"] = {
            "tasks": len(tasks), "data": tau(declared_scores(data, tasks)[0]),
            "finetune-fit": {"tau_w_per_seed": per_seed, "mean": round(float(np.mean(per_seed)), 4),
                             "std": round(float(np.std(per_seed)), 4)},
            "from_bench_json": {k: bench[k]["tau_w"] for k in ("leep", "logme_exact", "nce") if k in bench}}
    write_result(out, args, t0)


if __name__ == "__main__":
    main()
