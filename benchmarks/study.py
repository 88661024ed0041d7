"""What the studies in ``benchmarks/`` share: their command line and the bench's data they read."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from k2v_hub.bench.data import BenchData, ProbeSet, Splits
from k2v_hub.bench.run import PROFILE_STEPS
from k2v_hub.features import k2v_home
from k2v_hub.retriever import Retriever
from k2v_hub.train import TrainingArguments


def study_arguments(description: str, eval_help: str) -> argparse.Namespace:
    """``--work`` (the bench's work folder, default ``$K2V_HUB_HOME/bench-bench``), ``--eval``, ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", type=Path, default=None, help="The bench work folder (default: bench-bench).")
    parser.add_argument("--eval", action="store_true", help=eval_help)
    parser.add_argument("--out", type=Path, default=None, help="Write the JSON result here too.")
    args = parser.parse_args()
    args.work = args.work or k2v_home() / "bench-bench"
    return args


def bench_data(work: Path) -> tuple[BenchData, Splits]:
    """The bench's zoo, features and splits, as ``k2v-hub bench`` built them in ``work``."""
    data = BenchData(work / "zoo", work, seed=0, show_progress=False)
    return data, Splits.of(data.zoo)


def reported_run() -> dict:
    """The reported bench run, ``benchmarks/results/bench.json``, parsed: the choices and seed the studies take."""
    return json.loads((Path(__file__).parent / "results" / "bench.json").read_text())


def zoos_with_retrievers(work: Path):
    """Each zoo the bench built in ``work`` (its own, and the second one when ``--zoo-seeds 2`` built it) as
    ``(zoo seed, data, splits, retriever, knowledge)``: the bench zoo with the bench's retriever, the second zoo with
    one trained as the bench's zoo spread trains it, with the validation choices and seed of the reported run
    (:func:`reported_run`): the data score takes its accuracy weight and the first stage its trained-vector weight."""
    bench = reported_run()
    chosen = bench["validation"]["chosen"]
    probe = ProbeSet.load()
    for zoo_seed, zoo_dir, zoo_work in ((0, work / "zoo", work), (1, work / "zoo-seed1", work / "zoo-seed1-work")):
        if not zoo_dir.is_dir():
            continue
        data = BenchData(zoo_dir, zoo_work, seed=zoo_seed, show_progress=False)
        data.accuracy_weight = chosen["data_accuracy_weight"]
        data.trained_vector_weight = chosen["trained_vector_weight"]
        splits = Splits.of(data.zoo)
        knowledge = data.knowledge(data.new_retriever(probe, seed=0))
        if zoo_seed == 0:
            retriever = Retriever.from_pretrained(str(work / "retriever"))
        else:
            retriever = data.trained_retriever(knowledge, splits, probe, TrainingArguments(
                steps=PROFILE_STEPS["bench"], seed=bench["seed"], task_class_dropout=chosen["task_class_dropout"],
                task_noise=chosen["task_noise"]))
        yield zoo_seed, data, splits, retriever, knowledge


def per_zoo(work: Path, rows) -> dict:
    """``{zoo seed: rows(data, splits, retriever, knowledge)}`` over :func:`zoos_with_retrievers` of the reported
    run."""
    return {str(seed): rows(data, splits, retriever, knowledge)
            for seed, data, splits, retriever, knowledge in zoos_with_retrievers(work)}


def pooled_rate(rates, tasks) -> float:
    """The rate (an R@1) over every zoo's tasks, from each zoo's rate over its ``tasks``: counted in tasks, so that
    two rows right on the same tasks tie exactly (an average of rounded rates can differ in its last place)."""
    return round(sum(round(r * n) for r, n in zip(rates, tasks)) / sum(tasks), 4)


def write_result(out: dict, args: argparse.Namespace, t0: float) -> None:
    """Add the seconds since ``t0``, print the result as JSON and write it to ``--out`` when given."""
    out["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(out, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
