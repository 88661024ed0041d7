"""Small shared helpers: progress bars, logging, seeding, fingerprints."""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

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
    try:  # lazy: utils is imported by hub.py and the CLI, which must start without torch (several seconds)
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


@contextmanager
def atomic_directory(final: str | Path):
    """Write a folder under a hidden temporary name next to ``final``; move it into place only when complete.

    Yields the temporary folder. On success it gets the usual umask permissions (``mkdtemp`` makes 0700) and
    replaces ``final``; on failure it is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for f in tmp.rglob("*"):
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
