"""Black-box attacks on the Fashion-MNIST zoo model, side by side with torchattacks' Square attack.

The victim is ``fmnist-cnn`` behind ``rl.blackbox.Oracle`` with a 10,000-query budget per image.
Rows: NES query-limited untargeted (success, median queries over successes) next to
torchattacks' Square (Linf, margin loss) at the same eps and budget; NES partial-info (top-5) and
label-only, targeted at a random other class; Papernot's substitute trained from 150 seed images
for 6 rounds, then FGSM and I-FGSM on it transferred to the oracle (the oracle's accuracy on them,
and the queries spent). Not part of the test suite::

    python -m venv --system-site-packages /tmp/bench
    /tmp/bench/bin/pip install --no-deps torchattacks
    /tmp/bench/bin/python bench/blackbox.py --n 500 --n-targeted 100
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

import robustlens as rl
from robustlens.blackbox import NES, Oracle, Substitute, Transfer


def median(v: Tensor) -> float | None:
    return float(v.double().median()) if len(v) else None


def nes_row(label: str, res: rl.attacks.AttackResult, seconds: float) -> dict[str, object]:
    ok = res.success & res.attacked
    return {
        "attack": label,
        "attacked": int(res.attacked.sum()),
        "success_rate": res.success_rate,
        "median_queries": median(res.queries[ok]),
        "mean_queries": float(res.queries[res.attacked].double().mean()),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=500, help="images for the untargeted attacks")
    p.add_argument("--n-targeted", type=int, default=100, help="images for targeted NES")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--budget", type=int, default=10_000)
    p.add_argument("--skip", nargs="*", default=[], help="rows to skip: square partial label sub")
    p.add_argument("--out", default="bench/results/blackbox.json")
    args = p.parse_args()

    test = rl.data.load("fashion-mnist", split="test")
    ds = test.subset(args.n, seed=0)
    x, y = ds.x, ds.y
    model = rl.zoo.load("fmnist-cnn")
    for q in model.parameters():
        q.requires_grad_(False)
    rows: list[dict[str, object]] = []

    def emit(row: dict[str, object]) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    oracle = Oracle(model, output="probs", budget=args.budget)
    t0 = time.perf_counter()
    res = NES(eps=args.eps, mode="query-limited", max_queries=args.budget)(oracle, x, y)
    emit(nes_row("robustlens NES query-limited (untargeted)", res, time.perf_counter() - t0))

    if "square" not in args.skip:
        try:
            import torchattacks as ta
        except ImportError:
            print("torchattacks not installed: Square skipped", file=sys.stderr)
        else:
            atk = ta.Square(model, norm="Linf", eps=args.eps, n_queries=args.budget, seed=0)
            atk.init_hyperparam(x)
            with torch.no_grad():
                correct = model(x).argmax(1) == y
            idx = correct.nonzero().squeeze(1)
            t0 = time.perf_counter()
            queries, x_adv = atk.attack_single_run(x[idx], y[idx])
            seconds = time.perf_counter() - t0
            with torch.no_grad():
                fooled = model(x_adv).argmax(1) != y[idx]
            emit(
                {
                    "attack": "torchattacks Square (Linf, margin)",
                    "attacked": len(idx),
                    "success_rate": float(fooled.double().mean()),
                    "median_queries": median(queries[fooled].float()),
                    "mean_queries": float(queries.double().mean()),
                    "seconds": round(seconds, 1),
                }
            )

    tds = test.subset(args.n_targeted, seed=1)
    g = torch.Generator().manual_seed(0)
    target = (tds.y + torch.randint(1, 10, tds.y.shape, generator=g)) % 10
    for mode, output, key in (
        ("partial-info", "topk", "partial"),
        ("label-only", "label", "label"),
    ):
        if key in args.skip:
            continue
        oracle = Oracle(model, output=output, k=5, budget=args.budget)
        # Starting images of the target classes come from the training set (Ilyas et al. start
        # from an image of the target class).
        train = rl.data.load("fashion-mnist", split="train")
        first_of = torch.stack([(train.y == c).nonzero()[0, 0] for c in range(10)])
        x_init = train.x[first_of[target]]
        t0 = time.perf_counter()
        # Label-only: 10 samples per estimate, each scored with 5 noisy queries (250 queries per
        # step with 50 samples leave too few steps in the budget).
        extra = {"samples": 10, "mc_samples": 5} if mode == "label-only" else {}
        res = NES(eps=args.eps, mode=mode, max_queries=args.budget, **extra)(
            oracle, tds.x, tds.y, target=target, x_init=x_init
        )
        emit(nes_row(f"robustlens NES {mode} (targeted)", res, time.perf_counter() - t0))

    if "sub" not in args.skip:
        oracle = Oracle(model, output="label")
        seeds = test.subset(150, seed=2).x
        t0 = time.perf_counter()
        sub = Substitute(rounds=6, epochs=10, seed=0).fit(oracle, seeds, x_check=x[:200])
        train_seconds = time.perf_counter() - t0
        for attack in (rl.attacks.FGSM(eps=args.eps), rl.attacks.IFGSM(eps=args.eps, steps=10)):
            t0 = time.perf_counter()
            res = Transfer(attack, sub.model)(model, x, y)
            emit(
                {
                    "attack": f"Papernot substitute -> {attack.name}",
                    "attacked": int(res.attacked.sum()),
                    "success_rate": res.success_rate,
                    "oracle_accuracy": res.robust_accuracy,
                    "oracle_clean_accuracy": res.clean_accuracy,
                    "substitute_queries": sub.queries,
                    "substitute_agreement": sub.agreement[-1] if sub.agreement else None,
                    "substitute_train_seconds": round(train_seconds, 1),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )

    meta = {
        "n": args.n,
        "n_targeted": args.n_targeted,
        "eps": args.eps,
        "budget": args.budget,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "command": "python bench/blackbox.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("| attack | attacked | success | median queries | seconds |")
    print("|---|---|---|---|---|")
    for r in rows:
        mq = r.get("median_queries")
        extra = (
            f" (oracle accuracy {r['oracle_accuracy']:.1%}, {r['substitute_queries']} queries)"
            if "oracle_accuracy" in r
            else ""
        )
        print(
            f"| {r['attack']}{extra} | {r['attacked']} | {r['success_rate']:.1%} | "
            f"{'-' if mq is None else f'{mq:.0f}'} | {r['seconds']} |"
        )


if __name__ == "__main__":
    main()
