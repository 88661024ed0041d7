"""Train a retriever on an offline zoo: its ``seen`` models' knowledge against its ``train`` tasks' measured best
models (the supervised L_MKC + L_SAL data of the paper)."""

from __future__ import annotations

from ..features import FeatureExtractor
from ..hub import LocalSource
from ..knowledge import load_probe_set
from ..pipeline import make_indexer, model_knowledge, new_retriever, save_retriever
from ..train import TrainingArguments, supervised_data, train_retriever
from ..utils import seed_everything
from .data import ZooData

__all__ = ["zoo_training_data", "train_from_zoo"]


def zoo_training_data(zoo, indexer, *, model_ids=None, task_ids=None, metric=None, show_progress=True):
    """Supervised training data from a zoo: graphs of ``model_ids``, means of ``task_ids``, best-model targets."""
    source = LocalSource(zoo.root)
    model_ids = model_ids or [m for m in zoo.model_ids if zoo.models[m].get("role", "seen") == "seen"]
    task_ids = task_ids or zoo.task_ids(split="train")
    records, graphs = model_knowledge(source, model_ids, indexer, show_progress=show_progress)
    means = zoo.task_means(task_ids, indexer.extractor, show_progress=show_progress)
    rows = []
    for t in task_ids:
        rows.append(zoo.scores([t], model_ids, metric or zoo.truth_metric(t))[0])
    return supervised_data([graphs[m] for m in model_ids], model_ids, [means[t] for t in task_ids], rows,
                           records=[records[m] for m in model_ids])



def train_from_zoo(zoo_dir, out_dir, *, args=None, backbone=None, probe=None, oracle_view="full",
                   model_encoder="lstm", query_encoder="lstm", max_classes=16, show_progress=True,
                   push_to_hub: str | None = None, token: str | None = None):
    """Supervised training on a zoo's ``train`` tasks of its ``seen`` models; saves to ``out_dir``."""
    args = args or TrainingArguments()
    seed_everything(args.seed)
    zoo = ZooData(zoo_dir)
    extractor = FeatureExtractor.from_pretrained(backbone)
    _, fingerprint, spec = load_probe_set(probe)
    retriever = new_retriever(extractor, probe_spec=spec, probe_fingerprint=fingerprint, oracle_view=oracle_view,
                              model_encoder=model_encoder, query_encoder=query_encoder, max_classes=max_classes,
                              seed=args.seed)
    indexer = make_indexer(retriever, retriever_id="untrained", probe=spec, oracle_view=oracle_view,
                           extractor=extractor)
    data = zoo_training_data(zoo, indexer, show_progress=show_progress)
    metrics = train_retriever(retriever, data, args, show_progress=show_progress)
    metrics["zoo"] = str(zoo_dir)
    save_retriever(retriever, out_dir, push_to_hub=push_to_hub, token=token)
    return retriever, metrics
