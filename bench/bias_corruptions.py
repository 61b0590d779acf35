"""Corruption robustness of the zoo's Fashion-MNIST models: standard vs adversarially trained.

Accuracy of ``fmnist-cnn`` and ``fmnist-cnn-adv`` under every registered corruption
(``rl.bias.corruptions.names()``) at severities 1-5 on N Fashion-MNIST test images (a stratified
subset, seed 0), the mean over severities per corruption, and the corruption errors of
``fmnist-cnn-adv`` with ``fmnist-cnn`` as the baseline (CE and mCE x100, relative CE and mCE, as
Hendrycks and Dietterich define them). Both models see exactly the same corrupted images::

    python bench/bias_corruptions.py --n 1000

prints a markdown table and writes ``bench/results/bias_corruptions.json``;
``--render FILE`` prints the table of a results file again.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

import robustlens as rl
from robustlens.bias.corruptions import CORRUPTIONS, corruption_robustness, names


def render(result: dict[str, Any]) -> str:
    """The results as a markdown table, one row per corruption."""
    std, adv = result["fmnist-cnn"], result["fmnist-cnn-adv"]
    lines = [
        f"Fashion-MNIST test, n = {result['n']}, severities 1-5 (mean), seed {result['seed']}; "
        "CE of fmnist-cnn-adv with fmnist-cnn as the baseline (x100; < 100 is better).",
        "",
        "| corruption | family | fmnist-cnn | fmnist-cnn-adv | CE | relative CE |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        f"| clean | | {std['clean_accuracy']:.3f} | {adv['clean_accuracy']:.3f} | | |",
    ]
    for c in std["corruptions"]:
        lines.append(
            f"| {c} | {result['families'][c]} | {std['corruption_accuracy'][c]:.3f} | "
            f"{adv['corruption_accuracy'][c]:.3f} | {adv['ce'][c]:.1f} | "
            f"{adv['relative_ce'][c]:.1f} |"
        )
    lines.append(
        f"| **mean** | | {std['mean_accuracy']:.3f} | {adv['mean_accuracy']:.3f} | "
        f"**mCE {adv['mce']:.1f}** | **rel. mCE {adv['relative_mce']:.1f}** |"
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1000, help="test images (stratified subset)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corruptions")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--only", nargs="+", default=None, choices=names(), metavar="NAME")
    p.add_argument("--out", default="bench/results/bias_corruptions.json")
    p.add_argument("--render", metavar="JSON", help="print the markdown table of a results file")
    args = p.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return

    test = rl.data.load("fashion-mnist", split="test").subset(args.n, seed=0)
    standard = rl.zoo.load("fmnist-cnn")
    robust = rl.zoo.load("fmnist-cnn-adv")
    start = time.perf_counter()
    base = corruption_robustness(standard, test, args.only, batch_size=args.batch, seed=args.seed)
    t_base = time.perf_counter() - start
    start = time.perf_counter()
    res = corruption_robustness(
        robust, test, args.only, baseline=base, batch_size=args.batch, seed=args.seed
    )
    t_adv = time.perf_counter() - start
    result: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "n": len(test),
        "seed": args.seed,
        "families": {c: CORRUPTIONS.get(c).family for c in base.corruptions},
        "fmnist-cnn": {**base.to_dict(), "seconds": t_base},
        "fmnist-cnn-adv": {**res.to_dict(), "seconds": t_adv},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(render(result))
    print(f"\n({t_base:.0f} s and {t_adv:.0f} s; written to {out})")


if __name__ == "__main__":
    main()
