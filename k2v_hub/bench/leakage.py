"""Whether a built zoo's splits share images: every task's pixels hashed, grouped by the pool part it draws from."""

from __future__ import annotations

import hashlib

import datasets
import numpy as np

from ..utils import progress
from ..zoo.data import ZooData

#: Which pool part a task split draws from (`k2v_hub.zoo.tasks.POOL_PARTS`).
PART_OF_SPLIT = {"train": "train", "val": "val", "eval": "eval", "inductive": "eval"}


def image_digests(zoo: ZooData, task_id: str) -> set[str]:
    """sha256 of the RGB pixels of every support and query image of one task folder."""
    dsd = datasets.load_from_disk(str(zoo.task_path(task_id)))
    return {hashlib.sha256(np.asarray(im.convert("RGB")).tobytes()).hexdigest()
            for split in dsd.values() for im in split["image"]}


def disjoint_images(zoo: ZooData, *, show_progress: bool = False) -> dict:
    """Are training, validation and evaluation images disjoint in this zoo? Reads every task from disk.

    Returns per pair of parts whether they share no image (``train_vs_eval``...), how many they share, and the
    number of distinct images per part.
    """
    parts: dict[str, set[str]] = {p: set() for p in ("train", "val", "eval")}
    for t in progress(zoo.tasks, desc="Hashing task images", disable=not show_progress or None):
        parts[PART_OF_SPLIT[t["split"]]] |= image_digests(zoo, t["task_id"])
    out: dict = {"images": {p: len(h) for p, h in parts.items()}, "shared": {}}
    for a, b in (("train", "eval"), ("train", "val"), ("val", "eval")):
        shared = len(parts[a] & parts[b])
        out[f"{a}_vs_{b}"] = shared == 0
        out["shared"][f"{a}_vs_{b}"] = shared
    return out
