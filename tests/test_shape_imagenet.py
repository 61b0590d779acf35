"""Shape bias of ImageNet models on Geirhos' cue-conflict stimuli: the 16-category mapping, the
stimuli folder, the aggregation (against a hand-computed case) and the audit's measurement."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

import robustlens as rl
from robustlens.bias import REFERENCES_16, imagenet_16_probabilities, shape_bias_imagenet
from robustlens.data import CATEGORIES_16, IMAGENET_16, Preprocessing, open_cue_conflict
from robustlens.errors import DataNotFoundError, LabelError, ModelOutputError

# The lists as published (texture-vs-shape and model-vs-human, helper/human_categories.py),
# written out in full to check the compact form in robustlens.data.geirhos.
PUBLISHED = {
    "airplane": [404],
    "bear": [294, 295, 296, 297],
    "bicycle": [444, 671],
    "bird": [8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89,
             90, 91, 92, 93, 94, 95, 96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135,
             136, 137, 138, 139, 140, 141, 142, 143, 144, 145],
    "boat": [472, 554, 625, 814, 914],
    "bottle": [440, 720, 737, 898, 899, 901, 907],
    "car": [436, 511, 817],
    "cat": [281, 282, 283, 284, 285, 286],
    "chair": [423, 559, 765, 857],
    "clock": [409, 530, 892],
    "dog": [152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168,
            169, 170, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185,
            186, 187, 188, 189, 190, 191, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203,
            205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221,
            222, 223, 224, 225, 226, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
            240, 241, 243, 244, 245, 246, 247, 248, 249, 250, 252, 253, 254, 255, 256, 257, 259,
            261, 262, 263, 265, 266, 267, 268],
    "elephant": [385, 386],
    "keyboard": [508, 878],
    "knife": [499],
    "oven": [766],
    "truck": [555, 569, 656, 675, 717, 734, 864, 867],
}  # fmt: skip


# --------------------------------------------------------------------------- the mapping


def test_mapping_is_the_published_one() -> None:
    assert {k: list(v) for k, v in IMAGENET_16.items()} == PUBLISHED
    assert list(CATEGORIES_16) == sorted(PUBLISHED)
    members = [i for v in IMAGENET_16.values() for i in v]
    assert len(members) == len(set(members)) == 207  # no class in two categories
    assert all(0 <= i < 1000 for i in members)


def test_mapping_agrees_with_the_imagenet_class_names() -> None:
    names = rl.data.imagenet_names()
    assert [names[i] for i in IMAGENET_16["airplane"]] == ["airliner"]
    assert [names[i] for i in IMAGENET_16["bear"]] == [
        "brown bear",
        "American black bear",
        "ice bear",
        "sloth bear",
    ]
    assert [names[i] for i in IMAGENET_16["elephant"]] == ["Indian elephant", "African elephant"]
    assert names[IMAGENET_16["cat"][0]] == "tabby"
    assert names[IMAGENET_16["knife"][0]] == "cleaver"
    assert all("clock" in names[i] for i in IMAGENET_16["clock"])
    assert all("keyboard" in names[i] for i in IMAGENET_16["keyboard"])


# --------------------------------------------------------------------------- the aggregation


def _logits(probs: dict[int, float]) -> Tensor:
    """ImageNet logits whose softmax puts ``probs`` on the given classes and spreads the rest
    of the mass evenly over the others."""
    p = torch.full((1000,), (1.0 - sum(probs.values())) / (1000 - len(probs)), dtype=torch.float64)
    for i, v in probs.items():
        p[i] = v
    return p.log().float()


def _mean(probs: dict[int, float], category: str) -> float:
    rest = (1.0 - sum(probs.values())) / (1000 - len(probs))
    members = IMAGENET_16[category]
    return sum(probs.get(i, rest) for i in members) / len(members)


# Four conflicting stimuli and one whose shape and texture agree, with the model's probabilities
# on each, chosen so that the mean over a category's classes (Geirhos' rule) and the largest
# member probability (or the sum) decide differently.
CAT, DOG, KNIFE, ELEPHANT = (IMAGENET_16[c] for c in ("cat", "dog", "knife", "elephant"))
HAND = {
    # cat shape, dog texture: one dog class at 0.3, the six cats at 0.1 each. Mean: cat (0.1 vs
    # about 0.003): a shape decision. Largest member: dog.
    "cat/cat1-dog1.png": {DOG[0]: 0.3, **{i: 0.1 for i in CAT}},
    # dog shape, cat texture: every dog class at 0.005 (0.545 in all), tabby at 0.2. Mean: cat
    # (about 0.034 vs 0.005): a texture decision. Sum: dog.
    "dog/dog1-cat2.png": {**{i: 0.005 for i in DOG}, CAT[0]: 0.2},
    # elephant shape, knife texture: the oven (rotisserie) at 0.5: another category.
    "elephant/elephant1-knife1.png": {766: 0.5},
    # knife shape, elephant texture: Indian elephant 0.4, cleaver 0.35. Mean: knife (0.35 vs about
    # 0.2): a shape decision. Largest member: elephant.
    "knife/knife1-elephant2.png": {ELEPHANT[0]: 0.4, KNIFE[0]: 0.35},
    # bear on bear: left out, never shown to the model.
    "bear/bear1-bear2.png": {294: 0.9},
}


def test_aggregation_is_the_mean_probability_of_the_members() -> None:
    cases = list(HAND.values())
    probs = imagenet_16_probabilities(torch.stack([_logits(p) for p in cases]))
    assert probs.shape == (len(cases), 16)
    for row, p in zip(probs, cases, strict=True):
        want = torch.tensor([_mean(p, c) for c in CATEGORIES_16])
        torch.testing.assert_close(row, want.float(), rtol=1e-4, atol=1e-7)
    decided = [CATEGORIES_16[k] for k in probs.argmax(1).tolist()]
    assert decided == ["cat", "cat", "oven", "knife", "bear"]
    # The rules it is not: the largest member probability, and the sum over the members.
    full = torch.stack([_logits(p) for p in cases]).softmax(1)
    by_max = [max(CATEGORIES_16, key=lambda c: float(f[list(IMAGENET_16[c])].max())) for f in full]
    by_sum = [max(CATEGORIES_16, key=lambda c: float(f[list(IMAGENET_16[c])].sum())) for f in full]
    assert by_max[:4] == ["dog", "cat", "oven", "elephant"]
    assert by_sum[1] == "dog"


def test_aggregation_checks_its_input() -> None:
    with pytest.raises(ValueError, match=r"must be \(N, 1000\)"):
        imagenet_16_probabilities(torch.zeros(2, 10))
    with pytest.raises(TypeError, match="float tensor"):
        imagenet_16_probabilities(torch.zeros(2, 1000, dtype=torch.int64))


class _TableModel(nn.Module):
    """Logits looked up from the image: stimulus ``k`` is a flat grey of level ``20 (k + 1)``."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.seen: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        k = (x[:, 0, 0, 0] * 255 / 20).round().long() - 1
        self.seen += k.tolist()
        return self.table[k]


def _write_hand_stimuli(root: Path) -> _TableModel:
    rows = []
    for k, (name, probs) in enumerate(HAND.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 12), (20 * (k + 1),) * 3).save(root / name)
        rows.append(_logits(probs))
    return _TableModel(torch.stack(rows))


def test_shape_bias_on_the_hand_computed_case(tmp_path: Path) -> None:
    model = _write_hand_stimuli(tmp_path)
    stimuli = open_cue_conflict(tmp_path)
    assert len(stimuli) == 5 and int(stimuli.conflicting.sum()) == 4
    res = shape_bias_imagenet(model, stimuli, batch_size=2)
    # Shape decisions: cat1-dog1, knife1-elephant2; texture: dog1-cat2; other: elephant1-knife1.
    assert (res.n, res.score) == (4, pytest.approx(2 / 3))
    assert (res.shape_fraction, res.texture_fraction, res.other_fraction) == (0.5, 0.25, 0.25)
    per = res.to_dict()["per_class"]
    assert (per["cat"]["score"], per["dog"]["score"], per["knife"]["score"]) == (1.0, 0.0, 1.0)
    assert per["elephant"] == {
        "n": 1,
        "score": None,
        "shape_fraction": 0.0,
        "texture_fraction": 0.0,
    }
    assert per["airplane"]["n"] == 0 and per["airplane"]["score"] is None
    assert math.isnan(float(res.class_score[CATEGORIES_16.index("elephant")]))
    assert 4 not in model.seen and sorted(model.seen) == [0, 1, 2, 3]  # bear-on-bear not shown
    refs = {r["observer"]: r["score"] for r in res.to_dict()["references"]}
    assert refs == {"humans": 0.96, "ResNet-50 (ImageNet)": 0.22}
    assert "Geirhos et al. 2019" in REFERENCES_16[0].source
    assert "4 conflicting of 5 files" in res.to_dict()["stimuli"]
    # rl.bias.shape_bias takes the same stimuli.
    assert rl.bias.shape_bias(model, stimuli).score == res.score


def test_shape_bias_imagenet_needs_1000_outputs(tmp_path: Path) -> None:
    _write_hand_stimuli(tmp_path)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 10))
    with pytest.raises(ModelOutputError, match="has 10 outputs .* ImageNet-1k's 1000"):
        shape_bias_imagenet(model, open_cue_conflict(tmp_path))


# --------------------------------------------------------------------------- the stimuli folder

# The synthetic generator's six shapes and textures stand for six of the 16 categories.
SIX = ("bear", "bottle", "cat", "clock", "dog", "truck")


def _write_generated(root: Path, n: int = 12, size: int = 64) -> tuple[rl.data.CueConflict, list]:
    """Conflicting and aligned stimuli of the generator in the published layout."""
    stim = rl.data.cue_conflict(n, size=size, channels=3, seed=0)
    aligned = stim.aligned()
    written = []
    for x, s, t in [
        *zip(stim.x, stim.shape_label.tolist(), stim.texture_label.tolist(), strict=True),
        *zip(aligned.x[:3], aligned.y[:3].tolist(), aligned.y[:3].tolist(), strict=True),
    ]:
        shape, texture = SIX[s], SIX[t]
        i = sum(1 for w in written if w[1] == shape) + 1
        name = f"{shape}{i}-{texture}{i % 3 + 1}.png"
        (root / shape).mkdir(parents=True, exist_ok=True)
        pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(root / shape / name)
        written.append((f"{shape}/{name}", shape, texture, x))
    return stim, written


def test_loader_reads_the_published_layout(tmp_path: Path) -> None:
    root = tmp_path / "texture-vs-shape" / "stimuli" / "style-transfer-preprocessed-512"
    _, written = _write_generated(root)
    stim = open_cue_conflict(root)
    assert len(stim) == len(written) == 15 and stim.classes == list(CATEGORIES_16)
    got = {
        stim.files.relative(i): (CATEGORIES_16[s], CATEGORIES_16[t])
        for i, (s, t) in enumerate(
            zip(stim.shape_label.tolist(), stim.texture_label.tolist(), strict=True)
        )
    }
    assert got == {path: (shape, texture) for path, shape, texture, _ in written}
    assert int(stim.conflicting.sum()) == 12  # the three aligned ones do not conflict
    # Images at their own size come back as written (8-bit PNG).
    path_to_x = {path: x for path, _, _, x in written}
    for i in (0, 7):
        image, label = stim[i]
        assert image.shape == (3, 64, 64) and label == int(stim.shape_label[i])
        want = (path_to_x[stim.files.relative(i)].clamp(0, 1) * 255).round() / 255
        torch.testing.assert_close(image, want, atol=1e-6, rtol=0)
    # The repository's root and its stimuli folder lead to the same files.
    for above in (tmp_path / "texture-vs-shape", tmp_path / "texture-vs-shape" / "stimuli"):
        assert open_cue_conflict(above).files.files == stim.files.files


def test_loader_brings_images_to_the_model_geometry(tmp_path: Path) -> None:
    _write_generated(tmp_path, n=6)
    pre = Preprocessing(input_size=(32, 32), resize=36, interpolation="bicubic")
    stim = open_cue_conflict(tmp_path, preprocessing=pre)
    image, _ = stim[2]
    with Image.open(stim.files.files[2]) as im:
        raw = torch.from_numpy(np.asarray(im.convert("RGB")).copy())
    torch.testing.assert_close(image, pre.apply_to(raw.permute(2, 0, 1)[None])[0])
    assert image.shape == (3, 32, 32) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    sub = stim[stim.conflicting].subset(4, seed=1)
    assert len(sub) == 4 and bool(sub.conflicting.all())
    assert sub.files.preprocessing == pre


@pytest.mark.parametrize(
    ("folder", "name", "match"),
    [
        ("cat", "cat1_dog2.png", r"'cat1_dog2.png' is not named '<shape><i>-<texture><j>.png'"),
        ("cat", "cat1-dog.png", "is not named"),
        ("cat", "notes.txt", "is not named"),
        ("cat", "cat1-dgo2.png", "names category 'dgo'.*did you mean 'dog'"),
        ("cat", "dog1-cat2.png", "has shape 'dog' in its name but lies in folder 'cat'"),
        ("kitten", "cat1-dog2.png", r"folder\(s\) \['kitten'\] that are not among the 16"),
    ],
)
def test_loader_refuses_bad_names(tmp_path: Path, folder: str, name: str, match: str) -> None:
    (tmp_path / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "dog" / "dog1-cat1.png")
    (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / folder / name).write_bytes(b"")
    with pytest.raises(LabelError, match=match):
        open_cue_conflict(tmp_path)


def test_loader_says_how_to_get_the_stimuli(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="holds no category folder.*git clone"):
        open_cue_conflict(tmp_path)
    with pytest.raises(DataNotFoundError, match="is not a directory.*texture-vs-shape"):
        open_cue_conflict(tmp_path / "missing")


# --------------------------------------------------------------------------- the audit


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(num_classes=1000)


def _audit(model: nn.Module, stimuli: Path | None, classes: list[str]) -> dict:
    from robustlens.evaluation.config import SuiteConfig
    from robustlens.evaluation.suite import run_suite

    ds = rl.data.ImageDataset(
        torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
        torch.tensor([0, 1]),
        classes=classes,
        name="photos",
    )
    bias = {
        "corruption_images": 1,
        "severities": [1],
        "ambiguous": 0,
        "superpixel_images": 0,
        "shape_stimuli": 6,
        "cue_conflict": "" if stimuli is None else str(stimuli),
    }
    cfg = SuiteConfig.from_dict(
        {
            "whitebox": {"enabled": False},
            "blackbox": {"attacks": []},
            "explanations": {"enabled": False},
            "bias": bias,
        }
    )
    return run_suite(model, ds, cfg)["bias"]


def test_audit_measures_the_audited_imagenet_model(tmp_path: Path) -> None:
    _write_generated(tmp_path, n=10)
    resnet = _resnet18()
    # Audited on two of its classes (plus "other"), it is measured on all 1000.
    mapped = rl.models.ClassMapped(resnet, [281, 385], num_outputs=1000)
    sec = _audit(mapped, tmp_path, ["tabby", "Indian elephant", "(other)"])
    assert "shape_bias_note" not in sec
    row = sec["shape_bias"]["audited model"]
    assert row["n"] == 6 and 0.0 <= row["shape_fraction"] + row["texture_fraction"] <= 1.0
    assert row["score"] is None or 0.0 <= row["score"] <= 1.0
    assert math.isclose(row["shape_fraction"] + row["texture_fraction"] + row["other_fraction"], 1)
    assert set(row["per_class"]) == set(CATEGORIES_16)
    assert sum(c["n"] for c in row["per_class"].values()) == 6
    assert "a seeded sample of 6 of the 10 conflicting ones" in row["stimuli"]
    assert [r["observer"] for r in row["references"]] == ["humans", "ResNet-50 (ImageNet)"]
    # The same measurement as the API's on the same sample.
    stim = open_cue_conflict(tmp_path, preprocessing=Preprocessing(input_size=(64, 64)))
    direct = shape_bias_imagenet(resnet, stim[stim.conflicting].subset(6, seed=0))
    assert direct.to_dict()["per_class"] == row["per_class"]

    # The report draws the references beside the score and names their source.
    from robustlens.report.sections.bias import render

    blocks, _ = render(sec)
    said = " ".join(getattr(b, "text", "") for b in blocks)
    assert "humans 0.96, ResNet-50 (ImageNet) 0.22" in said and "Geirhos et al. 2019" in said
    assert any("published references" in getattr(b, "alt", "") for b in blocks)


IMAGENET = [str(i) for i in range(1000)]


def _audit_shape_bias(model: nn.Module, stimuli: Path | None, classes: list[str]) -> dict:
    """The audit's shape-bias step alone (what its bias section runs after the corruptions)."""
    from robustlens.evaluation.config import BiasConfig
    from robustlens.evaluation.suite import _shape_bias

    ds = rl.data.ImageDataset(
        torch.rand(2, 3, 64, 64), torch.tensor([0, 1]), classes=classes, name="photos"
    )
    bc = BiasConfig(shape_stimuli=6, cue_conflict="" if stimuli is None else str(stimuli))
    return _shape_bias(model, ds, bc, 0, lambda _: None)


def test_audit_without_the_stimuli_says_how_to_get_them() -> None:
    sec = _audit_shape_bias(_resnet18(), None, IMAGENET)
    assert "shape_bias" not in sec
    note = sec["shape_bias_note"]["note"]
    assert "ImageNet (1000-class) model" in note
    assert "git clone https://github.com/rgeirhos/texture-vs-shape" in note
    assert "--cue-conflict" in note


def test_audit_of_another_model_measures_nothing_in_its_place(tmp_path: Path) -> None:
    _write_generated(tmp_path, n=4)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 2))
    sec = _audit_shape_bias(model, tmp_path, ["a", "b"])
    assert "shape_bias" not in sec
    assert "nor the 1000 ImageNet classes (it has 2 outputs)" in sec["shape_bias_note"]["note"]


def test_audit_checks_the_stimuli_folder_first(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="holds no category folder"):
        _audit(_resnet18(), tmp_path, IMAGENET)


def test_cli_passes_the_folder_to_the_suite(tmp_path: Path) -> None:
    from robustlens.cli import _suite_config, build_parser

    args = build_parser().parse_args(["audit", "--quick", "--cue-conflict", str(tmp_path)])
    assert _suite_config(args).bias.cue_conflict == str(tmp_path)


def test_report_refuses_malformed_references() -> None:
    from robustlens.errors import ParameterError
    from robustlens.report.sections.bias import render

    with pytest.raises(ParameterError, match=r"references\[0\] must be"):
        render({"shape_bias": {"score": 0.3, "n": 4, "references": [{"score": 0.9}]}})
