"""The retriever's training setting chosen on the second zoo's own validation split, and its vector scored once.

    python benchmarks/zoo_validation.py [--work DIR] [--out FILE]

`k2v-hub bench --zoo-seeds 2` trains the second zoo's retriever (``<work>/zoo-seed1``) with the settings the first
zoo's validation split chose. This runs the bench's own choice (:func:`k2v_hub.bench.validation.choose_training`)
on the second zoo's validation split instead, then scores the chosen retriever's vector and ``data+know2vec`` on
that zoo's evaluation tasks once, with the weights the bench run chose (``benchmarks/results/bench.json``): it tells
a drop that comes from the zoo from one that comes from settings carried over. Needs a finished
``--zoo-seeds 2`` run in ``--work``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from k2v_hub.bench.data import BenchData, ProbeSet, Splits
from k2v_hub.bench.run import PROFILE_STEPS
from k2v_hub.bench.studies import retriever_recall
from k2v_hub.bench.validation import choose_training
from k2v_hub.train import TrainingArguments
from study import study_arguments, write_result

ZOO_SEED = 1


def main() -> None:
    """Choose the training setting on the second zoo's validation split and score the chosen retriever once."""
    args = study_arguments(__doc__.splitlines()[0], "Not used: the evaluation split is scored once, after the choice.")
    t0 = time.perf_counter()
    bench = json.loads(Path("benchmarks/results/bench.json").read_text())
    chosen = bench["validation"]["chosen"]
    data = BenchData(args.work / f"zoo-seed{ZOO_SEED}", args.work / f"zoo-seed{ZOO_SEED}-work", seed=ZOO_SEED,
                     show_progress=False)
    data.accuracy_weight, data.trained_vector_weight = chosen["data_accuracy_weight"], chosen["trained_vector_weight"]
    splits = Splits.of(data.zoo)
    probe = ProbeSet.load()
    knowledge = data.knowledge(data.new_retriever(probe, seed=0))
    train_args = TrainingArguments(steps=PROFILE_STEPS["bench"], seed=bench["seed"])
    retriever, picked, _, _, grid = choose_training(data, splits, knowledge, probe, train_args, False)
    out = {"bench_command": bench["command"], "zoo_seed": ZOO_SEED, "validation": grid,
           "first_zoo_chose": {k: chosen[k] for k in ("steps", "task_class_dropout", "task_noise")},
           "chosen": {"steps": picked.steps, "task_class_dropout": picked.task_class_dropout,
                      "task_noise": picked.task_noise},
           "eval": retriever_recall(retriever, knowledge.graphs, data, splits.eval_all, splits.seen,
                                    splits.eval_seen, splits.eval_inductive, first_stages=True),
           "bench_zoo_seed_spread": bench.get("zoo_seed_spread", {}).get("per_seed", {}).get(str(ZOO_SEED))}
    write_result(out, args, t0)


if __name__ == "__main__":
    main()
