"""Where `rerank="auto"` chose ``head-accuracy`` for datasets whose class names the models know: the validation split.

    python benchmarks/head_accuracy.py [--work DIR] [--out FILE]

Scores, with the task's class names known and every model a candidate, the second stages `find_model` can run on
the bench zoo's validation tasks: ``head_accuracy`` (each model's own head on the task's support images, over the
names it has) and LEEP, each over every model and over the declared-data stage's first 3 or 5 candidates, alone or
fused with the data score (``rerank_fusion`` 0.5, `find_model`'s default). ``--work`` is the bench's work folder
(default ``$K2V_HUB_HOME/bench-bench``, built by ``k2v-hub bench --profile bench``). The evaluation split is the
bench's to score (``two-stage-data-head-accuracy@3`` in ``bench.json``); ``--eval`` is not used here.
"""

from __future__ import annotations

import time

import numpy as np

from k2v_hub.bench.methods import baseline_scores, declared_scores, label_scores, two_stage
from k2v_hub.bench.scoring import pool_task_metrics
from k2v_hub.rerank import FUSION_WEIGHT
from study import bench_data, study_arguments, write_result


def main() -> None:
    """R@1 on the validation split (all, seen models, validation-unseen models) of each second stage."""
    args = study_arguments(__doc__.splitlines()[0], "Not used: the bench scores the evaluation split.")
    t0 = time.perf_counter()
    data, splits = bench_data(args.work)
    tasks = splits.val
    meths, _ = baseline_scores(data, data.forward_passes(tasks), tasks, label_blind=False)
    first, lab = declared_scores(data, tasks)[0], label_scores(data, tasks, label_blind=False)
    out: dict = {"split": "validation", "label_names": "known", "work": str(args.work), "r@1": {}}
    for k in (3, 5, len(data.models)):
        for fusion in (0.0, FUSION_WEIGHT):
            for est in ("head_accuracy", "leep"):
                S = two_stage(first, meths[est], k, labels=lab, fusion=fusion)
                out["r@1"][f"{est}, {k} candidates, fusion {fusion:g}"] = {
                    part: round(float(np.mean(pool_task_metrics(
                        data, est, S[[tasks.index(t) for t in ids]], ids)["r@1"])), 4)
                    for part, ids in (("val", tasks), ("val_seen", splits.val_seen),
                                      ("val_unseen", splits.val_unseen))}
    write_result(out, args, t0)


if __name__ == "__main__":
    main()
