"""The bench runs, step by step: `run_bench` (every method, Tables 1 and 2, the studies) and `run_probe_bench` (the
probe-set ablation alone)."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from .. import __version__
from ..features import k2v_home
from ..find import find_model
from ..index import IndexReport, build_index
from ..pipeline import make_indexer
from ..retriever import Retriever
from ..train import (TrainingArguments, TrainingData, combine_training_data, self_supervised_data,
                     train_retriever)
from ..zoo.build import build_zoo
from .data import BenchData, Knowledge, ProbeSet, Splits
from .folds import N_FOLDS, unseen_domains
from .leakage import disjoint_images
from .report import embedding_picture, probes_markdown, to_markdown
from .studies import (held_out_split, leep_matrix, oracle_views, probe_ablation, retriever_recall, run_ablation,
                      seed_spread)
from .tables import label_blind_table, nnr_tables, transfer_table
from .validation import choose_finetune, choose_search, choose_training
from .zoo_seeds import zoo_seed_spread

PROFILE_STEPS = {"tiny": 200, "bench": 800}
ADAPT_STEPS = {"tiny": 60, "bench": 200}


@dataclass
class ProductPath:
    """The index built through the product's ``build_index``, and ``find_model`` timed on real task folders."""

    report: IndexReport
    index_s: float
    find_s: list[float]  # per timed task: load + features + encode + search
    features_s: list[float]


def train_retrievers(data: BenchData, main: Retriever, supervised: TrainingData, knowledge: Knowledge,
                     probe: ProbeSet, args: TrainingArguments, adapt_steps: int, show_progress: bool):
    """Beside the supervised retriever ``main``: a self-supervised one, and ``main`` adapted with both data."""
    probe_feats = data.extractor([Image.fromarray(p) for p in knowledge.indexer.probes], show_progress=False)
    models = data.models
    ssl_data = self_supervised_data([knowledge.graphs[m] for m in models], models,
                                    [knowledge.records[m] for m in models], probe_feats, seed=args.seed)
    ssl = data.new_retriever(probe, seed=args.seed)
    train_retriever(ssl, ssl_data, args, show_progress=show_progress)
    adapted = data.new_retriever(probe, seed=args.seed)
    adapted.load_state_dict(main.state_dict())
    train_retriever(adapted, combine_training_data(supervised, ssl_data), replace(args, steps=adapt_steps, lr=5e-4),
                    show_progress=show_progress)
    return ssl, adapted


def time_product_path(data: BenchData, retriever: Retriever, eval_tasks, work: Path,
                      show_progress: bool) -> ProductPath:
    """Save the retriever, index the zoo with it, then time ``find_model`` (which loads the retriever the index
    names) on up to 8 eval task folders."""
    retriever.save_pretrained(work / "retriever")
    indexer = make_indexer(retriever, retriever_id=str((work / "retriever").resolve()), extractor=data.extractor,
                           cache_dir=work / "knowledge")
    t0 = time.perf_counter()
    report = build_index(data.source, data.zoo.org, work / "index", indexer, show_progress=show_progress)
    index_s = time.perf_counter() - t0
    find_s, features_s = [], []
    for t in eval_tasks[: min(8, len(eval_tasks))]:
        matches = find_model(data.zoo.task_path(t), work / "index", top_k=5, rerank=None, show_progress=False)
        tm = matches.timings
        find_s.append(tm["load_s"] + tm["features_s"] + tm["encode_s"] + tm["search_s"])
        features_s.append(tm["features_s"])
    return ProductPath(report, index_s, find_s, features_s)


def run_header(profile: str, command: str, seed: int, data: BenchData, splits: Splits) -> dict:
    """The first fields of the results: what ran, where, on how many models and tasks."""
    zoo, models = data.zoo, data.models
    return {"profile": profile, "command": command or f"k2v-hub bench --profile {profile}",
            "k2v_hub_version": __version__, "seed": seed,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "counts": {"models": len(models), "seen_models": len(splits.seen),
                       "unseen_models": len(models) - len(splits.seen), "train_tasks": len(splits.train),
                       "eval_tasks_seen": len(splits.eval_seen), "eval_tasks_inductive": len(splits.eval_inductive),
                       "transfer_tasks": len(splits.transfer), "sources": len(zoo.manifest.get("sources", [])),
                       "val_tasks": len(splits.val),
                       "val_unseen_models": len({zoo.task(t)["origin_model"] for t in splits.val_unseen}),
                       "inductive_models": len({zoo.task(t)["origin_model"] for t in splits.eval_inductive})}}


def timing_table(secs: dict, fp: dict, product: ProductPath, n_models: int, zoo_s: float, train_s: float,
                 queries: dict, t_start: float, feature_pass_s: float = 0.0) -> dict:
    """Seconds per search of `find_model` against brute-force LogME, and how long each step of the run took."""
    logme_per_task = secs["logme"]
    load_s = sum(fp["load_s"].values())
    find_s = float(np.median(product.find_s)) if product.find_s else float("nan")
    features_s = float(np.median(product.features_s))
    return {
        "find_model_s": round(find_s, 4), "feature_pass_s": round(features_s, 4),
        "brute_force_logme_s": round(logme_per_task, 4),
        "speedup_vs_logme": round(logme_per_task / find_s, 2) if find_s else None,
        "brute_force_logme_s_per_model": round(logme_per_task / n_models, 4),
        "brute_force_model_load_s": round(float(load_s), 4),
        "speedup_vs_logme_models_in_memory": round((logme_per_task - load_s) / find_s, 2) if find_s else None,
        "models_for_100x": int(np.ceil(100 * find_s / (logme_per_task / n_models))) if find_s else None,
        "ratio_vs_feature_pass": round(find_s / features_s, 3) if product.features_s else None,
        "vector_search_s": round(secs["know2vec"] - feature_pass_s, 6),  # encode + search, without the backbone
        "zoo_build_s": round(zoo_s, 1), "train_s": round(train_s, 1), "index_s": round(product.index_s, 1),
        "queries_per_model_mean": round(float(np.mean(list(queries.values()))), 1),
        "queries_per_model_max": int(max(queries.values())),
        "total_s": round(time.perf_counter() - t_start, 1),
    }


def _folders(profile: str, work_dir, out_dir) -> tuple[Path, Path]:
    """The work folder (default ``$K2V_HUB_HOME/bench-<profile>``) and the output folder, created."""
    work = Path(work_dir or k2v_home() / f"bench-{profile}")
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return work, out_dir


def run_bench(profile: str = "tiny", *, out_dir="benchmarks/results", work_dir=None, label_blind: bool = True,
              steps: int | None = None, seed: int = 0, show_progress: bool = True, command: str = "",
              ablation: bool = False, seeds: int = 1, zoo_seeds: int = 1, folds: int = N_FOLDS) -> tuple:
    """Run the benchmark; return ``(results, {"json": path, "markdown": path, "picture": path})``.

    Choices (training length and augmentation, label weight, ``rerank_k``, ``finetune-fit``'s configuration) are
    made on the validation split; the
    evaluation tasks are scored once, with the chosen settings.
    """
    t_start = time.perf_counter()
    work, out_dir = _folders(profile, work_dir, out_dir)
    t0 = time.perf_counter()
    build_zoo(work / "zoo", profile, seed=seed, show_progress=show_progress)
    zoo_s = time.perf_counter() - t0
    data = BenchData(work / "zoo", work, seed=seed, show_progress=show_progress)
    splits = Splits.of(data.zoo)
    probe = ProbeSet.load()
    # the models' knowledge depends on a retriever's probe set and settings, not on its weights: an untrained one
    knowledge = data.knowledge(data.new_retriever(probe, seed=0))
    args = TrainingArguments(steps=steps or PROFILE_STEPS[profile], seed=seed)
    t0 = time.perf_counter()
    main, args, supervised, train_info, training_grid = choose_training(data, splits, knowledge, probe, args,
                                                                        show_progress)
    train_s = time.perf_counter() - t0
    ssl, adapted = train_retrievers(data, main, supervised, knowledge, probe, args, ADAPT_STEPS[profile],
                                    show_progress)
    product = time_product_path(data, main, splits.eval_all, work, show_progress)
    data.feature_pass_s = float(np.median(product.features_s)) if product.features_s else 0.0
    fp = data.forward_passes(list(dict.fromkeys(splits.eval_all + splits.transfer + splits.val)))
    search = choose_search(data, splits, fp, main, knowledge, seed)
    data.accuracy_weight = search["data_accuracy_weight"]["chosen"]
    data.trained_vector_weight = search["trained_vector_weight"]["chosen"]
    data.finetune_predictor, search["finetune_fit"] = choose_finetune(data, splits, seed)
    k, weight, fusion = (search["rerank_k"]["chosen"], search["label_weight"]["chosen"],
                         search["data_fusion"]["chosen"])
    ks = tuple(sorted({3, k, search["data_rerank_k"]["chosen"]}))

    by_method, graphs = {"know2vec": main, "know2vec-ssl": ssl, "know2vec-adapted": adapted}, knowledge.graphs
    results = run_header(profile, command, seed, data, splits)
    results["disjoint_images"] = disjoint_images(data.zoo, show_progress=show_progress)
    results["validation"] = validation_report(splits, data, training_grid, search, args)
    tables = nnr_tables(data, fp, by_method, graphs, splits, seed, ks=ks, label_weight=weight, fusion=fusion)
    results["methods"], results["settings"] = tables["methods"], tables["settings"]
    results["comparisons"] = tables["comparisons"]
    results["transfer"] = transfer_table(data, fp, by_method, graphs, splits.transfer, label_weight=weight,
                                         fusion=fusion, seen=splits.seen)
    if label_blind:
        results["label_blind"] = label_blind_table(data, fp, by_method, graphs, splits, seed, ks=ks,
                                                   label_weight=weight, fusion=fusion)
    results["dropped_methods"] = dict(data.dropped)
    results["inferred_data"] = {k: v for k, v in data.half_cards.items() if k not in ("fingerprints", "accuracies")}
    results["oracle_views"] = oracle_views(data, main, knowledge, splits.eval_all, seed)
    results["unseen_domains"] = unseen_domains(data, fp, args, seed, show_progress, n_folds=folds)
    if ablation:
        results["ablation"] = run_ablation(data, graphs, splits.seen, supervised, splits.eval_all, probe,
                                           args, show_progress, seen_tasks=splits.eval_seen)
    if seeds > 1:
        results["seed_spread"] = seed_spread(data, graphs, splits.seen, supervised, splits.eval_all,
                                             splits.eval_seen, splits.eval_inductive, probe, args,
                                             list(range(seed, seed + seeds)), show_progress,
                                             trained={seed: main})
    if zoo_seeds > 1:
        first = retriever_recall(main, graphs, data, splits.eval_all, splits.seen, splits.eval_seen,
                                 splits.eval_inductive, leep=leep_matrix(data, fp, splits.eval_all), fusion=fusion)
        results["zoo_seed_spread"] = zoo_seed_spread(profile, work, list(range(seed, seed + zoo_seeds)), args,
                                                     first, show_progress, accuracy_weight=data.accuracy_weight,
                                                     trained_vector_weight=data.trained_vector_weight, fusion=fusion)
    results["timing"] = timing_table(tables["secs"], fp, product, len(data.models), zoo_s, train_s,
                                     knowledge.queries, t_start, data.feature_pass_s)
    results["training"] = {k: v for k, v in train_info.items() if k != "args"}
    results["index_report"] = {k: (len(v) if isinstance(v, (list, dict)) else v)
                               for k, v in product.report.to_dict().items() if k != "path"}
    picture = embedding_picture(main, graphs, data, out_dir / f"{profile}-embedding-space.png", profile)
    paths = {"json": out_dir / f"{profile}.json", "markdown": out_dir / f"{profile}.md", "picture": picture}
    results["picture"] = str(picture)
    paths["json"].write_text(json.dumps(results, indent=2))
    paths["markdown"].write_text(to_markdown(results))
    return results, paths


def validation_report(splits: Splits, data: BenchData, training: dict, search: dict,
                      args: TrainingArguments) -> dict:
    """What the validation split is and what it chose (``chosen``), with the grids it chose from."""
    return {"split": "validation", "val_tasks_seen_models": len(splits.val_seen),
            "val_tasks_unseen_models": len(splits.val_unseen),
            "val_unseen_models": sorted({data.zoo.task(t)["origin_model"] for t in splits.val_unseen}),
            "chosen": {"steps": args.steps, "task_class_dropout": args.task_class_dropout,
                       "task_noise": args.task_noise, "label_weight": search["label_weight"]["chosen"],
                       "rerank_k": search["rerank_k"]["chosen"], "data_rerank_k": search["data_rerank_k"]["chosen"],
                       "data_accuracy_weight": search["data_accuracy_weight"]["chosen"],
                       "data_fusion": search["data_fusion"]["chosen"],
                       "trained_vector_weight": search["trained_vector_weight"]["chosen"],
                       "finetune_fit": search["finetune_fit"]["chosen"]},
            "chosen_on": {"steps": "validation", "task_class_dropout": "validation", "task_noise": "validation",
                          "label_weight": "validation", "rerank_k": "validation", "data_rerank_k": "validation",
                          "data_accuracy_weight": "validation", "data_fusion": "validation",
                          "trained_vector_weight": "validation",
                          "finetune_fit": "validation (tau_w against Ft.Acc)"},
            "training": training, "label_weight": search["label_weight"], "rerank_k": search["rerank_k"],
            "data_rerank_k": search["data_rerank_k"], "data_accuracy_weight": search["data_accuracy_weight"],
            "data_fusion": search["data_fusion"], "trained_vector_weight": search["trained_vector_weight"],
            "finetune_fit": search["finetune_fit"],
            "criterion": "R@1 on the validation tasks, every model a candidate; ties: the first listed"}


def run_probe_bench(profile: str = "tiny", *, out_dir="benchmarks/results", work_dir=None, steps: int | None = None,
                    seed: int = 0, show_progress: bool = True, command: str = "") -> tuple:
    """`k2v-hub bench --probes`: the probe ablation alone; writes ``<profile>-probes.json`` and ``.md``."""
    t_start = time.perf_counter()
    work, out_dir = _folders(profile, work_dir, out_dir)
    build_zoo(work / "zoo", profile, seed=seed, show_progress=show_progress)
    data = BenchData(work / "zoo", work, seed=seed, show_progress=show_progress)
    split = held_out_split(data, profile) or {"tasks": [], "domains": []}
    fp = data.forward_passes(split["tasks"]) if split["tasks"] else {}
    args = TrainingArguments(steps=steps or PROFILE_STEPS[profile], seed=seed)
    rows = probe_ablation(data, profile, fp, args, seed, show_progress)
    results = {"profile": profile, "command": command or f"k2v-hub bench --profile {profile} --probes",
               "k2v_hub_version": __version__, "seed": seed, "held_out_domains": split["domains"],
               "tasks": len(split["tasks"]), "rows": rows, "total_s": round(time.perf_counter() - t_start, 1)}
    paths = {"json": out_dir / f"{profile}-probes.json", "markdown": out_dir / f"{profile}-probes.md"}
    paths["json"].write_text(json.dumps(results, indent=2))
    paths["markdown"].write_text(probes_markdown(results))
    return results, paths
