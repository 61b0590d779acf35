"""White-box attacks side by side: robustlens vs torchattacks, Foolbox and ART, in one run.

On the zoo's fmnist-cnn and the first N Fashion-MNIST test images (stratified, seed 0), each
library attacks the same images with the same budget; every output is scored the same way:
success rate over the images the model classified correctly, median normalised L2
``||x_adv - x|| / ||x||`` over the successful ones, and wall time.

Not part of the test suite. Needs the peers in a benchmark environment, for example::

    python -m venv --system-site-packages /tmp/bench && /tmp/bench/bin/pip install --no-deps torchattacks
    /tmp/bench/bin/pip install foolbox adversarial-robustness-toolbox
    /tmp/bench/bin/python bench/whitebox.py --n 1000

A peer that is not installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

import robustlens as rl

Runner = Callable[[nn.Module, Tensor, Tensor], Tensor]


def score(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, float]:
    with torch.no_grad():
        clean = model(x).argmax(1)
        adv = model(x_adv.to(x.device, x.dtype)).argmax(1)
    attacked = clean == y
    success = attacked & (adv != y)
    l2n = (x_adv - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    linf = (x_adv - x).flatten(1).abs().amax(1)
    ok = success
    return {
        "success_rate": float(success.sum()) / max(int(attacked.sum()), 1),
        "median_l2_normalized": float(l2n[ok].median()) if bool(ok.any()) else float("nan"),
        "max_linf": float(linf[attacked].max()),
        "in_range": bool(x_adv.min() >= 0 and x_adv.max() <= 1),
    }


def timed(fn: Callable[[], Tensor], device: torch.device) -> tuple[Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out.detach(), time.perf_counter() - t0


def floor_seconds(
    model: nn.Module, x: Tensor, y: Tensor, passes: int, device: torch.device
) -> float:
    """Time of ``passes`` forward+backward passes on the whole batch: the cost no attack avoids."""
    loss_fn = nn.CrossEntropyLoss()

    def run() -> Tensor:
        xa = x.clone()
        for _ in range(passes):
            xa.requires_grad_(True)
            loss = loss_fn(model(xa), y)
            (g,) = torch.autograd.grad(loss, xa)
            xa = (xa.detach() + 0.001 * g.sign()).clamp(0, 1)
        return xa

    return timed(run, device)[1]


def peers(eps: float, step: float, steps: int) -> dict[str, dict[str, Runner]]:
    """The peer implementations of each attack, with the same budgets as robustlens'."""
    out: dict[str, dict[str, Runner]] = {
        k: {} for k in ("FGSM", "I-FGSM", "PGD", "DeepFool", "C&W")
    }
    try:
        import torchattacks as ta

        out["FGSM"]["torchattacks"] = lambda m, x, y: ta.FGSM(m, eps=eps)(x, y)
        out["I-FGSM"]["torchattacks"] = lambda m, x, y: ta.BIM(m, eps=eps, alpha=step, steps=steps)(
            x, y
        )
        out["PGD"]["torchattacks"] = lambda m, x, y: ta.PGD(
            m, eps=eps, alpha=step, steps=2 * steps, random_start=True
        )(x, y)
        out["DeepFool"]["torchattacks"] = lambda m, x, y: ta.DeepFool(m, steps=50, overshoot=0.02)(
            x, y
        )
        out["C&W"]["torchattacks (c=1, no search)"] = lambda m, x, y: ta.CW(
            m, c=1, kappa=0, steps=900, lr=0.01
        )(x, y)
    except ImportError:
        print("torchattacks not installed: skipped", file=sys.stderr)
    try:
        import foolbox as fb

        def fbx(attack: object, epsilons: float | None) -> Runner:
            def run(m: nn.Module, x: Tensor, y: Tensor) -> Tensor:
                fm = fb.PyTorchModel(m, bounds=(0, 1), device=x.device)
                _, clipped, _ = attack(fm, x, y, epsilons=epsilons)  # type: ignore[operator]
                return clipped

            return run

        out["FGSM"]["foolbox"] = fbx(fb.attacks.LinfFastGradientAttack(random_start=False), eps)
        out["I-FGSM"]["foolbox"] = fbx(
            fb.attacks.LinfBasicIterativeAttack(abs_stepsize=step, steps=steps, random_start=False),
            eps,
        )
        out["PGD"]["foolbox"] = fbx(fb.attacks.LinfPGD(abs_stepsize=step, steps=2 * steps), eps)
        out["DeepFool"]["foolbox"] = fbx(
            fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02), None
        )
        out["C&W"]["foolbox"] = fbx(
            fb.attacks.L2CarliniWagnerAttack(
                binary_search_steps=9,
                steps=100,
                stepsize=0.01,
                initial_const=1e-3,
                abort_early=True,
            ),
            None,
        )
    except ImportError:
        print("foolbox not installed: skipped", file=sys.stderr)
    try:
        import numpy as np
        from art.attacks.evasion import (
            BasicIterativeMethod,
            CarliniL2Method,
            DeepFool,
            FastGradientMethod,
            ProjectedGradientDescent,
        )
        from art.estimators.classification import PyTorchClassifier

        def artx(make: Callable[[object], object], with_labels: bool = True) -> Runner:
            def run(m: nn.Module, x: Tensor, y: Tensor) -> Tensor:
                clf = PyTorchClassifier(
                    model=m,
                    loss=nn.CrossEntropyLoss(),
                    input_shape=tuple(x.shape[1:]),
                    nb_classes=10,
                    clip_values=(0.0, 1.0),
                    device_type="gpu" if x.is_cuda else "cpu",
                )
                attack = make(clf)
                labels = np.eye(10, dtype=np.float32)[y.cpu().numpy()] if with_labels else None
                adv = attack.generate(x.cpu().numpy(), labels)  # type: ignore[attr-defined]
                return torch.from_numpy(adv).to(x.device)

            return run

        out["FGSM"]["ART"] = artx(lambda c: FastGradientMethod(c, eps=eps, batch_size=1000))
        out["I-FGSM"]["ART"] = artx(
            lambda c: BasicIterativeMethod(
                c, eps=eps, eps_step=step, max_iter=steps, batch_size=1000, verbose=False
            )
        )
        out["PGD"]["ART"] = artx(
            lambda c: ProjectedGradientDescent(
                c,
                eps=eps,
                eps_step=step,
                max_iter=2 * steps,
                num_random_init=1,
                batch_size=1000,
                verbose=False,
            )
        )
        out["DeepFool"]["ART"] = artx(
            lambda c: DeepFool(
                c, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=1000, verbose=False
            ),
            False,
        )
        out["C&W"]["ART"] = artx(
            lambda c: CarliniL2Method(
                c,
                max_iter=100,
                binary_search_steps=9,
                learning_rate=0.01,
                initial_const=1e-3,
                batch_size=1000,
                verbose=False,
            )
        )
    except ImportError:
        print("adversarial-robustness-toolbox not installed: skipped", file=sys.stderr)
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", default="FGSM,I-FGSM,PGD,DeepFool,C&W")
    p.add_argument("--skip-peer", action="append", default=[], help="ATTACK:LIBRARY to leave out")
    p.add_argument("--out", default="bench/results/whitebox.json")
    p.add_argument("--merge", action="store_true", help="replace only the rows of --only in --out")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time each run this many times and report the median (for the one-second attacks)",
    )
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = rl.zoo.load("fmnist-cnn", device=device)
    for q in model.parameters():
        q.requires_grad_(False)
    ds = rl.data.load("fashion-mnist", split="test").subset(args.n, seed=0)
    x, y = ds.x.to(device), ds.y.to(device)
    eps, steps = args.eps, 20
    step = eps / 10
    ours: dict[str, Runner] = {
        "FGSM": lambda m, x, y: rl.attacks.FGSM(eps=eps)(m, x, y).x_adv,
        "I-FGSM": lambda m, x, y: rl.attacks.IFGSM(eps=eps, step=step, steps=steps)(m, x, y).x_adv,
        "PGD": lambda m, x, y: rl.attacks.PGD(eps=eps, step=step, steps=2 * steps)(m, x, y).x_adv,
        "DeepFool": lambda m, x, y: (
            rl.attacks.DeepFool(steps=50, overshoot=0.02, candidates=10)(m, x, y).x_adv
        ),
        "C&W": lambda m, x, y: (
            rl.attacks.CarliniWagner(steps=100, search_steps=9, lr=0.01, c_init=1e-3)(m, x, y).x_adv
        ),
    }
    others = peers(eps, step, steps)
    floor_seconds(model, x, y, 2, device)  # warm-up at the full batch size
    rows = []
    for name in args.only.split(","):
        runners = {"robustlens": ours[name], **others[name]}
        for lib, fn in runners.items():
            if f"{name}:{lib}" in args.skip_peer:
                continue
            times = []
            for _ in range(args.repeat):
                x_adv, seconds = timed(lambda fn=fn: fn(model, x, y), device)
                times.append(seconds)
            row = {
                "attack": name,
                "library": lib,
                "seconds": round(statistics.median(times), 3),
                "all_seconds": [round(t, 3) for t in times],
                **score(model, x, y, x_adv),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        if name == "PGD":
            floor = floor_seconds(model, x, y, 2 * steps, device)
            rows.append(
                {
                    "attack": "PGD",
                    "library": f"floor: {2 * steps} forward+backward passes",
                    "seconds": round(floor, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    meta = {
        "n": args.n,
        "eps": eps,
        "device": str(device),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "repeat": args.repeat,
        "command": "python bench/whitebox.py " + " ".join(sys.argv[1:]),
    }
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.merge and Path(args.out).is_file():
        old = json.loads(Path(args.out).read_text())
        ran = set(args.only.split(","))
        rows = [r for r in old["rows"] if r["attack"] not in ran] + rows
        meta["command"] = old["meta"]["command"] + " ; " + meta["command"]
    order = ["FGSM", "I-FGSM", "PGD", "DeepFool", "C&W"]
    rows.sort(key=lambda r: order.index(r["attack"]))
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("| attack | library | success | median L2/‖x‖ | max Linf | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "success_rate" in r:
            print(
                f"| {r['attack']} | {r['library']} | {r['success_rate']:.1%} | "
                f"{r['median_l2_normalized']:.4f} | {r['max_linf']:.3f} | {r['seconds']:.2f} |"
            )
        else:
            print(f"| {r['attack']} | {r['library']} | | | | {r['seconds']:.2f} |")


if __name__ == "__main__":
    main()
