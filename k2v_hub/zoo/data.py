"""Reading a built zoo: manifest, tasks, ground truth, and cached task features."""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq

from ..errors import K2VError
from ..query_data import find_columns, task_class_means
from ..utils import progress

MANIFEST_NAME = "zoo.json"


def load_manifest(zoo_dir: str | Path) -> dict:
    """The manifest (`zoo.json`) of a built zoo.

    Raises:
        K2VError: `zoo_dir` has no (readable) `zoo.json`.
    """
    path = Path(zoo_dir) / MANIFEST_NAME
    if not path.is_file():
        raise K2VError(f"{zoo_dir} is not a k2v-hub zoo (no {MANIFEST_NAME}).",
                       "Build one with `k2v-hub zoo build --profile tiny --out DIR`.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise K2VError(f"{path} is not valid JSON: {exc}", "Rebuild the zoo (finished parts are kept).") from exc


class ZooData:
    """A zoo folder written by ``k2v-hub zoo build``.

    Attributes:
        root: the folder.
        manifest: ``zoo.json``.
        tasks: task rows (``tasks.parquet``) as dicts, in file order.
        org: the org the zoo's models live under.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        self.org = self.manifest.get("org", "k2v-zoo")
        self.tasks = pq.read_table(self.root / "tasks.parquet").to_pylist()
        self._task_by_id = {t["task_id"]: t for t in self.tasks}
        gt = pq.read_table(self.root / "ground_truth.parquet").to_pylist()
        self._gt = {(r["task_id"], r["model_id"]): r for r in gt}
        self.models = {m["model_id"]: m for m in self.manifest["models"]}

    @property
    def model_ids(self) -> list[str]:
        """Every model id, sorted."""
        return sorted(self.models)

    def task_ids(self, *, split: str | None = None, kind: str | None = None) -> list[str]:
        """Task ids filtered by retriever split (``train``/``val``/``eval``/``inductive``) and kind
        (``nnr``/``transfer``)."""
        return [t["task_id"] for t in self.tasks
                if (split is None or t["split"] == split) and (kind is None or t["kind"] == kind)]

    def task(self, task_id: str) -> dict:
        """One task's metadata row."""
        return self._task_by_id[task_id]

    def task_path(self, task_id: str) -> Path:
        """The task's ``save_to_disk`` folder (a DatasetDict with ``support`` and ``query``)."""
        return self.root / "tasks" / task_id

    def scores(self, task_ids, model_ids, metric: str = "v_acc") -> np.ndarray:
        """Ground-truth matrix ``[tasks, models]`` of ``v_acc`` or ``ft_acc``."""
        return np.asarray([[self._gt[(t, m)][metric] for m in model_ids] for t in task_ids], dtype=np.float64)

    def truth_metric(self, task_id: str) -> str:
        """The accuracy that defines a task's best model: V.Acc for NNR tasks, Ft.Acc for transfer tasks."""
        return "v_acc" if self.task(task_id)["kind"] == "nnr" else "ft_acc"

    def task_means(self, task_ids, extractor, *, split: str = "support", max_images_per_class: int = 32,
                   show_progress: bool = True) -> dict[str, np.ndarray]:
        """Class means ``[K, D]`` of each task's ``split`` in the extractor's space, cached on disk."""
        cache_dir = self.root / ".k2v-cache" / "task-means" / extractor.name.replace("/", "--")
        cache_dir.mkdir(parents=True, exist_ok=True)
        out = {}
        for task_id in progress(list(task_ids), desc="Task features", disable=not show_progress or None):
            cached = cache_dir / f"{task_id}-{split}-{max_images_per_class}.npy"
            if cached.is_file():
                out[task_id] = np.load(cached)
                continue
            ds = datasets.load_from_disk(str(self.task_path(task_id)))[split]
            image_column, label_column, names = find_columns(ds)
            means, _, _ = task_class_means(ds, image_column, label_column, names, extractor,
                                           max_images_per_class=max_images_per_class, show_progress=False)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, means)
            os.replace(tmp, cached)
            out[task_id] = means
        return out
