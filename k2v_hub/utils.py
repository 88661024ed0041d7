"""Small shared helpers: progress bars, logging, seeding, the usual file modes, atomic folders."""

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


def standardise(v, eps: float = 1e-12) -> np.ndarray:
    """``v``'s finite entries as z-scores over themselves (``(v - mean) / (std + eps)``); non-finite ones are NaN."""
    v = np.asarray(v, dtype=np.float64)
    ok = np.isfinite(v)
    out = np.full_like(v, np.nan)
    if ok.any():
        out[ok] = (v[ok] - v[ok].mean()) / (v[ok].std() + eps)
    return out


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (if installed) for deterministic runs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:  # lazy: utils is imported by hub.py and the CLI, which must start without torch (several seconds)
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def current_umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status``) where the system says it.

    Elsewhere it is read by setting it for an instant (to 0o077: a file another thread creates meanwhile is at
    most more private than it should be) and restoring it.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def give_usual_mode(path: str | Path) -> None:
    """Give a file the mode a plain ``open`` would (0o666 minus the umask), a folder that of ``mkdir`` (0o777).

    For what is written under a temporary name and renamed into place: ``mkstemp`` and `safetensors` make 0600
    files and ``mkdtemp`` 0700 folders, which other users could not read.
    """
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~current_umask())


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
        for f in [tmp, *tmp.rglob("*")]:
            give_usual_mode(f)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
