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


def methods_table(methods: dict, columns) -> list[str]:
    """A Markdown table of methods, best R@1 first."""
    return rows_table("method", dict(sorted(methods.items(), key=lambda kv: -(kv[1].get("r@1") or 0))), columns)


def to_markdown(r: dict) -> str:
    """Tables 1 and 2 (and the extra views) as Markdown."""
    cols = ["r@1", "r@3", "rel@1", "rel@3", "v_acc", "ft_acc", "tau_w", "search_s", "access"]
    c = r["counts"]
    out = [f"# k2v-hub bench: profile `{r['profile']}`", "", f"Command: `{r['command']}` (k2v-hub {r['k2v_hub_version']}, "
           f"{r['machine']})", "", f"{c['models']} models ({c['seen_models']} seen, {c['unseen_models']} unseen), "
           f"{c['eval_tasks_seen']} + {c['eval_tasks_inductive']} NNR eval tasks (seen + inductive), "
           f"{c['transfer_tasks']} transfer tasks.", "", "## Table 1: NNR evaluation tasks", ""]
    out += methods_table(r["methods"], cols)
    for name, methods in r.get("settings", {}).items():
        out += ["", f"### Setting: {name}{SETTING_NOTES.get(name, '')}", ""]
        out += methods_table(methods, ["r@1", "r@3", "rel@1", "tau_w"])
    out += ["", "## Table 2: transfer tasks (correlation with Ft.Acc)", "", "| method | pearson | spearman | tau_w |",
            "|---|---|---|---|"]
    for name, row in sorted(r["transfer"].items(), key=lambda kv: -kv[1]["tau_w"]):
        out.append(f"| {name} | {row['pearson']} | {row['spearman']} | {row['tau_w']} |")
    if "label_blind" in r:
        out += ["", "## Label-blind (task label names replaced by class_0..)", ""]
        out += methods_table(r["label_blind"]["methods"], ["r@1", "r@3", "rel@1", "rel@3", "tau_w"])
    out += ["", "## Oracle views (one retriever, knowledge rebuilt from each view)", "", "| view | r@1 | queries/model |",
            "|---|---|---|"]
    for view, row in r["oracle_views"].items():
        out.append(f"| {view} | {row['r@1']} | {row['queries_per_model']} |")
    u = r.get("unseen_domains", {})
    if u.get("methods"):
        out += ["", f"## Unseen domains: {', '.join(u['held_out_domains'])} ({u['tasks']} tasks; out of training and "
                f"probes)", "", f"First-stage recall, vectors alone: {u['first_stage']}; vectors + label names "
                f"(the candidates `find_model` re-ranks): {u.get('first_stage_with_labels')}", ""]
        out += methods_table(u["methods"], ["r@1", "r@3", "rel@1", "tau_w", "models_run_per_search",
                                            "queries_per_search", "seconds_per_search"])
    if r.get("ablation"):
        out += ["", "## Ablation (NNR eval tasks: all candidates; seen_pool: seen tasks, trained models as candidates)",
                ""] + rows_table("variant", r["ablation"], ["r@1", "r@3", "seen_pool_r@1", "seen_pool_r@3"])
    if r.get("seed_spread"):
        keys = list(r["seed_spread"]["summary"])
        out += ["", "## Seed spread (the main retriever retrained with each seed)", ""]
        out += rows_table("seed", r["seed_spread"]["per_seed"], keys)
        out.append("| mean ± std | " + " | ".join(f"{v['mean']} ± {v['std']}"
                                                  for v in r["seed_spread"]["summary"].values()) + " |")
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
