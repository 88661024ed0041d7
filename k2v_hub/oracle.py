"""Black-box classifiers: the only way k2v-hub ever looks at a model.

An :class:`Oracle` exposes two things: ``labels`` (the model's class names) and
``predict_proba(images) -> [N, C]``. Nothing else about the model (weights, features, gradients) is used to
build its knowledge record. Every oracle counts the images it was asked about (``n_queries``), refuses to go
past its ``budget`` and batches its queries.

Three *views* model what a black box really shows (see the honest-numbers issue):

- ``"full"``: the whole probability vector.
- ``"top5"``: the top-5 labels with their scores, what hosted inference returns by default. The other entries
  are *unknown*, returned as NaN (not zero).
- ``"label"``: the top-1 label alone, returned as 1.0 at its index and NaN elsewhere.

Implementations: :class:`TransformersOracle` (a local folder or a Hub repo, loaded with safetensors only and
``trust_remote_code=False``) and :class:`InferenceOracle` (a remote endpoint through
``huggingface_hub.InferenceClient.image_classification``: no weights are downloaded at all).
"""

from __future__ import annotations

import io
import logging
import numbers
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from torch.nn.modules import module as torch_module
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
from transformers.utils import logging as hf_logging

from .baselines import param_count_from_safetensors
from .errors import ModelRefused, QueryBudgetExceeded, UsageError, one_line
from .hub import inference_client
from .limits import (
    MAX_CONFIG_BYTES,
    MAX_LABELS,
    MAX_MODULES,
    MAX_PREPROCESSOR_BYTES,
    MODEL_ELEMENTS_PER_WEIGHT,
    MODEL_ELEMENTS_SLACK,
    batch_for,
    check_config,
    check_file_sizes,
    folder_file_sizes,
    image_side,
    read_json_object,
)
from .options import ORACLE_VIEWS, OracleView

logger = logging.getLogger(__name__)


def apply_view(probs: np.ndarray, view: str) -> np.ndarray:
    """Reduce full probability rows ``[N, C]`` to what a black box with this ``view`` shows (NaN = unknown)."""
    if view == "full":
        return probs
    if view not in ORACLE_VIEWS:
        raise ValueError(f"Unknown oracle view {view!r}; choose one of {', '.join(ORACLE_VIEWS)}.")
    k = 5 if view == "top5" else 1
    out = np.full_like(probs, np.nan, dtype=np.float32)
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(probs))[:, None]
    out[rows, top] = probs[rows, top] if view == "top5" else 1.0
    return out


def to_rgb(image) -> Image.Image:
    """Any PIL image (1, L, P, LA, RGBA, CMYK, I;16, I, F...) as RGB.

    Alpha is composited on white; 16-bit, 32-bit and float images are rescaled from their own finite range to
    0..255 (NaN/inf pixels become the darkest value), not clipped.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"Expected a PIL image, got {type(image).__name__}.")
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        if image.mode in ("La", "RGBa"):  # premultiplied alpha
            image = image.convert("RGBA") if image.mode == "RGBa" else image.convert("LA")
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(arr)
        if not finite.any():
            arr = np.zeros(arr.shape)
        else:
            lo, hi = float(arr[finite].min()), float(arr[finite].max())
            arr = np.where(finite, arr, lo)
            span = (hi - lo) or 1.0
            arr = (arr - lo) / span * 255
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


class Oracle:
    """A black-box image classifier: ``labels`` and ``predict_proba(images)``, nothing else.

    Args:
        labels: the class names, index ``i`` is column ``i`` of ``predict_proba``.
        view: what the black box shows, one of ``"full"``, ``"top5"``, ``"label"``.
        budget: maximum number of images this oracle may be asked about (``None`` = unlimited).
        batch_size: images per query batch.
    """

    def __init__(self, labels: Sequence[str], *, view: OracleView = "full", budget: int | None = None,
                 batch_size: int = 64):
        if view not in ORACLE_VIEWS:
            raise ValueError(f"Unknown oracle view {view!r}; choose one of {', '.join(ORACLE_VIEWS)}.")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 0):
            raise UsageError(f"budget must be None or an integer >= 0, got {budget!r}.", "Pass --query-budget N.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise UsageError(f"batch_size must be an integer >= 1, got {batch_size!r}.", "Pass batch_size=64, say.")
        if not labels:
            raise ModelRefused("The model exposes no labels.", "An image classifier needs `id2label` in its config.")
        if len(labels) > MAX_LABELS:
            raise ModelRefused(f"The model has {len(labels)} labels (limit {MAX_LABELS}).")
        self.labels = [str(x) for x in labels]
        self.view = view
        self.budget = budget
        self.batch_size = batch_size
        self.n_queries = 0

    def predict_proba(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Query the black box: ``[N, C]`` float32 scores as this oracle's view shows them (NaN = unknown).

        Raises:
            QueryBudgetExceeded: if answering would go past ``budget``.
            ModelRefused: if the model answers NaN/inf scores.
        """
        n = len(images)
        if self.budget is not None and self.n_queries + n > self.budget:
            raise QueryBudgetExceeded(
                f"Query budget of {self.budget} images exceeded ({self.n_queries} used, {n} more asked).",
                "Raise the budget (--query-budget) or use fewer probes.",
            )
        if n == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        chunks = []
        for start in range(0, n, self.batch_size):
            batch = [to_rgb(im) for im in images[start : start + self.batch_size]]
            chunks.append(self._predict_batch(batch))
            self.n_queries += len(batch)
        probs = np.concatenate(chunks).astype(np.float32)
        known = probs[~np.isnan(probs)]
        if known.size and not np.isfinite(known).all():
            raise ModelRefused("The model answered non-finite scores (inf).", "Check the model; it was skipped.")
        return apply_view(probs, self.view) if self._returns_full else probs

    _returns_full = True

    def _predict_batch(self, images: list[Image.Image]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class TransformersOracle(Oracle):
    """A `transformers` image classifier in a local folder, queried only through its predictions.

    The folder must hold ``config.json`` (with ``id2label``), ``preprocessor_config.json`` and weights in
    safetensors. Remote code (``auto_map``) is refused unless ``trust_remote_code=True``; pickle weights
    (``pytorch_model.bin``) are refused unless ``allow_pickle=True``. Every size the repo states is checked first
    (:mod:`k2v_hub.limits`); the model runs in float32 and a query batch holds at most ``PIXEL_BUDGET`` pixels.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        view: OracleView = "full",
        budget: int | None = None,
        batch_size: int = 64,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
    ):
        path = Path(path)
        config = check_model_folder(path, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        id2label = config["id2label"]
        labels = [id2label[k] for k in sorted(id2label, key=lambda k: int(k))]
        super().__init__(labels, view=view, budget=budget, batch_size=batch_size)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        self._torch = torch
        has_safetensors = any(path.glob("*.safetensors"))
        try:
            self._processor = AutoImageProcessor.from_pretrained(
                path, trust_remote_code=trust_remote_code, local_files_only=True
            )
            self.batch_size = batch_for(image_side(self._processor.to_dict(), path.name), batch_size)
            _check_model_size(path, _weight_elements(path), trust_remote_code)
            self._model = AutoModelForImageClassification.from_pretrained(
                path,
                trust_remote_code=trust_remote_code,
                use_safetensors=has_safetensors or not allow_pickle,
                local_files_only=True,
                dtype=torch.float32,
            ).eval()
        except (ModelRefused, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds; one line with a hint instead
            raise ModelRefused(
                one_line(f"{path.name}: transformers cannot load it as an image classifier "
                         f"({type(exc).__name__}: {exc})."),
                "Check that it loads with AutoModelForImageClassification/AutoImageProcessor; it was skipped.",
            ) from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        n_out = getattr(self._model.config, "num_labels", len(self.labels))
        if n_out != len(self.labels):
            raise ModelRefused(f"{path.name}: the model has {n_out} outputs but {len(self.labels)} labels.",
                               "Fix `id2label` in config.json; it was skipped.")

    def _predict_batch(self, images):
        torch = self._torch
        with torch.inference_mode():
            inputs = self._processor(images=images, return_tensors="pt")
            logits = self._model(**inputs).logits.float()
            probs = torch.softmax(logits, dim=-1).numpy()
        if probs.ndim != 2 or probs.shape[1] != len(self.labels):
            raise ModelRefused(f"The model answered {probs.shape[-1]} scores per image but has {len(self.labels)} "
                               "labels.", "Fix `id2label` in its config.json; it was skipped.")
        if np.isnan(probs).any():
            raise ModelRefused("The model answered NaN scores.", "Check the model's weights; it was skipped.")
        return probs


class _OverBudget(Exception):
    """A model being built on the meta device grew past what its weights allow."""


def _check_model_size(path: Path, weight_elements: int, trust_remote_code: bool) -> None:
    """Build the model ``config.json`` describes on the meta device (no memory is allocated) and refuse it if it
    holds more parameter and buffer elements than its weights allow, or more than ``MAX_MODULES`` modules: layers
    missing from the weights would otherwise be allocated at the size the config asks for."""
    budget = MODEL_ELEMENTS_PER_WEIGHT * weight_elements + MODEL_ELEMENTS_SLACK
    seen = {"elements": 0, "modules": 0}

    def on_tensor(module, name, tensor):
        seen["elements"] += 0 if tensor is None else tensor.numel()
        if seen["elements"] > budget:
            raise _OverBudget(f"over {seen['elements']:,} parameter elements, its weights hold {weight_elements:,}")

    def on_module(module, name, submodule):
        seen["modules"] += 1
        if seen["modules"] > MAX_MODULES:
            raise _OverBudget(f"over {MAX_MODULES:,} modules")

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    hooks = [torch_module.register_module_parameter_registration_hook(on_tensor),
             torch_module.register_module_buffer_registration_hook(on_tensor),
             torch_module.register_module_module_registration_hook(on_module)]
    try:
        with torch.device("meta"):
            AutoModelForImageClassification.from_config(config, trust_remote_code=trust_remote_code)
    except _OverBudget as exc:
        raise ModelRefused(f"{path.name}: config.json describes a model of {exc}.",
                           "The config and the weights disagree; it was skipped.") from None
    finally:
        for hook in hooks:
            hook.remove()


def _weight_elements(path: Path) -> int:
    """Tensor elements in a folder's weights: exact from safetensors headers; a pickle's bytes bound its count."""
    return (sum(param_count_from_safetensors(f) for f in sorted(path.glob("*.safetensors")))
            + sum(f.stat().st_size for f in path.glob("*.bin")))


def _check_safetensors(path: Path) -> None:
    """Open each safetensors header: a corrupt or truncated file is refused before transformers sees it."""
    for f in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="np") as handle:
                list(handle.keys())
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError...
            raise ModelRefused(one_line(f"{path.name}: {f.name} is corrupt or truncated ({type(exc).__name__}: "
                                        f"{exc})."), "Re-upload the weights; the model was skipped.") from None


def check_model_folder(path: Path, *, trust_remote_code: bool = False, allow_pickle: bool = False) -> dict:
    """Validate a downloaded model repo before anything is loaded; return its parsed ``config.json``.

    Nothing in the folder is imported or unpickled here: only file sizes, JSON and safetensors headers are read,
    and every size the repo states is checked against :mod:`k2v_hub.limits` before it is used.

    Raises:
        ModelRefused: not an image classifier, remote code (``auto_map`` in ``config.json`` or
            ``preprocessor_config.json``, ``custom_pipelines``) without opt-in, pickle-only weights without opt-in,
            missing, corrupt or oversized files, too many labels, images larger than the oracle needs.
    """
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelRefused(f"{path.name}: no config.json.", "Only `transformers` image classifiers can be indexed.")
    check_file_sizes(folder_file_sizes(path), path.name)
    config = read_json_object(config_file, "config.json", MAX_CONFIG_BYTES)
    if (config.get("auto_map") or config.get("custom_pipelines")) and not trust_remote_code:
        raise ModelRefused(
            f"{path.name}: config.json has `auto_map` (the model needs remote code).",
            "Refused: pass --trust-remote-code only if you trust this repo's code.",
        )
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise ModelRefused(f"{path.name}: config.json has no `id2label`.", "Is this an image-classification model?")
    check_config(config, path.name)
    if not all(str(k).lstrip("-").isdigit() and len(str(k)) <= len(str(MAX_LABELS)) for k in id2label):
        raise ModelRefused(f"{path.name}: `id2label` keys are not integers.", "Fix config.json; it was skipped.")
    if sorted(int(k) for k in id2label) != list(range(len(id2label))):
        raise ModelRefused(f"{path.name}: `id2label` keys are not 0..{len(id2label) - 1}.",
                           "Fix config.json; it was skipped.")
    preprocessor = path / "preprocessor_config.json"
    if not preprocessor.is_file():
        raise ModelRefused(
            f"{path.name}: no preprocessor_config.json.",
            "The repo needs an image processor config to be queried like a Hub pipeline.",
        )
    processor = read_json_object(preprocessor, "preprocessor_config.json", MAX_PREPROCESSOR_BYTES)
    if processor.get("auto_map") and not trust_remote_code:
        raise ModelRefused(
            f"{path.name}: preprocessor_config.json has `auto_map` (the image processor needs remote code).",
            "Refused: pass --trust-remote-code only if you trust this repo's code.",
        )
    image_side(processor, path.name)
    if not any(path.glob("*.safetensors")):
        if any(path.glob("*.bin")) and not allow_pickle:
            raise ModelRefused(
                f"{path.name}: weights are pickle only (pytorch_model.bin).",
                "Refused: pass --allow-pickle to load them (torch.load with weights_only=True).",
            )
        if not any(path.glob("*.bin")):
            raise ModelRefused(f"{path.name}: no weights file (model.safetensors).",
                               "Upload safetensors weights; the model was skipped.")
    _check_safetensors(path)
    return config


class InferenceOracle(Oracle):
    """A remote black box through ``huggingface_hub.InferenceClient.image_classification``.

    No weights are downloaded: each image is sent as PNG bytes and the endpoint answers ``[{label, score}]``.
    ``labels`` should be the model's full label list (from its config); labels the endpoint returns that are
    not in it are appended. Endpoints answer one image per request; requests run ``max_workers`` at a time.
    """

    _returns_full = False

    def __init__(
        self,
        model: str,
        labels: Sequence[str],
        *,
        view: OracleView = "top5",
        budget: int | None = None,
        token: str | None = None,
        max_workers: int = 4,
        batch_size: int = 32,
    ):
        super().__init__(labels, view=view, budget=budget, batch_size=batch_size)
        self._client = inference_client(model, token)
        self._max_workers = max_workers
        self._index = {label: i for i, label in enumerate(self.labels)}

    def _ask(self, image: Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        top_k = {"full": len(self.labels), "top5": 5, "label": 1}[self.view]
        return self._client.image_classification(buf.getvalue(), top_k=top_k)

    def _predict_batch(self, images):
        with ThreadPoolExecutor(self._max_workers) as pool:
            answers = list(pool.map(self._ask, images))
        out = np.full((len(images), len(self.labels)), np.nan, dtype=np.float32)
        for row, answer in enumerate(answers):
            for element in answer:
                label, score = str(element.label), float(element.score)
                if label not in self._index:
                    self._index[label] = len(self.labels)
                    self.labels.append(label)
                    out = np.pad(out, ((0, 0), (0, 1)), constant_values=np.nan)
                out[row, self._index[label]] = 1.0 if self.view == "label" else score
        return out
