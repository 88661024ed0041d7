"""What one bench run computes once: the zoo's tasks and ground truth, the models' knowledge, their forward passes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import datasets
import numpy as np
import torch
from transformers import AutoModelForImageClassification
from transformers.utils import logging as hf_logging

from ..declared import ACCURACY_WEIGHT, TRAINED_VECTOR_WEIGHT, decode_fingerprint
from ..features import FeatureExtractor
from ..hub import LocalSource
from ..index import Indexer, card_accuracy, card_dataset_ids, data_columns
from ..inferred import MIN_CHANCE_RATIO, DeclaredPool, infer_data_columns
from ..knowledge import load_probe_set
from ..oracle import TransformersOracle
from ..pipeline import make_indexer, new_retriever
from ..train import TrainingArguments, supervised_data, train_retriever
from ..utils import logger, progress
from ..zoo.data import ZooData
from ..zoo.models import images_to_pixel_values, predict_logits_and_features


class ProbeSet(NamedTuple):
    """A probe set's normalised spec and its fingerprint."""

    spec: dict
    fingerprint: str

    @classmethod
    def load(cls, spec: dict | None = None) -> ProbeSet:
        """The probe set of ``spec`` (default: the built-in one), see :func:`~k2v_hub.knowledge.load_probe_set`."""
        _, fingerprint, spec = load_probe_set(spec)
        return cls(spec, fingerprint)


class Knowledge(NamedTuple):
    """Every model's knowledge for one probe set and oracle view."""

    indexer: Indexer
    records: dict
    graphs: dict
    queries: dict  # black-box queries per model


@dataclass
class Splits:
    """The models and tasks a bench run trains and evaluates on."""

    seen: list[str]  # the models the retriever trains on
    train: list[str]  # their training tasks
    eval_seen: list[str]  # NNR eval tasks of seen models
    eval_inductive: list[str]  # NNR tasks of the models the retriever never sees
    transfer: list[str]  # the transfer tasks scored: those outside training (all of them if none is)
    val_seen: list[str] = field(default_factory=list)  # validation tasks of seen models
    val_unseen: list[str] = field(default_factory=list)  # tasks of the validation-unseen models

    @property
    def val(self) -> list[str]:
        """Every validation task: where the run's choices are made."""
        return self.val_seen + self.val_unseen

    @property
    def eval_all(self) -> list[str]:
        """Every NNR eval task: seen, then inductive."""
        return self.eval_seen + self.eval_inductive

    @classmethod
    def of(cls, zoo: ZooData) -> Splits:
        """A zoo's splits (the manifest's model roles and task splits)."""
        transfer = zoo.task_ids(kind="transfer")
        seen = [m for m in zoo.model_ids if zoo.models[m].get("role", "seen") == "seen"]
        val = zoo.task_ids(split="val", kind="nnr")
        return cls(seen=seen, train=zoo.task_ids(split="train"), eval_seen=zoo.task_ids(split="eval", kind="nnr"),
                   eval_inductive=zoo.task_ids(split="inductive", kind="nnr"),
                   transfer=[t for t in transfer if zoo.task(t)["split"] != "train"] or transfer,
                   val_seen=[t for t in val if zoo.task(t)["origin_model"] in seen],
                   val_unseen=[t for t in val if zoo.task(t)["origin_model"] not in seen])


class BenchData:
    """Everything one bench run needs, computed once: zoo, features, knowledge, forward passes."""

    def __init__(self, zoo_dir: Path, work: Path, *, seed: int, show_progress: bool):
        self.zoo = ZooData(zoo_dir)
        self.work = work
        self.seed = seed
        self.show = show_progress
        self.source = LocalSource(zoo_dir)
        self.models = self.zoo.model_ids
        self.extractor = FeatureExtractor.from_pretrained(None)
        self.task_ids = [t["task_id"] for t in self.zoo.tasks]
        self.means = self.zoo.task_means(self.task_ids, self.extractor, show_progress=show_progress)
        self.v = self.zoo.scores(self.task_ids, self.models, "v_acc")
        self.ft = self.zoo.scores(self.task_ids, self.models, "ft_acc")
        self.row = {t: i for i, t in enumerate(self.task_ids)}
        self.col = {m: j for j, m in enumerate(self.models)}
        self.labels = {m: list(json.loads((self.zoo.root / m / "config.json").read_text())["id2label"].values())
                       for m in self.models}
        #: the estimators' score matrices and seconds per task, by task ids (they run once per set of tasks)
        self.estimates: dict[tuple, tuple[dict, dict]] = {}
        #: estimators left out of the tables, and why (e.g. H-score where N <= D)
        self.dropped: dict[str, str] = {}
        #: seconds of the backbone pass over a user's images (measured through `find_model`), charged to every
        #: Know2Vec search
        self.feature_pass_s = 0.0
        #: weight of the cards' reported accuracy in the data score (`find_model`'s, until validation chooses)
        self.accuracy_weight = ACCURACY_WEIGHT
        #: weight of the vector among the models the retriever trained on (``data+know2vec``; `find_model`'s, until
        #: validation chooses)
        self.trained_vector_weight = TRAINED_VECTOR_WEIGHT
        #: the ``finetune-fit`` predictor validation chose (:func:`~k2v_hub.bench.validation.choose_finetune`)
        self.finetune_predictor = None
        #: its features per task, computed once (:func:`~k2v_hub.bench.finetune.task_features`)
        self.finetune_features: dict[str, np.ndarray] = {}
        self._fingerprints: list | None = None
        self._accuracies: list | None = None
        self._half_cards: dict | None = None

    @property
    def fingerprints(self) -> list:
        """Each model's data fingerprint ``[C, D]`` (``None`` if it has none), made and stored as an index row's:
        :func:`~k2v_hub.index.data_columns` on the dataset repo its card names (the zoo's ``datasets/`` folder)."""
        if self._fingerprints is None:
            self._read_declared()
        return self._fingerprints

    @property
    def reported_accuracies(self) -> list:
        """Each model's accuracy reported on its declared data, as an index row's ``reported_accuracy``."""
        if self._accuracies is None:
            self._read_declared()
        return self._accuracies

    def _read_declared(self) -> None:
        """Read every model's declared data once: its fingerprint and the accuracy its card reports on it."""
        self._fingerprints, self._accuracies = [], []
        for m in progress(self.models, desc="Data fingerprints", disable=not self.show or None):
            ref = self.source.model_ref(m)
            cols = data_columns(self.source, ref, self.labels[m], self.extractor)
            self._fingerprints.append(decode_fingerprint(cols["data_fingerprint"], self.extractor.dim))
            self._accuracies.append(card_accuracy(ref, cols["data_source"]))

    def hidden_cards(self) -> np.ndarray:
        """The seeded half of the models whose cards ``data-half-cards`` hides (indices into :attr:`models`)."""
        return np.random.default_rng(self.seed).permutation(len(self.models))[: len(self.models) // 2]

    @property
    def half_cards(self) -> dict:
        """The declared data an index holds when :meth:`hidden_cards`' cards name no dataset (made once): see
        :meth:`inferred_half_cards`."""
        if self._half_cards is None:
            self._half_cards = self.inferred_half_cards()
        return self._half_cards

    def inferred_half_cards(self, min_ratio: float = MIN_CHANCE_RATIO) -> dict:
        """The others' fingerprints and accuracies, and for each hidden model the data :mod:`k2v_hub.inferred`
        infers from the datasets the others' cards name (``fingerprints``, ``accuracies``, ``hidden``, ``inferred``:
        how many got one, ``queries``: black-box images asked, ``seconds``)."""
        hidden = set(self.hidden_cards().tolist())
        visible = [m for j, m in enumerate(self.models) if j not in hidden]
        pool = DeclaredPool(self.source, [d for m in visible
                                          for d in card_dataset_ids(self.source.model_ref(m).card_data)])
        fingerprints, accuracies = list(self.fingerprints), list(self.reported_accuracies)
        queries, inferred, t0 = 0, 0, time.perf_counter()
        for j in progress(sorted(hidden), desc="Inferred data (half the cards)", disable=not self.show or None):
            m = self.models[j]
            cols, spent = infer_data_columns(pool, self.labels[m],
                                             lambda m=m: TransformersOracle(self.zoo.root / m, view="full"),
                                             self.extractor, min_ratio=min_ratio)
            queries += spent
            inferred += cols is not None
            fingerprints[j] = decode_fingerprint(cols["data_fingerprint"], self.extractor.dim) if cols else None
            accuracies[j] = None
        return {"fingerprints": fingerprints, "accuracies": accuracies, "hidden": len(hidden), "inferred": inferred,
                "queries": queries, "seconds": round(time.perf_counter() - t0, 2)}

    def truth(self, task_ids) -> np.ndarray:
        """Per task, the accuracy that defines its best model (V.Acc for NNR, Ft.Acc for transfer)."""
        return np.stack([self.v[self.row[t]] if self.zoo.task(t)["kind"] == "nnr" else self.ft[self.row[t]]
                         for t in task_ids])

    def rows(self, task_ids, mat):
        """Rows of a ``[all tasks, models]`` matrix."""
        return mat[[self.row[t] for t in task_ids]]

    def class_names(self, task_id: str, *, label_blind: bool) -> list[str]:
        """A task's class names, or ``class_0..`` in label-blind mode."""
        names = self.zoo.task(task_id)["class_names"]
        return [f"class_{k}" for k in range(len(names))] if label_blind else names

    def new_retriever(self, probe: ProbeSet, *, seed: int, **encoders):
        """An untrained retriever in the bench's feature space on ``probe`` (``encoders``: the ablation's)."""
        return new_retriever(self.extractor, probe_spec=probe.spec, probe_fingerprint=probe.fingerprint, seed=seed,
                             **encoders)

    def trained_retriever(self, knowledge: Knowledge, splits: Splits, probe: ProbeSet, args: TrainingArguments):
        """A retriever trained with ``args`` on the seen models' training tasks (how the bench trains the retriever of
        a zoo other than the one its validation split chose the settings on)."""
        retriever = self.new_retriever(probe, seed=args.seed)
        train_retriever(retriever, self.supervised(knowledge, splits.seen, splits.train), args, show_progress=False)
        return retriever

    def supervised(self, knowledge: Knowledge, model_ids, task_ids):
        """Supervised training data: ``task_ids`` against ``model_ids`` (their ``knowledge``: graphs and records)
        with their measured ground truth."""
        rows = [self.truth([t])[0][[self.col[m] for m in model_ids]] for t in task_ids]
        return supervised_data([knowledge.graphs[m] for m in model_ids], model_ids,
                               [self.means[t] for t in task_ids], rows,
                               records=[knowledge.records[m] for m in model_ids])

    def knowledge(self, retriever, *, probe=None, view="full") -> Knowledge:
        """Records and graphs of every model for a probe set and view (queries cached on disk)."""
        indexer = make_indexer(retriever, retriever_id="bench", probe=probe, oracle_view=view,
                               extractor=self.extractor, cache_dir=self.work / "knowledge")
        records, graphs, queries = {}, {}, {}
        for m in progress(self.models, desc=f"Knowledge ({view})", disable=not self.show or None):
            record, _ = indexer.knowledge_for(self.source, self.source.model_ref(m))
            records[m], graphs[m], queries[m] = record, indexer.graph(record), record.n_queries
        return Knowledge(indexer, records, graphs, queries)

    def forward_passes(self, task_ids) -> dict:
        """Per model: probs and penultimate features on every task's support images, and seconds per task.

        Keys ``probs`` and ``features`` (by ``(task, model)``, named as the estimators' inputs in
        :mod:`k2v_hub.methods`), ``labels`` (by task), ``seconds`` (by ``(task, model)``) and ``load_s`` (by model).
        A task's seconds include the model's whole load time: a user with one dataset loads every model once.
        """
        hf_logging.disable_progress_bar()
        support = {}
        for t in task_ids:
            ds = datasets.load_from_disk(str(self.zoo.task_path(t)))["support"]
            support[t] = (images_to_pixel_values(list(ds["image"])), np.asarray(ds["label"]))
        out = {"probs": {}, "features": {}, "labels": {t: support[t][1] for t in task_ids}, "seconds": {},
               "load_s": {}}
        for m in progress(self.models, desc="Forward passes (baselines)", disable=not self.show or None):
            t0 = time.perf_counter()
            model = AutoModelForImageClassification.from_pretrained(self.zoo.root / m, use_safetensors=True,
                                                                    local_files_only=True).eval()
            load_s = out["load_s"][m] = time.perf_counter() - t0
            for t in task_ids:
                t1 = time.perf_counter()
                logits, feats = predict_logits_and_features(model, support[t][0])
                out["probs"][(t, m)] = torch.softmax(torch.from_numpy(logits), -1).numpy()
                out["features"][(t, m)] = feats
                out["seconds"][(t, m)] = time.perf_counter() - t1 + load_s
        logger.info("forward passes of %d models on %d tasks kept in memory", len(self.models), len(task_ids))
        return out
