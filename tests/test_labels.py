"""Label hierarchies (built-in Fashion-MNIST tree, WordNet), top-k and multi-label accuracy, and
the ambiguous images of the "guess the class" game."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import robustlens as rl
from robustlens.bias.labels import (
    FASHION_MNIST,
    Hierarchy,
    ambiguous,
    find_wordnet,
    multilabel_accuracy,
    topk_accuracy,
)
from robustlens.errors import (
    DataFileError,
    DataNotFoundError,
    DTypeError,
    LabelError,
    ParameterError,
    ShapeError,
)

TSHIRT, TROUSER, PULLOVER, DRESS, COAT, SANDAL, SHIRT, SNEAKER, BAG, BOOT = range(10)


# --------------------------------------------------------------------------- Fashion-MNIST tree


def test_fashion_mnist_groups() -> None:
    names, index = FASHION_MNIST.groups(1)
    assert names == ["tops", "bottoms", "footwear", "bags"]
    assert index == [0, 1, 0, 0, 0, 2, 0, 2, 3, 2]
    assert FASHION_MNIST.classes == rl.data.load("fashion-mnist").classes
    assert FASHION_MNIST.depth == 2 and FASHION_MNIST.root == "fashion"
    assert FASHION_MNIST.path("Sneaker") == ["fashion", "footwear", "Sneaker"]


def test_hierarchy_accuracy_known_answer() -> None:
    y = torch.tensor([TSHIRT, TSHIRT, SNEAKER, TROUSER, BAG, COAT])
    pred = torch.tensor([SHIRT, TSHIRT, SANDAL, DRESS, BAG, PULLOVER])
    # Exact: 2 of 6. Groups: shirt~T-shirt, sandal~sneaker, pullover~coat right; dress for
    # trousers wrong: 5 of 6. The root: everything.
    assert FASHION_MNIST.accuracy(pred, y) == pytest.approx(2 / 6)
    assert FASHION_MNIST.accuracy(pred, y, level=1) == pytest.approx(5 / 6)
    assert FASHION_MNIST.accuracy(pred, y, level=0) == 1.0
    assert FASHION_MNIST.accuracy(pred, y, level=7) == pytest.approx(2 / 6)  # below the leaves
    logits = torch.nn.functional.one_hot(pred, 10).float()
    assert FASHION_MNIST.accuracy(logits, y, level=1) == pytest.approx(5 / 6)
    counts, names = FASHION_MNIST.confusion(pred, y, level=1)
    assert names == ["tops", "bottoms", "footwear", "bags"]
    assert counts.tolist() == [[3, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    # Mistakes: shirt/T-shirt 2 edges, sandal/sneaker 2, dress/trouser 4, pullover/coat 2.
    assert FASHION_MNIST.mistake_distance(pred, y) == pytest.approx((2 + 2 + 4 + 2) / 4)


def test_fmnist_cnn_mistakes_stay_within_groups() -> None:
    ds = rl.data.load("fashion-mnist")[:2000]
    with torch.no_grad():
        logits = rl.zoo.load("fmnist-cnn")(ds.x)
    exact = FASHION_MNIST.accuracy(logits, ds.y)
    coarse = FASHION_MNIST.accuracy(logits, ds.y, level=1)
    assert 0.9 < exact < coarse and coarse > 0.99


def test_custom_hierarchy_structure() -> None:
    h = Hierarchy(
        {"cat": "mammal", "dog": "mammal", "mammal": "animal", "trout": "animal", "car": "vehicle"},
        classes=["cat", "dog", "trout", "car"],
    )
    assert h.root == "(root)" and h.depth == 3
    assert h.groups(1) == (["animal", "vehicle"], [0, 0, 0, 1])
    assert h.groups(2) == (["mammal", "trout", "car"], [0, 0, 1, 2])
    assert h.lca("cat", "dog") == "mammal" and h.lca(0, 2) == "animal"
    assert h.distance("cat", "dog") == 2 and h.distance("cat", "car") == 5
    assert h.distance("trout", "trout") == 0
    assert h.ancestor(0, None) == "cat" and h.ancestor("car", 2) == "car"
    # A cut: each class goes to its deepest ancestor among the nodes named, else to the root.
    assert h.groups({"mammal", "vehicle", "animal"}) == (
        ["mammal", "animal", "vehicle"],
        [0, 0, 1, 2],
    )
    assert h.groups(["mammal"]) == (["mammal", "(root)"], [0, 0, 1, 1])
    with pytest.raises(LabelError, match=r"not in the tree: \['fish'\]"):
        h.groups({"fish"})


def test_hierarchy_errors() -> None:
    with pytest.raises(ParameterError, match="cycle"):
        Hierarchy({"x": "a", "a": "b", "b": "c", "c": "a"}, classes=["x"])
    with pytest.raises(LabelError, match="classes must be leaves"):
        Hierarchy({"a": "b", "c": "b"}, classes=["a", "b"])
    with pytest.raises(LabelError, match="unique"):
        Hierarchy({"a": "b"}, classes=["a", "a"])
    with pytest.raises(DTypeError, match="mapping"):
        Hierarchy([("a", "b")], classes=["a"])  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'level' must be an int >= 0"):
        FASHION_MNIST.groups(-1)
    with pytest.raises(LabelError, match="not one of the classes"):
        FASHION_MNIST.path("Hat")
    with pytest.raises(LabelError, match="10 classes"):
        FASHION_MNIST.accuracy(torch.tensor([0, 12]), torch.tensor([0, 1]))


# --------------------------------------------------------------------------- WordNet


def _data_noun(path: Path, synsets: list[tuple[str, list[tuple[str, str]]]]) -> dict[str, str]:
    """Write a WordNet-format data.noun whose offsets are byte positions; return word -> wnid."""
    header = "  1 This is a small WordNet-format file written by the tests.\n"

    def line(word: str, pointers: list[tuple[str, str]], offsets: dict[str, int]) -> str:
        ptrs = " ".join(f"{sym} {offsets[t]:08d} n 0000" for sym, t in pointers)
        return (
            f"{offsets[word]:08d} 05 n 01 {word} 0 {len(pointers):03d} {ptrs} | gloss of {word}  \n"
        )

    zero = {w: 0 for w, _ in synsets}
    offsets, pos = {}, len(header)
    for word, ptrs in synsets:
        offsets[word] = pos
        pos += len(line(word, ptrs, zero))
    path.write_text(header + "".join(line(w, p, offsets) for w, p in synsets))
    return {w: f"n{o:08d}" for w, o in offsets.items()}


def test_wordnet_hierarchy_from_data_noun(tmp_path: Path) -> None:
    ids = _data_noun(
        tmp_path / "data.noun",
        [
            ("entity", []),
            ("animal", [("@", "entity")]),
            ("pet", [("@", "entity")]),
            ("dog", [("@", "animal"), ("@", "pet")]),  # the first hypernym is followed
            ("cat", [("@", "animal"), ("~", "entity")]),  # '~' (hyponym) is not a hypernym
            ("lassie", [("@i", "dog")]),  # an instance hypernym
            ("car", [("@", "entity")]),
        ],
    )
    wnids = [ids["cat"], ids["lassie"], ids["car"]]
    h = Hierarchy.from_wordnet(wnids, wordnet=tmp_path)
    assert h.classes == wnids
    assert [h.display(n) for n in h.path(ids["lassie"])] == ["entity", "animal", "dog", "lassie"]
    names, index = h.groups(1)
    assert [h.display(n) for n in names] == ["animal", "car"] and index == [0, 0, 1]
    assert h.display(h.lca(ids["cat"], ids["lassie"])) == "animal"
    with pytest.raises(LabelError, match="look like 'n01440764'"):
        Hierarchy.from_wordnet(["dog"], wordnet=tmp_path)
    with pytest.raises(DataFileError, match="no noun synset at offset"):
        Hierarchy.from_wordnet([f"n{int(ids['cat'][1:]) + 3:08d}"], wordnet=tmp_path)


def test_wordnet_zip_as_nltk_installs_it(tmp_path: Path) -> None:
    import zipfile

    ids = _data_noun(tmp_path / "data.noun", [("entity", []), ("thing", [("@", "entity")])])
    with zipfile.ZipFile(tmp_path / "wordnet.zip", "w") as z:
        z.write(tmp_path / "data.noun", "wordnet/data.noun")
    h = Hierarchy.from_wordnet([ids["thing"]], wordnet=tmp_path / "wordnet.zip")
    assert [h.display(n) for n in h.path(ids["thing"])] == ["entity", "thing"]


def test_missing_wordnet_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        find_wordnet()
    except DataNotFoundError:
        pass
    else:
        pytest.skip("WordNet is installed here")
    with pytest.raises(DataNotFoundError, match=r"nltk\.downloader wordnet.*wordnet-base"):
        Hierarchy.from_wordnet(["n02084071"])


def test_real_wordnet_when_installed() -> None:
    try:
        find_wordnet()
    except DataNotFoundError:
        pytest.skip("WordNet data is not installed (apt-get install wordnet-base)")
    h = Hierarchy.from_wordnet(["n02084071", "n02121808"])  # dog, domestic cat
    assert h.display(h.root) == "entity"
    assert h.display(h.lca("n02084071", "n02121808")) == "carnivore"
    h = Hierarchy.from_wordnet(["n02084071", "n03126707", "n02012849"])  # dog, crane, crane
    animal, artifact = "n00015388", "n00021939"
    assert h.groups({animal, artifact}) == ([animal, artifact], [0, 1, 0])


# --------------------------------------------------------------------------- top-k, multi-label

LOGITS = torch.tensor(
    [
        [0.1, 0.5, 0.4, 0.0],  # ranking 1, 2, 0, 3
        [0.7, 0.2, 0.1, 0.0],  # ranking 0, 1, 2, 3
        [0.0, 0.1, 0.2, 0.3],  # ranking 3, 2, 1, 0
    ]
)


def test_topk_accuracy_hand_built() -> None:
    y = torch.tensor([2, 1, 0])
    assert topk_accuracy(LOGITS, y, k=1) == 0.0
    assert topk_accuracy(LOGITS, y, k=2) == pytest.approx(2 / 3)
    assert topk_accuracy(LOGITS, y, k=4) == 1.0
    with pytest.raises(ParameterError, match=r"'k' must be an int in \[1, 4\]"):
        topk_accuracy(LOGITS, y, k=5)
    with pytest.raises(DTypeError, match="float tensor"):
        topk_accuracy(y, y)
    with pytest.raises(ShapeError, match=r"\(N, K\)"):
        topk_accuracy(LOGITS[0], y)


def test_multilabel_accuracy_hand_built() -> None:
    sets = [{2, 1}, {2}, {3, 0}]
    assert multilabel_accuracy(LOGITS, sets) == pytest.approx(2 / 3)
    assert multilabel_accuracy(LOGITS, sets, k=3) == 1.0
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, 2] = mask[1, 0] = mask[2, 1] = True
    assert multilabel_accuracy(LOGITS, mask) == pytest.approx(1 / 3)
    assert multilabel_accuracy(LOGITS, mask, k=2) == pytest.approx(2 / 3)
    with pytest.raises(LabelError, match="one set of acceptable labels per image"):
        multilabel_accuracy(LOGITS, [{1}])
    with pytest.raises(LabelError, match="no acceptable label"):
        multilabel_accuracy(LOGITS, [{1}, set(), {0}])
    with pytest.raises(LabelError, match="lists label 9"):
        multilabel_accuracy(LOGITS, [{1}, {9}, {0}])
    with pytest.raises(ShapeError, match="bool tensor of shape"):
        multilabel_accuracy(LOGITS, mask.float())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- ambiguous


class Lookup(nn.Module):
    """Probabilities looked up by the image's first pixel (0.0, 0.1, 0.2, ...)."""

    def __init__(self, probs: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", probs.log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[(x[:, 0, 0, 0] * 10).round().long()]


def test_ambiguous_known_answer() -> None:
    probs = torch.tensor(
        [
            [0.50, 0.40, 0.10],  # gap 0.10, mass 0.90: ambiguous
            [0.90, 0.05, 0.05],  # confident
            [0.35, 0.33, 0.32],  # close, but three-way: mass 0.68 < 0.8
            [0.10, 0.44, 0.46],  # gap 0.02, mass 0.90: the most ambiguous
            [0.30, 0.60, 0.10],  # gap 0.30
        ]
    )
    x = (torch.arange(5, dtype=torch.float32) / 10).view(5, 1, 1, 1).expand(5, 1, 2, 2)
    ds = rl.data.ImageDataset(
        x.contiguous(), torch.tensor([0, 0, 1, 1, 2]), classes=["a", "b", "c"]
    )
    res = ambiguous(Lookup(probs), ds, margin=0.1, mass=0.8)
    assert res.index.tolist() == [3, 0]
    assert res.classes.tolist() == [[2, 1], [0, 1]]
    assert res.class_names == [("c", "b"), ("a", "b")] and res.label_names == ["b", "a"]
    torch.testing.assert_close(res.probs, torch.tensor([[0.46, 0.44], [0.50, 0.40]]))
    assert res.label_in_top2.tolist() == [True, True]
    assert len(ambiguous(Lookup(probs), ds, margin=0.1, mass=0.8, k=1)) == 1
    assert ambiguous(Lookup(probs), ds, margin=0.5, mass=0.0).index.tolist() == [3, 2, 0, 4]
    json.dumps(res.to_dict())


def test_ambiguous_on_fashion_mnist() -> None:
    ds = rl.data.load("fashion-mnist")[:3000]
    res = ambiguous(rl.zoo.load("fmnist-cnn"), ds, k=10)
    assert len(res) == 10
    gap = res.gap
    assert bool((gap <= 0.1).all()) and bool((gap[1:] >= gap[:-1]).all())
    assert bool((res.probs.sum(1) >= 0.8).all())
    # The hesitations are between garments of one group, mostly shirts and T-shirts.
    _, group = FASHION_MNIST.groups(1)
    assert sum(group[a] == group[b] for a, b in res.classes.tolist()) >= 8


def test_ambiguous_errors() -> None:
    ds = rl.data.load("digits")[:8]
    model = rl.zoo.load("digits-cnn")
    with pytest.raises(ParameterError, match="'margin' must be a float in"):
        ambiguous(model, ds, margin=2.0)
    with pytest.raises(ParameterError, match="'k' must be an int >= 1"):
        ambiguous(model, ds, k=0)
    with pytest.raises(DTypeError, match="ImageDataset"):
        ambiguous(model, ds.x)  # type: ignore[arg-type]
    with pytest.raises(LabelError, match="10 classes"):
        ambiguous(
            rl.zoo.load("digits-cnn"), rl.data.ImageDataset(ds.x, ds.y % 2, classes=["a", "b"])
        )
