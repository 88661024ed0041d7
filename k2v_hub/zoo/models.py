"""Tiny transformers image classifiers trained from scratch on CPU, saved as Hub model repos.

Every zoo model is a stock `transformers` architecture (no remote code), small enough to train in seconds on two
CPU cores at 32x32 pixels. `save_hub_repo` writes exactly the files of a Hub model repo, so a zoo directory can be
uploaded as is, and every model loads offline through::

    pipeline("image-classification", model=path, trust_remote_code=False, model_kwargs={"use_safetensors": True})

Normalisation is the same everywhere: images are RGB, `size` x `size` (default 32), pixel values are
`(x / 255 - 0.5) / 0.5`, which is what the saved `ViTImageProcessor` config (`preprocessor_config.json`) does.
"""

from __future__ import annotations

import importlib.resources
import math
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from PIL import Image
from torch import nn
from transformers import (
    AutoModelForImageClassification,
    ConvNextConfig,
    MobileNetV2Config,
    ResNetConfig,
    ViTConfig,
    ViTImageProcessorPil,
)

from ..errors import K2VError
from ..features import logits_and_penultimate_features
from ..utils import logger, progress, seed_everything

__all__ = [
    "ARCHS",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "DEFAULT_LR",
    "make_config",
    "make_model",
    "make_image_processor",
    "images_to_uint8",
    "images_to_pixel_values",
    "uint8_to_pixel_values",
    "train_classifier",
    "evaluate",
    "predict_logits_and_features",
    "save_hub_repo",
    "CARD_TEMPLATE",
]

ARCHS = ("resnet", "convnext", "vit", "mobilenet_v2")
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
# Peak learning rates of the one-cycle schedule (AdamW), per architecture.
DEFAULT_LR = {"resnet": 3e-3, "convnext": 2e-3, "vit": 1.5e-3, "mobilenet_v2": 4e-3}
CARD_TEMPLATE = "zoo_model_card.md"

_ARCH_DESCRIPTIONS = {
    "resnet": "ResNet (basic blocks, embedding 16, hidden sizes 16/32/64/128, one block per stage)",
    "convnext": "ConvNeXt (patch 2, hidden sizes 16/32/64/128, one block per stage)",
    "vit": "ViT (32 px, patch 4, hidden 64, 4 layers, 4 heads, MLP 128)",
    "mobilenet_v2": "MobileNetV2 (depth multiplier 0.35, 448-d last layer)",
}


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"Unknown zoo architecture {arch!r}; expected one of {', '.join(ARCHS)}.")


def make_config(arch: str, id2label: dict[int, str], image_size: int = 32):
    """A tiny `transformers` config for `arch` with the given labels.

    Args:
        arch: one of `ARCHS`.
        id2label: `{index: label name}`, contiguous indices from 0.
        image_size: input side in pixels (the zoo uses 32).

    Returns:
        A `PretrainedConfig` whose `architectures` names the `*ForImageClassification` class.
    """
    _check_arch(arch)
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if sorted(id2label) != list(range(len(id2label))) or len(id2label) < 2:
        raise ValueError(f"id2label must map 0..n-1 (n >= 2) to names, got keys {sorted(id2label)}.")
    label2id = {v: k for k, v in id2label.items()}
    if len(label2id) != len(id2label):
        raise ValueError("id2label has duplicate label names.")
    common = dict(id2label=id2label, label2id=label2id, num_labels=len(id2label))
    if arch == "resnet":
        cfg = ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic", **common
        )
        cfg.architectures = ["ResNetForImageClassification"]
    elif arch == "convnext":
        # layer_scale_init_value=1.0: with the default 1e-6 the residual blocks start as identities and a
        # from-scratch model this small barely trains in a few hundred steps.
        cfg = ConvNextConfig(
            patch_size=2,
            hidden_sizes=[16, 32, 64, 128],
            depths=[1, 1, 1, 1],
            image_size=image_size,
            layer_scale_init_value=1.0,
            **common,
        )
        cfg.architectures = ["ConvNextForImageClassification"]
    elif arch == "vit":
        cfg = ViTConfig(
            image_size=image_size,
            patch_size=4,
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=128,
            encoder_stride=4,
            **common,
        )
        cfg.architectures = ["ViTForImageClassification"]
    else:
        # finegrained_output=False keeps the last layer (and the penultimate features) small: 448-d.
        cfg = MobileNetV2Config(
            image_size=image_size,
            depth_multiplier=0.35,
            finegrained_output=False,
            tf_padding=False,
            classifier_dropout_prob=0.1,
            **common,
        )
        cfg.architectures = ["MobileNetV2ForImageClassification"]
    return cfg


def make_model(arch: str, id2label: dict[int, str], image_size: int = 32) -> nn.Module:
    """A freshly initialised `*ForImageClassification` model (seed torch first for determinism)."""
    cfg = make_config(arch, id2label, image_size=image_size)
    return AutoModelForImageClassification.from_config(cfg)


def make_image_processor(image_size: int = 32):
    """The image processor saved with every zoo model: resize to `image_size`, rescale, normalise with 0.5/0.5."""
    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=2,  # PIL.Image.BILINEAR
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )


def _dataset_columns(ds) -> tuple[str, str]:
    image_col = next((k for k, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    label_col = next((k for k, f in ds.features.items() if isinstance(f, datasets.ClassLabel)), None)
    if image_col is None or label_col is None:
        raise K2VError(
            f"The dataset needs an Image column and a ClassLabel column; found features {dict(ds.features)}.",
            "Cast the columns with datasets.Image() / datasets.ClassLabel(names=[...]).",
        )
    return image_col, label_col


def images_to_uint8(images, image_size: int = 32) -> np.ndarray:
    """PIL images (any mode, any size) -> uint8 array [N, image_size, image_size, 3], resized like the processor."""
    out = np.empty((len(images), image_size, image_size, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        im = im.convert("RGB")
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BILINEAR)
        out[i] = np.asarray(im)
    return out


def images_to_pixel_values(images, image_size: int = 32) -> torch.Tensor:
    """PIL images -> normalised float32 tensor [N, 3, image_size, image_size] (what the saved processor computes)."""
    return uint8_to_pixel_values(images_to_uint8(images, image_size))


def uint8_to_pixel_values(arr: np.ndarray) -> torch.Tensor:
    """uint8 images [N, H, W, 3] -> normalised float32 pixel values [N, 3, H, W]."""
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to `max_shift` pixels per sample (edge-replicate padding)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4, mode="replicate")
    offs = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = int(offs[i, 0]), int(offs[i, 1])
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


def predict_logits_and_features(
    model: nn.Module, pixel_values: torch.Tensor, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Batched eval-mode forward: (logits [N, C], penultimate features [N, D]) as float32 numpy arrays."""
    was_training = model.training
    model.eval()
    logits, feats = [], []
    try:
        with torch.inference_mode():
            for start in range(0, len(pixel_values), batch_size):
                lg, ft = logits_and_penultimate_features(model, pixel_values[start : start + batch_size])
                logits.append(lg.float().numpy())
                feats.append(ft.float().numpy())
    finally:
        model.train(was_training)
    if not logits:
        n_labels = model.config.num_labels
        return np.zeros((0, n_labels), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(logits), np.concatenate(feats)


def evaluate(model: nn.Module, pixel_values: torch.Tensor, labels: torch.Tensor | np.ndarray) -> float:
    """Top-1 accuracy of `model` on normalised `pixel_values`."""
    if len(pixel_values) == 0:
        return float("nan")
    logits, _ = predict_logits_and_features(model, pixel_values)
    return float((logits.argmax(1) == np.asarray(labels)).mean())


def _dataset_to_tensors(ds, image_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    image_col, label_col = _dataset_columns(ds)
    names = list(ds.features[label_col].names)
    batch = ds[:] if len(ds) else {image_col: [], label_col: []}
    x = images_to_pixel_values(batch[image_col], image_size)
    y = torch.as_tensor(np.asarray(batch[label_col], dtype=np.int64))
    return x, y, names


def _recalibrate_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over the training images.

    transformers' MobileNetV2 uses `momentum=0.997` (TensorFlow's convention in PyTorch's formula), so its running
    statistics are those of the LAST training batch; recomputing them over all training images (no gradient,
    no augmentation) gives every BatchNorm model sound eval-mode statistics.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [bn.momentum for bn in bns]
    was_training = model.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size]
                if len(xb) > 1:
                    model(pixel_values=xb)
    finally:
        for bn, momentum in zip(bns, saved):
            bn.momentum = momentum
        model.train(was_training)


def train_classifier(
    arch: str,
    train_ds,
    *,
    epochs: int,
    seed: int,
    batch_size: int = 64,
    lr: float | None = None,
    weight_decay: float = 0.05,
    val_ds=None,
    image_size: int = 32,
    max_shift: int = 2,
    show_progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a tiny `arch` classifier from scratch on `train_ds` (an Image + ClassLabel `datasets.Dataset`).

    AdamW with a one-cycle (warm-up then cosine) schedule, cross-entropy, random +-2 px shifts; the labels are the
    dataset's ClassLabel names. Deterministic for a given seed, thread count and torch build.

    Returns:
        `(model, metrics)`: the model in eval mode and `{"train_acc", "val_acc", "n_params", "epochs", "lr",
        "batch_size", "n_train", "n_val", "train_seconds"}` (`val_acc` is `None` without `val_ds`).
    """
    _check_arch(arch)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    lr = DEFAULT_LR[arch] if lr is None else float(lr)
    x, y, names = _dataset_to_tensors(train_ds, image_size)
    if len(x) == 0:
        raise K2VError("The training dataset is empty.")
    seed_everything(seed)
    model = make_model(arch, dict(enumerate(names)), image_size=image_size)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, int(0.1 * total))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = (step - warmup) / max(1, total - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress_))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    epoch_iter = range(epochs)
    if show_progress:
        epoch_iter = progress(epoch_iter, desc=f"train {arch}", total=epochs)
    for _ in epoch_iter:
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = perm[start : start + batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            xb = _random_shift(x[idx], gen, max_shift)
            loss = loss_fn(model(pixel_values=xb).logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    _recalibrate_batch_norm(model, x, batch_size=256)
    train_seconds = time.perf_counter() - t0
    model.eval()
    metrics: dict[str, Any] = {
        "train_acc": evaluate(model, x, y),
        "val_acc": None,
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "epochs": int(epochs),
        "lr": lr,
        "batch_size": int(batch_size),
        "n_train": int(len(x)),
        "n_val": 0,
        "train_seconds": round(train_seconds, 2),
    }
    if val_ds is not None and len(val_ds):
        xv, yv, vnames = _dataset_to_tensors(val_ds, image_size)
        if vnames != names:
            raise ValueError(f"val_ds labels {vnames} differ from train_ds labels {names}.")
        metrics["val_acc"] = evaluate(model, xv, yv)
        metrics["n_val"] = int(len(xv))
    logger.debug("trained %s on %d images in %.1fs: %s", arch, len(x), train_seconds, metrics)
    return model, metrics


def _card_template_path() -> Path:
    return Path(str(importlib.resources.files("k2v_hub.cards") / CARD_TEMPLATE))


def save_hub_repo(
    model: nn.Module,
    out_dir: str | Path,
    *,
    model_id: str,
    source_name: str,
    source_description: str,
    arch: str,
    metrics: dict[str, Any],
    seed: int,
    domain: str | None = None,
    dataset_id: str | None = None,
    image_size: int = 32,
    extra_tags: list[str] | tuple[str, ...] = (),
) -> Path:
    """Write exactly a Hub model repo to `out_dir`: config.json, model.safetensors, preprocessor_config.json,
    README.md (from `cards/zoo_model_card.md`).

    Args:
        model: a trained `*ForImageClassification` model.
        model_id: `"<org>/<name>"`, used in the card.
        source_name / source_description: the training data source (see `k2v_hub.zoo.sources`).
        dataset_id: the dataset id named in the card metadata; defaults to `"<org>/<source_name>"`.
        metrics: as returned by `train_classifier` (`train_acc`, `val_acc`, `n_params`, ...).

    Returns:
        `out_dir` as a `Path`.
    """
    _check_arch(arch)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    org = model_id.split("/")[0] if "/" in model_id else "k2v-zoo"
    dataset_id = dataset_id or f"{org}/{source_name}"
    model.save_pretrained(out_dir)
    make_image_processor(image_size).save_pretrained(out_dir)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    val_acc = metrics.get("val_acc")
    eval_results = None
    if val_acc is not None:
        eval_results = [
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=dataset_id,
                dataset_name=source_name,
                dataset_split="validation",
                metric_type="accuracy",
                metric_name="Accuracy",
                metric_value=round(float(val_acc), 4),
            )
        ]
    tags = ["image-classification", "k2v-zoo", arch, f"source:{source_name}"]
    if domain:
        tags.append(f"domain:{domain}")
    tags.extend(t for t in extra_tags if t not in tags)
    card_data = ModelCardData(
        model_name=model_id,
        pipeline_tag="image-classification",
        library_name="transformers",
        datasets=[dataset_id],
        tags=tags,
        metrics=["accuracy"],
        eval_results=eval_results,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(_card_template_path()),
        model_id=model_id,
        arch=arch,
        arch_description=_ARCH_DESCRIPTIONS[arch],
        source_name=source_name,
        source_description=source_description,
        dataset_id=dataset_id,
        domain=domain,
        labels=labels,
        n_labels=len(labels),
        seed=seed,
        image_size=image_size,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        train_metrics=metrics,
        train_acc=metrics.get("train_acc"),
        val_acc=val_acc,
        n_params=metrics.get("n_params"),
        epochs=metrics.get("epochs"),
        lr=metrics.get("lr"),
        batch_size=metrics.get("batch_size"),
        n_train=metrics.get("n_train"),
        n_val=metrics.get("n_val"),
    )
    card.save(out_dir / "README.md")
    return out_dir
