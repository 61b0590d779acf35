"""Label hierarchies, top-k and multi-label scoring, and ambiguous images (the lecture's "biases
when labelling": explore ImageNet's label hierarchy, and guess the class of ImageNet images).

A flat accuracy counts confusing a shirt with a T-shirt as badly as confusing it with a sandal.
:class:`Hierarchy` scores predictions at any level of a class hierarchy given as a parent map
(child -> parent): accuracy and confusion among coarse groups, and the tree distance of mistakes.
:data:`FASHION_MNIST` is built in; :meth:`Hierarchy.from_wordnet` builds WordNet's noun hierarchy
over ImageNet's labels (WordNet ids such as ``n02084071``) when WordNet's data files are installed.

Images often hold several objects, and labellers pick one: :func:`topk_accuracy` and
:func:`multilabel_accuracy` (any of a set of acceptable labels counts) measure how much of the
error is such label ambiguity; :func:`ambiguous` lists the test images on which the model hesitates
between two classes, the lecture's "guess the class" game.

Example:
    >>> import torch
    >>> pred = torch.tensor([6, 0, 5, 1])   # Shirt, T-shirt/top, Sandal, Trouser
    >>> y = torch.tensor([0, 0, 7, 1])      # T-shirt/top, T-shirt/top, Sneaker, Trouser
    >>> FASHION_MNIST.accuracy(pred, y), FASHION_MNIST.accuracy(pred, y, level=1)
    (0.5, 1.0)
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import zipfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlens._checks import check_labels, check_model
from robustlens.data.dataset import ImageDataset
from robustlens.data.files import ImageFiles
from robustlens.data.mnist import SOURCES
from robustlens.errors import (
    DataFileError,
    DataNotFoundError,
    DTypeError,
    LabelError,
    ParameterError,
    ShapeError,
)

__all__ = [
    "FASHION_MNIST",
    "Ambiguous",
    "Hierarchy",
    "ambiguous",
    "find_wordnet",
    "multilabel_accuracy",
    "topk_accuracy",
]

ROOT = "(root)"
#: A level of a hierarchy: a depth (0 = root), a cut (node names), or None (the classes).
Level = int | Collection[str] | None


class Hierarchy:
    """A tree over a classifier's classes, from a parent map ``child -> parent``.

    ``classes`` are the leaves in the model's label order (``classes[k]`` is label ``k``); every
    class must reach a root by following ``parents``. Nodes without a parent are roots; several
    roots get a common root ``"(root)"``. Level ``0`` is the root, level ``1`` its children, and
    so on; ``level=None`` means the classes themselves. A class shallower than the level asked
    for stands for itself there. Where depths vary a lot (WordNet), a level can also be a cut: a
    set of nodes such as ``{"animal", "artifact"}``, each class going to its deepest ancestor in
    it.

    ``labels`` optionally maps node ids to display names (WordNet ids to words, say).

    Example:
        >>> h = Hierarchy({"cat": "animal", "dog": "animal", "car": "vehicle"},
        ...               classes=["cat", "dog", "car"])
        >>> h.groups(1)
        (['animal', 'vehicle'], [0, 0, 1])
        >>> h.lca("cat", "dog"), h.distance("cat", "car")
        ('animal', 4)
    """

    def __init__(
        self,
        parents: Mapping[str, str],
        classes: Sequence[str],
        *,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(parents, Mapping):
            raise DTypeError(
                f"Hierarchy: 'parents' must be a mapping child -> parent, got "
                f"{type(parents).__name__}"
            )
        if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
            raise ParameterError(
                f"Hierarchy: 'classes' must be a non-empty list of class names, got {classes!r}"
            )
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes):
            raise LabelError(f"Hierarchy: class names must be unique, got {classes}")
        parent = {str(k): str(v) for k, v in parents.items()}
        inner = set(parent.values())
        leaves_inside = [c for c in classes if c in inner]
        if leaves_inside:
            raise LabelError(
                f"Hierarchy: classes must be leaves, but {leaves_inside} are parents of other "
                "nodes; give each class its own leaf"
            )
        roots = sorted({self._root_of(c, parent) for c in classes})
        if len(roots) > 1:
            for r in roots:
                parent[r] = ROOT
        self.parents: dict[str, str] = parent
        self.classes: list[str] = classes
        self.labels: dict[str, str] = dict(labels or {})
        self._paths = {c: self._path(c) for c in classes}
        self._nodes = {n for p in self._paths.values() for n in p}

    @staticmethod
    def _root_of(node: str, parent: Mapping[str, str]) -> str:
        seen = {node}
        while node in parent:
            node = parent[node]
            if node in seen:
                raise ParameterError(
                    f"Hierarchy: the parent map has a cycle through {node!r}; it must be a tree"
                )
            seen.add(node)
        return node

    def _path(self, node: str) -> list[str]:
        path = [node]
        while path[-1] in self.parents:
            path.append(self.parents[path[-1]])
        return path[::-1]

    # ------------------------------------------------------------------ structure
    @property
    def root(self) -> str:
        """The root node."""
        return self._paths[self.classes[0]][0]

    @property
    def depth(self) -> int:
        """Depth of the deepest class (the root has depth 0)."""
        return max(len(p) for p in self._paths.values()) - 1

    def path(self, node: str) -> list[str]:
        """Nodes from the root down to class ``node``."""
        return list(self._paths[self._class(node)])

    def display(self, node: str) -> str:
        """The display name of ``node`` (its label, or the node itself)."""
        return self.labels.get(node, node)

    def _class(self, node: str | int) -> str:
        if isinstance(node, int) and not isinstance(node, bool):
            if not 0 <= node < len(self.classes):
                raise LabelError(
                    f"Hierarchy: class index {node} is outside 0..{len(self.classes) - 1}"
                )
            return self.classes[node]
        if node not in self._paths:
            raise LabelError(f"Hierarchy: {node!r} is not one of the classes {self.classes}")
        return str(node)

    def ancestor(self, node: str | int, level: Level) -> str:
        """The ancestor of class ``node`` at ``level`` (the class itself if it is shallower).

        ``level`` may also be a cut: a collection of node names; the class then maps to its
        deepest ancestor (or itself) among them, or to the root when it has none there.
        """
        path = self._paths[self._class(node)]
        if level is None:
            return path[-1]
        if isinstance(level, int) and not isinstance(level, bool) and level >= 0:
            return path[min(level, len(path) - 1)]
        if isinstance(level, Collection) and not isinstance(level, str):
            cut = set(level)
            unknown = sorted(str(n) for n in cut if n not in self._nodes)
            if unknown:
                raise LabelError(f"Hierarchy: the cut names nodes not in the tree: {unknown}")
            return next((n for n in reversed(path) if n in cut), path[0])
        raise ParameterError(
            "Hierarchy: 'level' must be an int >= 0 (0 = root), a collection of node names (a "
            f"cut) or None (the classes), got {level!r}"
        )

    def groups(self, level: Level) -> tuple[list[str], list[int]]:
        """The groups at ``level`` (in order of first appearance) and each class's group index."""
        names: list[str] = []
        index: list[int] = []
        for c in self.classes:
            a = self.ancestor(c, level)
            if a not in names:
                names.append(a)
            index.append(names.index(a))
        return names, index

    def lca(self, a: str | int, b: str | int) -> str:
        """Lowest common ancestor of two classes."""
        pa, pb = self._paths[self._class(a)], self._paths[self._class(b)]
        common = pa[0]
        for u, v in zip(pa, pb, strict=False):
            if u != v:
                break
            common = u
        return common

    def distance(self, a: str | int, b: str | int) -> int:
        """Number of edges between two classes in the tree (0 for the same class)."""
        pa, pb = self._paths[self._class(a)], self._paths[self._class(b)]
        shared = 0
        for u, v in zip(pa, pb, strict=False):
            if u != v:
                break
            shared += 1
        return len(pa) + len(pb) - 2 * shared

    # ------------------------------------------------------------------ scoring
    def _labels(self, pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        k = len(self.classes)
        if isinstance(pred, Tensor) and pred.is_floating_point() and pred.ndim == 2:
            pred = pred.argmax(1)
        y = check_labels(
            y, len(y) if isinstance(y, Tensor) else 0, num_classes=k, where="Hierarchy"
        )
        pred = check_labels(pred, len(y), num_classes=k, name="pred", where="Hierarchy")
        return pred, y

    def _mapping(self, level: Level, device: torch.device) -> tuple[list[str], Tensor]:
        names, index = self.groups(level)
        return names, torch.tensor(index, dtype=torch.long, device=device)

    def accuracy(self, pred: Tensor, y: Tensor, level: Level = None) -> float:
        """Fraction of predictions in the true class's group at ``level`` (``None``: exact).

        ``pred``: labels ``(N,)`` or logits ``(N, K)``; ``y``: labels ``(N,)``.
        """
        pred, y = self._labels(pred, y)
        _, group = self._mapping(level, y.device)
        return float((group[pred] == group[y]).double().mean()) if len(y) else float("nan")

    def confusion(self, pred: Tensor, y: Tensor, level: Level = None) -> tuple[Tensor, list[str]]:
        """Confusion counts among the groups at ``level``: ``(G, G)`` int64, rows the true group,
        columns the predicted one, with the group names."""
        pred, y = self._labels(pred, y)
        names, group = self._mapping(level, y.device)
        g = len(names)
        counts = torch.bincount(group[y] * g + group[pred], minlength=g * g).view(g, g)
        return counts.cpu(), names

    def mistake_distance(self, pred: Tensor, y: Tensor) -> float:
        """Mean tree distance between predicted and true class over the mistakes (the severity of
        mistakes of Bertinetto et al. 2020); NaN when there is no mistake."""
        pred, y = self._labels(pred, y)
        k = len(self.classes)
        dist = torch.tensor(
            [[self.distance(i, j) for j in range(k)] for i in range(k)], dtype=torch.float64
        ).to(y.device)
        wrong = pred != y
        return float(dist[y[wrong], pred[wrong]].mean()) if bool(wrong.any()) else float("nan")

    def __repr__(self) -> str:
        return (
            f"Hierarchy(classes={len(self.classes)}, depth={self.depth}, "
            f"root={self.display(self.root)!r})"
        )

    # ------------------------------------------------------------------ WordNet
    @classmethod
    def from_wordnet(cls, wnids: Sequence[str], *, wordnet: str | Path | None = None) -> Hierarchy:
        """WordNet's noun hierarchy (hypernyms) over classes given as WordNet ids (``n01440764``:
        ImageNet's folder names, in label order).

        Each synset follows its first listed hypernym (WordNet is a graph; the first hypernym is
        the usual tree), up to ``entity``. Display names are each synset's first word. The data
        is read from WordNet 3.0's ``data.noun`` (ImageNet's ids are its offsets), found by
        :func:`find_wordnet`.
        """
        data = _read_data_noun(str(find_wordnet(wordnet)))
        parents: dict[str, str] = {}
        labels: dict[str, str] = {}
        wnids = [str(w) for w in wnids]
        for w in wnids:
            node = w
            while node not in labels:
                word, hypernym = _synset(data, node)
                labels[node] = word
                if hypernym is None:
                    break
                parents[node] = hypernym
                node = hypernym
        return cls(parents, wnids, labels=labels)


_WNID = re.compile(r"^n(\d{8})$")


def _synset(data: bytes, wnid: str) -> tuple[str, str | None]:
    """First word and first hypernym's WordNet id of the noun synset ``wnid``."""
    m = _WNID.match(wnid)
    if not m:
        raise LabelError(f"WordNet ids look like 'n01440764' (n + 8-digit offset), got {wnid!r}")
    offset = int(m.group(1))
    end = data.find(b"\n", offset)
    line = data[offset : end if end >= 0 else len(data)].decode("utf-8", "replace")
    fields = line.split(" ")
    if not line.startswith(m.group(1)) or len(fields) < 5 or fields[2] not in ("n",):
        raise DataFileError(
            f"WordNet id {wnid!r}: no noun synset at offset {offset} of data.noun; the ids must "
            "be WordNet 3.0 noun ids (ImageNet's) and the file WordNet 3.0's data.noun"
        )
    words = int(fields[3], 16)
    word = fields[4].replace("_", " ")
    pos = 4 + 2 * words
    pointers = int(fields[pos])
    for i in range(pointers):
        symbol, target, part = fields[pos + 1 + 4 * i : pos + 4 + 4 * i]
        if symbol in ("@", "@i") and part == "n":
            return word, f"n{target}"
    return word, None


def find_wordnet(path: str | Path | None = None) -> Path:
    """WordNet 3.0's ``data.noun`` (or a zip holding ``wordnet/data.noun``, as nltk installs it).

    Looked for in ``path`` (a file, or a folder holding it), ``$WORDNET_DIR``, nltk's data
    folders (``corpora/wordnet``, ``corpora/wordnet.zip``) and Debian's ``/usr/share/wordnet``.

    Raises:
        DataNotFoundError: nowhere found; the message says how to install WordNet.
    """
    candidates: list[Path] = []
    if path is not None:
        p = Path(path)
        candidates += [p, p / "data.noun", p / "dict" / "data.noun"]
    if os.environ.get("WORDNET_DIR"):
        p = Path(os.environ["WORDNET_DIR"])
        candidates += [p / "data.noun", p / "dict" / "data.noun"]
    roots = [
        Path.home() / "nltk_data",
        Path("/usr/share/nltk_data"),
        Path("/usr/local/share/nltk_data"),
        Path("/usr/lib/nltk_data"),
        Path("/usr/local/lib/nltk_data"),
    ]
    if os.environ.get("NLTK_DATA"):
        roots = [Path(p) for p in os.environ["NLTK_DATA"].split(os.pathsep)] + roots
    try:  # nltk's own search path, where nltk is installed
        nltk = importlib.import_module("nltk")
        roots = [Path(p) for p in nltk.data.path] + roots
    except ImportError:
        pass
    for r in roots:
        candidates += [r / "corpora" / "wordnet" / "data.noun", r / "corpora" / "wordnet.zip"]
    candidates += [Path("/usr/share/wordnet/data.noun"), Path("/usr/share/wordnet/dict/data.noun")]
    for c in candidates:
        if c.is_file():
            return c
    raise DataNotFoundError(
        "WordNet's data files were not found (looked for data.noun in: "
        f"{', '.join(str(c) for c in candidates)}); install them with `pip install nltk` then "
        "`python -m nltk.downloader wordnet`, or `apt-get install wordnet-base` (Debian), or "
        "pass wordnet= the folder holding data.noun"
    )


@functools.lru_cache(maxsize=2)
def _read_data_noun(path: str) -> bytes:
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            member = next((n for n in z.namelist() if n.endswith("wordnet/data.noun")), None)
            if member is None:
                raise DataFileError(f"{path} holds no wordnet/data.noun")
            return z.read(member)
    return Path(path).read_bytes()


#: Fashion-MNIST's ten classes under four groups: tops (T-shirt/top, Pullover, Dress, Coat,
#: Shirt), bottoms (Trouser), footwear (Sandal, Sneaker, Ankle boot) and bags (Bag). Dress goes
#: with the tops: an upper-body silhouette, and 59 of fmnist-cnn's 62 errors on dresses are tops.
FASHION_MNIST = Hierarchy(
    {
        "T-shirt/top": "tops",
        "Pullover": "tops",
        "Dress": "tops",
        "Coat": "tops",
        "Shirt": "tops",
        "Trouser": "bottoms",
        "Sandal": "footwear",
        "Sneaker": "footwear",
        "Ankle boot": "footwear",
        "Bag": "bags",
        "tops": "fashion",
        "bottoms": "fashion",
        "footwear": "fashion",
        "bags": "fashion",
    },
    classes=list(SOURCES["fashion-mnist"].classes),
)


# --------------------------------------------------------------------------- top-k, multi-label


def _check_scores(logits: Any, where: str) -> Tensor:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise DTypeError(
            f"{where}: logits must be a float tensor (N, K) of scores, got "
            f"{type(logits).__name__ if not isinstance(logits, Tensor) else logits.dtype}"
        )
    if logits.ndim != 2:
        raise ShapeError(f"{where}: logits must have shape (N, K), got {tuple(logits.shape)}")
    return logits


def _check_k(k: Any, classes: int, where: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= classes:
        raise ParameterError(f"{where}: 'k' must be an int in [1, {classes}], got {k!r}")
    return k


def topk_accuracy(logits: Tensor, y: Tensor, k: int = 5) -> float:
    """Fraction of images whose label is among the ``k`` highest scores.

    Shape: logits (N, K), y (N,).

    Example:
        >>> import torch
        >>> logits = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1]])
        >>> topk_accuracy(logits, torch.tensor([2, 1]), k=1), topk_accuracy(logits, torch.tensor([2, 1]), k=2)
        (0.0, 1.0)
    """
    where = "topk_accuracy"
    logits = _check_scores(logits, where)
    k = _check_k(k, logits.shape[1], where)
    y = check_labels(y, len(logits), num_classes=logits.shape[1], where=where)
    top = logits.topk(k, dim=1).indices
    return float((top == y[:, None]).any(1).double().mean())


def multilabel_accuracy(
    logits: Tensor, acceptable: Tensor | Sequence[Iterable[int]], k: int = 1
) -> float:
    """Fraction of images whose ``k`` highest scores include an acceptable label.

    ``acceptable`` is a boolean ``(N, K)`` mask or, per image, a collection of acceptable labels
    (several objects in one image, or classes a human would accept). With ``k=1`` this is the
    multi-label accuracy of Stock and Cisse (2018) and of ImageNet's re-assessed labels (Beyer et
    al. 2020).

    Shape: logits (N, K).

    Example:
        >>> import torch
        >>> logits = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1]])
        >>> multilabel_accuracy(logits, [{2}, {0, 1}]), multilabel_accuracy(logits, [{1, 2}, {1}])
        (0.5, 0.5)
    """
    where = "multilabel_accuracy"
    logits = _check_scores(logits, where)
    n, classes = logits.shape
    k = _check_k(k, classes, where)
    if isinstance(acceptable, Tensor):
        if acceptable.dtype != torch.bool or tuple(acceptable.shape) != (n, classes):
            raise ShapeError(
                f"{where}: an acceptable-label mask must be a bool tensor of shape {(n, classes)},"
                f" got {acceptable.dtype} {tuple(acceptable.shape)}"
            )
        mask = acceptable.to(logits.device)
    else:
        sets = list(acceptable)
        if len(sets) != n:
            raise LabelError(
                f"{where}: give one set of acceptable labels per image: {n} images, "
                f"{len(sets)} sets"
            )
        mask = torch.zeros(n, classes, dtype=torch.bool)
        for i, labels in enumerate(sets):
            for label in labels:
                if (
                    isinstance(label, bool)
                    or not isinstance(label, int)
                    or not (0 <= label < classes)
                ):
                    raise LabelError(
                        f"{where}: image {i} lists label {label!r}; labels are ints in "
                        f"0..{classes - 1}"
                    )
                mask[i, label] = True
        mask = mask.to(logits.device)
    if not bool(mask.any(1).all()):
        empty = int((~mask.any(1)).sum())
        raise LabelError(f"{where}: {empty} images have no acceptable label; give at least one")
    top = logits.topk(k, dim=1).indices
    return float(mask.gather(1, top).any(1).double().mean())


# --------------------------------------------------------------------------- ambiguous images


@dataclass(frozen=True)
class Ambiguous:
    """Images on which the model hesitates between two classes, most ambiguous first.

    ``index[i]`` is the image's position in the data set, ``classes[i]`` its two most likely
    classes (first the top one), ``probs[i]`` their probabilities, ``label[i]`` the data set's
    label. ``class_names`` gives the class names of ``classes``.
    """

    index: Tensor
    classes: Tensor
    probs: Tensor
    label: Tensor
    class_names: list[tuple[str, str]]
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def gap(self) -> Tensor:
        """Difference of the two probabilities, ``(M,)``."""
        return self.probs[:, 0] - self.probs[:, 1]

    @property
    def label_in_top2(self) -> Tensor:
        """Whether the data set's label is one of the two classes, ``(M,)`` bool."""
        return (self.classes == self.label[:, None]).any(1)

    def to_dict(self) -> list[dict[str, Any]]:
        """One dictionary per image, JSON-ready."""
        return [
            {
                "index": int(self.index[i]),
                "classes": list(self.class_names[i]),
                "probs": self.probs[i].tolist(),
                "label": self.label_names[i],
            }
            for i in range(len(self))
        ]


def ambiguous(
    model: nn.Module,
    ds: ImageDataset | ImageFiles,
    *,
    margin: float = 0.1,
    mass: float = 0.8,
    k: int = 20,
    batch_size: int = 512,
) -> Ambiguous:
    """The (at most ``k``) images whose two most likely classes are close and both plausible.

    An image qualifies when its top two softmax probabilities differ by at most ``margin`` and
    together hold at least ``mass`` of the probability: the model splits between exactly two
    classes. Sorted by the difference, smallest first.

    ``ds`` may be an ``ImageFiles`` streamed from disk: the pass keeps the two top
    probabilities of each image, never its image or logits (files that do not decode are left
    out). ``index`` holds positions in ``ds``.

    Shape: ds.x (N, C, H, W) -> an :class:`Ambiguous` of M <= k images.

    Example:
        >>> import robustlens as rl
        >>> res = ambiguous(rl.zoo.load("fmnist-cnn"), rl.data.load("fashion-mnist")[:2000], k=3)
        >>> len(res), bool((res.gap <= 0.1).all()), bool((res.probs.sum(1) >= 0.8).all())
        (3, True, True)
    """
    from robustlens._checks import model_device
    from robustlens.data.stream import model_outputs

    where = "ambiguous"
    check_model(model, where=where)
    if not isinstance(ds, ImageDataset | ImageFiles):
        raise DTypeError(
            f"{where}: ds must be an ImageDataset or ImageFiles, got {type(ds).__name__}"
        )
    for name, value, hi in (("margin", margin, 1.0), ("mass", mass, 1.0)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= hi:
            raise ParameterError(f"{where}: {name!r} must be a float in [0, 1], got {value!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ParameterError(f"{where}: 'k' must be an int >= 1, got {k!r}")
    outputs: list[int] = []

    def top2(logits: Tensor) -> Tensor:
        """Each image's two largest probabilities and their classes: ``(B, 4)``, so a pass over
        a streamed data set keeps four numbers per image, not its logits."""
        outputs.append(int(logits.shape[1]))
        probs, top = logits.softmax(1).topk(2, dim=1)
        return torch.cat([probs, top.to(probs.dtype)], dim=1)

    values, read = model_outputs(model, ds, top2, batch_size=batch_size, device=model_device(model))
    k_model = outputs[0] if outputs else ds.num_classes
    if k_model != ds.num_classes:
        raise LabelError(
            f"{where}: the model has {k_model} classes but {ds.name!r} has "
            f"{ds.num_classes}; check that data and model match"
        )
    probs, top = values[:, :2], values[:, 2:].long()
    gap = probs[:, 0] - probs[:, 1]
    keep = ((gap <= margin) & (probs.sum(1) >= mass)).nonzero().squeeze(1)
    rows = keep[gap[keep].argsort(stable=True)][:k]
    order = read[rows]  # positions in ds
    classes = top[rows]
    label = ds.y[order.to(ds.y.device)].cpu()
    return Ambiguous(
        index=order.cpu(),
        classes=classes,
        probs=probs[rows],
        label=label,
        class_names=[(ds.classes[int(a)], ds.classes[int(b)]) for a, b in classes.tolist()],
        label_names=[ds.classes[int(v)] for v in label],
    )
