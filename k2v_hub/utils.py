"""Small shared helpers: progress bars, logging, seeding, fingerprints."""

from __future__ import annotations

import hashlib
import logging
import random

import numpy as np
from huggingface_hub.utils import tqdm as hf_tqdm

logger = logging.getLogger("k2v_hub")


def progress(iterable=None, *, desc: str, total: int | None = None, name: str = "k2v_hub", **kwargs):
    """A tqdm bar that `HF_HUB_DISABLE_PROGRESS_BARS` and `disable_progress_bars("k2v_hub")` silence."""
    return hf_tqdm(iterable, desc=desc, total=total, name=name, leave=False, **kwargs)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (if installed) for deterministic runs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """A short, stable sha256 fingerprint of numpy arrays (shape, dtype and bytes)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode())
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]
