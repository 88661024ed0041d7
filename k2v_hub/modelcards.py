"""Cards rendered from the templates in ``cards/`` with huggingface_hub's card classes."""

from __future__ import annotations

import re
import textwrap
from importlib.resources import files

from huggingface_hub import DatasetCard, DatasetCardData, constants
from jinja2 import Environment

from .index_row import IndexRow, column_docs
from .inferred import INFERRED_NOTE

SECTION_START = "<!-- k2v-hub:start -->"
SECTION_END = "<!-- k2v-hub:end -->"
_SECTION = re.compile(re.escape(SECTION_START) + r".*?" + re.escape(SECTION_END), re.DOTALL)


def template(name: str) -> str:
    """The text of a card template shipped in ``cards/``."""
    return files("k2v_hub.cards").joinpath(name).read_text(encoding="utf-8")


def render_index_card(meta: dict, rows: list[IndexRow], *, repo_id: str | None = None) -> str:
    """The index's dataset card (``cards/index_card.md``)."""
    data = DatasetCardData(
        pretty_name=f"k2v-hub index{f' of {repo_id}' if repo_id else ''}",
        tags=["k2v-hub", "know2vec", "model-retrieval"],
        license="apache-2.0",
        size_categories=["n<1K" if len(rows) < 1000 else "1K<n<10K"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    )
    queries = [int(r.n_queries) for r in rows]
    spec = meta.get("probe_spec") or {}
    values = {
        **meta,
        "repo_id": repo_id,
        "n_models": len(rows),
        "total_queries": sum(queries),
        "mean_queries": round(sum(queries) / len(queries)) if queries else 0,
        "n_declared": sum(bool(r.data_fingerprint) and not r.data_note.startswith(INFERRED_NOTE) for r in rows),
        "n_inferred": sum(bool(r.data_fingerprint) and r.data_note.startswith(INFERRED_NOTE) for r in rows),
        "probe_description": ", ".join(f"{k}={v}" for k, v in spec.items() if v not in (None, [], "")),
        "endpoint": constants.ENDPOINT,
        "columns": textwrap.fill(column_docs(), 115, break_long_words=False, break_on_hyphens=False),
        "models": [{"model_id": r.model_id, "revision": r.revision, "n_labels": len(r.labels),
                    "n_queries": r.n_queries} for r in rows],
    }
    return str(DatasetCard.from_template(data, template_str=template("index_card.md"), **values))


def render_model_section(**values) -> str:
    """The marked k2v-hub section added to a model's README (``cards/model_card_section.md``)."""
    return Environment(autoescape=False, keep_trailing_newline=True).from_string(
        template("model_card_section.md")).render(**values)


def upsert_section(readme: str | None, section: str) -> str:
    """Add the k2v-hub section to a README, or replace the one already there (front matter kept)."""
    section = section.strip() + "\n"
    if not readme:
        return section
    if SECTION_START in readme and SECTION_END in readme:
        return _SECTION.sub(lambda _m: section.strip(), readme, count=1)
    return readme.rstrip("\n") + "\n\n" + section
