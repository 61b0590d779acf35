"""What the zoo's models rely on: shape bias, a planted cue, and random corruptions.

Three parts (``--part``, default all of them), each printed as a markdown table and written to one
JSON file (``--out``; a run of some parts keeps the other parts already in that file):

- **shape**: the Geirhos shape bias (shape / (shape + texture decisions)) and the fractions of
  shape, texture and other decisions of the zoo's ``shapes-cnn`` on ``--n`` cue-conflict stimuli
  (default 2000, seed 1: the ``shapes-cue-conflict`` test split). As references, the bench
  trains four models itself with ``rl.training.fit``, with the architecture and recipe of
  ``shapes-cnn``'s zoo command (read from ``rl.zoo.info``) but ``--epochs`` epochs (default 6
  instead of 15; every reference reaches >= 97% training accuracy): on ``shapes-shape-only``
  (silhouettes) and on ``shapes-texture-only`` (textures), the pure-cue sets, and on the
  ``shapes-cue-conflict`` training split labelled by shape and by texture, where the other cue is
  there but useless, which pins the ends of the scale (1 and 0). Each model's accuracy on the
  aligned, shape-only and texture-only test splits and its most frequent answer to the stimuli are
  listed beside its score.
- **cue**: ``rl.bias.cue_reliance`` of ``fmnist-cnn-patch`` (trained with the corner-patch cue at
  strength 0.9) and of ``fmnist-cnn`` (trained without it) for the patch cue, on the Fashion-MNIST
  test set (all 10,000 images by default, ``--n`` for a stratified subset; cue seed 0): clean
  accuracy, accuracy with the cue aligned and conflicting, their gap, and how often the model
  follows a lying cue, against the rate a model that ignores the cue would follow it by accident,
  ``(1 - conflicting accuracy) / (K - 1)``.
- **corruptions**: accuracy of ``fmnist-cnn`` and ``fmnist-cnn-adv`` under every registered
  corruption at severities 1-5 on ``--n`` Fashion-MNIST test images (default 1000, stratified,
  seed 0), the mean over severities per corruption, and the corruption errors of
  ``fmnist-cnn-adv`` with ``fmnist-cnn`` as the baseline (CE and mCE x100, relative CE and mCE, as
  Hendrycks and Dietterich define them). Both models see exactly the same corrupted images.

Run (about 10 minutes on an idle core, 7 of them for the shape part's four trainings; the JSON
records each part's wall and CPU seconds)::

    OMP_NUM_THREADS=1 python bench/bias.py

``--render FILE`` prints the tables of a results file again.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

import robustlens as rl
from robustlens.bias.corruptions import CORRUPTIONS, corruption_robustness, names
from robustlens.data.dataset import ImageDataset
from robustlens.training import TrainConfig, accuracy, channel_stats, fit

PARTS = ("shape", "cue", "corruptions")
DEFAULT_N = {"shape": 2000, "cue": 10_000, "corruptions": 1000}
STIMULI_SEED = 1  # the seed of the shapes-* test splits
CUE_SEED = 0
SHAPE_SETS = ("aligned", "shape-only", "texture-only")

Log = Callable[[str], None]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- shape bias


def zoo_recipe(name: str, epochs: int) -> tuple[str, TrainConfig]:
    """The architecture and training configuration of a zoo model, with ``epochs`` epochs."""
    info = rl.zoo.info(name)
    argv = shlex.split(info["command"])
    arch = argv[argv.index("--arch") + 1]
    known = {f.name for f in fields(TrainConfig)}
    config = {k: v for k, v in info["config"].items() if k in known}
    return arch, TrainConfig(**{**config, "epochs": epochs})


def train_reference(
    train: ImageDataset, arch: str, config: TrainConfig, log: Log
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``arch`` on ``train`` as ``robustlens train`` does (seeded, normalisation inside)."""
    c, h, _ = train.shape
    torch.manual_seed(config.seed)
    net = rl.models.create(arch, in_channels=c, num_classes=train.num_classes, image_size=h)
    mean, std = channel_stats(train)
    model = rl.models.Normalized(net, mean, std)
    start = time.perf_counter()
    history = fit(model, train, config=config, log=log)
    return model, {
        "train_seconds": time.perf_counter() - start,
        "loss": history.loss,
        "train_accuracy": history.train_accuracy,
        "config": history.config,
    }


def references() -> list[tuple[str, str, Callable[[], ImageDataset]]]:
    """The reference models' names, training-set descriptions and training sets.

    The first two are the pure-cue sets; the last two are the cue-conflict training split
    (``shapes-cue-conflict``, seed 0) labelled by shape and by texture, where the other cue is
    present but useless, so the scores are ~1 and ~0 by construction.
    """

    def conflict(label: Literal["shape", "texture"]) -> Callable[[], ImageDataset]:
        n, seed = 10_000, 0  # the train split of the shapes-* sets
        return lambda: rl.data.cue_conflict(n, size=32, seed=seed).dataset(label)

    return [
        (
            "shape-only",
            "`shapes-shape-only` (silhouettes)",
            lambda: rl.data.load("shapes-shape-only", split="train"),
        ),
        (
            "texture-only",
            "`shapes-texture-only` (textures)",
            lambda: rl.data.load("shapes-texture-only", split="train"),
        ),
        ("conflict-by-shape", "`shapes-cue-conflict` labelled by shape", conflict("shape")),
        ("conflict-by-texture", "`shapes-cue-conflict` labelled by texture", conflict("texture")),
    ]


def run_shape(n: int, epochs: int, log: Log) -> dict[str, Any]:
    start = time.perf_counter()
    stimuli = rl.data.cue_conflict(n, size=32, seed=STIMULI_SEED)
    tests = {kind: rl.data.load(f"shapes-{kind}", split="test") for kind in SHAPE_SETS}
    arch, config = zoo_recipe("shapes-cnn", epochs)
    zoo = rl.zoo.info("shapes-cnn")
    models: dict[str, tuple[nn.Module, dict[str, Any]]] = {
        "shapes-cnn": (
            rl.zoo.load("shapes-cnn"),
            {
                "source": "zoo",
                "trained_on": "`shapes-aligned` (zoo)",
                "epochs": zoo["config"]["epochs"],
            },
        )
    }
    for name, trained_on, train_set in references():
        log(f"shape: training {arch} on {name} for {epochs} epochs")
        model, history = train_reference(train_set(), arch, config, log)
        models[name] = (
            model,
            {
                "source": "trained by the bench",
                "trained_on": trained_on,
                "epochs": epochs,
                "history": history,
            },
        )
    rows = {}
    for name, (model, meta) in models.items():
        bias = rl.bias.shape_bias(model, stimuli)
        with torch.inference_mode():
            answers = torch.bincount(model(stimuli.x).argmax(1), minlength=stimuli.num_classes)
        top = int(answers.argmax())
        rows[name] = {
            **meta,
            "test_accuracy": {kind: accuracy(model, ds) for kind, ds in tests.items()},
            "shape_bias": bias.to_dict(),
            "answers": answers.tolist(),
            "top_answer": {"class": stimuli.classes[top], "fraction": float(answers[top]) / n},
        }
    return {
        "stimuli": {"n": n, "size": 32, "seed": STIMULI_SEED, "classes": stimuli.classes},
        "reference_recipe": {"arch": arch, **asdict(config)},
        "zoo_command": zoo["command"],
        "models": rows,
        "seconds": time.perf_counter() - start,
    }


def render_shape(res: dict[str, Any]) -> str:
    stim = res["stimuli"]
    lines = [
        f"Shape bias on {stim['n']} cue-conflict stimuli ({stim['size']}x{stim['size']}, seed "
        f"{stim['seed']}); shape / texture / other: fractions of the stimuli answered by the "
        "class of their shape, of their texture, or neither; *top answer*: the class the model "
        "gives most often to the stimuli, and how often. Accuracy on the 2000-image test splits "
        "of the aligned set, the silhouettes (shape-only) and the textures (texture-only). The "
        f"references are the zoo recipe ({res['reference_recipe']['arch']}, one-cycle AdamW, "
        "shift augmentation, seed 0) trained by the bench.",
        "",
        "| model | trained on | epochs | aligned | silhouettes | textures | shape bias "
        "| shape | texture | other | top answer |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, row in res["models"].items():
        acc, sb, top = row["test_accuracy"], row["shape_bias"], row["top_answer"]
        score = "n/a" if sb["score"] is None else f"**{sb['score']:.3f}**"
        lines.append(
            f"| `{name}` | {row['trained_on']} | {row['epochs']} | {acc['aligned']:.1%} | "
            f"{acc['shape-only']:.1%} | {acc['texture-only']:.1%} | {score} | "
            f"{sb['shape_fraction']:.1%} | {sb['texture_fraction']:.1%} | "
            f"{sb['other_fraction']:.1%} | {top['class']} {top['fraction']:.0%} |"
        )
    zoo = res["models"]["shapes-cnn"]["shape_bias"]["per_class"]
    per_class = ", ".join(
        f"{name} {c['score']:.2f}" if c["score"] is not None else f"{name} n/a"
        for name, c in zoo.items()
    )
    lines += ["", f"Per shape class, `shapes-cnn`: {per_class}."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- planted cue


def run_cue(n: int) -> dict[str, Any]:
    start = time.perf_counter()
    test = rl.data.load("fashion-mnist", split="test").subset(n, seed=0)
    rows = {}
    for name in ("fmnist-cnn-patch", "fmnist-cnn"):
        res = rl.bias.cue_reliance(rl.zoo.load(name), test, "patch", seed=CUE_SEED)
        chance = (1.0 - res.conflicting_accuracy) / (test.num_classes - 1)
        rows[name] = {
            **res.to_dict(),
            "chance_following": chance,
            "trained_on": rl.zoo.info(name)["dataset"],
        }
    return {
        "n": len(test),
        "kind": "patch",
        "seed": CUE_SEED,
        "models": rows,
        "seconds": time.perf_counter() - start,
    }


def render_cue(res: dict[str, Any]) -> str:
    lines = [
        f"Patch cue on {res['n']} Fashion-MNIST test images (cue seed {res['seed']}): accuracy "
        "without the cue, with every cue naming the true class (aligned) and with every cue naming "
        "another class (conflicting); *follows the cue*: conflicting images classified as the "
        "class their cue names; *by accident*: the rate a model that ignores the cue would reach, "
        "(1 - conflicting accuracy) / 9.",
        "",
        "| model | trained on | clean | cue aligned | cue conflicting | gap | follows the cue "
        "| by accident |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in res["models"].items():
        lines.append(
            f"| `{name}` | `{r['trained_on']}` | {r['clean_accuracy']:.1%} | "
            f"{r['aligned_accuracy']:.1%} | {r['conflicting_accuracy']:.1%} | "
            f"**{r['gap']:.3f}** | {r['cue_following']:.1%} | {r['chance_following']:.1%} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- corruptions


def run_corruptions(n: int, seed: int, batch: int, only: list[str] | None) -> dict[str, Any]:
    test = rl.data.load("fashion-mnist", split="test").subset(n, seed=0)
    start = time.perf_counter()
    base = corruption_robustness(rl.zoo.load("fmnist-cnn"), test, only, batch_size=batch, seed=seed)
    t_base = time.perf_counter() - start
    start = time.perf_counter()
    res = corruption_robustness(
        rl.zoo.load("fmnist-cnn-adv"), test, only, baseline=base, batch_size=batch, seed=seed
    )
    t_adv = time.perf_counter() - start
    return {
        "n": len(test),
        "seed": seed,
        "families": {c: CORRUPTIONS.get(c).family for c in base.corruptions},
        "fmnist-cnn": {**base.to_dict(), "seconds": t_base},
        "fmnist-cnn-adv": {**res.to_dict(), "seconds": t_adv},
        "seconds": t_base + t_adv,
    }


def _number(value: float | None, fmt: str) -> str:
    return "n/a" if value is None or math.isnan(value) else format(value, fmt)


def render_corruptions(res: dict[str, Any]) -> str:
    std, adv = res["fmnist-cnn"], res["fmnist-cnn-adv"]
    lines = [
        f"Fashion-MNIST test, n = {res['n']} (stratified, seed 0), accuracy averaged over "
        f"severities 1-5, corruption seed {res['seed']}; CE of fmnist-cnn-adv with fmnist-cnn as "
        "the baseline (x100; < 100 is better).",
        "",
        "| corruption | family | fmnist-cnn | fmnist-cnn-adv | CE | relative CE |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        f"| clean | | {std['clean_accuracy']:.3f} | {adv['clean_accuracy']:.3f} | | |",
    ]
    for c in std["corruptions"]:
        lines.append(
            f"| {c} | {res['families'][c]} | {std['corruption_accuracy'][c]:.3f} | "
            f"{adv['corruption_accuracy'][c]:.3f} | {_number(adv['ce'][c], '.1f')} | "
            f"{_number(adv['relative_ce'][c], '.1f')} |"
        )
    lines.append(
        f"| **mean** | | {std['mean_accuracy']:.3f} | {adv['mean_accuracy']:.3f} | "
        f"**mCE {_number(adv['mce'], '.1f')}** | "
        f"**rel. mCE {_number(adv['relative_mce'], '.1f')}** |"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- driver

RENDER = {"shape": render_shape, "cue": render_cue, "corruptions": render_corruptions}
TITLES = {
    "shape": "Shape bias",
    "cue": "Planted cue: fmnist-cnn-patch vs fmnist-cnn",
    "corruptions": "Corruptions: fmnist-cnn vs fmnist-cnn-adv",
}


def render(result: dict[str, Any]) -> str:
    """The markdown tables of the parts present in ``result``."""
    return "\n\n".join(
        f"### {TITLES[part]}\n\n{RENDER[part](result[part])}" for part in PARTS if part in result
    )


def parse_parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"--part takes a comma-separated list of {', '.join(PARTS)}, got {text!r}"
        )
    return [p for p in PARTS if p in parts]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--part", type=parse_parts, default=list(PARTS), help="shape,cue,corruptions")
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="stimuli / test images of every part run (default: shape 2000, cue 10000, "
        "corruptions 1000)",
    )
    p.add_argument("--epochs", type=int, default=6, help="epochs of the shape references")
    p.add_argument("--seed", type=int, default=0, help="seed of the corruptions")
    p.add_argument("--batch", type=int, default=500, help="batch size of the corruption part")
    p.add_argument("--only", nargs="+", default=None, choices=names(), metavar="CORRUPTION")
    p.add_argument("--out", default="bench/results/bias.json")
    p.add_argument("--render", metavar="JSON", help="print the tables of a results file")
    args = p.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    if args.n is not None and args.n < 1:
        p.error(f"--n must be >= 1, got {args.n}")
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")

    out = Path(args.out)
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    result.update(
        {
            "command": "OMP_NUM_THREADS=1 python " + shlex.join(sys.argv),
            "machine": f"{platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads",
            "torch": torch.__version__,
        }
    )
    for part in args.part:
        n = args.n or DEFAULT_N[part]
        _log(f"{part}: n = {n}")
        cpu = time.process_time()
        if part == "shape":
            result[part] = run_shape(n, args.epochs, _log)
        elif part == "cue":
            result[part] = run_cue(n)
        else:
            result[part] = run_corruptions(n, args.seed, args.batch, args.only)
        result[part]["command"] = result["command"]
        result[part]["cpu_seconds"] = time.process_time() - cpu
        _log(f"{part}: {result[part]['seconds']:.0f} s")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    print(render({part: result[part] for part in args.part}))
    seconds = ", ".join(
        f"{part} {result[part]['seconds']:.0f} s ({result[part]['cpu_seconds']:.0f} s CPU)"
        for part in args.part
    )
    print(f"\n({seconds}; written to {out})")


if __name__ == "__main__":
    main()
