"""The image toolkit: random colours, backgrounds, noise and the compositing of a shape or picture onto them.

Why: the zoo's image sources and the probe set draw their images the same way, from one seeded numpy
``Generator`` each, so they rebuild to the same bytes for the same arguments on the same machine. Arrays are
float32 RGB in [0, 1], ``[s, s, 3]``; drawing happens on a supersampled canvas (`supersample`) and `to_image`
brings it down to the output size.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["random_color", "unit_grid", "smooth_noise", "background", "add_noise", "supersample", "to_image",
           "compose_mask", "compose_rgba"]


def random_color(rng: np.random.Generator, dark: bool) -> np.ndarray:
    """A random RGB colour in [0, 1]; dark ones have value <= 0.4, light ones >= 0.6."""
    h, s = rng.random(), rng.random() ** 1.5
    v = rng.uniform(0.0, 0.4) if dark else rng.uniform(0.6, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def unit_grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(x, y)`` of an ``s`` x ``s`` image, each float32 ``[s, s]`` from 0 to 1."""
    y, x = np.mgrid[0:s, 0:s].astype(np.float32) / max(s - 1, 1)
    return x, y


def smooth_noise(rng: np.random.Generator, s: int, cells: int) -> np.ndarray:
    """Value noise ``[s, s]`` in [0, 1]: a random ``cells`` x ``cells`` grid upsampled bicubically."""
    small = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(small.resize((s, s), Image.BICUBIC), dtype=np.float32) / 255.0


def background(rng: np.random.Generator, s: int, dark: bool) -> np.ndarray:
    """A ``[s, s, 3]`` float32 background: flat, gradient, smooth noise or faint stripes, plus pixel noise."""
    c1, c2 = random_color(rng, dark), random_color(rng, dark)
    kind = rng.integers(4)
    if kind == 0:
        t = np.zeros((s, s), np.float32)
    elif kind == 1:
        x, y = unit_grid(s)
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * x + np.sin(a) * y
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    elif kind == 2:
        t = smooth_noise(rng, s, int(rng.integers(3, 9)))
    else:
        x, y = unit_grid(s)
        a = rng.uniform(0, np.pi)
        f = rng.uniform(2, 8)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * f * (np.cos(a) * x + np.sin(a) * y) + rng.uniform(0, 2 * np.pi))
    bg = c1[None, None] * (1 - t[..., None]) + c2[None, None] * t[..., None]
    return add_noise(rng, bg, rng.uniform(0.0, 0.06))


def add_noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """``img`` plus Gaussian pixel noise of standard deviation ``sigma`` (unchanged, and no draw, if 0)."""
    if sigma > 0:
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return img


def _foreground(rng: np.random.Generator, s: int, dark: bool) -> np.ndarray:
    """A ``[s, s, 3]`` foreground fill: a flat colour or a two-colour gradient."""
    c1 = random_color(rng, dark)
    if rng.random() < 0.6:
        return np.broadcast_to(c1[None, None], (s, s, 3))
    c2 = random_color(rng, dark)
    x, y = unit_grid(s)
    a = rng.uniform(0, 2 * np.pi)
    t = np.cos(a) * x + np.sin(a) * y
    t = ((t - t.min()) / max(float(np.ptp(t)), 1e-6))[..., None]
    return c1[None, None] * (1 - t) + c2[None, None] * t


def _place(rng: np.random.Generator, img: Image.Image, s: int, lo: float, hi: float, max_rot: float,
           aspect: float = 0.15, shear: float = 0.0) -> tuple[Image.Image, tuple[int, int]]:
    """Scale ``img`` so its longest side is ``U(lo, hi) * s``, jitter aspect, shear, rotate; return it and an offset."""
    w, h = img.size
    side = rng.uniform(lo, hi) * s
    k = side / max(w, h)
    ar = rng.uniform(1 - aspect, 1 + aspect)
    nw, nh = max(1, int(round(w * k * ar))), max(1, int(round(h * k / ar)))
    out = img.resize((nw, nh), Image.BILINEAR)
    if shear > 0:
        sh = float(rng.uniform(-shear, shear))
        out = out.transform((nw + int(np.ceil(abs(sh) * nh)), nh), Image.AFFINE,
                            (1.0, sh, -max(0.0, sh * nh), 0.0, 1.0, 0.0), resample=Image.BILINEAR)
    if max_rot > 0:
        out = out.rotate(float(rng.uniform(-max_rot, max_rot)), resample=Image.BILINEAR, expand=True)
    w2, h2 = out.size
    # keep the shape (mostly) inside the canvas
    x = int(rng.integers(min(0, s - w2), max(0, s - w2) + 1))
    y = int(rng.integers(min(0, s - h2), max(0, s - h2) + 1))
    return out, (x, y)


def supersample(size: int) -> int:
    """The side of the canvas to draw an image of side ``size`` on: twice ``size`` up to 64 px."""
    return 2 * size if size <= 64 else size


def to_image(arr: np.ndarray, size: int) -> Image.Image:
    """A float RGB array in [0, 1] as an RGB PIL image of side ``size`` (box filter from an integer multiple)."""
    im = Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BOX if im.size[0] % size == 0 else Image.BILINEAR)
    return im


def compose_mask(rng: np.random.Generator, mask: Image.Image, size: int, lo: float = 0.5, hi: float = 0.9,
                 max_rot: float = 15.0) -> Image.Image:
    """Paste a grey 'L' shape mask (ink = 255) at a random place/scale/angle in a random colour on a random ground."""
    s = supersample(size)
    shape, (x, y) = _place(rng, mask, s, lo, hi, max_rot, shear=0.25)
    if rng.random() < 0.25:  # a bolder stroke
        shape = shape.filter(ImageFilter.MaxFilter(3))
    canvas = Image.new("L", (s, s), 0)
    canvas.paste(shape, (x, y))
    a = np.asarray(canvas, dtype=np.float32)[..., None] / 255.0
    dark_bg = bool(rng.random() < 0.5)
    bg = background(rng, s, dark_bg)
    fg = _foreground(rng, s, not dark_bg)
    out = bg * (1 - a) + fg * a
    return to_image(add_noise(rng, out, rng.uniform(0.0, 0.03)), size)


def compose_rgba(rng: np.random.Generator, rgba: Image.Image, size: int, lo: float = 0.55, hi: float = 0.95,
                 max_rot: float = 20.0) -> Image.Image:
    """Paste an RGBA picture (emoji) at a random place/scale/angle on a random ground, with slight colour jitter."""
    s = supersample(size)
    pic, (x, y) = _place(rng, rgba, s, lo, hi, max_rot, aspect=0.1)
    canvas = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    canvas.paste(pic, (x, y))
    arr = np.asarray(canvas, dtype=np.float32) / 255.0
    a = arr[..., 3:]
    rgb = np.clip(arr[..., :3] * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05), 0, 1)
    bg = background(rng, s, bool(rng.random() < 0.5))
    out = bg * (1 - a) + rgb * a
    return to_image(add_noise(rng, out, rng.uniform(0.0, 0.03)), size)

