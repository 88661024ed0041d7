"""The default retriever (``k2v-hub/know2vec-retriever``), built by one command: ``k2v-hub build-retriever``.

It is the bench's main retriever: the paper's configuration trained on the widest offline zoo (the ``bench``
profile) with the bench's leak-free splits (the seen models' training tasks only), its training length and task
augmentation chosen on the validation split. It is measured once on the evaluation tasks and saved in float16 (at
most 10 MB, to publish and download), and only if float16 leaves those numbers where float32 put them. Its config
records the command, the zoo plan fingerprint and the code version; its card carries the numbers. The weights are
built, not committed; ``benchmarks/results/default-retriever.json`` records the build the README quotes.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from pathlib import Path

from .. import __version__
from ..errors import K2VError
from ..features import k2v_home
from ..retriever import DEFAULT_RETRIEVER_ID, WEIGHTS_NAME, Retriever, bundled_retriever_dir
from ..train import TrainingArguments
from ..utils import give_usual_mode
from ..zoo.build import build_zoo
from ..zoo.plan import plan_zoo
from .data import BenchData, ProbeSet, Splits
from .methods import know2vec_scores
from .run import PROFILE_STEPS
from .scoring import first_stage_recall, pool_truth
from .studies import retriever_recall
from .validation import choose_training

#: The command that builds the default retriever; recorded in its config (``training_info.command``).
COMMAND = "k2v-hub build-retriever --profile {profile} --seed {seed}"
#: The most its weights may weigh.
MAX_BYTES = 10 * 1024 * 1024


def bench_numbers(retriever: Retriever, graphs: dict, data: BenchData, splits: Splits) -> dict:
    """The vector stage on the evaluation tasks: R@1/R@3 with every model a candidate, on the seen models' tasks
    (``seen_pool``: only the seen models as candidates, the paper's setting) and the unseen models' tasks, and the
    recall@10 of every evaluation task's best model."""
    out = retriever_recall(retriever, graphs, data, splits.eval_all, splits.seen, splits.eval_seen,
                           splits.eval_inductive)
    S, _ = know2vec_scores(retriever, graphs, data, splits.eval_all)
    out["recall@10"] = first_stage_recall(S, pool_truth(data, splits.eval_all, None)[0], 10, None)
    out["eval_tasks"] = len(splits.eval_all)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def _card_summary(info: dict) -> str:
    """The card's training section: how to rebuild it, what it was trained on, and its measured numbers."""
    n, n32 = info["bench"], info["bench_float32"]
    rows = [("R@1, every evaluation task", "r@1"), ("R@1, seen models' tasks, seen models only (paper)",
                                                   "seen_pool_r@1"),
            ("R@1, seen models' tasks, every model", "seen_r@1"), ("R@1, unseen models' tasks", "inductive_r@1"),
            ("recall@10, every evaluation task", "recall@10")]
    table = "\n".join(f"| {name} | {n.get(key)} | {n32.get(key)} |" for name, key in rows)
    return (f"Built by `{info['command']}` (k2v-hub {info['k2v_hub_version']}) on the `{info['zoo_profile']}` "
            f"offline zoo (plan `{info['zoo_plan_fingerprint']}`): {info['models']} seen models, "
            f"{info['train_tasks']} training tasks drawn from images no evaluation task uses. Training length and "
            f"task augmentation chosen on the validation split: {info['steps']} steps, class dropout "
            f"{info['task_class_dropout']}, noise {info['task_noise']}. Saved as {info['dtype']}.\n\n"
            f"Vector stage alone (task label names unused), on the {n['eval_tasks']} evaluation tasks of that "
            f"zoo (the bench's splits; `benchmarks/results/bench.md` has every method beside it):\n\n"
            f"| | as saved (float16) | float32 |\n|---|---|---|\n{table}\n")


def build_default_retriever(profile: str = "bench", out_dir=None, *, work_dir=None, seed: int = 0,
                            show_progress: bool = True) -> dict:
    """Build the default retriever into ``out_dir`` (default: ``$K2V_HUB_HOME/default_retriever``); return its
    ``training_info`` (command, zoo plan fingerprint, version, chosen settings, measured numbers)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir or bundled_retriever_dir())
    work = Path(work_dir or k2v_home() / f"bench-{profile}")
    build_zoo(work / "zoo", profile, seed=seed, show_progress=show_progress)
    data = BenchData(work / "zoo", work, seed=seed, show_progress=show_progress)
    splits = Splits.of(data.zoo)
    probe = ProbeSet.load()
    knowledge = data.knowledge(data.new_retriever(probe, seed=0))
    args = TrainingArguments(steps=PROFILE_STEPS[profile], seed=seed)
    retriever, args, _, _, grid = choose_training(data, splits, knowledge, probe, args, show_progress)
    info = {"command": COMMAND.format(profile=profile, seed=seed), "zoo_profile": profile, "zoo_seed": seed,
            "zoo_plan_fingerprint": plan_zoo(profile, seed=seed).fingerprint(), "k2v_hub_version": __version__,
            "hub_id": DEFAULT_RETRIEVER_ID, "models": len(splits.seen), "train_tasks": len(splits.train),
            "steps": args.steps, "task_class_dropout": args.task_class_dropout, "task_noise": args.task_noise,
            "chosen_on": "validation", "validation": grid,
            "bench_float32": bench_numbers(retriever, knowledge.graphs, data, splits)}
    # float16 weights load as float16 values upcast: measured here as the saved file will load
    info["bench"] = bench_numbers(copy.deepcopy(retriever).half().float(), knowledge.graphs, data, splits)
    if info["bench"] != info["bench_float32"]:
        raise K2VError(f"float16 moves the bench numbers ({info['bench']} against {info['bench_float32']}).",
                       "Ship float32 weights (within the size limit) or investigate.")
    info |= {"dtype": "float16", "seconds": round(time.perf_counter() - t0, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        _save(retriever.half(), Path(tmp), info)
        if (Path(tmp) / WEIGHTS_NAME).stat().st_size > MAX_BYTES:
            raise K2VError(f"The weights exceed {MAX_BYTES} bytes.", "Use a smaller configuration.")
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.copytree(tmp, out_dir)
    for path in (out_dir, *out_dir.iterdir()):
        give_usual_mode(path)
    return info


def _save(retriever: Retriever, folder: Path, info: dict) -> None:
    """Save ``retriever`` with ``info`` as its ``training_info``, and its card."""
    retriever.training_info = info
    retriever._hub_mixin_config["training_info"] = info
    retriever.save_pretrained(folder, model_card_kwargs={"repo_id": DEFAULT_RETRIEVER_ID,
                                                         "training_summary": _card_summary(info)})
