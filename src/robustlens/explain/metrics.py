"""Trust diagnostics for explanations: deletion and insertion curves, and stability across seeds.

**Deletion / insertion** (Petsiuk et al. 2018, at superpixel granularity): order the superpixels by
decreasing weight. The deletion curve records the model's probability of the target class as the
superpixels are hidden one at a time in that order (from the image to the fully hidden image); the
insertion curve as they are put back one at a time into the hidden image. Both have ``S + 1``
points at the fractions ``0, 1/S, ..., 1``; their areas (trapezoid rule) summarise them. A
faithful explanation gives a **low deletion AUC** (removing what it points at destroys the
prediction fast) and a **high insertion AUC**. The same deletion curve for ``random_orders``
random orders of the superpixels (default :data:`RANDOM_ORDERS` = 10, seeded) is the baseline:
an explanation whose deletion AUC is not at least :data:`DELETION_MARGIN` (10%) below the random
orders' mean AUC points at superpixels that matter no more than any others (or at a prediction so
confident that hiding a few superpixels changes nothing), and :attr:`Faithfulness.warnings`
flags it. All
``(2 + R) (S + 1)`` images are built by one gather per chunk of ``batch_size`` and go through
the model in batched calls.

**Stability**: the same explainer with different seeds (different perturbation samples) should
point at the same pixels; :func:`stability` reports the pairwise Jaccard index
``|A & B| / |A | B|`` of the top-``k`` pixel masks (1: identical, 0: disjoint).

Example:
    >>> import torch, robustlens as rl
    >>> model = rl.zoo.load("digits-cnn")
    >>> image = rl.data.load("digits", split="test").x[0]
    >>> exp = rl.explain.Lime(samples=200, K=3, segmenter="grid", output="logits")(model, image)
    >>> curves = faithfulness(model, exp)
    >>> curves.deletion.shape[0] == exp.num_segments + 1, 0 <= curves.deletion_auc <= 1
    (True, True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlens._checks import check_images, check_logits, check_model, model_device
from robustlens._runtime import inference_mode
from robustlens.errors import ParameterError, ShapeError
from robustlens.explain.lime import Explanation, Hide, Lime, hidden_image
from robustlens.explain.segmentation import check_segments

__all__ = [
    "DELETION_MARGIN",
    "RANDOM_ORDERS",
    "Faithfulness",
    "Stability",
    "deletion_auc",
    "faithfulness",
    "insertion_auc",
    "perturbation_curves",
    "stability",
    "topk_jaccard",
]


#: Random superpixel orders whose deletion curves are the baseline of an explanation's.
RANDOM_ORDERS = 10
#: An explanation's deletion AUC must be at least this fraction below the random orders' mean,
#: or it is flagged as no better than random order.
DELETION_MARGIN = 0.1


@dataclass(frozen=True, eq=False)
class Faithfulness:
    """Deletion and insertion curves ``(S + 1,)`` of one explanation, and their areas.

    ``order`` (S,) is the superpixel order used (decreasing weight, ties by id);
    ``random_deletion`` (R, S + 1) the deletion curves of ``R`` random orders (``None``: none
    drawn).
    """

    deletion: Tensor
    insertion: Tensor
    order: Tensor
    random_deletion: Tensor | None = None

    @property
    def fractions(self) -> Tensor:
        """``0, 1/S, ..., 1``: the fraction of superpixels removed (inserted)."""
        s = self.deletion.shape[0] - 1
        return torch.linspace(0, 1, s + 1, dtype=torch.float64)

    @property
    def deletion_auc(self) -> float:
        """Area under the deletion curve (lower is more faithful)."""
        return float(torch.trapezoid(self.deletion.double(), self.fractions))

    @property
    def insertion_auc(self) -> float:
        """Area under the insertion curve (higher is more faithful)."""
        return float(torch.trapezoid(self.insertion.double(), self.fractions))

    @property
    def random_orders(self) -> int:
        """The number of random orders drawn (0: none)."""
        return 0 if self.random_deletion is None else len(self.random_deletion)

    @property
    def random_deletion_auc(self) -> float:
        """Mean area under the deletion curves of the random orders (``nan`` without them)."""
        if self.random_deletion is None or not len(self.random_deletion):
            return math.nan
        return float(torch.trapezoid(self.random_deletion.double(), self.fractions, dim=1).mean())

    @property
    def warnings(self) -> list[str]:
        """The deletion flag: the explanation's deletion AUC is not at least
        :data:`DELETION_MARGIN` below the random orders' mean (hiding its top superpixels first
        costs the prediction no more than hiding any).

        Example:
            >>> f = Faithfulness(torch.tensor([1.0, 0.9, 0.8]), torch.tensor([0.0, 0.5, 1.0]),
            ...                  torch.tensor([0, 1]), torch.tensor([[1.0, 0.5, 0.8]]))
            >>> round(f.deletion_auc, 3), round(f.random_deletion_auc, 3), len(f.warnings)
            (0.9, 0.7, 1)
        """
        rand = self.random_deletion_auc
        if math.isnan(rand) or self.deletion_auc < (1 - DELETION_MARGIN) * rand:
            return []
        r = self.random_orders
        return [
            f"deletion AUC {self.deletion_auc:.3f} is no better than hiding the superpixels in "
            f"random order ({rand:.3f}, the mean over {r} orders; flagged unless at least "
            f"{DELETION_MARGIN:.0%} below it): the prediction survives losing the top "
            "superpixels as well as losing any, so they are not what it depends on (or it is so "
            "confident that a few superpixels change nothing); try another hidden image (hide=), "
            "more samples or a larger K"
        ]

    def to_dict(self) -> dict[str, object]:
        """Plain lists, the areas (the random orders' mean as ``random_deletion_auc``, ``None``
        without them) and the warnings, JSON-ready."""
        rand = self.random_deletion_auc
        return {
            "deletion": [float(v) for v in self.deletion.tolist()],
            "insertion": [float(v) for v in self.insertion.tolist()],
            "order": self.order.tolist(),
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "random_deletion_auc": None if math.isnan(rand) else rand,
            "random_orders": self.random_orders,
            "warnings": self.warnings,
        }


def perturbation_curves(
    model: nn.Module,
    image: Tensor,
    segments: Tensor,
    weights: Tensor,
    target: int,
    hidden: Tensor,
    *,
    batch_size: int = 256,
    random_orders: int = RANDOM_ORDERS,
    seed: int = 0,
) -> Faithfulness:
    """Deletion and insertion curves for any superpixel weights (for instance another tool's),
    and the deletion curves of ``random_orders`` random orders (drawn with ``seed``).

    Shape: image (C, H, W), segments (H, W) with ids 0..S-1, weights (S,), hidden (C, H, W) ->
    Faithfulness with curves (S + 1,) and random_deletion (random_orders, S + 1).
    """
    check_model(model, where="perturbation_curves")
    x = check_images(
        image[None] if image.ndim == 3 else image, name="image", where="perturbation_curves"
    )
    if x.shape[0] != 1:
        raise ShapeError(f"perturbation_curves: one image (C, H, W), got {tuple(image.shape)}")
    h, w = int(x.shape[2]), int(x.shape[3])
    seg = check_segments(segments, (h, w), where="perturbation_curves segments")
    s = int(seg.max()) + 1
    if weights.shape != (s,):
        raise ShapeError(
            f"perturbation_curves: weights must have one value per superpixel ({s},), got "
            f"{tuple(weights.shape)}"
        )
    if hidden.shape != x.shape[1:]:
        raise ShapeError(
            f"perturbation_curves: hidden must have the image's shape {tuple(x.shape[1:])}, got "
            f"{tuple(hidden.shape)}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(
            f"perturbation_curves: 'batch_size' must be an int >= 1, got {batch_size!r}"
        )
    if not isinstance(random_orders, int) or isinstance(random_orders, bool) or random_orders < 0:
        raise ParameterError(
            f"perturbation_curves: 'random_orders' must be an int >= 0, got {random_orders!r}"
        )
    device = model_device(model) or x.device
    x = x.to(device)
    hid = hidden.to(device, x.dtype)[None]
    seg = seg.to(device)
    order = torch.argsort(weights.detach().cpu().double(), descending=True, stable=True)
    rank = torch.empty(s, dtype=torch.long)
    rank[order] = torch.arange(s)
    steps = torch.arange(s + 1)[:, None]
    g = torch.Generator().manual_seed(seed)
    # A random permutation of 0..S-1 is a random rank per superpixel.
    shuffled = torch.argsort(torch.rand(random_orders, s, generator=g), dim=1)
    keep = torch.cat(  # ((2 + R)(S+1), S): deletion, insertion, deletion in each random order
        [
            rank[None, :] >= steps,
            rank[None, :] < steps,
            (shuffled[:, None, :] >= steps).flatten(0, 1),
        ]
    ).to(device)
    probs = []
    with inference_mode(model), torch.no_grad():
        for start in range(0, keep.shape[0], batch_size):
            m = keep[start : start + batch_size][:, seg].unsqueeze(1).to(x.dtype)  # one gather
            z = torch.addcmul(hid, m, x - hid)
            logits = check_logits(model(z), len(m), where="perturbation_curves")
            if not 0 <= target < logits.shape[1]:
                raise ParameterError(
                    f"perturbation_curves: target {target} is outside the model's "
                    f"{logits.shape[1]} classes"
                )
            probs.append(torch.softmax(logits.float(), dim=1)[:, target])
    p = torch.cat(probs).cpu()
    return Faithfulness(
        deletion=p[: s + 1],
        insertion=p[s + 1 : 2 * (s + 1)],
        order=order,
        random_deletion=p[2 * (s + 1) :].view(random_orders, s + 1) if random_orders else None,
    )


def faithfulness(
    model: nn.Module,
    exp: Explanation,
    *,
    hide: Hide | None = None,
    fill: float = 0.0,
    batch_size: int = 256,
    random_orders: int = RANDOM_ORDERS,
    seed: int = 0,
) -> Faithfulness:
    """Deletion and insertion curves of ``exp``, with the deletion curves of ``random_orders``
    random orders as the baseline (see the module docstring).

    Superpixels are hidden as the explanation hid them (``hide=None``) or, to compare explanations
    made with different settings on one footing, with ``hide="constant"`` (``fill``, Petsiuk et
    al.'s black deletion baseline at 0), ``"mean"`` or ``"blur"`` (default blur width).
    """
    hidden = exp.hidden if hide is None else hidden_image(exp.image, exp.segments, hide, fill=fill)
    return perturbation_curves(
        model,
        exp.image,
        exp.segments,
        exp.weights,
        exp.target,
        hidden,
        batch_size=batch_size,
        random_orders=random_orders,
        seed=seed,
    )


def deletion_auc(model: nn.Module, exp: Explanation, *, hide: Hide | None = None) -> float:
    """Area under the deletion curve of ``exp`` (lower: more faithful)."""
    return faithfulness(model, exp, hide=hide).deletion_auc


def insertion_auc(model: nn.Module, exp: Explanation, *, hide: Hide | None = None) -> float:
    """Area under the insertion curve of ``exp`` (higher: more faithful)."""
    return faithfulness(model, exp, hide=hide).insertion_auc


def topk_jaccard(a: Explanation, b: Explanation, k: int | None = None) -> float:
    """Jaccard index of the top-``k`` pixel masks of two explanations of the same image.

    Pixel masks make it meaningful even when the two segmentations differ. Two empty masks (no
    positive weight in either) count as identical (1.0).

    Example:
        >>> import torch, robustlens as rl
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> lime = rl.explain.Lime(samples=50, K=2, segmenter="grid")
        >>> e = lime(model, torch.rand(1, 4, 4))
        >>> topk_jaccard(e, e)
        1.0
    """
    if a.segments.shape != b.segments.shape:
        raise ShapeError(
            f"topk_jaccard: the explanations are of images of different sizes "
            f"{tuple(a.segments.shape)} and {tuple(b.segments.shape)}"
        )
    ma, mb = a.top(k), b.top(k).to(a.segments.device)
    union = int((ma | mb).sum())
    return 1.0 if union == 0 else int((ma & mb).sum()) / union


@dataclass(frozen=True, eq=False)
class Stability:
    """Pairwise top-``k`` Jaccard indices ``(R, R)`` of ``R`` explanations with different seeds."""

    jaccard: Tensor
    seeds: tuple[int, ...]
    k: int
    explanations: list[Explanation]

    @property
    def mean(self) -> float:
        """Mean Jaccard index over the ``R (R - 1) / 2`` distinct pairs."""
        r = self.jaccard.shape[0]
        iu = torch.triu_indices(r, r, offset=1)
        return float(self.jaccard[iu[0], iu[1]].mean())

    @property
    def min(self) -> float:
        """Smallest Jaccard index over the distinct pairs."""
        r = self.jaccard.shape[0]
        iu = torch.triu_indices(r, r, offset=1)
        return float(self.jaccard[iu[0], iu[1]].min())

    def to_dict(self) -> dict[str, object]:
        """The matrix, the seeds and the summary, JSON-ready."""
        return {
            "seeds": list(self.seeds),
            "k": self.k,
            "jaccard": self.jaccard.tolist(),
            "mean": self.mean,
            "min": self.min,
        }


def stability(
    explainer: Lime,
    model: nn.Module,
    image: Tensor,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    k: int | None = None,
    target: int | None = None,
) -> Stability:
    """Explain ``image`` once per seed (the explainer's other settings unchanged) and compare.

    The segmentation is the segmenter's (a named quickshift keeps its own ``seed``), so the seeds
    vary the perturbation samples. The target is fixed across seeds (default: the predicted class).

    Shape: image (C, H, W) -> Stability with jaccard (len(seeds), len(seeds)).

    Example:
        >>> import torch, robustlens as rl
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> lime = rl.explain.Lime(samples=200, K=2, segmenter="grid")
        >>> stab = stability(lime, model, torch.rand(1, 4, 4), seeds=(0, 1, 2))
        >>> stab.jaccard.shape, 0.0 <= stab.mean <= 1.0
        (torch.Size([3, 3]), True)
    """
    seeds = tuple(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ParameterError(
            f"stability: 'seeds' must hold at least two distinct ints, got {seeds}"
        )
    kk = explainer.K if k is None else k
    if not isinstance(kk, int) or isinstance(kk, bool) or kk < 1:
        raise ParameterError(f"stability: 'k' must be an int >= 1, got {k!r}")
    exps: list[Explanation] = []
    for seed in seeds:
        run = dataclasses.replace(explainer, seed=seed)
        exp = run.explain(model, image, target)
        target = exp.target
        exps.append(exp)
    r = len(exps)
    jac = torch.ones(r, r, dtype=torch.float64)
    for i in range(r):
        for j in range(i + 1, r):
            jac[i, j] = jac[j, i] = topk_jaccard(exps[i], exps[j], kk)
    return Stability(jaccard=jac, seeds=seeds, k=kk, explanations=exps)
