"""Printed digits: the digits 0-9 typeset with Pillow in the TrueType fonts matplotlib ships.

A second source of digit images, with the label space of scikit-learn's handwritten ``digits`` and
of MNIST but a different way of making them (typeset, not handwritten), so dataset-bias
experiments (name that dataset, cross-dataset generalisation; Torralba and Efros 2011) have two
real sources that are always available offline.

Each image is one digit drawn white on black on a canvas four times the final side, in a random
font among :func:`find_fonts`, at a random font size (70-100% of the canvas side), stroke width (0-3 canvas
pixels), offset (up to 10% of the side) and rotation (up to 15 degrees), then box-downsampled to
``size x size``: anti-aliased, as MNIST's digits are. Classes are balanced. The images are a fixed
function of the seed, the fonts and Pillow's rasteriser.

The fonts are the text faces that ship inside matplotlib (a dependency, so every installation has
the same ones whatever the system's fonts): DejaVu Sans, Serif and Sans Mono in their four styles,
STIX General and Computer Modern (roman, sans, typewriter, bold), plus Pillow's own scalable
default font. ``fonts=`` gives others.

Example:
    >>> from robustlens.data.printed import load_printed_digits
    >>> ds = load_printed_digits("test", n=20, size=16)
    >>> ds.x.shape, ds.class_counts().tolist()
    (torch.Size([20, 1, 16, 16]), [2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from robustlens.data.dataset import ImageDataset
from robustlens.errors import DataNotFoundError, ParameterError

__all__ = ["DEFAULT_FONT", "SIZES", "find_fonts", "load_printed_digits"]

#: Font files of matplotlib's ``fonts/ttf`` folder used (text faces with ordinary digits).
_FAMILIES = (
    "DejaVuSans.",
    "DejaVuSans-",
    "DejaVuSerif.",
    "DejaVuSerif-",
    "DejaVuSansMono",
    "STIXGeneral",
    "cmr10",
    "cmss10",
    "cmtt10",
    "cmb10",
)
#: Stands for Pillow's built-in scalable font in a ``fonts=`` list.
DEFAULT_FONT = "pillow-default"
#: Images per split of the registered data set ``"printed-digits"`` and their seeds.
SIZES = {"train": (3000, 1), "test": (1000, 2)}
_SCALE = 4  # canvas side / image side


def find_fonts() -> list[str]:
    """The fonts printed digits are drawn in: font files of the families above, sorted, then
    :data:`DEFAULT_FONT` when Pillow can scale its own font."""
    import matplotlib
    from PIL import features

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = sorted(str(p) for p in folder.glob("*.ttf") if p.name.startswith(_FAMILIES))
    if features.check("freetype2"):
        found.append(DEFAULT_FONT)
    return found


@functools.lru_cache(maxsize=4096)
def _font(spec: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if spec == DEFAULT_FONT:
        return ImageFont.load_default(size)
    return ImageFont.truetype(spec, size)


def _render(
    digit: int,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    stroke: int,
    dx: float,
    dy: float,
    angle: float,
    size: int,
) -> np.ndarray:
    side = size * _SCALE
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    text = str(digit)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    x = (side - (right - left)) / 2 - left + dx * side
    y = (side - (bottom - top)) / 2 - top + dy * side
    draw.text((x, y), text, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    canvas = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=0)
    small = canvas.resize((size, size), resample=Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def load_printed_digits(
    split: str = "test",
    *,
    n: int | None = None,
    size: int = 28,
    seed: int | None = None,
    fonts: Sequence[str] | None = None,
) -> ImageDataset:
    """``n`` printed digits of ``size x size`` (``(n, 1, size, size)``, balanced classes).

    ``split`` picks the defaults of the registered data set: ``"train"`` is 3000 images from seed
    1, ``"test"`` 1000 images from seed 2 (disjoint draws). ``fonts`` (paths or
    :data:`DEFAULT_FONT`) overrides the fonts found by :func:`find_fonts`.
    """
    if split not in SIZES:
        raise ParameterError(f"printed-digits: 'split' must be 'train' or 'test', got {split!r}")
    default_n, default_seed = SIZES[split]
    n = default_n if n is None else n
    seed = default_seed if seed is None else seed
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParameterError(f"printed-digits: 'n' must be an int >= 1, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ParameterError(f"printed-digits: 'size' must be an int >= 8, got {size!r}")
    chosen = find_fonts() if fonts is None else [str(f) for f in fonts]
    if not chosen:
        raise DataNotFoundError(
            "printed-digits: no font found: matplotlib's fonts/ttf folder holds none of "
            f"{', '.join(_FAMILIES)} and this Pillow has no FreeType support; reinstall "
            "matplotlib and Pillow, or give fonts=[path.ttf]"
        )
    x, y = _generate(n, size, seed, tuple(chosen))
    return ImageDataset(
        torch.from_numpy(x.copy()).unsqueeze(1),
        torch.from_numpy(y.copy()),
        classes=[str(i) for i in range(10)],
        name="printed-digits",
    )


@functools.lru_cache(maxsize=8)
def _generate(
    n: int, size: int, seed: int, chosen: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.int64)
    font_idx = rng.integers(0, len(chosen), n)
    heights = rng.uniform(0.7, 1.0, n)
    strokes = rng.integers(0, 4, n)
    offsets = rng.uniform(-0.1, 0.1, (n, 2))
    angles = rng.uniform(-15.0, 15.0, n)
    side = size * _SCALE
    images = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):  # one Pillow drawing per image: data generation, not a hot path
        font = _font(chosen[int(font_idx[i])], max(4, round(heights[i] * side)))
        images[i] = _render(
            int(labels[i]),
            font,
            int(strokes[i]),
            float(offsets[i, 0]),
            float(offsets[i, 1]),
            float(angles[i]),
            size,
        )
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
