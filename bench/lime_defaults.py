"""LIME's defaults at 224x224, chosen by measuring: segmenter, sample count and explained output.

On real photographs (scikit-image's astronaut, cat, coffee cup and rocket, resized to 256 and
centre-cropped to 224 as torchvision's ResNet-18 expects) and the ResNet-18 of
``bench/imagenet.py`` (seeded random backbone, last layer fitted to the cat, coffee-cup and rocket
photos: nothing can be downloaded here, so this is a stand-in model whose outputs do depend on the
image), each configuration explains every photo's predicted class and is scored by:

- deletion AUC (lower is better) against the mean over random deletion orders (the explanation is
  faithful when hiding its top superpixels first costs the output clearly more than hiding at
  random), and insertion AUC (higher is better): :func:`robustlens.explain.faithfulness`;
- the surrogate's weighted R2 and how many explanations carry a trust warning;
- stability: the mean pairwise top-K Jaccard index over seeds (:func:`robustlens.explain.stability`);
- seconds per explanation.

Run (about 30 minutes on 2 cores; the results file is written after each configuration)::

    python bench/lime_defaults.py --root /tmp/rl-imagenet

Writes ``bench/results/lime_defaults.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
CONFIGS: list[dict[str, Any]] = [
    {"segmenter": "slic", "samples": 500, "output": "logits"},
    {"segmenter": "slic", "samples": 1000, "output": "logits"},
    {"segmenter": "quickshift", "samples": 500, "output": "logits"},
    {"segmenter": "felzenszwalb", "samples": 500, "output": "logits"},
    {"segmenter": "grid", "samples": 500, "output": "logits"},
    {"segmenter": "slic", "samples": 1000, "output": "probs"},
]


def photos(pre: Any) -> Any:
    import numpy as np
    import skimage.data
    import torch

    arrays = [np.asarray(getattr(skimage.data, name)())[..., :3] for name in PHOTOS]
    return torch.cat(
        [pre.apply_to(torch.from_numpy(a.copy()).permute(2, 0, 1).unsqueeze(0)) for a in arrays]
    )


def measure(model: Any, x: Any, config: dict[str, Any], seeds: int) -> dict[str, Any]:
    import robustlens as rl

    lime = rl.explain.Lime(
        samples=config["samples"],
        K=5,
        segmenter=config["segmenter"],
        output=config["output"],
        hide="constant",
        seed=0,
    )
    rows = []
    for i in range(len(x)):
        start = time.perf_counter()
        exp = lime(model, x[i])
        seconds = time.perf_counter() - start
        faith = rl.explain.faithfulness(model, exp, seed=0)
        rows.append(
            {
                "photo": PHOTOS[i],
                "superpixels": exp.num_segments,
                "seconds": round(seconds, 2),
                "r2": exp.r2,
                "deletion_auc": faith.deletion_auc,
                "random_deletion_auc": faith.random_deletion_auc,
                "insertion_auc": faith.insertion_auc,
                "warnings": len(exp.warnings) + len(faith.warnings),
            }
        )
    stab = [
        rl.explain.stability(lime, model, x[i], seeds=tuple(range(seeds))).mean
        for i in range(min(2, len(x)))
    ]

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in rows)

    return {
        **config,
        "rows": rows,
        "superpixels": mean("superpixels"),
        "seconds": mean("seconds"),
        "r2": mean("r2"),
        "deletion_auc": mean("deletion_auc"),
        "random_deletion_auc": mean("random_deletion_auc"),
        "deletion_vs_random": mean("deletion_auc") / mean("random_deletion_auc"),
        "insertion_auc": mean("insertion_auc"),
        "warned": sum(r["warnings"] > 0 for r in rows),
        "stability": statistics.fmean(stab),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/rl-imagenet"))
    p.add_argument("--seeds", type=int, default=3, help="seeds for the stability measure")
    p.add_argument("--out", type=Path, default=HERE / "results" / "lime_defaults.json")
    p.add_argument(
        "--configs",
        type=int,
        nargs="+",
        help="positions in CONFIGS to run (default: all); results join those already in --out",
    )
    args = p.parse_args()
    import torch

    import imagenet as bench  # bench/imagenet.py: run as a script, bench/ is on sys.path
    import robustlens as rl

    bench._bench_data().make(args.root, 96, 0, os.cpu_count() or 1)
    loaded = rl.models.load("torchvision:resnet18", weights=str(bench.weights(args.root)))
    model = loaded.module.eval()
    x = photos(loaded.preprocessing)
    chosen = [CONFIGS[i] for i in args.configs] if args.configs else CONFIGS
    results: list[dict[str, Any]] = []
    if args.configs and args.out.is_file():  # keep the other configurations' earlier results
        results = [
            r
            for r in json.loads(args.out.read_text())["results"]
            if {k: r[k] for k in CONFIGS[0]} not in chosen
        ]
    payload: dict[str, Any] = {
        "command": "python bench/lime_defaults.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for config in chosen:
        res = measure(model, x, config, args.seeds)
        results.append(res)
        args.out.write_text(json.dumps(payload, indent=2) + "\n")  # after each configuration
        print(
            f"{config}: deletion {res['deletion_auc']:.3f} (random {res['random_deletion_auc']:.3f}),"
            f" insertion {res['insertion_auc']:.3f}, r2 {res['r2']:.2f}, stability "
            f"{res['stability']:.2f}, {res['seconds']:.1f} s",
            flush=True,
        )
    print(
        "| segmenter | samples | output | superpixels | s / explanation | deletion AUC | "
        "random order | deletion / random | insertion AUC | R2 | warned | stability |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['segmenter']} | {r['samples']} | {r['output']} | {r['superpixels']:.0f} | "
            f"{r['seconds']:.1f} | {r['deletion_auc']:.3f} | {r['random_deletion_auc']:.3f} | "
            f"{r['deletion_vs_random']:.2f} | {r['insertion_auc']:.3f} | {r['r2']:.2f} | "
            f"{r['warned']}/{len(r['rows'])} | {r['stability']:.2f} |"
        )


if __name__ == "__main__":
    main()
