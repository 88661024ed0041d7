"""Query tasks of the model zoo and their measured ground truth.

A task is a few classes (2-6) of one image source, drawn from HELD-OUT images (built with another
`split_seed_offset` of `k2v_hub.zoo.sources.build_source`, so no zoo model trained on them), stored as a
`datasets.DatasetDict` with a ``support`` and a ``query`` split (``image`` + ``label`` ClassLabel named after the
task's classes) in ``<zoo>/tasks/<task_id>/``.

- NNR tasks (``kind="nnr"``) take classes of one zoo model (``origin_model``): retrieval should find that model.
- Transfer tasks (``kind="transfer"``) take classes no zoo model was trained on (held-out classes of a source, or a
  held-out source); the best model is the one whose features transfer best.

Ground truth for every (task, model) pair:

- ``v_acc``: accuracy on the query split of the model's own head restricted to the task's label names it has
  (label names match exactly, see `label_key`; logits of labels the task lacks are dropped; query images whose label the
  model lacks count as wrong; a model sharing no label scores 0.0).
- ``ft_acc``: accuracy on the query split of a logistic-regression linear probe (scikit-learn, standardised
  features, fixed ``C``, few iterations) fit on the support split, on the model's penultimate features.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from .. import baselines
from ..errors import K2VError
from ..utils import atomic_directory
from .models import predict_logits_and_features, uint8_to_pixel_values

__all__ = [
    "TASK_COLUMNS",
    "GROUND_TRUTH_COLUMNS",
    "PROBE_C",
    "PROBE_MAX_ITER",
    "TaskSpec",
    "TaskData",
    "label_key",
    "POOL_PARTS",
    "task_pool_indices",
    "make_task_dataset",
    "save_task",
    "task_exists",
    "load_task",
    "load_task_data",
    "head_accuracy",
    "probe_accuracy",
    "model_ground_truth",
    "write_tasks_parquet",
    "write_ground_truth_parquet",
]

TASK_COLUMNS = (
    "task_id",
    "kind",
    "source",
    "domain",
    "class_names",
    "origin_model",
    "split",
    "n_support",
    "n_query",
)
GROUND_TRUTH_COLUMNS = ("task_id", "model_id", "v_acc", "ft_acc")
PROBE_C = 1.0
PROBE_MAX_ITER = 100
TASK_KINDS = ("nnr", "transfer")
TASK_SPLITS = ("train", "val", "eval", "inductive")
# Each class's held-out pool is cut into these disjoint parts, in this order: training tasks draw from the first,
# validation tasks from the second, evaluation tasks (eval, inductive, transfer, unseen domains) from the third.
POOL_PARTS = ("train", "val", "eval")


def label_key(name: str) -> str:
    """How label names are matched between tasks and models: exact after stripping whitespace.

    Case is kept: in the zoo it is meaningful (Latin ``a`` vs ``A``, Greek ``γ`` vs ``Γ`` are different classes).
    """
    return baselines.exact_label(name)


@dataclass
class TaskSpec:
    """One query task (a row of ``tasks.parquet``).

    Attributes:
        task_id: folder name under ``<zoo>/tasks/``.
        kind: ``"nnr"`` (classes of `origin_model`) or ``"transfer"`` (classes no zoo model knows).
        source / domain: the image source the classes come from and its domain.
        class_names: the task's label names, in the source's class order.
        origin_model: the model whose classes an NNR task took (``None`` for transfer tasks).
        split: retriever split: ``"train"``, ``"val"`` (where choices are made: tasks of seen models and of
            validation-unseen models), ``"eval"`` or ``"inductive"`` (tasks of unseen models).
        n_support / n_query: images per class in each split (the parquet stores totals).
        seed: seed of the image sampling.
    """

    task_id: str
    kind: str
    source: str
    domain: str
    class_names: tuple[str, ...]
    origin_model: str | None
    split: str
    n_support: int
    n_query: int
    seed: int
    pool_class_index: tuple[int, ...] = field(default=())  # index of each class in the source's class list

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise ValueError(f"kind must be one of {TASK_KINDS}, got {self.kind!r}.")
        if self.split not in TASK_SPLITS:
            raise ValueError(f"split must be one of {TASK_SPLITS}, got {self.split!r}.")
        if len(self.class_names) < 2:
            raise ValueError(f"A task needs >= 2 classes, got {self.class_names}.")
        self.class_names = tuple(self.class_names)
        self.pool_class_index = tuple(int(i) for i in self.pool_class_index)

    def to_row(self) -> dict[str, Any]:
        """The ``tasks.parquet`` row (support/query sizes as totals over classes)."""
        k = len(self.class_names)
        return {
            "task_id": self.task_id,
            "kind": self.kind,
            "source": self.source,
            "domain": self.domain,
            "class_names": list(self.class_names),
            "origin_model": self.origin_model,
            "split": self.split,
            "n_support": self.n_support * k,
            "n_query": self.n_query * k,
        }

    @property
    def pool_part(self) -> str:
        """The part of the held-out pool this task draws its images from (one of `POOL_PARTS`)."""
        return self.split if self.split in ("train", "val") else "eval"

    def fingerprint(self) -> str:
        """Hash of everything that determines the task's images: not its split, only the pool part it draws from."""
        d = asdict(self)
        d.pop("split")
        d["pool_part"] = self.pool_part
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:16]


@dataclass
class TaskData:
    """A task's images in memory: uint8 arrays [N, H, W, 3] and labels (indices into `class_names`)."""

    spec: TaskSpec
    support_images: np.ndarray
    support_labels: np.ndarray
    query_images: np.ndarray
    query_labels: np.ndarray


def task_pool_indices(spec: TaskSpec, pool_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                           np.ndarray]:
    """Which pool images a task takes: ``(support_idx, support_labels, query_idx, query_labels)``, each shuffled.

    Per class, the pool's images (in pool order) are cut into ``len(POOL_PARTS)`` equal disjoint parts; the task
    draws ``n_support + n_query`` distinct images of its part (``spec.pool_part``) with ``spec.seed``, support first.
    """
    rng = np.random.default_rng([spec.seed, 0x7A5C])
    per_class = spec.n_support + spec.n_query
    part = POOL_PARTS.index(spec.pool_part)
    sup_idx, sup_lab, qry_idx, qry_lab = [], [], [], []
    for j, c in enumerate(spec.pool_class_index):
        idx = np.flatnonzero(pool_labels == c)
        size = len(idx) // len(POOL_PARTS)
        idx = idx[part * size : (part + 1) * size]
        if len(idx) < per_class:
            raise K2VError(
                f"Task {spec.task_id}: the {spec.pool_part!r} part of the held-out pool has {len(idx)} images of "
                f"class {spec.class_names[j]!r}, {per_class} needed."
            )
        pick = rng.choice(idx, per_class, replace=False)
        sup_idx.extend(pick[: spec.n_support])
        sup_lab.extend([j] * spec.n_support)
        qry_idx.extend(pick[spec.n_support :])
        qry_lab.extend([j] * spec.n_query)
    sup_order = rng.permutation(len(sup_idx))
    qry_order = rng.permutation(len(qry_idx))
    return (np.asarray(sup_idx, dtype=np.int64)[sup_order], np.asarray(sup_lab, dtype=np.int64)[sup_order],
            np.asarray(qry_idx, dtype=np.int64)[qry_order], np.asarray(qry_lab, dtype=np.int64)[qry_order])


def make_task_dataset(spec: TaskSpec, pool_images: np.ndarray, pool_labels: np.ndarray):
    """Sample a task from a held-out pool: `pool_images` uint8 [N, H, W, 3], `pool_labels` source class indices.

    The images are those of :func:`task_pool_indices`. Returns `(DatasetDict, TaskData)`.
    """
    sup_idx, sup_lab, qry_idx, qry_lab = task_pool_indices(spec, pool_labels)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(spec.class_names))}
    )

    def split(idx, lab):
        return datasets.Dataset.from_dict(
            {"image": [Image.fromarray(pool_images[i]) for i in idx], "label": lab.tolist()}, features=features
        )

    dsd = datasets.DatasetDict({"support": split(sup_idx, sup_lab), "query": split(qry_idx, qry_lab)})
    data = TaskData(spec, pool_images[sup_idx], sup_lab, pool_images[qry_idx], qry_lab)
    return dsd, data


def task_exists(tasks_dir: str | Path, task_id: str) -> bool:
    """True if ``<tasks_dir>/<task_id>`` holds a saved DatasetDict."""
    return (Path(tasks_dir) / task_id / "dataset_dict.json").is_file()


def save_task(dsd, tasks_dir: str | Path, task_id: str) -> Path:
    """`save_to_disk` into ``<tasks_dir>/<task_id>`` atomically (temporary folder, then rename)."""
    final = Path(tasks_dir) / task_id
    with atomic_directory(final) as tmp:
        dsd.save_to_disk(str(tmp))
    return final


def load_task(tasks_dir: str | Path, task_id: str):
    """The task's `DatasetDict` (``support``, ``query``)."""
    return datasets.load_from_disk(str(Path(tasks_dir) / task_id))


def _split_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    batch = ds[:]
    images = batch["image"]
    arr = np.stack([np.asarray(im.convert("RGB")) for im in images]) if images else np.zeros((0, 1, 1, 3), np.uint8)
    return arr, np.asarray(batch["label"], dtype=np.int64)


def load_task_data(tasks_dir: str | Path, spec: TaskSpec) -> TaskData:
    """A saved task's images as arrays (checks its label names against `spec`)."""
    dsd = load_task(tasks_dir, spec.task_id)
    names = tuple(dsd["support"].features["label"].names)
    if names != tuple(spec.class_names):
        raise K2VError(f"Task {spec.task_id} on disk has labels {names}, expected {spec.class_names}.")
    si, sl = _split_arrays(dsd["support"])
    qi, ql = _split_arrays(dsd["query"])
    return TaskData(spec, si, sl, qi, ql)


# --------------------------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------------------------


def head_accuracy(
    query_logits: np.ndarray, model_labels: list[str], task_labels: list[str], query_labels: np.ndarray
) -> float:
    """V.Acc: the model's own head restricted to the task labels it has, the `head_accuracy` method's definition
    (:func:`k2v_hub.baselines.head_accuracy`, names matched as :func:`label_key` matches them) on these logits.

    Args:
        query_logits: [N, C] logits over the model's labels.
        model_labels: the model's label names (`id2label` order).
        task_labels: the task's label names.
        query_labels: [N] indices into `task_labels`.
    """
    if len(query_labels) == 0:
        return 0.0
    logits = np.asarray(query_logits, dtype=np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))  # the softmax's order, without normalising
    return baselines.head_accuracy(probs, query_labels, model_labels, task_labels)


def probe_accuracy(
    support_features: np.ndarray,
    support_labels: np.ndarray,
    query_features: np.ndarray,
    query_labels: np.ndarray,
    *,
    C: float = PROBE_C,
    max_iter: int = PROBE_MAX_ITER,
) -> float:
    """Ft.Acc: a standardised logistic-regression probe fit on the support features, scored on the query."""
    if len(query_labels) == 0:
        return 0.0
    if len(np.unique(support_labels)) < 2:
        return float((np.asarray(query_labels) == support_labels[0]).mean())
    scaler = StandardScaler().fit(support_features)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(support_features), support_labels)
    return float(clf.score(scaler.transform(query_features), query_labels))


def model_ground_truth(
    model,
    model_id: str,
    tasks: Iterable[TaskData],
    *,
    batch_size: int = 512,
    probe_C: float = PROBE_C,
    probe_max_iter: int = PROBE_MAX_ITER,
) -> list[dict[str, Any]]:
    """`{"task_id", "model_id", "v_acc", "ft_acc"}` for one model on every task: one batched forward over all
    (distinct) task images.

    `model` is a zoo `*ForImageClassification` model; images are normalised like in training
    (`k2v_hub.zoo.models.uint8_to_pixel_values`).
    """
    tasks = list(tasks)
    if not tasks:
        return []
    model_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    chunks = []
    for t in tasks:
        chunks.append(t.support_images)
        chunks.append(t.query_images)
    images = np.concatenate(chunks)
    # Tasks of one source share its held-out pool: run each distinct image through the model once.
    first: dict[bytes, int] = {}
    inverse = np.empty(len(images), dtype=np.int64)
    unique_rows: list[int] = []
    for i in range(len(images)):
        key = hashlib.blake2b(images[i].tobytes(), digest_size=16).digest()
        j = first.setdefault(key, len(unique_rows))
        if j == len(unique_rows):
            unique_rows.append(i)
        inverse[i] = j
    unique = images[unique_rows]
    logits, feats = [], []
    for start in range(0, len(unique), batch_size):
        lg, ft = predict_logits_and_features(model, uint8_to_pixel_values(unique[start : start + batch_size]))
        logits.append(lg)
        feats.append(ft)
    logits = np.concatenate(logits)[inverse]
    feats = np.concatenate(feats).astype(np.float64)[inverse]
    rows = []
    offset = 0
    for t in tasks:
        ns, nq = len(t.support_images), len(t.query_images)
        s_sl = slice(offset, offset + ns)
        q_sl = slice(offset + ns, offset + ns + nq)
        offset += ns + nq
        v = head_accuracy(logits[q_sl], model_labels, list(t.spec.class_names), t.query_labels)
        f = probe_accuracy(feats[s_sl], t.support_labels, feats[q_sl], t.query_labels, C=probe_C,
                           max_iter=probe_max_iter)
        rows.append({"task_id": t.spec.task_id, "model_id": model_id, "v_acc": v, "ft_acc": f})
    return rows


# --------------------------------------------------------------------------------------------------------------
# Parquet files
# --------------------------------------------------------------------------------------------------------------


def write_tasks_parquet(specs: Iterable[TaskSpec], path: str | Path) -> Path:
    """``tasks.parquet``: one row per task with `TASK_COLUMNS`."""
    schema = pa.schema(
        [
            ("task_id", pa.string()),
            ("kind", pa.string()),
            ("source", pa.string()),
            ("domain", pa.string()),
            ("class_names", pa.list_(pa.string())),
            ("origin_model", pa.string()),
            ("split", pa.string()),
            ("n_support", pa.int64()),
            ("n_query", pa.int64()),
        ]
    )
    rows = [s.to_row() for s in specs]
    table = pa.Table.from_pylist(rows, schema=schema)
    path = Path(path)
    pq.write_table(table, path)
    return path


def write_ground_truth_parquet(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """``ground_truth.parquet``: `GROUND_TRUTH_COLUMNS`, one row per (task, model)."""
    schema = pa.schema(
        [("task_id", pa.string()), ("model_id", pa.string()), ("v_acc", pa.float64()), ("ft_acc", pa.float64())]
    )
    table = pa.Table.from_pylist([{k: r[k] for k in GROUND_TRUTH_COLUMNS} for r in rows], schema=schema)
    path = Path(path)
    pq.write_table(table, path)
    return path
