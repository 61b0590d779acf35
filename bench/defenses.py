"""Defenses on Fashion-MNIST: naive vs adaptive attacks, side by side with ART's BPDA where it has one.

For each input-transformation defense in front of the zoo model ``fmnist-cnn``, the accuracy on
N test images at eps (Linf) under the naive PGD (run as if the defense were absent) and under the
adaptive attack (``rl.attacks.adaptive``: BPDA and/or EOT, as probing calls for, around PGD or,
with ``--adaptive-attack apgd``, APGD-CE; for TVM and quilting, whose backward passes are declared,
the per-image worst case of that pass and the identity), next to the undefended model under the
same attacks.
Every adversarial image is judged by a fresh call of the defended model (a new random draw for
randomized defenses); for those, the accuracies are also averaged over ``--judge-draws`` fresh
draws (each with its own clean draw), the same expected value with far less noise.
ART (adversarial-robustness-toolbox) runs the same PGD
through its own JPEG and feature-squeezing preprocessors, whose backward pass is the identity
(ART's BPDA). Results are written after each defense, so an interrupted run keeps what it did::

    python -m venv --system-site-packages /tmp/bench
    /tmp/bench/bin/pip install adversarial-robustness-toolbox
    /tmp/bench/bin/python bench/defenses.py --n 1000 --eps 0.1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import robustlens as rl
from robustlens.attacks import APGD, PGD, Attack, Ensemble, adaptive
from robustlens.defenses import JPEG, TVM, BitDepth, CropRescale, defend
from robustlens.defenses.quilting import Quilting


def correct(model: nn.Module, x: Tensor, y: Tensor, batch: int = 250) -> Tensor:
    """(N,) bool: one fresh call of ``model``, ``batch`` images at a time, gets the label right."""
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)]) == y


def judged(model: nn.Module, x_adv: Tensor, y: Tensor, clean: Tensor, batch: int = 250) -> float:
    """Accuracy on ``x_adv`` by a fresh call, counting only images correct before the attack."""
    return float((clean & correct(model, x_adv, y, batch)).double().mean())


def judged_expected(
    model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, draws: int, batch: int
) -> float:
    """``judged`` averaged over ``draws`` fresh calls of a randomized model, each with its own
    clean draw: the same expected value as one call, with a fraction of its variance."""
    return (
        sum(judged(model, x_adv, y, correct(model, x, y, batch), batch) for _ in range(draws))
        / draws
    )


def run_attack(
    attack: Attack, model: nn.Module, x: Tensor, y: Tensor, batch: int
) -> tuple[Tensor, float, dict[str, int]]:
    """The adversarial images, the seconds taken, and (for an ensemble) the images each member
    fooled first."""
    start = time.perf_counter()
    parts, contribution = [], Counter[str]()
    for i in range(0, len(x), batch):
        res = attack(model, x[i : i + batch], y[i : i + batch])
        parts.append(res.x_adv)
        contribution.update(res.details.get("contribution", {}))
    return torch.cat(parts), time.perf_counter() - start, dict(contribution)


def art_pgd(
    model: nn.Module, pre_name: str, x: Tensor, y: Tensor, eps: float, steps: int, batch: int
) -> tuple[Tensor, float] | None:
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.defences.preprocessor import FeatureSqueezing, JpegCompression
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return None
    defences = {
        "jpeg": lambda: JpegCompression(
            clip_values=(0.0, 1.0), quality=75, channels_first=True, apply_predict=True
        ),
        "bitdepth": lambda: FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=4),
    }
    if pre_name not in defences:
        return None

    class AsFloat(nn.Module):  # ART's feature squeezing hands the model float64 arrays
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, v: Tensor) -> Tensor:
            return self.inner(v.float())

    clf = PyTorchClassifier(
        model=AsFloat(),
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        preprocessing_defences=[defences[pre_name]()],
    )
    pgd = ProjectedGradientDescent(
        clf,
        norm=np.inf,
        eps=eps,
        eps_step=2.5 * eps / steps,
        max_iter=steps,
        batch_size=batch,
        verbose=False,
    )
    start = time.perf_counter()
    x_adv = pgd.generate(x.numpy(), y=y.numpy())
    return torch.from_numpy(x_adv).float(), time.perf_counter() - start


def render(result: dict[str, object]) -> str:
    """The markdown table of a results file."""
    und: dict[str, float] = result["undefended"]  # type: ignore[assignment]
    lines = [
        "| defense | clean | naive PGD | adaptive (robustlens) | attack | seconds | ART BPDA | ART seconds |",
        "|---|---|---|---|---|---|---|---|",
        f"| none | {und['clean']:.1%} | {und['pgd']:.1%} | {und['pgd']:.1%} | PGD | "
        f"{und['seconds']:.0f} | | |",
    ]
    for row in result["defenses"].values():  # type: ignore[attr-defined]
        art = f"{row['art_bpda']:.1%}" if "art_bpda" in row else "n/a"
        art_s = f"{row['art_seconds']:.0f}" if "art_seconds" in row else ""
        naive, adapt = (
            f"{row[k]:.1%}"
            + (
                f" ({row[k + '_expected']:.1%} over {row['judge_draws']} draws)"
                if k + "_expected" in row
                else ""
            )
            for k in ("naive", "adaptive")
        )
        lines.append(
            f"| {row['defense']} | {row['clean']:.1%} | {naive} | {adapt} | "
            f"{row['adaptive_attack']} | {row['adaptive_seconds']:.0f} | {art} | {art_s} |"
        )
    return "\n".join(lines)


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One results file from the shards of a run: rates weighted by each shard's images, seconds
    summed (core-seconds when the shards ran side by side), contributions summed."""
    keys = ("n", "eps", "steps", "samples", "quilting_samples", "adaptive_attack")
    if any(part[k] != parts[0][k] for part in parts for k in keys):
        raise SystemExit(f"--merge: the shards differ in one of {keys}; merge shards of one run")
    sizes = [int(part["images"]) for part in parts]
    if sum(sizes) != parts[0]["n"]:
        raise SystemExit(f"--merge: the shards cover {sum(sizes)} images, not --n {parts[0]['n']}")

    def combine(rows: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in rows[0].items():
            values = [row[key] for row in rows]
            if key.endswith("seconds"):
                out[key] = sum(values)
            elif isinstance(value, float) and not key.startswith("gap_"):
                out[key] = sum(v * w for v, w in zip(values, sizes, strict=True)) / sum(sizes)
            elif isinstance(value, dict):
                out[key] = dict(sum((Counter(v) for v in values), Counter()))
            else:
                out[key] = value
        return out

    merged = {k: parts[0][k] for k in ("machine", "torch", *keys)}
    merged["shards"] = [part["command"] for part in parts]
    merged["undefended"] = combine([part["undefended"] for part in parts])
    merged["defenses"] = {
        name: combine([part["defenses"][name] for part in parts]) for name in parts[0]["defenses"]
    }
    base = merged["undefended"]["adaptive_base"]
    for row in merged["defenses"].values():
        row["gap_to_undefended"] = row["adaptive"] - base
        if "adaptive_expected" in row:
            row["gap_expected"] = row["adaptive_expected"] - base
    return merged


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=20, help="PGD steps (default: 20)")
    p.add_argument("--samples", type=int, default=4, help="EOT draws per gradient (default: 4)")
    p.add_argument("--quilting-size", type=int, default=100_000, help="patch database size")
    p.add_argument(
        "--quilting-samples", type=int, default=2, help="EOT draws for quilting (default: 2)"
    )
    p.add_argument(
        "--adaptive-attack",
        choices=["pgd", "apgd", "apgd-t"],
        default="pgd",
        help="the attack that BPDA/EOT wrap: the naive PGD, APGD-CE (step-size control, "
        "steadier under EOT's noisy gradients), or APGD-CE then APGD-T over 9 target classes "
        "on the images it leaves (Ensemble.standard without Square)",
    )
    p.add_argument(
        "--adaptive-steps", type=int, help="steps of the adaptive attack (default: --steps)"
    )
    p.add_argument("--batch", type=int, default=250)
    p.add_argument(
        "--only",
        nargs="*",
        default=["jpeg", "bitdepth", "tvm", "quilting", "crop"],
        help="defenses to run",
    )
    p.add_argument("--no-peer", action="store_true", help="skip ART")
    p.add_argument(
        "--shard",
        default="0/1",
        help="I/M: attack only images I, I+M, I+2M, ... of the N (to split a run over processes)",
    )
    p.add_argument(
        "--judge-draws",
        type=int,
        default=16,
        help="for a randomized defense, also record its accuracies averaged over this many fresh "
        "draws (`naive_expected`, `adaptive_expected`; default: 16)",
    )
    p.add_argument(
        "--save-adv", metavar="DIR", help="save each defense's adaptive adversarial images here"
    )
    p.add_argument("--out", default="bench/results/defenses.json")
    p.add_argument("--render", metavar="JSON", help="print the markdown table of a results file")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="write the shards' results files as one to --out, and print its table",
    )
    args = p.parse_args()
    if args.merge:
        merged = merge([json.loads(Path(f).read_text()) for f in args.merge])
        Path(args.out).write_text(json.dumps(merged, indent=2))
        print(render(merged))
        return
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return

    test = rl.data.load("fashion-mnist", split="test").subset(args.n, seed=0)
    shard, shards = (int(v) for v in args.shard.split("/"))
    x, y = test.x[shard::shards], test.y[shard::shards]
    model = rl.zoo.load("fmnist-cnn")
    for q in model.parameters():
        q.requires_grad_(False)
    pgd = PGD(eps=args.eps, steps=args.steps)
    adaptive_steps = args.adaptive_steps or args.steps
    bases: dict[str, Callable[[], Attack]] = {
        "pgd": lambda: PGD(eps=args.eps, steps=adaptive_steps),
        "apgd": lambda: APGD(eps=args.eps, steps=adaptive_steps),
        "apgd-t": lambda: Ensemble.standard(args.eps, steps=adaptive_steps, square_queries=0),
    }
    base = bases[args.adaptive_attack]()
    clean_und = correct(model, x, y, args.batch)
    x_und, t_und, _ = run_attack(pgd, model, x, y, args.batch)
    undefended = judged(model, x_und, y, clean_und)
    print(
        f"undefended: clean {float(clean_und.double().mean()):.4f}, PGD {undefended:.4f} ({t_und:.0f} s)"
    )
    undefended_base = undefended
    if base != pgd:  # the target compares the adaptive attack with itself on the bare model
        undefended_base = judged(model, run_attack(base, model, x, y, args.batch)[0], y, clean_und)
        print(f"undefended under {base.name}: {undefended_base:.4f}")

    def quilting() -> nn.Module:
        train = rl.data.load("fashion-mnist", split="train")
        return Quilting.from_images(
            train.x, patch=5, stride=5, k=10, size=args.quilting_size, seed=0
        )

    factories: dict[str, Callable[[], nn.Module]] = {
        "jpeg": lambda: JPEG(quality=75),
        "bitdepth": lambda: BitDepth(bits=4),
        "tvm": lambda: TVM(drop=0.5, weight=0.03, seed=0),
        "quilting": quilting,
        "crop": lambda: CropRescale(fraction=0.8, crops=10, seed=0),
    }
    out_path = Path(args.out)
    result: dict[str, object] = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "n": args.n,
        "images": len(x),
        "eps": args.eps,
        "steps": args.steps,
        "samples": args.samples,
        "quilting_samples": args.quilting_samples,
        "adaptive_attack": base.name,
        "undefended": {
            "clean": float(clean_und.double().mean()),
            "pgd": undefended,
            "seconds": t_und,
            "adaptive_base": undefended_base,
        },
        "defenses": {},
    }
    rows: dict[str, dict[str, object]] = result["defenses"]  # type: ignore[assignment]
    for name in args.only:
        pre = factories[name]()
        defended = defend(model, pre)
        clean = correct(defended, x, y, args.batch)
        x_naive, t_naive, _ = run_attack(pgd, defended, x, y, args.batch)
        draws = args.quilting_samples if name == "quilting" else args.samples
        strong = adaptive(base, defended, x[:16], samples=draws)
        x_adapt, t_adapt, contribution = run_attack(strong, defended, x, y, args.batch)
        row: dict[str, object] = {
            "defense": repr(pre),
            "clean": float(clean.double().mean()),
            "naive": judged(defended, x_naive, y, clean),
            "adaptive": judged(defended, x_adapt, y, clean),
            "adaptive_attack": strong.name,
            "fooled_first_by": contribution,
            "naive_seconds": t_naive,
            "adaptive_seconds": t_adapt,
            "gap_to_undefended": None,
        }
        row["gap_to_undefended"] = float(row["adaptive"]) - undefended_base  # type: ignore[arg-type]
        if getattr(pre, "randomized", False) and args.judge_draws > 0:
            for key, x_adv in (("naive", x_naive), ("adaptive", x_adapt)):
                row[f"{key}_expected"] = judged_expected(
                    defended, x, x_adv, y, args.judge_draws, args.batch
                )
            row["judge_draws"] = args.judge_draws
            row["gap_expected"] = float(row["adaptive_expected"]) - undefended_base  # type: ignore[arg-type]
        if args.save_adv:
            Path(args.save_adv).mkdir(parents=True, exist_ok=True)
            torch.save(
                {"x_adv": x_adapt, "y": y, "shard": args.shard},
                Path(args.save_adv) / f"{name}_{args.shard.replace('/', 'of')}.pt",
            )
        if not args.no_peer:
            peer = art_pgd(model, name, x, y, args.eps, args.steps, args.batch)
            if peer is not None:
                row["art_bpda"] = judged(defended, peer[0], y, clean)
                row["art_seconds"] = peer[1]
        rows[name] = row
        print(json.dumps({name: row}), flush=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2))
    print(render(result))


if __name__ == "__main__":
    main()
