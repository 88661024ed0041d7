"""A model's decision knowledge, found through its black box: centroids, boundary samples, the graph set G.

Choices where the paper is vague (written down here, measured in the benchmark):

- **Probes.** A fixed, fingerprinted set of generic images (``k2v_hub.probes``), never the model's training data
  (Lemma 1 of the paper). Every probe is asked once; the answers (arg-max label and its score per probe) are kept
  in the record, which makes self-supervised pseudo-tasks possible later with no new query.
- **Active classes.** The classes the probe set activates, ranked by how many probes they win (ties: mean score,
  then label index); the top ``max_classes`` (C, default 16) are kept, in label order. A model that gives every
  probe the same class is constant and is refused.
- **Centroid sample** of class c: the probe predicted as c with the highest score. With the ``label`` view
  (no scores) it is the first probe, in probe order, labelled c.
- **Boundary sample** x_a^b (from A toward B): bisection on the segment between the centroids of A and B in
  input (pixel) space, keeping ``pred(lo) == a`` and ``pred(hi) != a``; all ordered pairs are batched in one
  query per bisection step, so a model costs ``P + steps * C * (C - 1)`` queries. The record keeps ``t``, the
  fraction of the segment, so it stays a few KB and reproduces the image bit for bit from the probe set.
- **KRM.** ``r_a^b = x_a^b - x_a`` follows from ``t`` and the two centroids (:func:`krm`).
- **Graph set G** (per class: its centroid, its outgoing and incoming boundary samples) is described in a frozen
  feature space: :func:`graph_features` returns ``F[a, b]`` = features of x_a^b and ``F[a, a]`` = features of
  the centroid of a. The encoder reads class a's sequence as ``(F[a,a], F[a,j] - F[a,a], F[j,a] - F[a,a])_j``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from .errors import MalformedRecord, ModelRefused
from .options import ORACLE_VIEWS
from .oracle import Oracle, to_rgb
from .probes import build_probe_images, probe_fingerprint
from .query_data import find_columns, load_query_dataset

DEFAULT_MAX_CLASSES = 16
DEFAULT_BISECTION_STEPS = 7


@dataclass
class KnowledgeRecord:
    """The raw knowledge of one model, black-box only; enough to re-encode it without one more query.

    Attributes:
        labels: all of the model's labels (``id2label`` order).
        classes: indices (into ``labels``) of the active classes, in label order, ``K <= max_classes``.
        centroids: probe index of each active class's centroid sample, ``[K]``.
        boundary_t: ``[K][K]`` fraction along centroid(a) -> centroid(b) where the prediction leaves ``a``.
        probe_pred: arg-max label index per probe (``-1`` when the view shows nothing), ``[P]``.
        probe_conf: score of that label (1.0 in the ``label`` view, which shows no score), ``[P]``.
        n_queries: black-box queries spent on this record.
        oracle_view: ``full``, ``top5`` or ``label``.
        probe_fingerprint: fingerprint of the probe set the indices refer to.
        bisection_steps: bisection steps per boundary.
    """

    labels: list[str]
    classes: list[int]
    centroids: list[int]
    boundary_t: list[list[float]]
    probe_pred: list[int]
    probe_conf: list[float]
    n_queries: int
    oracle_view: str
    probe_fingerprint: str
    bisection_steps: int = DEFAULT_BISECTION_STEPS
    version: int = field(default=1)

    @property
    def class_names(self) -> list[str]:
        """Names of the active classes, in record order."""
        return [self.labels[c] for c in self.classes]

    def to_dict(self) -> dict:
        """A JSON-able dict (NaN written as ``null``)."""
        d = asdict(self)
        d["probe_conf"] = [None if np.isnan(x) else round(float(x), 6) for x in self.probe_conf]
        d["boundary_t"] = [[float(x) for x in row] for row in self.boundary_t]  # exact: t = k / 2**(steps+1)
        return d

    def to_json(self) -> str:
        """The record as compact JSON (what the index stores)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "KnowledgeRecord":
        """Inverse of :meth:`to_dict`, validating every field (records come from files other people wrote).

        Raises:
            MalformedRecord: a missing or unknown field, a wrong type, inconsistent sizes, an index out of range,
                a boundary fraction outside [0, 1], a centroid probe not predicted as its class.
        """
        rec = cls(**_validated_fields(d))
        _check_consistency(rec)
        return rec

    @classmethod
    def from_json(cls, s: str) -> "KnowledgeRecord":
        """Inverse of :meth:`to_json`."""
        try:
            d = json.loads(s)
        except (TypeError, ValueError) as exc:
            raise MalformedRecord(f"Malformed knowledge record: not JSON ({type(exc).__name__}).",
                                  _RECORD_HINT) from None
        return cls.from_dict(d)


def knowledge_fingerprint(record_json: str) -> str:
    """sha256[:16] of a knowledge record's JSON (an index row's ``knowledge``, :meth:`KnowledgeRecord.to_json`),
    keys sorted: the identity of a model's black-box behaviour on one probe set, whatever repo or revision holds it.
    """
    canonical = json.dumps(json.loads(record_json), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


RECORD_VERSION = 1
_RECORD_HINT = "The index row or knowledge cache file is damaged: rebuild it (`k2v-hub index`)."
_REQUIRED = ("labels", "classes", "centroids", "boundary_t", "probe_pred", "probe_conf", "n_queries", "oracle_view",
             "probe_fingerprint")
_OPTIONAL = ("bisection_steps", "version")


def _bad(what: str) -> MalformedRecord:
    return MalformedRecord(f"Malformed knowledge record: {what}.", _RECORD_HINT)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _int_list(d: dict, key: str) -> list[int]:
    value = d[key]
    if not isinstance(value, list) or not all(_is_int(x) for x in value):
        raise _bad(f"`{key}` must be a list of integers")
    return [int(x) for x in value]


def _validated_fields(d) -> dict:
    """The constructor arguments of a record dict, type-checked (see :meth:`KnowledgeRecord.from_dict`)."""
    if not isinstance(d, dict):
        raise _bad(f"expected a JSON object, got {type(d).__name__}")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise _bad(f"missing {', '.join(missing)}")
    unknown = sorted(set(d) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise _bad(f"unknown fields {', '.join(map(str, unknown))} (written by a newer k2v-hub?)")
    out = {}
    if not isinstance(d["labels"], list) or not d["labels"] or not all(isinstance(x, str) for x in d["labels"]):
        raise _bad("`labels` must be a non-empty list of strings")
    out["labels"] = list(d["labels"])
    for key in ("classes", "centroids", "probe_pred"):
        out[key] = _int_list(d, key)
    rows = d["boundary_t"]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise _bad("`boundary_t` must be a list of lists")
    try:
        out["boundary_t"] = [[float(x) for x in r] for r in rows]
    except (TypeError, ValueError):
        raise _bad("`boundary_t` must hold numbers") from None
    conf = d["probe_conf"]
    if not isinstance(conf, list) or not all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))
                                             for x in conf):
        raise _bad("`probe_conf` must be a list of numbers or nulls")
    out["probe_conf"] = [float("nan") if x is None else float(x) for x in conf]
    if not _is_int(d["n_queries"]) or d["n_queries"] < 0:
        raise _bad("`n_queries` must be an integer >= 0")
    out["n_queries"] = int(d["n_queries"])
    if d["oracle_view"] not in ORACLE_VIEWS:
        raise _bad(f"`oracle_view` must be one of {', '.join(ORACLE_VIEWS)}")
    out["oracle_view"] = d["oracle_view"]
    if not isinstance(d["probe_fingerprint"], str) or not d["probe_fingerprint"]:
        raise _bad("`probe_fingerprint` must be a non-empty string")
    out["probe_fingerprint"] = d["probe_fingerprint"]
    if "bisection_steps" in d:
        if not _is_int(d["bisection_steps"]) or not 0 <= d["bisection_steps"] <= 64:
            raise _bad("`bisection_steps` must be an integer in 0..64")
        out["bisection_steps"] = int(d["bisection_steps"])
    if "version" in d:
        if not _is_int(d["version"]):
            raise _bad("`version` must be an integer")
        if d["version"] != RECORD_VERSION:
            raise MalformedRecord(f"Knowledge record version {d['version']} is not supported (this k2v-hub reads "
                                  f"version {RECORD_VERSION}).", "Re-index with this k2v-hub version.")
        out["version"] = int(d["version"])
    return out


def _check_consistency(rec: "KnowledgeRecord") -> None:
    k, n_probes, n_labels = len(rec.classes), len(rec.probe_pred), len(rec.labels)
    if k < 2:
        raise _bad(f"{k} active class (a record needs at least two)")
    if len(rec.centroids) != k or len(rec.boundary_t) != k or any(len(r) != k for r in rec.boundary_t):
        raise _bad("classes, centroids and boundary_t disagree in size")
    if len(rec.probe_conf) != n_probes:
        raise _bad("probe_pred and probe_conf disagree in size")
    if any(not 0 <= c < n_labels for c in rec.classes):
        raise _bad("class index out of range")
    if any(b <= a for a, b in zip(rec.classes, rec.classes[1:])):
        raise _bad("`classes` must be strictly increasing (label order, no duplicates)")
    if any(not 0 <= p < n_probes for p in rec.centroids):
        raise _bad("centroid probe index out of range")
    if any(not -1 <= p < n_labels for p in rec.probe_pred):
        raise _bad("probe prediction out of range")
    if any(rec.probe_pred[p] != c for p, c in zip(rec.centroids, rec.classes)):
        raise _bad("a centroid probe is not predicted as its class")
    t = np.asarray(rec.boundary_t, dtype=np.float64)
    if not np.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise _bad("boundary fractions must be finite and in [0, 1]")
    conf = np.asarray(rec.probe_conf, dtype=np.float64)
    if np.isinf(conf).any():
        raise _bad("probe confidences must be finite or null")


def probes_to_array(images) -> np.ndarray:
    """A list of same-size PIL images as a ``[P, H, W, 3]`` uint8 array."""
    return np.stack([np.asarray(to_rgb(im), dtype=np.uint8) for im in images])


def blend(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points ``(1 - t) * a + t * b`` on pixel segments, rounded to uint8. ``a, b: [N, H, W, 3]``, ``t: [N]``."""
    t = np.asarray(t, dtype=np.float32)[:, None, None, None]
    out = (1.0 - t) * a.astype(np.float32) + t * b.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _as_images(arr: np.ndarray):
    return [Image.fromarray(x) for x in arr]


def _argmax(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known = ~np.isnan(scores)
    filled = np.where(known, scores, -np.inf)
    pred = filled.argmax(axis=1)
    conf = filled[np.arange(len(scores)), pred]
    pred = np.where(known.any(axis=1), pred, -1)
    return pred, np.where(np.isfinite(conf), conf, np.nan)


def select_classes(pred: np.ndarray, conf: np.ndarray, max_classes: int) -> list[int]:
    """The top-``max_classes`` classes the probes activate, returned in label order."""
    counts: dict[int, list[float]] = {}
    for p, c in zip(pred.tolist(), conf.tolist()):
        if p >= 0:
            counts.setdefault(p, []).append(0.0 if np.isnan(c) else c)
    ranked = sorted(counts, key=lambda k: (-len(counts[k]), -float(np.mean(counts[k])), k))
    return sorted(ranked[:max_classes])


def build_knowledge(
    oracle: Oracle,
    probes: np.ndarray,
    *,
    probe_fingerprint: str,
    max_classes: int = DEFAULT_MAX_CLASSES,
    bisection_steps: int = DEFAULT_BISECTION_STEPS,
) -> KnowledgeRecord:
    """Query ``oracle`` on the probe set and bisect between class centroids; return the model's record.

    Args:
        oracle: the black box.
        probes: ``[P, H, W, 3]`` uint8 probe images.
        probe_fingerprint: fingerprint of ``probes`` (stored in the record).
        max_classes: C, the number of active classes kept.
        bisection_steps: bisection steps per boundary sample.

    Raises:
        ModelRefused: the model's answers activate fewer than two classes (constant output).
    """
    start_queries = oracle.n_queries
    scores = oracle.predict_proba(_as_images(probes))
    pred, conf = _argmax(scores)
    classes = select_classes(pred, conf, max_classes)
    if len(classes) < 2:
        raise ModelRefused(
            "The model gives every probe the same class (constant output).",
            "A constant model carries no decision knowledge; it was skipped.",
        )
    centroids = []
    for c in classes:
        members = np.flatnonzero(pred == c)
        if oracle.view == "label":
            centroids.append(int(members[0]))
        else:
            centroids.append(int(members[np.argmax(conf[members])]))
    k = len(classes)
    pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
    a = probes[[centroids[i] for i, _ in pairs]]
    b = probes[[centroids[j] for _, j in pairs]]
    own = np.array([classes[i] for i, _ in pairs])
    lo = np.zeros(len(pairs), dtype=np.float32)
    hi = np.ones(len(pairs), dtype=np.float32)
    for _ in range(bisection_steps):
        mid = (lo + hi) / 2
        step_pred, _ = _argmax(oracle.predict_proba(_as_images(blend(a, b, mid))))
        stay = step_pred == own
        lo = np.where(stay, mid, lo)
        hi = np.where(stay, hi, mid)
    t = np.zeros((k, k), dtype=np.float32)
    for (i, j), value in zip(pairs, (lo + hi) / 2):
        t[i, j] = value
    return KnowledgeRecord(
        labels=list(oracle.labels),
        classes=[int(c) for c in classes],
        centroids=centroids,
        boundary_t=t.tolist(),
        probe_pred=[int(p) for p in pred],
        probe_conf=[float(c) for c in conf],
        n_queries=oracle.n_queries - start_queries,
        oracle_view=oracle.view,
        probe_fingerprint=probe_fingerprint,
        bisection_steps=bisection_steps,
    )


def boundary_images(record: KnowledgeRecord, probes: np.ndarray) -> np.ndarray:
    """All ``K * K`` graph nodes as images ``[K, K, H, W, 3]``: ``[a, b]`` = x_a^b, ``[a, a]`` = centroid of a."""
    k = len(record.classes)
    cent = probes[record.centroids]
    a = np.repeat(cent, k, axis=0)
    b = np.tile(cent, (k, 1, 1, 1))
    t = np.asarray(record.boundary_t, dtype=np.float32).reshape(-1)
    return blend(a, b, t).reshape((k, k) + probes.shape[1:])


def krm(record: KnowledgeRecord, probes: np.ndarray) -> np.ndarray:
    """The knowledge representation matrix (Eq. 3) in pixel space: ``[K, K, H, W, 3]`` float32, zero diagonal."""
    nodes = boundary_images(record, probes).astype(np.float32)
    cent = probes[record.centroids].astype(np.float32)
    return nodes - cent[:, None]


def graph_features(record: KnowledgeRecord, probes: np.ndarray, extractor, probe_features: np.ndarray | None = None):
    """The graph set G in a frozen feature space: ``[K, K, D]`` float32, ``[a, b]`` = features of x_a^b.

    ``probe_features`` (``[P, D]``, optional) saves the feature pass for the centroids, which are probes.
    """
    k = len(record.classes)
    nodes = boundary_images(record, probes)
    off = [(i, j) for i in range(k) for j in range(k) if i != j]
    feats_off = extractor(_as_images(np.stack([nodes[i, j] for i, j in off])), show_progress=False) if off else None
    if probe_features is not None:
        cent = probe_features[record.centroids]
    else:
        cent = extractor(_as_images(nodes[np.arange(k), np.arange(k)]), show_progress=False)
    out = np.zeros((k, k, cent.shape[1]), dtype=np.float32)
    out[np.arange(k), np.arange(k)] = cent
    for (i, j), f in zip(off, feats_off if feats_off is not None else []):
        out[i, j] = f
    return out


def pseudo_tasks(record: KnowledgeRecord, *, n_tasks: int, rng: np.random.Generator, min_conf: float = 0.5,
                 min_per_class: int = 2, max_classes: int = 6):
    """Self-supervised pseudo-tasks: probes labelled by the model's own confident predictions.

    Returns a list of ``(probe_indices, pseudo_labels)`` pairs, each a task with 2..``max_classes`` classes.
    """
    pred = np.asarray(record.probe_pred)
    conf = np.nan_to_num(np.asarray(record.probe_conf, dtype=np.float32), nan=1.0)
    ok = (pred >= 0) & (conf >= min_conf)
    by_class = {c: np.flatnonzero(ok & (pred == c)) for c in record.classes}
    usable = [c for c, idx in by_class.items() if len(idx) >= min_per_class]
    tasks = []
    if len(usable) < 2:
        return tasks
    for _ in range(n_tasks):
        n_cls = int(rng.integers(2, min(max_classes, len(usable)) + 1))
        chosen = rng.choice(usable, size=n_cls, replace=False)
        idx, lab = [], []
        for new_label, c in enumerate(chosen):
            members = by_class[int(c)]
            take = rng.choice(members, size=min(len(members), 16), replace=False)
            idx.extend(take.tolist())
            lab.extend([new_label] * len(take))
        tasks.append((np.asarray(idx), np.asarray(lab)))
    return tasks


DEFAULT_PROBE_SPEC = {"source": "builtin", "n": 256, "size": 32, "seed": 0, "kinds": None, "exclude_sources": []}


def load_probe_set(spec: dict | str | None = None, *, token: str | None = None) -> tuple[np.ndarray, str, dict]:
    """The probe images ``[P, H, W, 3]`` uint8, their fingerprint and the normalised spec.

    ``spec`` is ``None`` (the built-in generic probe set), a dict like :data:`DEFAULT_PROBE_SPEC`, or a string:
    a dataset (local ``save_to_disk`` folder, image folder or Hub id) whose first ``n`` images become probes.
    """
    if spec is None:
        spec = dict(DEFAULT_PROBE_SPEC)
    elif isinstance(spec, str):
        spec = {"source": "dataset", "id": spec, "n": DEFAULT_PROBE_SPEC["n"], "size": DEFAULT_PROBE_SPEC["size"]}
    else:
        spec = {**DEFAULT_PROBE_SPEC, **spec} if spec.get("source", "builtin") == "builtin" else dict(spec)
    if spec["source"] == "builtin":
        images = build_probe_images(spec["n"], size=spec["size"], seed=spec["seed"],
                                    kinds=tuple(spec["kinds"]) if spec.get("kinds") else None,
                                    exclude_sources=tuple(spec.get("exclude_sources") or ()))
    elif spec["source"] == "dataset":
        ds = load_query_dataset(spec["id"], revision=spec.get("revision"), token=token)
        image_column, _, _ = find_columns(ds, require_labels=False)
        ds = ds.select(range(min(spec["n"], len(ds))))
        images = [im.resize((spec["size"], spec["size"])) for im in ds[image_column]]
    else:
        raise ValueError(f"Unknown probe source {spec['source']!r}.")
    arr = probes_to_array(images)
    return arr, probe_fingerprint(images), spec
