"""The transferability methods k2v-hub knows, in one registry read by `find_model`'s re-rank, the CLI and the bench.

Each :class:`Method` says how it scores a model (``estimator``, on the ``inputs`` it needs from the model), what
access to the model that takes (``access``, as the bench reports it) and whether `find_model` can re-rank with it
(``rerank``). Adding a transferability baseline: its function in :mod:`k2v_hub.baselines` and one line here.

Spelling: a method has one name (``logme_probs``), which keys the bench's JSON. ``find_model(rerank=...)``,
``k2v-hub find --rerank`` and a re-ranked match's ``stage`` (``rerank:logme-probs``) have spelled it with a hyphen
since 0.1 (:attr:`Method.option`); :func:`rerank_method` accepts both spellings and gives the one method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from . import baselines

PREDICTIONS = "black-box (predictions, all models)"
FEATURES = "grey-box (features)"


@dataclass(frozen=True)
class Method:
    """One way to rank models for a dataset.

    Attributes:
        name: the method's name (the bench's JSON key).
        access: what it needs from a model, as the bench reports it (``"grey-box (features)"``, ``"metadata"``...).
        estimator: ``fn(inputs, labels) -> float`` (higher: transfers better), or ``None`` for the rankings made
            from metadata alone, which the bench computes from the zoo's files.
        inputs: what ``estimator`` reads from a model on the dataset's images: ``"probs"`` ``[N, Z]`` (the
            predictions a black box returns) or ``"features"`` ``[N, F]`` (penultimate features).
        rerank: ``"black-box"`` or ``"grey-box"`` if `find_model` can re-rank its candidates with it, else ``None``.
        needs_n_above_d: its estimate only means something with more images than feature dimensions (N > D):
            H-score's ``tr(cov(f)^-1 cov(E[f|y]))`` is ``C - 1`` for every model whenever ``N <= D``.
        needs_names: it reads the class names too: ``estimator(inputs, labels, model_labels, task_labels)``
            (meaningless label-blind, where the dataset's names are ``class_0..``).
    """

    name: str
    access: str
    estimator: Callable[..., float] | None = None
    inputs: str | None = None
    rerank: str | None = None
    needs_n_above_d: bool = False
    needs_names: bool = False

    @property
    def option(self) -> str:
        """How ``find_model(rerank=...)``, ``--rerank`` and ``Match.stage`` spell it: the name with hyphens."""
        return self.name.replace("_", "-")


#: Every method, in the order the bench runs and reports them.
METHODS: tuple[Method, ...] = (
    # LogME as thuml's reference code computes it (fixed-point iteration); `logme_exact`: the paper's exact evidence
    Method("logme", FEATURES, partial(baselines.logme, thuml_compat=True), "features", rerank="grey-box"),
    Method("logme_exact", FEATURES, baselines.logme, "features"),
    Method("h_score", FEATURES, baselines.h_score, "features", needs_n_above_d=True),
    Method("h_score_reg", FEATURES, baselines.h_score_reg, "features", needs_n_above_d=True),
    Method("nleep", FEATURES, baselines.nleep, "features"),
    Method("leep", PREDICTIONS, baselines.leep, "probs", rerank="black-box"),
    Method("nce", PREDICTIONS, baselines.nce_from_probs, "probs", rerank="black-box"),
    Method("logme_probs", PREDICTIONS, baselines.logme_probs, "probs", rerank="black-box"),
    # the model as it is: its own head's accuracy on the dataset's class names it has (needs meaningful names)
    Method("head_accuracy", PREDICTIONS, baselines.head_accuracy, "probs", rerank="black-box", needs_names=True),
    Method("random", "none"),
    Method("popularity", "metadata"),
    Method("size", "metadata (safetensors header)"),
    Method("label_match", "metadata (labels)"),
    Method("card_dataset", "metadata (card)"),
)

#: The methods with an estimator (they run every model on the dataset's images).
ESTIMATORS: tuple[Method, ...] = tuple(m for m in METHODS if m.estimator is not None)

#: What ``find_model(rerank=...)`` and ``--rerank`` accept, black-box methods first: ``leep, nce, logme-probs,
#: head-accuracy, logme``.
RERANK_METHODS: tuple[str, ...] = tuple(m.option for box in ("black-box", "grey-box") for m in METHODS
                                        if m.rerank == box)


def rerank_method(name) -> Method | None:
    """The re-rank method called ``name`` (its name or its :attr:`~Method.option`), or ``None``."""
    return next((m for m in METHODS if m.rerank and name in (m.name, m.option)), None)
