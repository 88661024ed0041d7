"""Which model fine-tunes best on a dataset: its fine-tuned accuracy predicted from its card, no model run.

The data score (:func:`~k2v_hub.declared.data_scores`) ranks models by how close the data they declare is to the
user's: the question of using a model as it is (its accuracy on the user's classes, V.Acc). How well a model
*fine-tunes* on the user's data (Ft.Acc) depends on more than the closest class: how many of the user's classes
its data covers, how broad that data is, how well the model learned it. :class:`FinetunePredictor`, a small MLP,
maps a few numbers per candidate, all read from the index (the declared data's fingerprint and the card's
reported accuracy, :func:`finetune_features`), to the model's Ft.Acc standardised within the dataset, trained on
the measured Ft.Acc of a zoo's training tasks (:func:`train_finetune_predictor`). Models without a fingerprint
get no prediction (``NaN``).

Its configuration is chosen on the bench's validation split by weighted Kendall tau against Ft.Acc
(:func:`k2v_hub.bench.validation.choose_finetune`). The package ships one beside the default retriever
(``k2v_hub/default_retriever/finetune``, built by ``k2v-hub build-retriever --finetune-only``); ``find_model(...,
goal="fine-tune")`` ranks by it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .declared import fingerprint_cosines
from .errors import UsageError
from .retriever import WEIGHTS_NAME, SafetensorsHubMixin, built_retriever_dir, shipped_retriever_dir
from .utils import standardise

#: The features of one candidate, in order (``_z``: standardised over the candidates of one search, ``_EPS``).
FEATURES = ("data_z", "data", "worst_class_z", "coverage_z", "reported_accuracy", "n_classes", "spread")
#: The standardisation's guard against a zero spread (the shipped predictor was trained with it).
_EPS = 1e-9


def finetune_features(task_means: np.ndarray, fingerprints: list, accuracies: list | None = None) -> np.ndarray:
    """``[models, len(FEATURES)]`` features of each candidate for a dataset whose class means are ``task_means``
    (``[C, D]``); a model without a fingerprint gets a row of ``NaN``. A missing reported accuracy counts as the
    mean of those of the models with a fingerprint (0 if none is known), as in the data score."""
    n = len(fingerprints)
    best, worst, coverage = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    n_classes, spread = np.full(n, np.nan), np.full(n, np.nan)
    for j, fp in enumerate(fingerprints):
        cos = fingerprint_cosines(task_means, fp)
        if cos is None:
            continue
        best[j], worst[j], coverage[j] = cos.max(1).mean(), cos.max(1).min(), cos.max(0).mean()
        unit = fp / (np.linalg.norm(fp, axis=1, keepdims=True) + 1e-12)
        n_classes[j] = len(fp)
        spread[j] = 1.0 - float((unit @ unit.T)[np.triu_indices(len(fp), 1)].mean()) if len(fp) > 1 else 0.0
    acc = np.asarray([np.nan if a is None else a for a in (accuracies or [None] * n)], dtype=np.float64)
    known = np.isfinite(acc) & np.isfinite(best)
    acc = np.where(known, acc, acc[known].mean() if known.any() else 0.0)
    acc[~np.isfinite(best)] = np.nan
    return np.stack([standardise(best, _EPS), best, standardise(worst, _EPS), standardise(coverage, _EPS), acc,
                     n_classes, spread], 1)


class FinetunePredictor(nn.Module, SafetensorsHubMixin, library_name="k2v-hub", tags=["k2v-hub", "model-search"]):
    """Predicted Ft.Acc (standardised within a dataset) from :func:`finetune_features`: an MLP on standardised
    features. Saved and loaded with the hub mixin (``config.json`` + ``model.safetensors``); ``feature_space`` names
    the frozen feature space its fingerprints were made in (an index made in another one is refused)."""

    def __init__(self, n_features: int = len(FEATURES), hidden: int = 32, depth: int = 2, feature_space: str = ""):
        super().__init__()
        self.feature_space = feature_space
        layers, width = [], n_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, F]`` raw features -> ``[N]`` predictions."""
        return self.net((x - self.mean) / self.std).squeeze(-1)

    @torch.inference_mode()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predictions for ``[models, F]`` features; ``NaN`` where a row has no features."""
        features = np.asarray(features, dtype=np.float64)
        out = np.full(len(features), np.nan)
        ok = np.isfinite(features).all(1)
        if ok.any():
            out[ok] = self(torch.as_tensor(features[ok], dtype=torch.float32)).numpy()
        return out


def train_finetune_predictor(features: list[np.ndarray], ft_acc: list[np.ndarray], *, hidden: int = 32,
                             depth: int = 2, weight_decay: float = 1e-3, steps: int = 2000, lr: float = 3e-3,
                             seed: int = 0, feature_space: str = "") -> FinetunePredictor:
    """Fit a :class:`FinetunePredictor` by mean squared error to Ft.Acc standardised within each task.

    Args:
        features: per training task, ``[models, F]`` (:func:`finetune_features`); rows with ``NaN`` are skipped.
        ft_acc: per training task, the measured Ft.Acc of the same models.
        hidden, depth, weight_decay, steps, lr, seed: the MLP and its full-batch AdamW training.
        feature_space: the feature space of the fingerprints (recorded in the predictor's config).
    """
    xs, ys = [], []
    for x, y in zip(features, ft_acc):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        ok = np.isfinite(x).all(1) & np.isfinite(y)
        if ok.sum() > 1:
            xs.append(x[ok])
            ys.append(standardise(y[ok], _EPS))
    if not xs:
        raise ValueError("No training task has two models with features and a measured Ft.Acc.")
    X = torch.as_tensor(np.concatenate(xs), dtype=torch.float32)
    Y = torch.as_tensor(np.concatenate(ys), dtype=torch.float32)
    torch.manual_seed(seed)
    model = FinetunePredictor(X.shape[1], hidden, depth, feature_space)
    model.mean.copy_(X.mean(0))
    model.std.copy_(X.std(0) + 1e-6)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a net this small runs several times faster on one thread
    try:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.mse_loss(model(X), Y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


#: Where a fine-tune predictor sits beside a default retriever's files.
SUBFOLDER = "finetune"


def bundled_finetune_dir() -> Path:
    """The fine-tune predictor used when none is given: the one ``k2v-hub build-retriever`` built on this machine,
    else the one shipped in the package."""
    built = built_retriever_dir() / SUBFOLDER
    return built if (built / WEIGHTS_NAME).is_file() else shipped_retriever_dir() / SUBFOLDER


def load_finetune_predictor(folder=None) -> FinetunePredictor:
    """A :class:`FinetunePredictor` from ``folder`` (``config.json`` + ``model.safetensors``; default:
    :func:`bundled_finetune_dir`), in float32, loaded from safetensors only.

    Raises:
        UsageError: the folder holds no predictor, or one that does not load (damaged, or of another format).
    """
    path = Path(folder) if folder is not None else bundled_finetune_dir()
    rebuild = "Build one with `k2v-hub build-retriever --finetune-only`, or pass goal='as-is'."
    if not (path / WEIGHTS_NAME).is_file() or not (path / "config.json").is_file():
        raise UsageError(f"No fine-tune predictor in {path} (config.json and {WEIGHTS_NAME} expected).", rebuild)
    try:
        predictor = FinetunePredictor.from_pretrained(str(path))
    except Exception as exc:  # a damaged or foreign file: any loading error means the same to the user
        raise UsageError(f"Cannot load the fine-tune predictor in {path}: {type(exc).__name__}.", rebuild) from None
    if predictor.net[0].in_features != len(FEATURES):
        raise UsageError(f"The fine-tune predictor in {path} reads {predictor.net[0].in_features} features, not "
                         f"{len(FEATURES)}.", rebuild)
    return predictor.float().eval()
