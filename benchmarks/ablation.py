"""The bench's encoder/loss ablation (Tables 3-4) alone, on the zoo and settings of a finished bench run.

    python benchmarks/ablation.py [--work DIR] [--out FILE]

`k2v-hub bench --ablation` trains the 11 variants after everything else (about 40 minutes on 2 cores); this runs
the same function (:func:`k2v_hub.bench.studies.run_ablation`) with the training settings the run chose on its
validation split (``benchmarks/results/bench.json``'s ``validation.chosen``), on the run's zoo and knowledge graphs
(``--work``, default ``$K2V_HUB_HOME/bench-bench``), so a run made without ``--ablation`` can get its own ablation
instead of an older build's. ``--eval`` is not used: the table is scored on the evaluation tasks, like the bench's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from k2v_hub.bench.data import ProbeSet
from k2v_hub.bench.run import PROFILE_STEPS
from k2v_hub.bench.studies import run_ablation
from k2v_hub.train import TrainingArguments
from study import bench_data, study_arguments, write_result


def main() -> None:
    """Train every ablation variant with the run's chosen settings and score it on the evaluation tasks."""
    args = study_arguments(__doc__.splitlines()[0], "Not used: the ablation is scored on the evaluation tasks.")
    t0 = time.perf_counter()
    bench = json.loads(Path("benchmarks/results/bench.json").read_text())
    chosen = bench["validation"]["chosen"]
    data, splits = bench_data(args.work)
    probe = ProbeSet.load()
    knowledge = data.knowledge(data.new_retriever(probe, seed=0))
    train_args = TrainingArguments(steps=chosen.get("steps", PROFILE_STEPS["bench"]), seed=bench["seed"],
                                   task_class_dropout=chosen["task_class_dropout"], task_noise=chosen["task_noise"])
    supervised = data.supervised(knowledge, splits.seen, splits.train)
    out = {"bench_command": bench["command"], "training": {"steps": train_args.steps,
                                                            "task_class_dropout": train_args.task_class_dropout,
                                                            "task_noise": train_args.task_noise},
           "ablation": run_ablation(data, knowledge.graphs, splits.seen, supervised, splits.eval_all, probe,
                                    train_args, True, seen_tasks=splits.eval_seen)}
    write_result(out, args, t0)


if __name__ == "__main__":
    main()
