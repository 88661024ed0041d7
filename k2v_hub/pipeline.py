"""The end-to-end jobs behind the CLI: train a retriever, index an org, push cards.

Each job composes the pipeline modules in order (oracle -> knowledge -> encoders -> training -> index) and is
usable from Python as well as from ``k2v-hub``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import __version__
from .errors import K2VError
from .features import FeatureExtractor, k2v_home
from .find import retriever_for_index
from .hub import commit_files, read_text_file, upload_folder, validate_repo_id
from .index import IndexSettings, Indexer, load_index
from .knowledge import KnowledgeRecord, load_probe_set
from .modelcards import render_model_section, upsert_section
from .retriever import DEFAULT_RETRIEVER_ID, WEIGHTS_NAME, Retriever, bundled_retriever_dir
from .train import TrainingArguments, self_supervised_data, train_retriever
from .utils import logger, progress, seed_everything


def make_indexer(retriever, *, retriever_id: str, retriever_revision: str = "local", probe=None,
                 oracle_view: str = "full", max_classes: int | None = None, bisection_steps: int = 7,
                 query_budget: int | None = None, trust_remote_code: bool = False, allow_pickle: bool = False,
                 token: str | None = None, cache_dir=None, extractor=None):
    """An :class:`~k2v_hub.index.Indexer` for a retriever; the probe set defaults to the retriever's own."""
    probes, fingerprint, spec = load_probe_set(probe if probe is not None else retriever.probe_spec, token=token)
    if retriever.probe_fingerprint and fingerprint != retriever.probe_fingerprint:
        logger.warning("Probe set %s differs from the retriever's training probes %s", fingerprint,
                       retriever.probe_fingerprint)
    extractor = extractor or FeatureExtractor.from_pretrained(retriever.feature_space, token=token)
    settings = IndexSettings(
        retriever_id=retriever_id, retriever_revision=retriever_revision,
        retriever_fingerprint=retriever.fingerprint(), feature_space=extractor.name,
        probe_fingerprint=fingerprint, probe_spec=spec, oracle_view=oracle_view,
        max_classes=max_classes or retriever.max_classes, bisection_steps=bisection_steps,
        embed_dim=retriever.embed_dim,
    )
    return Indexer(retriever, extractor, probes, settings, query_budget=query_budget,
                   trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                   cache_dir=cache_dir or k2v_home() / "knowledge")


def model_knowledge(source, model_ids, indexer, *, show_progress=True) -> tuple[dict, dict]:
    """Knowledge records and graph sets ``({model_id: record}, {model_id: [K, K, D]})`` (queries go through the
    indexer's knowledge cache)."""
    records, graphs = {}, {}
    for model_id in progress(model_ids, desc="Knowledge graphs", disable=not show_progress or None):
        records[model_id], _ = indexer.knowledge_for(source, source.model_ref(model_id))
        graphs[model_id] = indexer.graph(records[model_id])
    return records, graphs


def new_retriever(extractor, *, probe_spec, probe_fingerprint, oracle_view="full", model_encoder="lstm",
                  query_encoder="lstm", max_classes=16, embed_dim=256, hidden_dim=256, seed: int = 0):
    """An untrained retriever for a feature space and probe set; its initial weights depend on ``seed`` only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Retriever(feature_space=extractor.name, feature_dim=extractor.dim, hidden_dim=hidden_dim,
                         embed_dim=embed_dim, model_encoder=model_encoder, query_encoder=query_encoder,
                         max_classes=max_classes, probe_fingerprint=probe_fingerprint, probe_spec=probe_spec,
                         oracle_view=oracle_view, k2v_hub_version=__version__)


def train_from_index(index, out_dir, *, retriever=None, args=None, show_progress=True, token=None,
                     push_to_hub: str | None = None):
    """Self-supervised adaptation from an index's knowledge records alone (pseudo-tasks, no labels)."""
    args = args or TrainingArguments()
    seed_everything(args.seed)
    idx = load_index(index, token=token)
    retriever = retriever_for_index(retriever, idx.meta, token=token)
    indexer = make_indexer(retriever, retriever_id=idx.meta["retriever_id"], probe=idx.meta["probe_spec"],
                           oracle_view=idx.meta["oracle_view"], token=token)
    records = [KnowledgeRecord.from_json(r.knowledge) for r in idx.rows]
    graphs = [indexer.graph(r) for r in progress(records, desc="Knowledge graphs", disable=not show_progress or None)]
    probe_feats = indexer.extractor([Image.fromarray(p) for p in indexer.probes], show_progress=False)
    data = self_supervised_data(graphs, [r.model_id for r in idx.rows], records, probe_feats, seed=args.seed)
    metrics = train_retriever(retriever, data, args, show_progress=show_progress)
    save_retriever(retriever, out_dir, push_to_hub=push_to_hub, token=token)
    return retriever, metrics


def save_retriever(retriever, out_dir, *, push_to_hub: str | None = None, token: str | None = None,
                   private: bool | None = None) -> str | None:
    """Save a retriever (safetensors + config + card) and optionally push the folder as a Hub model.

    The push is :func:`push_retriever` of the saved folder; returns its commit URL, or ``None`` without
    ``push_to_hub``.
    """
    out_dir = Path(out_dir)
    (out_dir / "README.md").unlink(missing_ok=True)
    if not push_to_hub:
        retriever.save_pretrained(out_dir)
        return None
    validate_repo_id(push_to_hub, "model id")
    retriever.save_pretrained(out_dir, model_card_kwargs={"repo_id": push_to_hub})
    return push_retriever(out_dir, push_to_hub, token=token, private=private)


def push_retriever(folder=None, repo_id: str | None = None, *, token: str | None = None,
                   private: bool | None = None) -> str:
    """Publish a retriever folder (default: the default retriever's local copy, the one ``k2v-hub build-retriever``
    built, else the one the package ships) as the Hub model repo ``repo_id`` (default: ``DEFAULT_RETRIEVER_ID``):
    its safetensors weights, config and card, in one commit through :func:`k2v_hub.hub.upload_folder` (create repo,
    pre-upload, commit: each step retried); returns the commit URL.

    The folder is loaded first, so only a retriever that loads (safetensors, a valid config) is pushed.
    """
    folder = Path(folder or bundled_retriever_dir())
    repo_id = repo_id or DEFAULT_RETRIEVER_ID
    validate_repo_id(repo_id, "model id")
    Retriever.from_pretrained(str(folder))
    return upload_folder(folder, repo_id, repo_type="model", token=token, private=private,
                         commit_message="Upload k2v-hub retriever",
                         allow_patterns=["config.json", WEIGHTS_NAME, "README.md"])


def safetensors_bytes(name: str, array: np.ndarray, metadata: dict[str, str]) -> bytes:
    """One float32 tensor as a safetensors file, byte-for-byte reproducible.

    ``safetensors.numpy.save`` writes its metadata in hash-map order, which changes from one process to the next;
    the same vector would then be a new file (and a new commit) at every push. Here the header is JSON with sorted
    keys, padded with spaces to 8 bytes as the format allows, so pushing an unchanged card changes nothing.
    """
    data = np.ascontiguousarray(array, dtype="<f4")
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()},
              name: {"dtype": "F32", "shape": list(data.shape), "data_offsets": [0, int(data.nbytes)]}}
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data.tobytes()


def push_card(model_id: str, index, *, token=None, create_pr=False, index_id: str | None = None,
              revision: str | None = None) -> str:
    """Upload ``k2v/embedding.safetensors`` + ``k2v/metadata.json`` and the card section in one commit.

    Args:
        model_id: the model repo (must be a row of the index).
        index: index folder or Hub dataset id.
        token: Hub token (write access to the model repo, or any token with ``create_pr``).
        create_pr: open a pull request (``refs/pr/N``) instead of committing; the branch is left unchanged.
        index_id: what the card and metadata name as the index (default: ``index``).
        revision: the model repo branch to read the card from and commit to (default ``main``).

    The README keeps everything outside the marked k2v-hub section; a second push replaces the section.
    Returns the commit or pull request URL.
    """
    idx = load_index(index, token=token)
    row = next((r for r in idx.rows if r.model_id == model_id), None)
    if row is None:
        raise K2VError(f"{model_id} is not in the index.", "Index it first with `k2v-hub index`.")
    record = KnowledgeRecord.from_json(row.knowledge)
    stored = row.to_dict()
    meta = {k: stored[k] for k in ("model_id", "revision", "retriever_id", "retriever_revision",
                                   "retriever_fingerprint", "feature_space", "probe_fingerprint", "oracle_view",
                                   "k2v_hub_version", "n_queries", "created_at")}
    meta["index"] = index_id or str(index)
    embedding = safetensors_bytes("embedding", np.asarray(row.embedding, dtype=np.float32),
                                  {k: str(v) for k, v in meta.items()})
    readme = read_text_file(model_id, "README.md", token=token, revision=revision)
    section = render_model_section(embed_dim=len(row.embedding), n_probes=len(record.probe_pred),
                                   n_queries=row.n_queries, index_id=meta["index"], revision=row.revision,
                                   retriever_id=row.retriever_id, retriever_fingerprint=row.retriever_fingerprint,
                                   feature_space=row.feature_space, probe_fingerprint=row.probe_fingerprint,
                                   n_classes=len(record.classes), n_labels=len(record.labels))
    files = {
        "k2v/embedding.safetensors": embedding,
        "k2v/metadata.json": json.dumps(meta, indent=2).encode(),
        "README.md": upsert_section(readme, section).encode(),
    }
    return commit_files(model_id, files, token=token, create_pr=create_pr, revision=revision,
                        commit_message="Add k2v-hub knowledge vector")
