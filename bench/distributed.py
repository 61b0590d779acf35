"""Robust evaluation sharded with torchrun: 1 process against N processes, one thread each.

Runs the standard ensemble (APGD-CE, APGD-T, Square) through the CLI on the zoo's fmnist-cnn-adv,
once as a single process and once under ``torchrun --nproc-per-node N`` (gloo on the CPU), and
compares wall time and the per-image outcomes (``samples.csv``), which must be identical. Not
part of the test suite::

    python bench/distributed.py --n 1000 --procs 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

OUTCOME = ("index", "label", "clean_pred")


def run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - start


def outcomes(folder: Path) -> dict[int, tuple[str, ...]]:
    """Per image: label, clean prediction and each attack's success."""
    with (folder / "samples.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    keys = [k for k in rows[0] if k in OUTCOME[1:] or k.endswith("_success")]
    return {int(r["index"]): tuple(r[k] for k in keys) for r in rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="test images (stratified sample)")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--out", default="bench/results/distributed.json")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rl-dist-"))
    common = [
        "evaluate", "--model", "fmnist-cnn-adv", "--data", "fashion-mnist", "--limit", str(args.n),
        "--attack", "ensemble", "--eps", str(args.eps), "--batch-size", str(args.batch_size),
        "--quiet",
    ]
    one = run([sys.executable, "-m", "robustlens", *common, "--out", str(work / "one")], 1)
    many = run(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.procs),
            "-m", "robustlens", *common, "--out", str(work / "many"),
        ],
        1,
    )
    a, b = outcomes(work / "one"), outcomes(work / "many")
    same = a == b
    summary = json.loads((work / "one" / "results.json").read_text())["robustness"]
    summary_many = json.loads((work / "many" / "results.json").read_text())["robustness"]
    result = {
        "command": "python bench/distributed.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}",
        "n": args.n,
        "procs": args.procs,
        "seconds_1": round(one, 1),
        f"seconds_{args.procs}": round(many, 1),
        "speedup": round(one / many, 2),
        "robust_accuracy_1": summary["robust_accuracy"],
        f"robust_accuracy_{args.procs}": summary_many["robust_accuracy"],
        "identical_per_image": same,
        "differing_images": sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))[:20],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
