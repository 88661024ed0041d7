"""The zoo is a random draw too: the main retriever's recall on zoos built with other seeds (other class subsets,
roles, task draws and trained weights), beside the run's own zoo."""

from __future__ import annotations

from pathlib import Path

from ..train import TrainingArguments
from ..zoo.build import build_zoo
from .data import BenchData, ProbeSet, Splits
from .studies import leep_matrix, retriever_recall, spread_summary

def zoo_seed_spread(profile: str, work: Path, seeds: list[int], args: TrainingArguments, first: dict,
                    show_progress: bool, *, accuracy_weight: float, trained_vector_weight: float,
                    fusion: float | None = None) -> dict:
    """Per zoo seed, the recall of a retriever trained with ``args`` on that zoo (``first``: the run's own zoo,
    ``seeds[0]``, already measured), and the mean/std/min/max over zoos.

    Each row has the vector's recall and, with the run's chosen weights, the data stage's, ``data+know2vec``'s,
    LEEP's over every model and the label-blind two-stage's, LEEP alone and fused with weight ``fusion``
    (:func:`~k2v_hub.bench.studies.retriever_recall`).
    """
    per_seed = {str(seeds[0]): first}
    for s in seeds[1:]:
        zoo_dir = work / f"zoo-seed{s}"
        build_zoo(zoo_dir, profile, seed=s, show_progress=show_progress)
        data = BenchData(zoo_dir, work / f"zoo-seed{s}-work", seed=s, show_progress=show_progress)
        data.accuracy_weight, data.trained_vector_weight = accuracy_weight, trained_vector_weight
        splits = Splits.of(data.zoo)
        probe = ProbeSet.load()
        knowledge = data.knowledge(data.new_retriever(probe, seed=0))
        retriever = data.trained_retriever(knowledge, splits, probe, args)
        leep = leep_matrix(data, data.forward_passes(splits.eval_all), splits.eval_all)
        per_seed[str(s)] = retriever_recall(retriever, knowledge.graphs, data, splits.eval_all, splits.seen,
                                            splits.eval_seen, splits.eval_inductive, leep=leep, fusion=fusion)
    return {"per_seed": per_seed, "summary": spread_summary(per_seed)}
