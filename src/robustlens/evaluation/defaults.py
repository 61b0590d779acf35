"""Defaults that fit the data, and the sanity checks that catch a mis-loaded model.

- :func:`default_eps` follows the field's conventions for the size of the images (RobustBench's
  for CIFAR- and ImageNet-sized inputs), so a budget means what readers expect.
- :func:`sanity_warnings` names the likely cause when a model scores at chance or its logits
  barely depend on the input: random weights, missing normalisation, a wrong class mapping.

Example:
    >>> [round(default_eps(s) * 255, 1) for s in [(1, 28, 28), (3, 32, 32), (3, 224, 224)]]
    [25.5, 8.0, 4.0]
    >>> describe_eps(4 / 255)
    'Linf eps 0.01569 (4/255 of the pixel range)'
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

__all__ = [
    "ATTACK_BATCH_ELEMENTS",
    "ATTACK_BATCH_MAX",
    "attack_batch",
    "default_eps",
    "describe_eps",
    "query_batch",
    "sanity_warnings",
]


def default_eps(shape: Sequence[int]) -> float:
    """The conventional Linf budget for images of ``shape`` ``(C, H, W)``.

    0.1 for the MNIST family (greyscale, at most 32 pixels a side), 8/255 for CIFAR-sized images
    (at most 64 pixels a side: RobustBench's CIFAR-10 and CIFAR-100 threat model), 4/255 for
    ImageNet-sized ones (RobustBench's ImageNet threat model).
    """
    c, h, w = (int(s) for s in shape[-3:])
    side = max(h, w)
    if c == 1 and side <= 32:
        return 0.1
    if side <= 64:
        return 8 / 255
    return 4 / 255


def describe_eps(eps: float) -> str:
    """``eps`` in pixel units and in 1/255 steps, e.g. ``Linf eps 0.03137 (8/255 ...)``."""
    steps = eps * 255
    frac = f"{round(steps)}/255" if abs(steps - round(steps)) < 1e-6 else f"{steps:.3g}/255"
    return f"Linf eps {eps:.4g} ({frac} of the pixel range)"


def sanity_warnings(
    logits: Tensor,
    *,
    accuracy: float,
    num_classes: int,
    trained: bool = True,
    normalised: bool = True,
    mapped: bool = False,
) -> list[str]:
    """Warnings when a model's clean results say it was probably loaded wrong.

    Args:
        logits: ``(n, K)`` the model's outputs on a few different images.
        accuracy: clean accuracy on the data set.
        num_classes: classes of the data set (chance is ``1 / num_classes``).
        trained, normalised, mapped: what is known of the loading (random weights, whether a
            mean/std normalisation is inside the model, whether classes were mapped).

    Example:
        >>> import torch
        >>> sanity_warnings(torch.ones(4, 3), accuracy=0.33, num_classes=3)[0][:45]
        'the logits barely depend on the input (spread'
    """
    notes: list[str] = []
    causes = []
    if not trained:
        causes.append("the weights are random (give --weights FILE)")
    if not normalised:
        causes.append("the model expects normalised inputs (give --mean and --std)")
    if mapped:
        causes.append("the class mapping is wrong (check the folder names or --class-map)")
    causes.append("the preprocessing differs from training (check --input-size and --resize)")
    why = "; likely causes: " + "; ".join(causes)
    if len(logits) >= 2:
        spread = float(logits.float().std(dim=0).mean())
        scale = float(logits.float().abs().mean())
        if spread <= 1e-3 * max(scale, 1e-6):
            notes.append(
                f"the logits barely depend on the input (spread {spread:.3g} across images for "
                f"a magnitude {scale:.3g}): the audit would measure a constant" + why
            )
    chance = 1.0 / max(num_classes, 1)
    if accuracy <= 1.5 * chance:
        notes.append(
            f"clean accuracy {accuracy:.1%} is at chance level ({chance:.1%} for {num_classes} "
            "classes): robustness and explanations of this model mean nothing" + why
        )
    return notes


#: Input elements the audit's attacks hold at once: 64 images of 3x224x224; at most
#: :data:`ATTACK_BATCH_MAX` images (Fashion-MNIST's and CIFAR's sizes).
ATTACK_BATCH_ELEMENTS = 64 * 3 * 224 * 224
ATTACK_BATCH_MAX = 500


def attack_batch(shape: Sequence[int]) -> int:
    """How many images of ``shape`` (C, H, W) the audit attacks at a time.

    An attack keeps the activations of its gradient pass and per-image state for every image it
    holds, so the batch shrinks with the image: 500 small images, 64 at 224x224 (a ResNet-50's
    backward pass on 64 such images needs several GB), fewer above.

    Example:
        >>> attack_batch((1, 28, 28)), attack_batch((3, 224, 224)), attack_batch((3, 512, 512))
        (500, 64, 12)
    """
    return max(1, min(ATTACK_BATCH_MAX, ATTACK_BATCH_ELEMENTS // max(1, math.prod(shape))))


def query_batch(shape: Sequence[int], copies: int) -> int:
    """How many images of ``shape`` (C, H, W) a black-box attack that queries ``copies``
    perturbed copies of each image per step (NES: ``samples``, times ``mc_samples`` with labels
    only) should hold at a time.

    Forward passes without a gradient need about a quarter of the memory of an attack's
    gradient pass, so the copies held at once may reach four times :data:`ATTACK_BATCH_ELEMENTS`
    input elements: every image at once on Fashion-MNIST or CIFAR (hundreds), 5 ImageNet-sized
    images with NES's 50 samples.

    Example:
        >>> query_batch((1, 28, 28), 50), query_batch((3, 224, 224), 50)
        (983, 5)
    """
    return max(1, 4 * ATTACK_BATCH_ELEMENTS // max(1, copies * math.prod(shape)))
