"""The default retriever's shipping format: one ``model.safetensors`` small enough to ship inside the package.

Every tensor is first rounded to float16. Each large weight (2-D, at least ``LARGE`` elements: in a retriever the
encoders' first linear layers and the LSTMs' input weights) is then stored as int8 under its own name, with one
float16 scale per output row under ``<name>.scale`` (shape ``[rows]``): symmetric, ``scale = max|row| / 127`` and
``int8 = round(w / scale)``, so ``w ≈ int8 * scale``. Every other tensor stays float16. Rounding to float16 first
makes quantizing a float16 copy of a retriever give the same file as quantizing its float32 original. A plain file
(no int8 tensor) loads unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import K2VError
from .utils import give_usual_mode

#: A 2-D weight with at least this many elements is stored as int8.
LARGE = 100_000
#: The suffix of an int8 weight's per-row scales.
SCALE_SUFFIX = ".scale"
#: How a file in this format is described in a retriever's ``training_info.dtype``.
DTYPE = "int8 (large weights, per-row float16 scales) + float16"


def quantize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of the shipping format for a state dict (see the module docstring)."""
    out = {}
    for name, weight in state.items():
        weight = weight.detach().cpu().half()
        if weight.ndim == 2 and weight.numel() >= LARGE:
            scale = (weight.float().abs().amax(dim=1) / 127).half()
            scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # an all-zero row stays zero
            out[name] = torch.round(weight.float() / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
            out[name + SCALE_SUFFIX] = scale
        else:
            out[name] = weight.contiguous()
    return out


def dequantize(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict from tensors in the shipping format or a plain file: int8 weights times their scales, in
    float32; every other tensor as stored.

    Raises:
        K2VError: an int8 tensor without matching per-row scales.
    """
    out = dict(tensors)
    for name, tensor in tensors.items():
        if tensor.dtype == torch.int8:
            scale = out.pop(name + SCALE_SUFFIX, None)
            if tensor.ndim != 2 or scale is None or tuple(scale.shape) != (tensor.shape[0],):
                raise K2VError(f"Weight {name} is int8 without its per-row scales ({name}{SCALE_SUFFIX}).",
                               "The weights file is damaged or not a k2v-hub retriever; download or rebuild it.")
            out[name] = tensor.float() * scale.float()[:, None]
    return out


def save_quantized(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write a state dict to ``path`` in the shipping format, with the usual file mode."""
    save_file(quantize(state), str(path), metadata={"format": "pt"})
    give_usual_mode(path)


def load_weights(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, plain or in the shipping format (never pickle)."""
    return dequantize(load_file(str(path), device=device))
