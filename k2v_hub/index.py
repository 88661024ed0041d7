"""The index: one row per (model, revision), built black-box, stored with `datasets` as parquet.

Layout of an index folder (the same files make the Hub dataset repo)::

    INDEX/
      data/train-00000-of-00001.parquet   all rows (written atomically)
      k2v_index.json                      what every row shares: retriever, feature space, probe set, view
      README.md                           dataset card (cards/index_card.md)
      rows/<org>--<name>.json             the journal: one file per finished model, written atomically

Crash safety: a model's row is journaled (temp file + ``os.replace``) the moment it is finished, before the next
model starts; the parquet file is rebuilt from journal + previous parquet, also through a temp file +
``os.replace``. A run killed at any point (even by SIGKILL, even during the parquet write) loses at most the model
it was working on, and a rerun re-queries no finished model. Temp files are hidden (``.name.XXXX.tmp``), never
read, and removed by a later run once they are an hour old. The parquet only holds rows that agree with
``k2v_index.json``; rows of other builds stay in the journal until a run re-encodes them.

Incremental: a model whose revision, probe set, oracle view and bisection steps did not change is not queried
again; if only the retriever changed its stored knowledge record is re-encoded without one query (a row's vector
is a function of its stored record alone). Sharding: under ``accelerate launch``/``torchrun`` each process takes a
contiguous slice (``PartialState.split_between_processes``), journals its rows, and the main process gathers the
rows (``gather_object``, so no shared filesystem is needed), journals them too and writes the parquet;
``shard=(i, n)`` does the same by hand across machines (then one plain run writes the complete index).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from . import __version__
from .declared import (data_fingerprint, data_scores, decode_fingerprint, encode_fingerprint, first_stage_scores,
                       hubness, order_head, reported_accuracy, vector_head)
from .errors import HubError, IndexError_, K2VError, one_line
from .finetune_fit import FinetunePredictor, finetune_features
from .hub import (RepoRef, RepoSource, download_repo, get_api, hub_call, index_reference, split_revision,
                  validate_repo_id)
from .index_row import DATA_COLUMNS, FINGERPRINT_COLUMNS, SHARED_KEYS, IndexRow, index_features
from .inferred import MIN_CHANCE_RATIO, DeclaredPool, infer_data_columns
from .knowledge import KnowledgeRecord, build_knowledge, graph_features
from .modelcards import render_index_card
from .oracle import TransformersOracle
from .retriever import (BUILD_HINT, BUNDLED_REVISION, DEFAULT_RETRIEVER_ID, Retriever, has_bundled_retriever,
                        load_bundled_retriever)
from .utils import give_usual_mode, logger, progress

DATA_FILE = "data/train-00000-of-00001.parquet"
META_FILE = "k2v_index.json"
ROWS_DIR = "rows"
CARD_FILE = "README.md"

TMP_SUFFIX = ".tmp"
STALE_TMP_SECONDS = 3600
# A card's `datasets` entries kept per row: Hub ids are at most 96 + 1 + 96 characters.
MAX_CARD_DATASETS = 64
MAX_DATASET_ID = 193
#: Datasets of a card tried for a fingerprint at most (the first that can be read is used).
MAX_DECLARED_TRIES = 3
#: ``data_note`` of a row whose card names no dataset (and whose data could not be inferred from the index's).
NO_DATASET_NOTE = "the card names no dataset"


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_path(path: Path) -> str:
    """A hidden temp file next to ``path`` (same filesystem, so ``os.replace`` is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    return tmp


def _publish(tmp: str, path: Path) -> None:
    """fsync ``tmp``, give it the usual permissions and rename it over ``path``."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    give_usual_mode(tmp)  # mkstemp makes 0600 files
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        _publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def clean_stale_temp_files(index_dir: str | Path, max_age: float = STALE_TMP_SECONDS) -> list[str]:
    """Remove temp files left by killed runs once they are ``max_age`` seconds old; return what was removed.

    Young temp files are left alone: another process (a shard) may be writing them right now. Readers never
    look at them either way.
    """
    index_dir = Path(index_dir)
    removed, now = [], time.time()
    for folder in (index_dir, index_dir / ROWS_DIR, (index_dir / DATA_FILE).parent):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            try:
                old = now - p.stat().st_mtime > max_age
                if old and p.is_file() and p.name.startswith(".") and p.name.endswith(TMP_SUFFIX):
                    p.unlink()
                    removed.append(str(p))
                elif (old and folder == index_dir and p.is_dir() and p.name.startswith("tmp")
                      and all(f.name == "part.parquet" for f in p.iterdir())):
                    shutil.rmtree(p)  # the temp folder earlier versions wrote the parquet file in
                    removed.append(str(p))
            except OSError:
                continue
    return removed


def row_filename(model_id: str) -> str:
    """Journal file name of a model: ``org--name.json``."""
    return model_id.replace("/", "--") + ".json"


@dataclass
class IndexSettings:
    """What every row of an index shares (``k2v_index.json``)."""

    retriever_id: str
    retriever_revision: str
    retriever_fingerprint: str
    feature_space: str
    probe_fingerprint: str
    probe_spec: dict
    oracle_view: str = "full"
    max_classes: int = 16
    bisection_steps: int = 7
    embed_dim: int = 256
    k2v_hub_version: str = __version__

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return dict(self.__dict__)


@dataclass
class IndexReport:
    """What an index run did: rows written, models reused, re-encoded, skipped (with reasons), queries spent."""

    indexed: list = field(default_factory=list)
    reused: list = field(default_factory=list)
    reencoded: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    queries: int = 0
    seconds: float = 0.0
    path: str = ""

    def to_dict(self) -> dict:
        """JSON-able summary."""
        return dict(self.__dict__)


def read_rows(index_dir: str | Path) -> dict[str, dict]:
    """All rows of an index folder, parquet and journal merged (journal wins), keyed by model id."""
    index_dir = Path(index_dir)
    rows: dict[str, dict] = {}
    data = index_dir / DATA_FILE
    if data.is_file():
        try:
            for row in pq.read_table(data).to_pylist():
                rows[row["model_id"]] = row
        except Exception as exc:  # noqa: BLE001 - a corrupt file must be a clear error
            raise IndexError_(f"{data} is not a readable parquet file ({type(exc).__name__}).",
                              "Delete it and rebuild the index; the rows/ journal is kept.") from None
    journal = index_dir / ROWS_DIR
    if journal.is_dir():
        for f in sorted(journal.glob("*.json")):
            try:
                row = json.loads(f.read_text())
                rows[row["model_id"]] = row
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                logger.warning("Ignoring unreadable journal file %s", f)
    return rows


def row_matches(row: dict, settings: IndexSettings) -> bool:
    """Whether a row was built with these settings (retriever, feature space, probes, view): it may go in the index."""
    return all(row.get(k) == getattr(settings, k) for k in SHARED_KEYS)


def write_index(index_dir: str | Path, rows: dict[str, dict], settings: IndexSettings, *,
                card_kwargs: dict | None = None) -> list[str]:
    """Write ``data/*.parquet`` (via `datasets`), ``k2v_index.json`` and the dataset card, each atomically.

    Only rows that agree with ``settings`` are written (an index never mixes builds); the ids of the rows left
    out are returned (they stay in the journal).
    """
    index_dir = Path(index_dir)
    left_out = sorted(k for k, r in rows.items() if not row_matches(r, settings))
    if left_out:
        logger.warning("%d row(s) were built with other settings and are left out of the index until they are "
                       "re-encoded: %s", len(left_out), ", ".join(left_out[:5]) + (" ..." if len(left_out) > 5 else ""))
    ordered = [IndexRow.from_dict(rows[k]) for k in sorted(rows) if k not in set(left_out)]
    features = index_features(settings.embed_dim)
    if ordered:
        ds = datasets.Dataset.from_list([r.to_dict() for r in ordered], features=features)
    else:
        ds = datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    data = index_dir / DATA_FILE
    tmp = _temp_path(data)
    try:
        ds.to_parquet(tmp)
        _publish(tmp, data)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    meta = {**settings.to_dict(), "n_models": len(ordered), "updated_at": _now()}
    _atomic_write(index_dir / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())
    _atomic_write(index_dir / CARD_FILE, render_index_card(meta, ordered, **(card_kwargs or {})).encode())
    return left_out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def card_dataset_ids(card: dict) -> list[str]:
    """The card's ``datasets`` as strings; nested values and ids longer than a Hub id are dropped."""
    value = card.get("datasets") or []
    values = [str(v) for v in (value if isinstance(value, list) else [value])[:MAX_CARD_DATASETS]
              if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
    return [v for v in values if len(v) <= MAX_DATASET_ID]


def card_accuracy(ref: RepoRef, data_source: str) -> float | None:
    """The accuracy ``ref``'s card reports on the dataset its fingerprint was read from (``data_source``,
    ``dataset@revision``; :func:`~k2v_hub.declared.reported_accuracy`), ``None`` without a fingerprint."""
    return reported_accuracy(ref.card_data, data_source.rsplit("@", 1)[0]) if data_source else None


def data_columns(source: RepoSource, ref: RepoRef, labels: list[str], extractor) -> dict:
    """A row's declared-data columns (:mod:`k2v_hub.declared`): the fingerprint of the first dataset the card names
    that can be read (at most :data:`MAX_DECLARED_TRIES` tried), or an empty one and the reason."""
    names = card_dataset_ids(ref.card_data)
    if not names:
        return {"data_fingerprint": "", "data_source": "", "data_note": NO_DATASET_NOTE}
    notes = []
    for name in names[:MAX_DECLARED_TRIES]:
        try:
            path, revision = source.declared_data(name)
            fingerprint = data_fingerprint(datasets.Dataset(pq.read_table(path)), labels, extractor)
            return {"data_fingerprint": encode_fingerprint(fingerprint), "data_source": f"{name}@{revision}",
                    "data_note": ""}
        except Exception as exc:  # noqa: BLE001 - unreadable declared data only costs the fingerprint
            notes.append(f"{name}: {skip_reason(exc)}")
    note = one_line("; ".join(notes), limit=500)
    logger.info("No data fingerprint for %s: %s", ref.model_id, note)
    return {"data_fingerprint": "", "data_source": "", "data_note": note}


class Indexer:
    """Builds knowledge records and embeddings for models, with a retriever, a feature space and probes."""

    def __init__(self, retriever, extractor, probes: np.ndarray, settings: IndexSettings, *,
                 query_budget: int | None = None, trust_remote_code: bool = False, allow_pickle: bool = False,
                 cache_dir: str | Path | None = None):
        self.retriever = retriever
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.extractor = extractor
        self.probes = probes
        self.settings = settings
        self.query_budget = query_budget
        self.trust_remote_code = trust_remote_code
        self.allow_pickle = allow_pickle
        #: black-box queries spent inferring cardless models' data (:meth:`data_columns`)
        self.data_queries = 0
        self._probe_features = None

    @property
    def probe_features(self) -> np.ndarray:
        """Features of the probe images (computed once)."""
        if self._probe_features is None:
            self._probe_features = self.extractor([Image.fromarray(p) for p in self.probes], show_progress=False)
        return self._probe_features

    def oracle(self, folder: Path) -> TransformersOracle:
        """A downloaded model as a black box, with this indexer's view, budget and loading rules."""
        return TransformersOracle(folder, view=self.settings.oracle_view, budget=self.query_budget,
                                  trust_remote_code=self.trust_remote_code, allow_pickle=self.allow_pickle)

    def knowledge(self, folder: Path) -> KnowledgeRecord:
        """Query one downloaded model as a black box and return its knowledge record."""
        return build_knowledge(self.oracle(folder), self.probes, probe_fingerprint=self.settings.probe_fingerprint,
                               max_classes=self.settings.max_classes,
                               bisection_steps=self.settings.bisection_steps)

    def knowledge_for(self, source: RepoSource, ref: RepoRef) -> tuple[KnowledgeRecord, bool]:
        """A model's record, from the knowledge cache if this exact revision/probe set/view was queried before.

        Returns ``(record, from_cache)``. The cache (``cache_dir``) lets training and indexing share queries.
        """
        s = self.settings
        key = hashlib.sha1(json.dumps([ref.model_id, ref.revision, s.probe_fingerprint, s.oracle_view,
                                       s.max_classes, s.bisection_steps]).encode()).hexdigest()[:20]
        cached = self.cache_dir / f"{row_filename(ref.model_id)[:-5]}-{key}.json" if self.cache_dir else None
        if cached is not None and cached.is_file():
            return KnowledgeRecord.from_json(cached.read_text()), True
        record = self.knowledge(source.snapshot(ref, allow_pickle=self.allow_pickle))
        if cached is not None:
            _atomic_write(cached, record.to_json().encode())
        return record, False

    def graph(self, record: KnowledgeRecord) -> np.ndarray:
        """The graph set of a record in the feature space, ``[K, K, D]`` (no query)."""
        return graph_features(record, self.probes, self.extractor, self.probe_features)

    def embed(self, record: KnowledgeRecord) -> np.ndarray:
        """The model vector of a record (no query)."""
        graph = graph_features(record, self.probes, self.extractor, self.probe_features)
        return self.retriever.embed_models([graph])[0]

    def data_columns(self, source: RepoSource, ref: RepoRef, labels: list[str],
                     pool: DeclaredPool | None = None) -> dict:
        """The row's declared-data columns: :func:`data_columns` in this indexer's feature space; when the card
        names no dataset, or none that can be read, inferred from the datasets of ``pool`` (:mod:`k2v_hub.inferred`;
        the queries it spends are added to :attr:`data_queries`). A failure to infer costs only the fingerprint,
        never the row. Without a fingerprint, ``data_pool`` lists the pool's datasets (:func:`data_unread`)."""
        cols = {**data_columns(source, ref, labels, self.extractor), "data_pool": []}
        if pool is None or cols["data_fingerprint"]:
            return cols
        why, cols["data_pool"] = cols["data_note"], list(pool.names)
        try:
            inferred, spent = infer_data_columns(
                pool, labels, lambda: self.oracle(source.snapshot(ref, allow_pickle=self.allow_pickle)),
                self.extractor, why=why)
        except Exception as exc:  # noqa: BLE001 - the model is still indexed, with no fingerprint
            return {**cols, "data_note": one_line(f"{why}; inferring it failed: {skip_reason(exc)}", limit=500)}
        self.data_queries += spent
        if inferred is not None:
            return {**inferred, "data_pool": []}
        if spent:
            return {**cols, "data_note": one_line(f"{why}; it labels none of the index's declared datasets "
                                                  f"{MIN_CHANCE_RATIO:g} times as well as chance ({spent} images "
                                                  "asked)", limit=500)}
        return cols

    def make_row(self, ref: RepoRef, record: KnowledgeRecord, seconds: float,
                 created_at: str | None = None, *, data: dict | None = None) -> IndexRow:
        """One index row (``data``: its :meth:`data_columns`, default none).

        The vector is computed from the record *as stored* (its JSON rounds scores to 6 decimals), so a row's
        embedding is a function of its ``knowledge`` column alone: a fresh query, a cache hit and a later
        re-encoding give the same vector.
        """
        s = self.settings
        knowledge = record.to_json()
        record = KnowledgeRecord.from_json(knowledge)
        data = data or {"data_fingerprint": "", "data_source": "", "data_note": "not read", "data_pool": []}
        return IndexRow(
            model_id=ref.model_id, revision=ref.revision, labels=list(record.labels),
            embedding=[float(x) for x in self.embed(record)], knowledge=knowledge,
            **{k: getattr(s, k) for k in SHARED_KEYS},
            k2v_hub_version=__version__, n_queries=int(record.n_queries), seconds=float(round(seconds, 3)),
            created_at=created_at or _now(), card_datasets=card_dataset_ids(ref.card_data),
            downloads=int(ref.downloads), likes=int(ref.likes), **data,
            reported_accuracy=card_accuracy(ref, data["data_source"]),
        )


def build_index(
    source: RepoSource,
    org: str,
    out_dir: str | Path,
    indexer: Indexer,
    *,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    distributed: bool | None = None,
    show_progress: bool = True,
    on_row=None,
) -> IndexReport:
    """Index the org's image-classification models into ``out_dir``; see the module docstring.

    Args:
        source: where the repos are (:class:`~k2v_hub.hub.HubSource` or :class:`~k2v_hub.hub.LocalSource`).
        org: the organisation (or user) name.
        out_dir: the index folder (created; an existing index there is updated incrementally).
        indexer: retriever + feature space + probes.
        limit: index at most this many models.
        shard: ``(i, n)``: only this slice of the model list (for runs on several machines).
        distributed: split over ``accelerate``/``torchrun`` processes (default: when more than one is running).
        on_row: callback called with each finished row (used by tests).

    Returns:
        What this run did. Under several processes the main process's report covers every process; the others
        return their own part.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    refs = source.list_models(org, limit=limit)
    if not refs:
        raise K2VError(f"No image-classification models found for {org!r}.",
                       "Check the org name, or that its models' cards say `pipeline_tag: image-classification`.")
    state = _partial_state(distributed)
    multi = state is not None and state.num_processes > 1
    if state is None or state.is_main_process:
        for path in clean_stale_temp_files(out):
            logger.info("Removed stale temp file %s", path)
    existing = read_rows(out)
    # what a card naming no dataset may be matched against: every dataset the org's cards name (all shards agree)
    pool = DeclaredPool(source, [d for r in refs for d in card_dataset_ids(r.card_data)])
    data_queries = indexer.data_queries
    if shard is not None:
        i, n = shard
        refs = refs[i::n]
    mine = refs
    if multi:
        with state.split_between_processes(refs) as part:
            mine = list(part)
    report = IndexReport(path=str(out))
    written: list[dict] = []  # rows this process journaled (gathered by the main process)
    s = indexer.settings
    bar = progress(mine, desc=f"Indexing {org}", total=len(mine), disable=not show_progress or None)
    for ref in bar:
        old = existing.get(ref.model_id)
        same_knowledge = _same_knowledge(old, ref, s)
        if (same_knowledge and old.get("retriever_fingerprint") == s.retriever_fingerprint
                and old.get("feature_space") == s.feature_space):
            report.reused.append(ref.model_id)
            data = indexer.data_columns(source, ref, old["labels"], pool) if data_unread(old, pool) else None
            fresh = _refreshed(old, ref, s, data)
            if fresh != old:  # same vector, but the retriever moved/was renamed or popularity changed
                _journal(out, fresh)
                written.append(fresh)
            continue
        t0 = time.perf_counter()
        try:
            if same_knowledge:
                record = KnowledgeRecord.from_json(old["knowledge"])
                data = indexer.data_columns(source, ref, record.labels, pool) if data_unread(old, pool) else \
                    {k: old.get(k, DATA_COLUMNS[k]) for k in FINGERPRINT_COLUMNS}
                row = indexer.make_row(ref, record, old["seconds"], old["created_at"], data=data).to_dict()
                report.reencoded.append(ref.model_id)
            else:
                record, from_cache = indexer.knowledge_for(source, ref)
                data = indexer.data_columns(source, ref, record.labels, pool)
                row = indexer.make_row(ref, record, time.perf_counter() - t0, data=data).to_dict()
                report.indexed.append(ref.model_id)
                report.queries += 0 if from_cache else record.n_queries
        except Exception as exc:  # noqa: BLE001 - one broken model, out of memory included, must not stop an org
            report.skipped[ref.model_id] = skip_reason(exc)
            logger.warning("Skipped %s: %s", ref.model_id, report.skipped[ref.model_id])
            continue
        _journal(out, row)
        written.append(row)
        if on_row is not None:
            on_row(row)
    report.queries += indexer.data_queries - data_queries
    if multi:
        from accelerate.utils import gather_object  # ~0.4 s to import; only multi-process runs need it

        gathered = gather_object([{"report": report.to_dict(), "rows": written, "rank": state.process_index}])
        if state.is_main_process:
            for part in gathered:
                if part["rank"] == state.process_index:
                    continue
                for key in ("indexed", "reused", "reencoded"):
                    getattr(report, key).extend(part["report"][key])
                report.skipped.update(part["report"]["skipped"])
                report.queries += part["report"]["queries"]
                for row in part["rows"]:  # no shared filesystem needed: the main process journals them too
                    _journal(out, row, only_if_changed=True)
    if state is None or state.is_main_process:
        write_index(out, read_rows(out), s)
    if multi:
        state.wait_for_everyone()
    report.seconds = round(time.perf_counter() - start, 2)
    return report


def skip_reason(exc: Exception) -> str:
    """Why a model was skipped, on one line: a k2v-hub refusal as it is worded, anything else with its type."""
    if isinstance(exc, K2VError):
        return one_line(exc, limit=1000)  # message and hint, each already cut where they quote the repo
    if isinstance(exc, MemoryError):
        return one_line(f"out of memory while loading or querying it (MemoryError{': ' + str(exc) if str(exc) else ''}"
                        "). It was skipped; index it on a machine with more memory.")
    return one_line(f"{type(exc).__name__}: {exc}")


def _journal(out: Path, row: dict, *, only_if_changed: bool = False) -> None:
    """Write one finished row to ``rows/`` atomically."""
    path = out / ROWS_DIR / row_filename(row["model_id"])
    if only_if_changed and path.is_file():
        try:
            if json.loads(path.read_text()) == row:
                return
        except (OSError, ValueError):
            pass
    _atomic_write(path, json.dumps(row).encode())


def _same_knowledge(old: dict | None, ref: RepoRef, s: IndexSettings) -> bool:
    """Whether ``old``'s knowledge record still holds: same revision, probes, view, bisection steps, class cap."""
    if old is None or old.get("revision") != ref.revision or old.get("probe_fingerprint") != s.probe_fingerprint \
            or old.get("oracle_view") != s.oracle_view:
        return False
    try:
        record = json.loads(old["knowledge"])
    except (KeyError, TypeError, ValueError):
        return False
    return (record.get("bisection_steps", s.bisection_steps) == s.bisection_steps
            and len(record.get("classes") or []) <= s.max_classes)


def data_unread(old: dict, pool: DeclaredPool) -> bool:
    """Whether a reused row's declared-data columns are sought again: a row from before fingerprints, or one
    without a fingerprint when the index's cards now name a dataset that its ``data_pool`` does not list (a dataset
    joined the org since, or the row is older than that column)."""
    if "data_fingerprint" not in old:
        return True
    return not old["data_fingerprint"] and bool(set(pool.names) - set(old.get("data_pool") or []))


def _refreshed(old: dict, ref: RepoRef, s: IndexSettings, data: dict | None = None) -> dict:
    """A reused row with its shared settings, popularity and reported accuracy brought up to date (vector and
    knowledge untouched; the fingerprint columns replaced by ``data`` when given)."""
    row = dict(old)
    row.update({k: getattr(s, k) for k in SHARED_KEYS})
    row.update(data or {})
    row["downloads"], row["likes"] = int(ref.downloads), int(ref.likes)
    row["reported_accuracy"] = card_accuracy(ref, row.get("data_source", ""))
    return row


def _partial_state(distributed: bool | None):
    """The Accelerate state when several processes run (``torchrun``, ``accelerate launch``), else ``None``.

    Indexing runs on CPU, so the state is made with ``cpu=True`` unless a GPU is there and ``ACCELERATE_USE_CPU``
    says no: a bare ``PartialState()`` gives every process world size 1 on a CPU machine, and ``accelerate
    launch`` sets ``ACCELERATE_USE_CPU=False`` unless ``--cpu``.
    """
    if distributed is False:
        return None
    if distributed is None and _world_size() <= 1:
        return None
    from accelerate import PartialState  # ~0.4 s to import; only multi-process runs need it

    flag = os.environ.get("ACCELERATE_USE_CPU", "").strip().lower()
    cpu = flag in ("1", "y", "yes", "t", "true", "on") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def _world_size() -> int:
    for key in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        try:
            value = int(os.environ.get(key, "1"))
        except ValueError:
            continue
        if value > 1:
            return value
    return 1


def best_first(scores: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Indices of the ``top_k`` (>= 1) highest scores, all when ``None``, best first, ties in index order.

    The same as ``np.argsort(-scores, kind="stable")[:top_k]``, but only the head is sorted: the ``top_k``-th
    best score is found with a partition and only the rows scoring at least that much are sorted.
    """
    if top_k is None or top_k >= len(scores):
        return np.argsort(-scores, kind="stable")[:top_k]
    kth = -np.partition(-scores, top_k - 1)[top_k - 1]
    if np.isnan(kth):
        return np.argsort(-scores, kind="stable")[:top_k]
    head = np.flatnonzero(scores >= kth)  # the best top_k and every row tied with the last of them, in index order
    return head[np.argsort(-scores[head], kind="stable")][:top_k]


@dataclass
class FirstStage:
    """A dataset's first-stage evidence on every row of an index (:meth:`K2VIndex.first_stage`)."""

    knowledge: np.ndarray  #: cosine between the dataset's vector and each model's
    data: np.ndarray  #: declared-data score, ``nan`` where the row has no fingerprint
    scores: np.ndarray  #: the one first-stage score: ``data`` where present, else the cosine placed on its scale
    #: predicted fine-tuned accuracy (:mod:`k2v_hub.finetune_fit`), ``nan`` where the row has no fingerprint; ``None``
    #: unless asked for
    finetune: np.ndarray | None = None
    #: the rows the vector put in order (the best data matches, when the best is a model the retriever trained on)
    vector_head: list = field(default_factory=list)


@dataclass
class K2VIndex:
    """A loaded index: rows (:class:`~k2v_hub.index_row.IndexRow`), the embedding matrix and the shared settings."""

    rows: list
    embeddings: np.ndarray
    meta: dict
    path: str
    revision: str | None = None
    repo_id: str | None = None  # the Hub dataset repo it was downloaded from; None for a local folder
    _hubs: dict = field(default_factory=dict, repr=False, compare=False)  # feature dim -> hubness(fingerprints)

    def __len__(self) -> int:
        return len(self.rows)

    def fingerprints(self, dim: int) -> list:
        """Each row's decoded data fingerprint (``None`` where it has none).

        Raises:
            IndexError_: a stored fingerprint is damaged or of another feature space.
        """
        try:
            return [decode_fingerprint(row.data_fingerprint, dim) for row in self.rows]
        except ValueError as exc:
            raise IndexError_(one_line(f"Index {self.path} has a malformed data fingerprint ({exc})."),
                              "Rebuild the index with `k2v-hub index`.") from None

    def data_scores(self, task_means: np.ndarray) -> np.ndarray:
        """Each row's declared-data score for a dataset's class means ``[K, D]`` (:func:`~k2v_hub.declared.data_scores`;
        ``nan`` for a row without a fingerprint).

        Raises:
            IndexError_: a stored fingerprint is damaged or of another feature space.
        """
        dim = int(np.shape(task_means)[1])
        fingerprints = self.fingerprints(dim)
        if dim not in self._hubs:  # the fingerprints' centrality in the index: once per loaded index
            self._hubs[dim] = hubness(fingerprints)
        return data_scores(task_means, fingerprints, [row.reported_accuracy for row in self.rows],
                           hubs=self._hubs[dim])

    def finetune_scores(self, task_means: np.ndarray, predictor: FinetunePredictor) -> np.ndarray:
        """Each row's predicted fine-tuned accuracy for a dataset's class means (``nan`` without a fingerprint).

        Raises:
            IndexError_: a stored fingerprint is damaged, or the predictor was trained in another feature space.
        """
        if predictor.feature_space != self.meta.get("feature_space"):
            raise IndexError_(f"The fine-tune predictor was trained in the {predictor.feature_space!r} feature space "
                              f"but index {self.path} was built in {self.meta.get('feature_space')!r}.",
                              "Use a predictor trained in the index's feature space, or goal='as-is'.")
        fingerprints = self.fingerprints(int(np.shape(task_means)[1]))
        return predictor.predict(finetune_features(task_means, fingerprints,
                                                   [row.reported_accuracy for row in self.rows]))

    def first_stage(self, query: np.ndarray, task_means: np.ndarray | None = None,
                    finetune: FinetunePredictor | None = None, trained: np.ndarray | None = None) -> FirstStage:
        """Every row's first-stage evidence for a dataset: the cosine of its vector with ``query`` (one matrix
        product), its declared-data score for ``task_means`` (``nan`` without a fingerprint, or when
        ``task_means`` is ``None``) and the one score they make (:func:`~k2v_hub.declared.first_stage_scores`;
        ``trained``: the rows whose model the retriever was trained on, where the vector weighs in).
        With a ``finetune`` predictor, the score is made from its prediction instead of the data score:
        ``tanh(prediction)``, the vector placed on that scale where there is none.

        Rank with :func:`best_first` on ``scores``. Measured with `k2v-hub bench --scale` (2 cores): the matrix
        product beat an exact FAISS index built through `datasets` at every size from 10k to 1M rows (310 ms vs
        430 ms at 1M), so it is the only search.

        Raises:
            IndexError_: a stored fingerprint is damaged or of another feature space.
        """
        knowledge = self.embeddings @ np.asarray(query, dtype=np.float32)
        data = np.full(len(knowledge), np.nan) if task_means is None else self.data_scores(task_means)
        if finetune is None or task_means is None:
            placed = first_stage_scores(knowledge, data)
            head = vector_head(placed, trained) if np.isfinite(data).any() else []
            return FirstStage(knowledge, data, order_head(placed, knowledge, head), vector_head=list(head))
        predicted = self.finetune_scores(task_means, finetune)
        return FirstStage(knowledge, data, first_stage_scores(knowledge, np.tanh(predicted)), predicted)


def load_index(index: str | Path, *, revision: str | None = None, token: str | None = None) -> K2VIndex:
    """Load an index from a local folder or a Hub dataset repo (downloaded, cached, revision-pinned).

    Raises:
        IndexError_: missing, unreadable, tampered, empty, or rows that disagree with the index settings.
    """
    path, repo_id, rev = index_reference(index)
    if path is None:
        path = download_repo(repo_id, repo_type="dataset", revision=revision or rev, token=token,
                             allow_patterns=[DATA_FILE, META_FILE, CARD_FILE])
        revision = revision or rev
    meta_file, data_file = path / META_FILE, path / DATA_FILE
    if not meta_file.is_file() or not data_file.is_file():
        raise IndexError_(f"{index} is not a k2v-hub index (no {META_FILE} or {DATA_FILE}).",
                          "Build one with `k2v-hub index`.")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError:
        raise IndexError_(f"{meta_file} is not valid JSON.", "Rebuild the index.") from None
    try:
        stored = pq.read_table(data_file).to_pylist()
    except Exception as exc:  # noqa: BLE001
        raise IndexError_(f"{data_file} is truncated or not parquet ({type(exc).__name__}).",
                          "Rebuild the index or download it again.") from None
    if not stored:
        raise IndexError_(f"Index {index} has no rows.", "Index some models first (`k2v-hub index --org ORG`).")
    rows = [IndexRow.from_dict(row, meta) for row in stored]
    emb = np.asarray([r.embedding for r in rows], dtype=np.float32)
    if emb.ndim != 2 or not np.isfinite(emb).all():
        raise IndexError_(f"Index {index} has malformed embeddings.", "Rebuild the index.")
    norms = np.linalg.norm(emb, axis=1)
    if np.any(np.abs(norms - 1) > 1e-3):
        raise IndexError_(f"Index {index} has embeddings that are not unit vectors (tampered?).", "Rebuild it.")
    bad = [r.model_id for r in rows if r.reported_accuracy is not None and not (
        isinstance(r.reported_accuracy, (int, float)) and 0 <= r.reported_accuracy <= 1)]
    if bad:
        raise IndexError_(one_line(f"Index {index} has a reported_accuracy outside [0, 1] for {bad[0]} "
                                   "(tampered?)."), "Rebuild the index.")
    return K2VIndex(rows, emb, meta, str(path), revision, repo_id)


def load_retriever(retriever: str | None, token: str | None = None, *,
                   revision: str | None = None) -> tuple[Retriever, str, str]:
    """Load a retriever by folder or Hub id (``id@revision``); return ``(retriever, id, revision)``.

    ``None`` is the default retriever: the copy ``k2v-hub build-retriever`` built on this machine when there is one,
    else the copy shipped in the package (either as ``DEFAULT_RETRIEVER_ID@bundled``, returned as
    ``(retriever, DEFAULT_RETRIEVER_ID, "bundled")``: no network), else ``DEFAULT_RETRIEVER_ID`` from the Hub. A
    folder is ``(its absolute path, "local")``. A Hub retriever is pinned to the commit its revision (the one in the
    id, else ``revision``, else ``main``) resolves to now, and that commit is what an index records; it is downloaded
    through :func:`~k2v_hub.hub.download_repo` (retried, cached, offline once cached).

    Raises:
        K2VError: a folder without weights, or no copy of the default retriever here (built or shipped) nor on the
            Hub.
        HubError: not a valid Hub id, or the Hub could not give it.
    """
    if retriever is None:
        if not has_bundled_retriever():
            try:
                return load_retriever(DEFAULT_RETRIEVER_ID, token)
            except HubError as exc:
                raise K2VError(f"No --retriever given, no copy of the default retriever on this machine (built or "
                               f"shipped), and the Hub could not give {DEFAULT_RETRIEVER_ID} ({one_line(exc, 200)}).",
                               BUILD_HINT) from None
        retriever, revision = DEFAULT_RETRIEVER_ID, BUNDLED_REVISION
    repo, pinned = split_revision(retriever)
    if repo == DEFAULT_RETRIEVER_ID and (pinned or revision) == BUNDLED_REVISION:
        return load_bundled_retriever(), DEFAULT_RETRIEVER_ID, BUNDLED_REVISION
    if Path(repo).is_dir():
        return Retriever.from_pretrained(repo), str(Path(repo).resolve()), "local"
    validate_repo_id(repo, "retriever id")
    revision = pinned or (revision if revision != "local" else None)
    sha = hub_call(get_api(token).model_info, repo, revision=revision, what=(repo, "model")).sha
    folder = download_repo(repo, repo_type="model", revision=sha, token=token,
                           allow_patterns=["config.json", "*.safetensors", "README.md"])
    return Retriever.from_pretrained(str(folder)), repo, sha
