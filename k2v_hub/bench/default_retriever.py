"""The default retriever (``k2v-hub/know2vec-retriever``), built by one command: ``k2v-hub build-retriever``.

It is the bench's main retriever: the paper's configuration trained on the widest offline zoo (the ``bench``
profile) with the bench's leak-free splits (the seen models' training tasks only), its training length and task
augmentation chosen on the validation split. It is measured on the evaluation tasks in float32 and as its saved file
loads, and saved in the shipping format of :mod:`k2v_hub.quantize` (int8 large weights, the rest float16: under
5 MiB, to ship inside the package) only if that format leaves those numbers where float32 put them. Its config
records the command, the zoo plan fingerprint and the code version; its card carries the numbers.

The package ships a copy in ``k2v_hub/default_retriever``: the float16 build of ``k2v-hub build-retriever --profile
bench --seed 0`` converted to the shipping format by :func:`convert_default_retriever` (its numbers measured again
as it loads); ``benchmarks/results/default-retriever.json`` records it.

Beside it, in ``finetune/``, the fine-tune predictor ``find_model(goal="fine-tune")`` ranks by
(:mod:`k2v_hub.finetune_fit`): trained on the same zoo's training tasks and seen models, its configuration chosen on
the validation split (:func:`build_finetune_predictor`; ``--finetune-only`` builds it alone, in about 4 minutes
on the bench zoo once it is built).
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from pathlib import Path

from huggingface_hub import ModelCard

from .. import __version__
from ..errors import K2VError
from ..features import k2v_home
from ..finetune_fit import SUBFOLDER
from ..quantize import DTYPE, dequantize, quantize, save_quantized
from ..retriever import DEFAULT_RETRIEVER_ID, WEIGHTS_NAME, Retriever, built_retriever_dir
from ..train import TrainingArguments
from ..utils import give_usual_mode
from ..zoo.build import build_zoo
from ..zoo.plan import plan_zoo
from .data import BenchData, ProbeSet, Splits
from .finetune import finetune_scores
from .methods import declared_scores, know2vec_scores
from .run import PROFILE_STEPS
from .scoring import first_stage_recall, pool_truth, score_method
from .studies import retriever_recall
from .validation import choose_finetune, choose_training

#: The command that builds the default retriever; recorded in its config (``training_info.command``).
COMMAND = "k2v-hub build-retriever --profile {profile} --seed {seed}"
#: The command that builds the fine-tune predictor alone (a full build makes it too).
FINETUNE_COMMAND = COMMAND + " --finetune-only"
#: The most its weights may weigh: the project flags any committed file over 5 MiB.
MAX_BYTES = 5 * 1024 * 1024


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
            f"{info['task_class_dropout']}, noise {info['task_noise']}. Saved as {info['dtype']}."
            f"{' ' + info['converted'] if 'converted' in info else ''}\n\n"
            f"Vector stage alone (task label names unused), on the {n['eval_tasks']} evaluation tasks of that "
            f"zoo (the bench's splits; `benchmarks/results/bench.md` has every method beside it):\n\n"
            f"| | as saved | float32 |\n|---|---|---|\n{table}\n")


def build_default_retriever(profile: str = "bench", out_dir=None, *, work_dir=None, seed: int = 0,
                            show_progress: bool = True) -> dict:
    """Build the default retriever into ``out_dir`` (default: ``$K2V_HUB_HOME/default_retriever``); return its
    ``training_info`` (command, zoo plan fingerprint, version, chosen settings, measured numbers)."""
    t0 = time.perf_counter()
    work = Path(work_dir or k2v_home() / f"bench-{profile}")
    build_zoo(work / "zoo", profile, seed=seed, show_progress=show_progress)
    data, splits, knowledge, probe = _bench_inputs(work, seed, show_progress)
    args = TrainingArguments(steps=PROFILE_STEPS[profile], seed=seed)
    retriever, args, _, _, grid = choose_training(data, splits, knowledge, probe, args, show_progress)
    info = {"command": COMMAND.format(profile=profile, seed=seed), "zoo_profile": profile, "zoo_seed": seed,
            "zoo_plan_fingerprint": plan_zoo(profile, seed=seed).fingerprint(), "k2v_hub_version": __version__,
            "hub_id": DEFAULT_RETRIEVER_ID, "models": len(splits.seen), "train_tasks": len(splits.train),
            "steps": args.steps, "task_class_dropout": args.task_class_dropout, "task_noise": args.task_noise,
            "chosen_on": "validation", "validation": grid,
            "bench_float32": bench_numbers(retriever, knowledge.graphs, data, splits)}
    info["bench"] = _shipped_numbers(retriever, info["bench_float32"], knowledge, data, splits)
    info |= {"dtype": DTYPE, "seconds": round(time.perf_counter() - t0, 1)}
    out = Path(out_dir or built_retriever_dir())
    _ship(retriever, info, out)
    info["finetune"] = _ship_finetune(data, splits, profile, seed, out / SUBFOLDER, time.perf_counter())
    return info


def build_finetune_predictor(profile: str = "bench", out_dir=None, *, work_dir=None, seed: int = 0,
                             show_progress: bool = True) -> dict:
    """Build the fine-tune predictor into ``out_dir`` (default: ``finetune`` beside the default retriever built
    here) with its card; return what the card says: the configuration chosen on validation, its validation tau_w
    (and the data score's), and its tau_w on the zoo's transfer tasks (evaluation split), against Ft.Acc."""
    t0 = time.perf_counter()
    work = Path(work_dir or k2v_home() / f"bench-{profile}")
    build_zoo(work / "zoo", profile, seed=seed, show_progress=show_progress)
    data = BenchData(work / "zoo", work, seed=seed, show_progress=show_progress)
    return _ship_finetune(data, Splits.of(data.zoo), profile, seed, Path(out_dir or built_retriever_dir() / SUBFOLDER),
                          t0)


def _ship_finetune(data: BenchData, splits: Splits, profile: str, seed: int, out: Path, t0: float) -> dict:
    """Choose, measure and save the fine-tune predictor of the zoo in ``data`` into ``out``; return its info."""
    predictor, report = choose_finetune(data, splits, seed)
    tasks = splits.transfer
    truth, v, ft = data.truth(tasks), data.rows(tasks, data.v), data.rows(tasks, data.ft)
    info = {"command": FINETUNE_COMMAND.format(profile=profile, seed=seed), "zoo_profile": profile,
            "zoo_seed": seed, "zoo_plan_fingerprint": plan_zoo(profile, seed=seed).fingerprint(),
            "k2v_hub_version": __version__, "feature_space": predictor.feature_space, "models": len(splits.seen),
            "train_tasks": len(splits.train), "chosen": report["chosen"],
            "val_tau_w": report["grid"][json.dumps(report["chosen"])]["val_tau_w"],
            "data_val_tau_w": report["data_val_tau_w"], "transfer_tasks": len(tasks),
            "transfer_tau_w": score_method(finetune_scores(data, predictor, tasks)[0], truth, v, ft)["tau_w"],
            "data_transfer_tau_w": score_method(declared_scores(data, tasks)[0], truth, v, ft)["tau_w"]}
    info["seconds"] = round(time.perf_counter() - t0, 1)
    def write(folder: Path) -> None:
        predictor.save_pretrained(folder)
        _finetune_card(info).save(folder / "README.md")

    _replace_folder(out, write)
    return info


def _finetune_card(info: dict) -> ModelCard:
    """The fine-tune predictor's card: what it predicts, from what, how it was chosen and what it measured."""
    return ModelCard(
        f"---\nlibrary_name: k2v-hub\ntags:\n- k2v-hub\n- model-search\n---\n\n"
        f"# k2v-hub fine-tune predictor\n\nRanks image classifiers for fine-tuning on a labelled dataset without "
        f"running them: an MLP ({info['chosen']}) predicts each model's fine-tuned accuracy (standardised over the "
        f"candidates) from its card's declared data (how well its fingerprint matches the dataset's classes, how "
        f"many it covers, how broad it is) and the accuracy the card reports. Used by "
        f"`find_model(..., goal=\"fine-tune\")` and `k2v-hub find --goal fine-tune`.\n\n"
        f"Built by `{info['command']}` (k2v-hub {info['k2v_hub_version']}) on the `{info['zoo_profile']}` offline "
        f"zoo (plan `{info['zoo_plan_fingerprint']}`, feature space `{info['feature_space']}`): trained on the "
        f"measured fine-tuned accuracy of {info['models']} seen models on {info['train_tasks']} training tasks; "
        f"configuration chosen on the validation split.\n\n"
        f"| weighted Kendall tau against fine-tuned accuracy, every model a candidate | this predictor | data score |"
        f"\n|---|---|---|\n| validation tasks | {info['val_tau_w']} | {info['data_val_tau_w']} |\n"
        f"| transfer tasks ({info['transfer_tasks']}, evaluation split) | {info['transfer_tau_w']} | "
        f"{info['data_transfer_tau_w']} |\n")


def convert_default_retriever(src_dir, out_dir, *, work_dir=None, show_progress: bool = True) -> dict:
    """Re-save a float16 build of the default retriever (``src_dir``) in the shipping format into ``out_dir``, as
    the build now saves it; return its ``training_info``.

    The bench inputs are read from ``work_dir`` (default: ``$K2V_HUB_HOME/bench-<profile>``; the zoo is not built)
    and the weights are measured as the new file loads against the build's recorded float32 numbers.

    Raises:
        K2VError: the build is not of the current zoo plan, or the shipping format moves its numbers.
    """
    retriever = Retriever.from_pretrained(str(src_dir))
    info = dict(retriever.training_info)
    profile, seed = info["zoo_profile"], info["zoo_seed"]
    if info["zoo_plan_fingerprint"] != plan_zoo(profile, seed=seed).fingerprint():
        raise K2VError(f"{src_dir} was built on another zoo plan ({info['zoo_plan_fingerprint']}).",
                       f"Rebuild it with `{info['command']}`.")
    data, splits, knowledge, _ = _bench_inputs(Path(work_dir or k2v_home() / f"bench-{profile}"), seed,
                                               show_progress)
    converted = (f"It is the {info['dtype']} build of that command, re-saved in this format by "
                 f"`k2v_hub.bench.default_retriever.convert_default_retriever` (k2v-hub {__version__}): the numbers "
                 f"as saved are measured on the re-saved weights; float32 and seconds are the build's.")
    info["bench"] = _shipped_numbers(retriever, info["bench_float32"], knowledge, data, splits)
    info |= {"dtype": DTYPE, "converted": converted}
    _ship(retriever, info, Path(out_dir))
    return info


def as_shipped(retriever: Retriever) -> Retriever:
    """A float32 copy of ``retriever`` with the weights its file in the shipping format loads as."""
    shipped = copy.deepcopy(retriever).float()
    shipped.load_state_dict(dequantize(quantize(retriever.state_dict())), strict=True)
    return shipped


def _bench_inputs(work: Path, seed: int, show_progress: bool):
    """The bench data, splits, knowledge and probe set of the zoo in ``work``."""
    data = BenchData(work / "zoo", work, seed=seed, show_progress=show_progress)
    probe = ProbeSet.load()
    return data, Splits.of(data.zoo), data.knowledge(data.new_retriever(probe, seed=0)), probe


def _shipped_numbers(retriever: Retriever, float32: dict, knowledge, data: BenchData, splits: Splits) -> dict:
    """The bench numbers of ``retriever`` as its shipped file loads, refused unless they equal ``float32``."""
    numbers = bench_numbers(as_shipped(retriever), knowledge.graphs, data, splits)
    if numbers != float32:
        raise K2VError(f"The shipping format ({DTYPE}) moves the bench numbers ({numbers} against {float32}).",
                       "Investigate before shipping it.")
    return numbers


def _ship(retriever: Retriever, info: dict, out_dir: Path) -> None:
    """Save ``retriever`` in the shipping format with ``info`` and its card into ``out_dir`` (replacing it)."""
    def write(folder: Path) -> None:
        _save(retriever, folder, info)
        if (folder / WEIGHTS_NAME).stat().st_size > MAX_BYTES:
            raise K2VError(f"The weights exceed {MAX_BYTES} bytes.", "Use a smaller configuration.")

    _replace_folder(out_dir, write)


def _replace_folder(out_dir: Path, write) -> None:
    """Fill a temporary folder with ``write(folder)``, then put it in place of ``out_dir``, files in the usual mode
    (a failed ``write`` leaves ``out_dir`` as it was)."""
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.copytree(tmp, out_dir)
    for path in (out_dir, *out_dir.iterdir()):
        give_usual_mode(path)


def _save(retriever: Retriever, folder: Path, info: dict) -> None:
    """Save ``retriever`` with ``info`` as its ``training_info``, its card, and its weights in the shipping
    format."""
    retriever.training_info = info
    retriever._hub_mixin_config["training_info"] = info
    retriever.save_pretrained(folder, model_card_kwargs={"repo_id": DEFAULT_RETRIEVER_ID,
                                                         "training_summary": _card_summary(info)})
    save_quantized(retriever.state_dict(), folder / WEIGHTS_NAME)  # over the plain float32 file
