"""Dataset bias (Torralba and Efros 2011, "Unbiased look at dataset bias", the lecture's first
reference): name that dataset, cross-dataset generalisation, class balance vs dataset balance.

- :func:`name_that_dataset` trains a classifier to tell which data set an image came from. If
  the data sets were unbiased samples of one visual world, it would do no better than chance.
- :func:`cross_dataset_matrix` trains a classifier of the shared labels on each data set and tests
  it on every data set: the drop off the diagonal measures how much each data set's own bias the
  classifier learned.
- :func:`balance` counts images per class and data set: class balance within each data set,
  dataset balance in the pooled set, and how strongly the class depends on the data set once
  they are pooled (dataset balancing is not class balancing).

Data sets are in memory (:class:`~robustlens.data.ImageDataset`) or image folders streamed from
disk (:class:`~robustlens.data.ImageFiles`, any image sizes). Either way images are read batch by
batch and only what the classifier needs is kept: a thumbnail or a feature vector per image, so
memory is bounded by the batch plus that, never by the full-size images. Two representations:

- **pixels** (default): every image becomes a ``size x size`` thumbnail: shorter side resized to
  ``size`` (bilinear, anti-aliased), then the centre crop, so framing and aspect are kept rather
  than squashed. Default ``size``: ``min(32, smallest side)``. 32 is the tiny-image resolution at
  which Torralba, Fergus and Freeman (2008) found people still recognise scenes and objects: it
  keeps colour, layout and coarse texture, and a logistic regression on its 3072 values trains in
  seconds on one core. Data sets smaller than that (the MNIST family: 28x28; scikit-learn's
  digits: 8x8) keep the old rule, their smallest side. Colour is kept when every data set has it;
  with one grey data set all become grey (BT.601 luma), since colour alone would name the
  source.
- **features** of a frozen backbone: the penultimate features of a model
  (:func:`robustlens.models.backbone`: the user's model or a torchvision/timm one by spec),
  computed on images brought to the model's own input geometry and normalisation. Fine texture
  and object parts that a 32 px thumbnail loses reach the classifier this way. A library model
  without trained weights has seeded random weights: its features are no meaningful backbone,
  and the result says so (``warnings``).

The classifiers train inside these functions (it is the measurement): a multinomial logistic
regression on standardised pixels or features (default, seconds on one CPU core) or, on pixels,
the ``convnet`` architecture for a few epochs. Every result records which (``description``).

Example:
    >>> import robustlens as rl
    >>> digits = rl.data.load("digits", split="all")
    >>> printed = rl.data.load("printed-digits", split="test")
    >>> res = name_that_dataset([digits, printed], per_dataset=300, seed=0)
    >>> res.chance, res.accuracy > 0.9
    (0.5, True)
    >>> res.description
    'logistic regression on 8x8 grey thumbnails (shorter side resized to 8, centre crop)'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens.data.dataset import ImageDataset
from robustlens.data.files import ImageFiles
from robustlens.data.preprocess import Preprocessing
from robustlens.errors import DataFileError, DTypeError, LabelError, ParameterError

__all__ = [
    "THUMBNAIL_SIZE",
    "Balance",
    "CrossDataset",
    "NameThatDataset",
    "balance",
    "cross_dataset_matrix",
    "harmonize",
    "name_that_dataset",
]

Classifier = Literal["logistic", "convnet"]
Predict = Callable[[Tensor], Tensor]
Data = ImageDataset | ImageFiles

THUMBNAIL_SIZE = 32
"""Default thumbnail side of the pixel representation (see the module docstring)."""

_CLASSIFIER_NAMES = {"logistic": "logistic regression", "convnet": "small convnet"}


# --------------------------------------------------------------------------- preparation


def _check_datasets(datasets: Any, where: str, minimum: int) -> list[Data]:
    if isinstance(datasets, ImageDataset | ImageFiles) or not isinstance(datasets, Sequence):
        raise DTypeError(
            f"{where}: datasets must be a list of ImageDataset or ImageFiles, got "
            f"{type(datasets).__name__}"
        )
    out = list(datasets)
    for i, ds in enumerate(out):
        if not isinstance(ds, ImageDataset | ImageFiles):
            raise DTypeError(
                f"{where}: datasets[{i}] must be an ImageDataset or ImageFiles, got "
                f"{type(ds).__name__}; wrap tensors with robustlens.data.ImageDataset(x, y), "
                "open folders with robustlens.data.open_folder(path)"
            )
    if len(out) < minimum:
        raise ParameterError(
            f"{where}: give at least {minimum} data sets, got {len(out)}"
            + ("; the measurement compares data sets with each other" if minimum > 1 else "")
        )
    for ds in out:
        if len(ds) == 0:
            raise ParameterError(f"{where}: data set {ds.name!r} holds no image")
    return out


def _names(datasets: Sequence[Data]) -> list[str]:
    """Data-set names, made unique with a suffix where two share one."""
    names: list[str] = []
    for ds in datasets:
        name, k = ds.name, 2
        while name in names:
            name, k = f"{ds.name}-{k}", k + 1
        names.append(name)
    return names


def _side(ds: Data) -> int | None:
    """The smallest image side of ``ds`` when known without decoding (``None``: folders of
    images at their own, mixed sizes)."""
    if isinstance(ds, ImageDataset):
        return min(ds.shape[1:])
    size = ds.preprocessing.input_size
    return None if size is None else min(int(s) for s in size)


def _channel_count(ds: Data) -> int:
    return ds.shape[0] if isinstance(ds, ImageDataset) else ds.preprocessing.channels


def _default_geometry(
    dss: Sequence[Data], size: int | None, channels: int | None, where: str
) -> tuple[int, int]:
    """``(size, channels)``: the caller's, or ``min(THUMBNAIL_SIZE, smallest side)`` and the
    fewest channels among the data sets, validated."""
    if size is None:
        size = min([THUMBNAIL_SIZE] + [s for s in map(_side, dss) if s is not None])
    if channels is None:
        channels = min(_channel_count(d) for d in dss)
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ParameterError(f"{where}: 'size' must be an int >= 4, got {size!r}")
    if channels not in (1, 3):
        raise ParameterError(f"{where}: 'channels' must be 1 or 3, got {channels!r}")
    return size, channels


def _convert_channels(x: Tensor, channels: int, name: str, where: str) -> Tensor:
    """Colour to grey by BT.601 luma, grey to colour by repetition."""
    if x.shape[1] == channels:
        return x
    if channels == 1 and x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
        return (x * w.view(1, 3, 1, 1)).sum(1, keepdim=True)
    if channels == 3 and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    raise ParameterError(f"{where}: {name!r} has {x.shape[1]} channels; only 1 and 3 convert")


def _shrink(x: Tensor, size: int) -> Tensor:
    """Images of one size to ``size x size``: square ones resized (bilinear, anti-aliased), others
    resized on their shorter side and centre-cropped."""
    h, w = int(x.shape[2]), int(x.shape[3])
    if (h, w) == (size, size):
        return x
    if h == w:
        y = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        return y.clamp(0, 1)
    pre = Preprocessing(input_size=(size, size), resize=size, channels=int(x.shape[1]))
    return pre.apply_to(x)


def _thumbnail_preprocessing(size: int, channels: int) -> Preprocessing:
    """The geometry of the pixel representation: shorter side to ``size``, centre crop."""
    return Preprocessing(
        input_size=(size, size), resize=size, channels=channels, source="dataset-bias thumbnails"
    )


def _thumbnails(
    ds: Data, size: int, channels: int, batch_size: int, desc: str = "thumbnails"
) -> tuple[Tensor, Tensor, int]:
    """``(x (N, channels, size, size), y (N,), files skipped)``, read batch by batch."""
    from robustlens.data.stream import batches

    where = "thumbnails"
    source: Data = (
        ds.with_preprocessing(_thumbnail_preprocessing(size, channels))
        if isinstance(ds, ImageFiles)
        else ds
    )
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    for batch in batches(source, batch_size, desc=desc):
        x = batch.x
        if isinstance(source, ImageDataset):
            x = _shrink(_convert_channels(x, channels, ds.name, where), size)
        xs.append(x.contiguous())
        ys.append(batch.y)
    skipped = len(source.skipped) if isinstance(source, ImageFiles) else 0
    if not xs:
        return torch.zeros(0, channels, size, size), torch.zeros(0, dtype=torch.long), skipped
    return torch.cat(xs), torch.cat(ys), skipped


def harmonize(
    datasets: Sequence[Data],
    *,
    size: int | None = None,
    channels: int | None = None,
    batch_size: int = 256,
) -> list[ImageDataset]:
    """The data sets as ``size x size`` thumbnails with ``channels`` channels, in memory.

    Defaults: ``min(THUMBNAIL_SIZE, smallest side)`` (32 for photos; the smallest side for the
    MNIST family and smaller) and the fewest channels among the data sets, so no data set gains
    detail or colour the others lack. Square images are resized (bilinear, anti-aliased: area-like
    when shrinking); others have their shorter side resized and are centre-cropped, as photos
    are for a model. Colour becomes grey by BT.601 luma, grey becomes colour by repetition.
    Folders (:class:`~robustlens.data.ImageFiles`) are decoded batch by batch straight to the
    thumbnails; their unreadable files are left out.

    Shape: each (N_i, C_i, H_i, W_i) -> (N_i, channels, size, size).

    Example:
        >>> import robustlens as rl
        >>> a = rl.data.load("digits")
        >>> b = rl.data.load("printed-digits")
        >>> [d.shape for d in harmonize([a, b])]
        [(1, 8, 8), (1, 8, 8)]
    """
    where = "harmonize"
    dss = _check_datasets(datasets, where, 1)
    size, channels = _default_geometry(dss, size, channels, where)
    _check_batch_size(batch_size, where)
    out = []
    for ds in dss:
        x, y, _ = _thumbnails(ds, size, channels, batch_size, desc=f"{ds.name}: thumbnails")
        out.append(ImageDataset(x, y, classes=list(ds.classes), name=ds.name))
    return out


def _check_batch_size(batch_size: Any, where: str) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"{where}: 'batch_size' must be an int >= 1, got {batch_size!r}")


def _train_test(
    ds: Data, per_dataset: int | None, test_fraction: float, seed: int
) -> tuple[Data, Data]:
    """Sample and split ``ds`` by its labels alone: nothing is decoded yet."""
    if per_dataset is not None:
        ds = ds.subset(per_dataset, seed=seed)
    if len(ds) < 2:
        raise ParameterError(f"data set {ds.name!r} has {len(ds)} image; give at least 2")
    test, train = ds.split(test_fraction, seed=seed)
    return train, test


def _check_common(
    where: str,
    per_dataset: int | None,
    test_fraction: float,
    classifier: str,
    epochs: int | None,
    seed: int,
    batch_size: int,
) -> None:
    if per_dataset is not None and (
        isinstance(per_dataset, bool) or not isinstance(per_dataset, int) or per_dataset < 2
    ):
        raise ParameterError(
            f"{where}: 'per_dataset' must be an int >= 2 or None, got {per_dataset!r}"
        )
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, int | float)
        or not (0 < test_fraction < 1)
    ):
        raise ParameterError(
            f"{where}: 'test_fraction' must be a float in (0, 1), got {test_fraction!r}"
        )
    if classifier not in ("logistic", "convnet"):
        raise ParameterError(
            f"{where}: 'classifier' must be 'logistic' or 'convnet', got {classifier!r}"
        )
    if epochs is not None and (
        isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1
    ):
        raise ParameterError(f"{where}: 'epochs' must be an int >= 1 or None, got {epochs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ParameterError(f"{where}: 'seed' must be an int, got {seed!r}")
    _check_batch_size(batch_size, where)


# --------------------------------------------------------------------------- representations

Features = Any
"""``"pixels"``, or a backbone: a model spec, an ``rl.models.LoadedModel``, an ``nn.Module``
whose geometry it knows, or an ``rl.models.Backbone``."""


@dataclass(frozen=True)
class _Representation:
    """What the classifier sees: thumbnails (``backbone is None``) or a backbone's features."""

    size: int
    channels: int
    batch_size: int
    backbone: Any = None  # robustlens.models.features.Backbone

    def encode(self, ds: Data, desc: str) -> tuple[Tensor, Tensor, int]:
        """``(x, y, files skipped)`` of ``ds``, batch by batch."""
        if self.backbone is not None:
            return self.backbone.features(ds, batch_size=self.batch_size, desc=f"{desc} features")
        return _thumbnails(ds, self.size, self.channels, self.batch_size, f"{desc} thumbnails")

    @property
    def features(self) -> str:
        return "pixels" if self.backbone is None else str(self.backbone.name)

    def describe(self, classifier: str) -> str:
        name = _CLASSIFIER_NAMES.get(classifier, classifier)
        if self.backbone is not None:
            return f"{name} on {self.backbone.describe()}"
        colour = "RGB" if self.channels == 3 else "grey"
        return (
            f"{name} on {self.size}x{self.size} {colour} thumbnails (shorter side resized to "
            f"{self.size}, centre crop)"
        )

    def record(self) -> dict[str, Any] | None:
        return None if self.backbone is None else dict(self.backbone.to_dict())

    @property
    def warnings(self) -> list[str]:
        return [] if self.backbone is None else list(self.backbone.warnings)


def _representation(
    dss: Sequence[Data],
    *,
    size: int | None,
    channels: int | None,
    features: Features,
    classifier: str,
    batch_size: int,
    seed: int,
    where: str,
) -> _Representation:
    if isinstance(features, str) and features == "pixels":
        size, channels = _default_geometry(dss, size, channels, where)
        return _Representation(size, channels, batch_size)
    if features is None or (isinstance(features, str) and not features):
        raise ParameterError(
            f"{where}: 'features' must be 'pixels' or a backbone (a model spec such as "
            f"'torchvision:resnet18', a LoadedModel, a module or rl.models.backbone(...)), got "
            f"{features!r}"
        )
    if size is not None or channels is not None:
        raise ParameterError(
            f"{where}: 'size' and 'channels' shape the thumbnails of features='pixels'; a "
            "backbone takes its own input size (rl.models.backbone(model, input_size=PX))"
        )
    if classifier != "logistic":
        raise ParameterError(
            f"{where}: on a backbone's features the classifier is a logistic regression; "
            f"classifier={classifier!r} applies to features='pixels' only"
        )
    from robustlens.models.features import Backbone, backbone

    if not isinstance(features, Backbone | str | nn.Module) and not hasattr(features, "module"):
        raise ParameterError(
            f"{where}: 'features' must be 'pixels' or a backbone (a model spec, a LoadedModel, "
            f"an nn.Module or rl.models.backbone(...)), got {type(features).__name__}"
        )
    bb = backbone(features, seed=seed)
    h, _ = bb.preprocessing.input_size or (0, 0)
    return _Representation(int(h), bb.preprocessing.channels, batch_size, bb)


def _encode_parts(
    rep: _Representation, parts: Sequence[tuple[Data, Data]], names: Sequence[str]
) -> tuple[list[tuple[Tensor, Tensor, Tensor, Tensor]], list[int]]:
    """Each data set's train and test parts encoded: ``(x_train, y_train, x_test, y_test)``
    on one device, and the files skipped per data set."""
    out: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    skipped: list[int] = []
    device: torch.device | None = None
    for name, (train, test) in zip(names, parts, strict=True):
        x_tr, y_tr, s_tr = rep.encode(train, f"{name} (train)")
        x_te, y_te, s_te = rep.encode(test, f"{name} (test)")
        if len(x_tr) == 0 or len(x_te) == 0:
            raise DataFileError(
                f"data set {name!r}: none of the {len(train) if len(x_tr) == 0 else len(test)} "
                "images drawn for its "
                f"{'training' if len(x_tr) == 0 else 'test'} part decodes; check its files"
            )
        device = device or x_tr.device
        out.append((x_tr.to(device), y_tr.to(device), x_te.to(device), y_te.to(device)))
        skipped.append(s_tr + s_te)
    return out, skipped


# --------------------------------------------------------------------------- classifiers


def _train(
    x: Tensor, y: Tensor, k: int, classifier: Classifier, epochs: int | None, seed: int
) -> Predict:
    """Train a ``classifier`` of ``k`` classes on ``(x, y)``; return its label predictor."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if classifier == "logistic":
            return _logistic(x, y, k, epochs or 100)
        return _convnet(x, y, k, epochs or 20, seed)


def _logistic(x: Tensor, y: Tensor, k: int, iterations: int, l2: float = 1e-2) -> Predict:
    """Multinomial logistic regression on standardised inputs (pixels or features, flattened),
    L2 penalty ``l2``, L-BFGS."""
    feats = x.flatten(1).double()
    mean = feats.mean(0)
    std = feats.std(0).clamp_min(1e-3) if len(feats) > 1 else torch.ones_like(mean)
    z = (feats - mean) / std
    w = torch.zeros(z.shape[1], k, dtype=torch.float64, device=x.device, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=iterations,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_, b_ = w.detach(), b.detach()

    def predict(xt: Tensor) -> Tensor:
        zt = (xt.flatten(1).double() - mean) / std
        return (zt @ w_ + b_).argmax(1)

    return predict


def _convnet(x: Tensor, y: Tensor, k: int, epochs: int, seed: int) -> Predict:
    """The ``convnet`` architecture trained with :func:`robustlens.training.fit`."""
    from robustlens._runtime import batched_logits
    from robustlens.models.architectures import create
    from robustlens.training.fit import TrainConfig, fit

    net = create(
        "convnet", in_channels=int(x.shape[1]), num_classes=k, image_size=int(x.shape[2])
    ).to(x.device)
    classes = [str(i) for i in range(k)]
    fit(
        net,
        ImageDataset(x, y, classes=classes, name="train"),
        config=TrainConfig(epochs=epochs, batch_size=64, augment="none", seed=seed),
    )
    net.eval()

    def predict(xt: Tensor) -> Tensor:
        return batched_logits(net, xt).argmax(1)

    return predict


# --------------------------------------------------------------------------- name that dataset


@dataclass(frozen=True)
class NameThatDataset:
    """How well a classifier tells which data set an image came from.

    ``confusion[i, j]`` counts test images of data set ``i`` attributed to data set ``j``.
    ``chance`` is the accuracy of always guessing the largest test share (``1 / D`` when
    balanced); ``p_value`` the one-sided binomial probability of reaching ``accuracy`` at chance.
    ``features`` is ``"pixels"`` or the backbone's name, ``description`` says in words which
    classifier saw what (``size`` and ``channels``: the thumbnails', or the backbone's input),
    ``backbone`` records the backbone (its rule, dimension and weights), ``skipped`` the files
    per data set that did not decode, ``warnings`` what to know before reading the numbers.
    """

    names: list[str]
    accuracy: float
    chance: float
    p_value: float
    confusion: Tensor
    counts: list[int]
    n_train: int
    n_test: int
    size: int
    channels: int
    classifier: str
    features: str = "pixels"
    description: str = ""
    backbone: dict[str, Any] | None = None
    skipped: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def per_dataset(self) -> list[float]:
        """Fraction of each data set's test images attributed to it (recall)."""
        c = self.confusion.double()
        return (c.diagonal() / c.sum(1).clamp_min(1)).tolist()

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, JSON-ready."""
        return {
            "names": self.names,
            "accuracy": self.accuracy,
            "chance": self.chance,
            "p_value": self.p_value,
            "per_dataset": self.per_dataset,
            "confusion": self.confusion.tolist(),
            "counts": self.counts,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "size": self.size,
            "channels": self.channels,
            "classifier": self.classifier,
            "features": self.features,
            "description": self.description,
            "backbone": self.backbone,
            "skipped": self.skipped,
            "warnings": self.warnings,
        }


def name_that_dataset(
    datasets: Sequence[Data],
    *,
    size: int | None = None,
    channels: int | None = None,
    features: Features = "pixels",
    per_dataset: int | None = None,
    balanced: bool = True,
    test_fraction: float = 0.3,
    classifier: Classifier = "logistic",
    epochs: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> NameThatDataset:
    """Torralba and Efros' "name that dataset": train a classifier to tell the data sets apart.

    Each data set is reduced to ``per_dataset`` images (stratified by class; default with
    ``balanced``: the size of the smallest data set, so chance is ``1 / D``; ``balanced=False``
    keeps every image and records the imbalance in ``chance``) and split into train and test
    parts (``test_fraction``), by the labels alone; only then are the drawn images read, batch by
    batch (``batch_size``), into what the classifier sees:

    - ``features="pixels"``: ``size x size`` thumbnails with ``channels`` channels (defaults:
      ``min(32, smallest side)`` and the fewest channels; see the module docstring and
      :func:`harmonize`), classified by ``classifier``;
    - a backbone (``"torchvision:resnet18"``, any spec of :func:`robustlens.models.load`, a
      ``LoadedModel``, or ``rl.models.backbone(model, input_size=..., weights=...)``): its
      penultimate features at its own input geometry, classified by a logistic regression.
      A spec without weights is built with random weights drawn from ``seed``.

    The classifier's labels are the data sets. ``epochs``: L-BFGS iterations of the logistic
    regression (default 100) or training epochs of the convnet (default 20).

    Example:
        >>> import robustlens as rl
        >>> fm = rl.data.load("fashion-mnist")
        >>> res = name_that_dataset([fm, rl.data.load("digits", split="all")], per_dataset=200)
        >>> res.names, res.accuracy > 0.8, res.confusion.shape
        (['fashion-mnist', 'digits'], True, torch.Size([2, 2]))
    """
    where = "name_that_dataset"
    dss = _check_datasets(datasets, where, 2)
    _check_common(where, per_dataset, test_fraction, classifier, epochs, seed, batch_size)
    if not isinstance(balanced, bool):
        raise ParameterError(f"{where}: 'balanced' must be a bool, got {balanced!r}")
    rep = _representation(
        dss,
        size=size,
        channels=channels,
        features=features,
        classifier=classifier,
        batch_size=batch_size,
        seed=seed,
        where=where,
    )
    names = _names(dss)
    if per_dataset is None and balanced:
        per_dataset = min(len(d) for d in dss)
    parts = [_train_test(d, per_dataset, test_fraction, seed + i) for i, d in enumerate(dss)]
    encoded, skipped = _encode_parts(rep, parts, names)
    x_tr = torch.cat([e[0] for e in encoded])
    y_tr = torch.cat(
        [
            torch.full((len(e[0]),), i, dtype=torch.long, device=x_tr.device)
            for i, e in enumerate(encoded)
        ]
    )
    x_te = torch.cat([e[2] for e in encoded])
    y_te = torch.cat(
        [
            torch.full((len(e[2]),), i, dtype=torch.long, device=x_te.device)
            for i, e in enumerate(encoded)
        ]
    )
    predict = _train(x_tr, y_tr, len(dss), classifier, epochs, seed)
    pred = predict(x_te)
    d = len(dss)
    confusion = torch.bincount(y_te * d + pred, minlength=d * d).view(d, d).cpu()
    n_test = len(y_te)
    correct = int(confusion.diagonal().sum())
    chance = float(confusion.sum(1).max()) / n_test
    return NameThatDataset(
        names=names,
        accuracy=correct / n_test,
        chance=chance,
        p_value=_binomial_tail(correct, n_test, chance),
        confusion=confusion,
        counts=[len(e[0]) + len(e[2]) for e in encoded],
        n_train=len(y_tr),
        n_test=n_test,
        size=rep.size,
        channels=rep.channels,
        classifier=classifier,
        features=rep.features,
        description=rep.describe(classifier),
        backbone=rep.record(),
        skipped=skipped,
        warnings=rep.warnings,
    )


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    from scipy.stats import binom

    return float(binom.sf(k - 1, n, p))


# --------------------------------------------------------------------------- cross-dataset


@dataclass(frozen=True)
class CrossDataset:
    """Cross-dataset generalisation: ``accuracy[i, j]`` of the classifier trained on data set
    ``i`` and tested on data set ``j`` (the same labels everywhere).

    ``drop[i]`` is Torralba and Efros' relative drop: ``(self - others) / self`` with ``self``
    the diagonal ``accuracy[i, i]`` and ``others`` the mean of row ``i`` off the diagonal.
    ``features``, ``description``, ``backbone``, ``skipped`` and ``warnings`` as in
    :class:`NameThatDataset`.
    """

    names: list[str]
    accuracy: Tensor
    n_train: list[int]
    n_test: list[int]
    size: int
    channels: int
    classifier: str
    features: str = "pixels"
    description: str = ""
    backbone: dict[str, Any] | None = None
    skipped: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def self_accuracy(self) -> list[float]:
        """Accuracy of each classifier on its own data set's test images (the diagonal)."""
        return self.accuracy.diagonal().tolist()

    @property
    def others(self) -> list[float]:
        """Mean accuracy of each classifier on the other data sets."""
        d = len(self.names)
        off = self.accuracy.sum(1) - self.accuracy.diagonal()
        return (off / max(d - 1, 1)).tolist()

    @property
    def drop(self) -> list[float]:
        """Relative drop ``(self - others) / self`` per training data set."""
        return [
            (s - o) / s if s > 0 else math.nan
            for s, o in zip(self.self_accuracy, self.others, strict=True)
        ]

    def table(self) -> str:
        """The matrix as a markdown table (rows: trained on; columns: tested on)."""
        head = "| trained on \\ tested on | " + " | ".join(self.names) + " | drop |"
        sep = "|---" * (len(self.names) + 2) + "|"
        rows = [
            f"| {name} | "
            + " | ".join(f"{float(a):.3f}" for a in self.accuracy[i])
            + f" | {self.drop[i]:.1%} |"
            for i, name in enumerate(self.names)
        ]
        return "\n".join([head, sep, *rows])

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, JSON-ready."""
        return {
            "names": self.names,
            "accuracy": self.accuracy.tolist(),
            "self_accuracy": self.self_accuracy,
            "others": self.others,
            "drop": self.drop,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "size": self.size,
            "channels": self.channels,
            "classifier": self.classifier,
            "features": self.features,
            "description": self.description,
            "backbone": self.backbone,
            "skipped": self.skipped,
            "warnings": self.warnings,
        }


def cross_dataset_matrix(
    datasets: Sequence[Data],
    *,
    size: int | None = None,
    channels: int | None = None,
    features: Features = "pixels",
    per_dataset: int | None = None,
    test_fraction: float = 0.3,
    classifier: Classifier = "logistic",
    epochs: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> CrossDataset:
    """Train on each data set, test on every data set: Torralba and Efros' generalisation table.

    The data sets must share their label space: the same class names in the same order. Each is
    reduced to ``per_dataset`` images (stratified; default: the size of the smallest, so every
    classifier sees as many training images) and split into train and test parts; the drawn
    images are read batch by batch into thumbnails or a backbone's features (``size``,
    ``channels``, ``features``, ``classifier`` and ``epochs`` as in :func:`name_that_dataset`),
    and classifier ``i`` is tested on every test part.

    Example:
        >>> import robustlens as rl
        >>> digits = rl.data.load("digits", split="all")
        >>> printed = rl.data.load("printed-digits", split="test")
        >>> res = cross_dataset_matrix([digits, printed], per_dataset=400)
        >>> res.accuracy.shape, all(d > 0.2 for d in res.drop)
        (torch.Size([2, 2]), True)
    """
    where = "cross_dataset_matrix"
    dss = _check_datasets(datasets, where, 2)
    _check_common(where, per_dataset, test_fraction, classifier, epochs, seed, batch_size)
    first = dss[0].classes
    for ds in dss[1:]:
        if ds.classes != first:
            raise LabelError(
                f"{where}: the data sets must share one label space (the same class names in the "
                f"same order); {dss[0].name!r} has {first} but {ds.name!r} has {ds.classes}; "
                "remap the labels of one of them first"
            )
    if len(first) < 2:
        raise LabelError(
            f"{where}: the data sets have one class ({first}); a classifier of their labels "
            "needs at least 2 (an ImageFolder with one sub-folder per class)"
        )
    rep = _representation(
        dss,
        size=size,
        channels=channels,
        features=features,
        classifier=classifier,
        batch_size=batch_size,
        seed=seed,
        where=where,
    )
    names = _names(dss)
    if per_dataset is None:
        per_dataset = min(len(d) for d in dss)
    parts = [_train_test(d, per_dataset, test_fraction, seed + i) for i, d in enumerate(dss)]
    encoded, skipped = _encode_parts(rep, parts, names)
    k = len(first)
    acc = torch.zeros(len(dss), len(dss), dtype=torch.float64)
    for i, (x_tr, y_tr, _, _) in enumerate(encoded):
        predict = _train(x_tr, y_tr, k, classifier, epochs, seed)
        for j, (_, _, x_te, y_te) in enumerate(encoded):
            acc[i, j] = (predict(x_te) == y_te).double().mean().cpu()
    return CrossDataset(
        names=names,
        accuracy=acc,
        n_train=[len(e[0]) for e in encoded],
        n_test=[len(e[2]) for e in encoded],
        size=rep.size,
        channels=rep.channels,
        classifier=classifier,
        features=rep.features,
        description=rep.describe(classifier),
        backbone=rep.record(),
        skipped=skipped,
        warnings=rep.warnings,
    )


# --------------------------------------------------------------------------- balance


@dataclass(frozen=True)
class Balance:
    """Class balance within data sets vs dataset balance once pooled.

    ``counts[d, k]`` images of class ``classes[k]`` in data set ``names[d]`` (classes matched by
    name across data sets). Entropies are normalised to ``[0, 1]`` (1: perfectly balanced).
    ``cramers_v`` measures how much the class of a pooled image tells about its data set (0: every
    data set has the same class proportions; 1: each class comes from one data set only).
    """

    names: list[str]
    classes: list[str]
    counts: Tensor

    @property
    def sizes(self) -> list[int]:
        """Images per data set."""
        return self.counts.sum(1).tolist()

    @property
    def class_entropy(self) -> list[float]:
        """Normalised entropy of each data set's class distribution (class balance)."""
        return [_entropy(row) for row in self.counts]

    @property
    def imbalance_ratio(self) -> list[float]:
        """Largest over smallest class count per data set (``inf`` when a class is missing)."""
        out = []
        for row in self.counts.double():
            lo = float(row.min())
            out.append(float(row.max()) / lo if lo > 0 else math.inf)
        return out

    @property
    def dataset_entropy(self) -> float:
        """Normalised entropy of the data sets' sizes in the pooled set (dataset balance)."""
        return _entropy(self.counts.sum(1))

    @property
    def pooled_class_entropy(self) -> float:
        """Normalised entropy of the class distribution of the pooled set."""
        return _entropy(self.counts.sum(0))

    @property
    def dataset_share(self) -> Tensor:
        """``share[d, k]``: fraction of the pooled images of class ``k`` that come from data set
        ``d`` (columns sum to 1, NaN for a class absent everywhere)."""
        c = self.counts.double()
        return c / c.sum(0, keepdim=True)

    @property
    def cramers_v(self) -> float:
        """Cramer's V between data set and class in the pooled set."""
        c = self.counts.double()
        c = c[c.sum(1) > 0][:, c.sum(0) > 0]
        n = float(c.sum())
        r = min(c.shape) - 1
        if n == 0 or r < 1:
            return 0.0
        expected = c.sum(1, keepdim=True) * c.sum(0, keepdim=True) / n
        chi2 = float(((c - expected) ** 2 / expected).sum())
        return math.sqrt(chi2 / (n * r))

    def table(self) -> str:
        """Counts per class and data set, with the balance statistics, as a markdown table."""
        head = "| data set | " + " | ".join(self.classes) + " | images | class entropy | max/min |"
        sep = "|---" * (len(self.classes) + 4) + "|"
        rows = [
            f"| {name} | "
            + " | ".join(str(int(v)) for v in self.counts[i])
            + f" | {self.sizes[i]} | {self.class_entropy[i]:.3f} | {self.imbalance_ratio[i]:.2f} |"
            for i, name in enumerate(self.names)
        ]
        return "\n".join([head, sep, *rows])

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, JSON-ready."""
        return {
            "names": self.names,
            "classes": self.classes,
            "counts": self.counts.tolist(),
            "sizes": self.sizes,
            "class_entropy": self.class_entropy,
            "imbalance_ratio": self.imbalance_ratio,
            "dataset_entropy": self.dataset_entropy,
            "pooled_class_entropy": self.pooled_class_entropy,
            "cramers_v": self.cramers_v,
        }


def _entropy(counts: Tensor) -> float:
    c = counts.double()
    if len(c) < 2 or float(c.sum()) == 0:
        return 1.0
    p = c / c.sum()
    h = -(p[p > 0] * p[p > 0].log()).sum()
    return float(h / math.log(len(c)))


def balance(datasets: Sequence[ImageDataset]) -> Balance:
    """Class counts per data set and the balance statistics of :class:`Balance`.

    Classes are matched by name; a class missing from a data set counts 0 there.

    Example:
        >>> import torch
        >>> from robustlens.data import ImageDataset
        >>> x = torch.zeros(4, 1, 4, 4)
        >>> a = ImageDataset(x, torch.tensor([0, 0, 1, 1]), classes=["x", "y"], name="a")
        >>> b = ImageDataset(x, torch.tensor([0, 0, 0, 1]), classes=["x", "y"], name="b")
        >>> res = balance([a, b])
        >>> res.counts.tolist(), res.class_entropy[0], res.imbalance_ratio
        ([[2, 2], [3, 1]], 1.0, [1.0, 3.0])
    """
    dss = _check_datasets(datasets, "balance", 1)
    classes: list[str] = []
    for ds in dss:
        classes += [c for c in ds.classes if c not in classes]
    index = {c: i for i, c in enumerate(classes)}
    counts = torch.zeros(len(dss), len(classes), dtype=torch.long)
    for d, ds in enumerate(dss):
        cols = torch.tensor([index[c] for c in ds.classes], dtype=torch.long)
        counts[d].index_add_(0, cols, ds.class_counts().cpu())
    return Balance(names=_names(dss), classes=classes, counts=counts)
