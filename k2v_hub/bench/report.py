"""What a bench run writes besides its JSON: the Markdown tables and the picture of the model vectors."""

from __future__ import annotations

from pathlib import Path

from ..plots import plot_embedding_space
from .data import BenchData

SETTING_NOTES = {
    "seen": " (eval tasks of models the retriever trained on; candidates: every model)",
    "inductive": " (tasks of models the retriever never saw; candidates: every model)",
    "seen_pool": " (eval tasks of trained models; candidates: the trained models only, the paper's Table 1)",
}


def rows_table(first: str, rows: dict, columns) -> list[str]:
    """A Markdown table: one line per ``rows`` item (its name first, then its ``columns``)."""
    return (["| " + " | ".join([first, *columns]) + " |", "|---" * (len(columns) + 1) + "|"]
            + [f"| {name} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for name, row in rows.items()])


def spread_table(first: str, spread: dict) -> list[str]:
    """A seed spread as Markdown: one line per measure of its ``summary``, one column per seed, then mean ± std."""
    seeds = list(spread["per_seed"])
    return (["| " + " | ".join([first, *seeds, "mean ± std"]) + " |", "|---" * (len(seeds) + 2) + "|"]
            + [f"| {k} | " + " | ".join(str(spread["per_seed"][s].get(k, "")) for s in seeds)
               + f" | {v['mean']} ± {v['std']} |" for k, v in spread["summary"].items()])


def _with_interval(row: dict) -> dict:
    """A row whose metrics with a ``ci95`` interval read ``value [lo, hi]``."""
    ci = row.get("ci95") or {}
    return {**row, **{k: f"{row[k]} [{lo}, {hi}]" for k, (lo, hi) in ((k, v) for k, v in ci.items() if v)}}


def methods_table(methods: dict, columns) -> list[str]:
    """A Markdown table of methods, best R@1 first (with 95 % intervals where the rows have them)."""
    ordered = sorted(methods.items(), key=lambda kv: -(kv[1].get("r@1") or 0))
    return rows_table("method", {name: _with_interval(row) for name, row in ordered}, columns)


def _comparisons(compared: dict) -> list[str]:
    lines = ["| setting | difference | R@1 mean [95 % CI] | P(better) | rel@1 mean [95 % CI] |", "|---|---|---|---|---|"]
    for setting, pairs in compared.items():
        for pair, d in pairs.items():
            r, rel = d["r@1"], d["rel@1"]
            if r and rel:
                lines.append(f"| {setting} | {pair} | {r['mean']} {r['ci95']} | {r['p_a_better']} | "
                             f"{rel['mean']} {rel['ci95']} |")
    return lines


def _header_sections(r: dict) -> list[str]:
    """Leakage check, validation choices and dropped rows: what the tables below rest on."""
    out = []
    if "disjoint_images" in r:
        d = r["disjoint_images"]
        out += ["## Splits", "", f"Task images per pool part: {d['images']}. Shared between parts: {d['shared']} "
                f"(training vs evaluation disjoint: **{d['train_vs_eval']}**, training vs validation: "
                f"{d['train_vs_val']}, validation vs evaluation: {d['val_vs_eval']}).", ""]
    if "validation" in r:
        v = r["validation"]
        out += ["## Validation (every choice is made here; evaluation tasks are scored once)", "",
                f"{v['val_tasks_seen_models']} tasks of seen models, {v['val_tasks_unseen_models']} of the "
                f"validation-unseen models ({', '.join(v['val_unseen_models']) or 'none'}). Criterion: "
                f"{v['criterion']}. Chosen: {v['chosen']}.", ""]
        out += rows_table("training setting", v["training"]["grid"],
                          ["val_r@1", "val_seen_r@1", "val_unseen_r@1"]) + [""]
        out += rows_table("label weight", v["label_weight"]["grid"], ["val_r@1"]) + [""]
        out += rows_table("rerank_k", v["rerank_k"]["grid"], ["val_r@1"]) + [""]
        if "data_rerank_k" in v:
            out += rows_table("data_rerank_k", v["data_rerank_k"]["grid"], ["val_r@1"]) + [""]
        if "data_fusion" in v:
            out += rows_table(f"data_fusion (k={v['data_fusion']['rerank_k']})", v["data_fusion"]["grid"],
                              ["val_r@1"]) + [""]
        if "data_accuracy_weight" in v:
            out += rows_table("data_accuracy_weight", v["data_accuracy_weight"]["grid"], ["val_r@1"]) + [""]
        if "trained_vector_weight" in v:
            out += rows_table("trained_vector_weight", v["trained_vector_weight"]["grid"],
                              ["val_r@1", "val_seen_r@1", "val_unseen_r@1"]) + [""]
        if "finetune_fit" in v:
            out += [f"`finetune-fit` configuration, by validation tau_w against Ft.Acc (the data stage there: "
                    f"{v['finetune_fit']['data_val_tau_w']}):", ""]
            out += rows_table("configuration", v["finetune_fit"]["grid"], ["val_tau_w"]) + [""]
    for name, why in r.get("dropped_methods", {}).items():
        method, blind = name.removesuffix(" (label-blind)"), name.endswith(" (label-blind)")
        out += [f"`{method}` is not in the {'label-blind ' if blind else ''}tables: {why}.", ""]
    return out


def _folds(u: dict) -> list[str]:
    if not u.get("folds"):
        return []
    cols = ["domains", "tasks", "train_models", "know2vec r@1", "know2vec recall@10", "two-stage-leep@3 r@1",
            "two-stage-leep@3 label-blind r@1", "leep r@1", "data r@1", "data recall@10",
            "two-stage-data-leep@3 label-blind r@1", "fused-data-leep@3 label-blind r@1"]
    cols += [c for c in ("data+know2vec r@1", "data+know2vec recall@10") if c in u["summary"]]
    rows = {str(i): {**f, "domains": ", ".join(f["domains"])} for i, f in enumerate(u["folds"])}
    return (["", "### Folds (each fold's domains out of training and probes; candidates: every model)", ""]
            + rows_table("fold", rows, cols)
            + ["| mean ± std | | | | " + " | ".join(f"{u['summary'][k]['mean']} ± {u['summary'][k]['std']}"
                                                   for k in cols[3:]) + " |"])


def to_markdown(r: dict) -> str:
    """Tables 1 and 2 (and the extra views) as Markdown."""
    cols = ["r@1", "r@3", "rel@1", "rel@3", "v_acc", "ft_acc", "tau_w", "search_s", "access"]
    c = r["counts"]
    out = [f"# k2v-hub bench: profile `{r['profile']}`", "", f"Command: `{r['command']}` (k2v-hub {r['k2v_hub_version']}, "
           f"{r['machine']})", "", f"{c['models']} models ({c['seen_models']} seen, {c['unseen_models']} unseen), "
           f"{c['eval_tasks_seen']} + {c['eval_tasks_inductive']} NNR eval tasks (seen + inductive), "
           f"{c['transfer_tasks']} transfer tasks.", "", "## Table 1: NNR evaluation tasks", ""]
    out[-2:-2] = _header_sections(r)
    out += methods_table(r["methods"], cols)
    for name, methods in r.get("settings", {}).items():
        out += ["", f"### Setting: {name}{SETTING_NOTES.get(name, '')}", ""]
        out += methods_table(methods, ["r@1", "r@3", "rel@1", "tau_w"])
    if r.get("comparisons"):
        out += ["", "### Paired differences (bootstrap over the same tasks)", ""] + _comparisons(r["comparisons"])
    out += ["", "## Table 2: transfer tasks (correlation with Ft.Acc)", "", "| method | pearson | spearman | tau_w |",
            "|---|---|---|---|"]
    for name, row in sorted(r["transfer"].items(), key=lambda kv: -kv[1]["tau_w"]):
        out.append(f"| {name} | {row['pearson']} | {row['spearman']} | {row['tau_w']} |")
    if "label_blind" in r:
        out += ["", "## Label-blind (task label names replaced by class_0..)", ""]
        out += methods_table(r["label_blind"]["methods"], ["r@1", "r@3", "rel@1", "rel@3", "tau_w"])
        for name, methods in r["label_blind"].get("settings", {}).items():
            out += ["", f"### Label-blind, setting: {name}{SETTING_NOTES.get(name, '')}", ""]
            out += methods_table(methods, ["r@1", "r@3", "rel@1", "tau_w"])
    out += ["", "## Oracle views (one retriever, knowledge rebuilt from each view)", "", "| view | r@1 | queries/model |",
            "|---|---|---|"]
    for view, row in r["oracle_views"].items():
        out.append(f"| {view} | {row['r@1']} | {row['queries_per_model']} |")
    u = r.get("unseen_domains", {})
    if u.get("methods"):
        out += ["", f"## Unseen domains: {', '.join(u['held_out_domains'])} ({u['tasks']} tasks; out of training and "
                f"probes)", "", f"First-stage recall, vectors alone: {u['first_stage']}; vectors + label names "
                f"(the candidates `find_model` re-ranked before data fingerprints): {u.get('first_stage_with_labels')}; "
                f"declared-data first stage, label-blind: {u.get('first_stage_data')}; the same with each fold's "
                f"vector among the models it trained on (`data+know2vec`): {u.get('first_stage_data_know2vec')}", ""]
        out += methods_table(u["methods"], ["r@1", "r@3", "rel@1", "tau_w", "models_run_per_search",
                                            "queries_per_search", "seconds_per_search"])
        out += _folds(u)
    if r.get("ablation"):
        out += ["", "## Ablation (NNR eval tasks: all candidates; seen_pool: seen tasks, trained models as candidates)",
                ""] + rows_table("variant", r["ablation"], ["r@1", "r@3", "seen_pool_r@1", "seen_pool_r@3"])
    if r.get("seed_spread"):
        out += ["", "## Seed spread (the main retriever retrained with each seed)", ""]
        out += spread_table("measure", r["seed_spread"])
    if r.get("zoo_seed_spread"):
        out += ["", "## Zoo seed spread (another zoo drawn and built per seed; the main retriever's recipe; the data "
                "stage, LEEP and the two-stage label-blind)", ""]
        out += spread_table("measure", r["zoo_seed_spread"])
    out += ["", "## Timing", "", "| what | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in r["timing"].items()]
    return "\n".join(out) + "\n"


def probes_markdown(results: dict) -> str:
    """The probe ablation (`k2v-hub bench --probes`) as Markdown."""
    cols = ["r@1", "r@3", "recall@10", "two-stage-leep@3 r@1", "queries_per_model"]
    md = [f"# Probe-set ablation, profile `{results['profile']}`", "", f"Command: `{results['command']}`", "",
          f"Unseen domains {', '.join(results['held_out_domains'])} ({results['tasks']} NNR tasks): kept out of "
          "retriever training and out of every probe set. Vector search (r@1, r@3, first-stage recall@10) and the "
          "two-stage search (candidates from vectors + label names, LEEP on 3).", "",
          *rows_table("probe set", results["rows"], cols)]
    return "\n".join(md) + "\n"


def embedding_picture(retriever, graphs: dict, data: BenchData, path: Path, profile: str) -> Path:
    """The model vectors in 2-D (t-SNE past 20 models, else PCA), coloured by source domain; written to ``path``."""
    models = data.models
    M = retriever.embed_models([graphs[m] for m in models])
    return plot_embedding_space(M, [data.zoo.models[m].get("domain", "?") for m in models], path, names=models,
                                method="tsne" if len(models) > 20 else "pca",
                                title=f"Know2Vec model vectors ({profile} zoo), colour = source domain")
