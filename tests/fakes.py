"""Fast fakes shared by the bad-input and bad-index tests (real index files, black boxes faked), and small helpers
shared by several test modules (console scripts, index rows, one torch thread, a fresh k2v-hub cache, ranking
comparison).

The black boxes are linear classifiers over pixels, so an index of a few models builds in well under a second.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from k2v_hub.index import DATA_FILE
from k2v_hub.oracle import Oracle
from k2v_hub.retriever import Retriever

FEATURE_SPACE = "pixels-8"

BIN = Path(sys.executable).parent
SCRIPT_MODULES = {"k2v-hub": "k2v_hub.cli", "hf-k2v": "k2v_hub.cli", "torchrun": "torch.distributed.run"}


def console_script(name: str) -> list[str]:
    """The command that starts console script ``name`` of the interpreter running the tests.

    The script installed next to ``sys.executable`` (``.venv/bin/k2v-hub``), so the tests need no activated venv
    and no PATH; if it is not there, the same entry point through ``python -m``.
    """
    path = BIN / name
    return [str(path)] if path.is_file() else [sys.executable, "-m", SCRIPT_MODULES[name]]


def upload_declared_datasets(server, zoo_root: Path, org: str) -> None:
    """Every dataset repo the zoo's model cards name (``zoo_root/datasets/<org>/<name>``) as a dataset repo on the
    test Hub ``server``."""
    for folder in sorted(p for p in (zoo_root / "datasets" / org).iterdir() if p.is_dir()):
        files = {f.relative_to(folder).as_posix(): f for f in folder.rglob("*") if f.is_file()}
        server.add_files(f"{org}/{folder.name}", files, repo_type="dataset", message="Upload dataset")


def start_process(cmd, env=None, timeout: float = 600):
    """Start ``cmd``; return a function that waits for it (killed after ``timeout`` s) and returns its
    ``CompletedProcess``, so several commands can run side by side."""
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=err, text=True, env=env)

    def result() -> subprocess.CompletedProcess:
        try:
            proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0), err.seek(0)
        with out, err:
            return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())

    return result


@contextlib.contextmanager
def one_torch_thread():
    """torch single-threaded for a while: on 2 shared cores, 2 intra-op threads are several times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def rows_of(index_dir: Path) -> dict[str, dict]:
    """An index's rows by model id, read straight from its parquet file."""
    return {r["model_id"]: r for r in pq.read_table(index_dir / DATA_FILE).to_pylist()}


def trained_mask_of(retriever_dir: Path, index_dir: Path, ids) -> np.ndarray | None:
    """Which of ``ids`` the retriever saved in ``retriever_dir`` trained on, asked as `find_model` asks it: with the
    index rows' knowledge records."""
    rows = rows_of(index_dir)
    return Retriever.from_pretrained(retriever_dir).trained_mask(ids, [rows[m]["knowledge"] for m in ids])


class LinearOracle(Oracle):
    """A black box that is a linear classifier over 16x16 RGB pixels."""

    def __init__(self, seed: int, n_labels: int = 5, **kw):
        super().__init__([f"m{seed}-class{i}" for i in range(n_labels)], **kw)
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(n_labels, 16 * 16 * 3)) / 16 * 8
        self.b = rng.normal(size=n_labels)

    def _predict_batch(self, images):
        x = np.stack([np.asarray(im.resize((16, 16)), dtype=np.float64).reshape(-1) / 255 for im in images])
        z = x @ self.w.T + self.b
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)


def build_fast_index(root: Path, n_models: int = 4):
    """``(index folder, retriever folder, settings, indexer)`` with real index files and faked black boxes."""
    from k2v_hub.features import FeatureExtractor
    from k2v_hub.hub import RepoRef
    from k2v_hub.index import IndexSettings, Indexer, write_index
    from k2v_hub.knowledge import build_knowledge, load_probe_set
    from k2v_hub.pipeline import new_retriever, save_retriever

    extractor = FeatureExtractor.from_pretrained(FEATURE_SPACE)
    probes, fingerprint, spec = load_probe_set({"source": "builtin", "n": 48, "size": 16, "seed": 0,
                                                "kinds": ["shapes", "textures"]})
    retriever = new_retriever(extractor, probe_spec=spec, probe_fingerprint=fingerprint, max_classes=4,
                              embed_dim=16, hidden_dim=16)
    save_retriever(retriever, root / "retriever")
    settings = IndexSettings(retriever_id=str(root / "retriever"), retriever_revision="local",
                             retriever_fingerprint=retriever.fingerprint(), feature_space=extractor.name,
                             probe_fingerprint=fingerprint, probe_spec=spec, max_classes=4, bisection_steps=3,
                             embed_dim=16)
    indexer = Indexer(retriever, extractor, probes, settings)
    rows = {}
    for m in range(n_models):
        record = build_knowledge(LinearOracle(seed=m), probes, probe_fingerprint=fingerprint, max_classes=4,
                                 bisection_steps=3)
        ref = RepoRef(f"fake-org/linear-{m}", f"{m + 1:040x}")
        rows[ref.model_id] = indexer.make_row(ref, record, 0.0).to_dict()
    (root / "index").mkdir()
    write_index(root / "index", rows, settings)
    return root / "index", root / "retriever", settings, rows


def fresh_k2v_home(base: Path, session_home: Path) -> Path:
    """An empty k2v-hub cache (no knowledge records) that shares only the converted default backbone."""
    base.mkdir(parents=True, exist_ok=True)
    backbones = session_home / "backbones"
    if backbones.is_dir():
        (base / "backbones").symlink_to(backbones, target_is_directory=True)
    return base


def assert_same_ranking(answer: list[dict], local, tol: float = 1e-3) -> None:
    """The Hub answer ranks the same models with the same scores as the local one. Scores may differ by float
    noise (another process, another thread count); models whose scores are that close may swap places."""
    local_scores = {m.model_id: m.score for m in local}
    assert sorted(m["model_id"] for m in answer) == sorted(local_scores)
    for m in answer:
        assert abs(m["score"] - local_scores[m["model_id"]]) < tol, (m["model_id"], m["score"])
    order = [local_scores[m["model_id"]] for m in answer]
    assert all(a >= b - 2 * tol for a, b in zip(order, order[1:])), order
