"""Robust accuracy: PGD-40, APGD-CE, APGD-T and robustlens' standard ensemble against the AutoAttack
components of torchattacks (the original AutoAttack is not on PyPI), on the zoo Fashion-MNIST
models, in one run.

Robust accuracy = fraction of all N images still correctly classified after the attack (worst case
per image for ensembles). Not part of the test suite::

    python -m venv --system-site-packages /tmp/bench && /tmp/bench/bin/pip install --no-deps torchattacks
    /tmp/bench/bin/python bench/robust_accuracy.py --n 1000 --eps 0.1 0.02
"""

from __future__ import annotations

# ruff: noqa: B023  (the attack closures run inside the loop iteration that defines them)
import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

import robustlens as rl


def robust(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
    with torch.no_grad():
        return (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--eps", type=float, nargs="+", default=[0.1])
    p.add_argument(
        "--models",
        nargs="+",
        default=[m for m in ("fmnist-cnn", "fmnist-cnn-adv") if m in rl.zoo.names()],
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--only",
        help="comma-separated substrings: run only the attacks whose label contains one of them",
    )
    p.add_argument("--out", default="bench/results/robust_accuracy.json")
    args = p.parse_args()
    wanted = [w.strip() for w in args.only.split(",")] if args.only else None
    device = torch.device(args.device)
    ds = rl.data.load("fashion-mnist", split="test").subset(args.n, seed=0)
    x, y = ds.x.to(device), ds.y.to(device)
    try:
        import torchattacks as ta
    except ImportError:
        ta = None
        print("torchattacks not installed: peers skipped", file=sys.stderr)
    rows = []
    for name in args.models:
        model = rl.zoo.load(name, device=device)
        for q in model.parameters():
            q.requires_grad_(False)
        with torch.no_grad():
            clean = float((model(x).argmax(1) == y).double().mean())
        contributions: list[dict[str, int]] = []

        def ensemble(eps: float, square_queries: int = 5000) -> Tensor:
            attack = rl.attacks.Ensemble.standard(eps=eps, square_queries=square_queries)
            res = attack(model, x, y)
            contributions.append(res.details["contribution"])
            return res.x_adv

        for eps in args.eps:
            runs: dict[str, Callable[[], Tensor]] = {
                "robustlens PGD-40 (step eps/4)": lambda: (
                    rl.attacks.PGD(eps=eps, steps=40, step=eps / 4)(model, x, y).x_adv
                ),
                "robustlens PGD-40, 10 restarts": lambda: (
                    rl.attacks.PGD(eps=eps, steps=40, restarts=10)(model, x, y).x_adv
                ),
                "robustlens APGD-CE": lambda: rl.attacks.APGD(eps=eps)(model, x, y).x_adv,
                "robustlens APGD-T": lambda: (
                    rl.attacks.APGD(eps=eps, loss="dlr", targets=9)(model, x, y).x_adv
                ),
                "robustlens Ensemble.standard": lambda: ensemble(eps),
                # the like-for-like cascade against AutoAttack's first two members
                "robustlens APGD-CE -> APGD-T (Ensemble, no Square)": lambda: ensemble(eps, 0),
            }
            if ta is not None:
                runs["torchattacks APGD-CE"] = lambda: ta.APGD(
                    model, eps=eps, steps=100, loss="ce"
                )(x, y)
                runs["torchattacks APGD-T"] = lambda: ta.APGDT(
                    model, eps=eps, steps=100, n_classes=10
                )(x, y)
                # AutoAttack's order: APGD-T only on the points APGD-CE left robust
                runs["torchattacks APGD-CE -> APGD-T (MultiAttack cascade)"] = lambda: (
                    ta.MultiAttack(
                        [
                            ta.APGD(model, eps=eps, steps=100, loss="ce"),
                            ta.APGDT(model, eps=eps, steps=100, n_classes=10),
                        ]
                    )(x, y)
                )
            if wanted is not None:
                runs = {k: f for k, f in runs.items() if any(w in k for w in wanted)}
            results: dict[str, Tensor] = {}
            for label, fn in runs.items():
                t0 = time.perf_counter()
                x_adv = fn()
                seconds = time.perf_counter() - t0
                results[label] = robust(model, x, y, x_adv)
                row = {
                    "model": name,
                    "eps": eps,
                    "attack": label,
                    "clean": clean,
                    "robust_accuracy": float(results[label].double().mean()),
                    "seconds": round(seconds, 2),
                }
                if label.startswith("robustlens") and "Ensemble" in label:
                    row["contribution"] = contributions.pop()
                rows.append(row)
                print(json.dumps(row), flush=True)
            if {"torchattacks APGD-CE", "torchattacks APGD-T"} <= results.keys():
                both = results["torchattacks APGD-CE"] & results["torchattacks APGD-T"]
                pair = ("torchattacks APGD-CE", "torchattacks APGD-T")
                secs = sum(r["seconds"] for r in rows if r["eps"] == eps and r["attack"] in pair)
                rows.append(
                    {
                        "model": name,
                        "eps": eps,
                        "attack": "torchattacks APGD-CE + APGD-T on all points (worst case)",
                        "clean": clean,
                        "robust_accuracy": float(both.double().mean()),
                        "seconds": round(secs, 2),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    meta = {
        "n": args.n,
        "device": str(device),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "command": "python bench/robust_accuracy.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("| model | eps | attack | clean | robust accuracy | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['eps']} | {r['attack']} | {r['clean']:.1%} | "
            f"{r['robust_accuracy']:.1%} | {r['seconds']:.1f} |"
        )
        if "contribution" in r:
            print(f"  images each ensemble member fooled first: {r['contribution']}")


if __name__ == "__main__":
    main()
