"""What the full audit costs per image at 224x224 on this machine: each part timed on a few images.

The full audit of an ImageNet-class model is hours on a CPU, so it is not run whole here. Each of
its parts runs instead on a few images with the full audit's own settings (the defaults of
:class:`~robustlens.evaluation.config.SuiteConfig` at 224x224: Linf eps 4/255, PGD-40, the
standard ensemble, C&W with 9 binary-search steps of 100, NES with 2000 queries, LIME with 1000
samples for the explanations and 500 for the superpixel statistics, 15 corruptions at 5
severities), through the same functions the audit calls, and the seconds per image are
multiplied by the number of images the full audit gives each part. The model is the stand-in
ResNet-18 of ``bench/imagenet.py`` (seeded random backbone, last layer fitted to the photos): an
undefended network, whose images the attacks break within a few steps, as they break a normally
trained ResNet-18's at 4/255. For a robust model the attacks run their whole budgets; the
worst case per image is given from the measured speed of a forward and of a forward-backward
pass.

Run (about 20 minutes on 2 cores)::

    python bench/audit_cost.py --root /tmp/rl-imagenet
    python bench/audit_cost.py --root /tmp/rl-imagenet --device cuda   # on a GPU machine

Writes ``bench/results/audit-cost-224.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of ``fn()``, the GPU's queued work included."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def pass_rates(model: Any, x: Any) -> tuple[float, float]:
    """Images per second through a forward pass, and through a forward-backward pass to the
    input (what one attack step costs), on a batch of ``x``."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        model(x[:4])
        fwd = timed(lambda: model(x))

    def step() -> None:
        xg = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xg), model(x).argmax(1).detach())
        torch.autograd.grad(loss, xg)

    bwd = timed(step)
    return len(x) / fwd, len(x) / bwd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/rl-imagenet"))
    p.add_argument("--out", type=Path, help="default: bench/results/audit-cost-224[-DEVICE].json")
    p.add_argument("--device", default="cpu", help="where the model and the images are (cuda)")
    args = p.parse_args()
    import torch

    import imagenet as bench  # bench/imagenet.py: run as a script, bench/ is on sys.path
    import robustlens as rl
    from robustlens import bias
    from robustlens.attacks import PGD, CarliniWagner, DeepFool
    from robustlens.data.stream import in_memory
    from robustlens.evaluation.config import SuiteConfig
    from robustlens.evaluation.curves import robust_accuracy_curve
    from robustlens.evaluation.defaults import attack_batch, default_eps
    from robustlens.evaluation.suite import (
        _whitebox_evaluation,
        blackbox_section,
        explanations_section,
    )
    from robustlens.explain import Lime

    bench._bench_data().make(args.root, 96, 0, os.cpu_count() or 1)
    loaded = rl.models.load("torchvision:resnet18", weights=str(bench.weights(args.root)))
    model = loaded.module.eval().to(args.device)
    out = args.out or HERE / "results" / (
        "audit-cost-224.json" if args.device == "cpu" else f"audit-cost-224-{args.device}.json"
    )
    files = rl.data.open_folder(args.root, layout="imagenet", preprocessing=loaded.preprocessing)
    eps = default_eps(files.shape)
    base = SuiteConfig()
    scale = eps / base.whitebox.eps
    cfg = SuiteConfig.from_dict(
        {
            "whitebox": {
                "eps": eps,
                "eps_curve": [round(e * scale, 6) for e in base.whitebox.eps_curve],
            }
        }
    )
    wb, batch = cfg.whitebox, attack_batch(files.shape)
    ds = in_memory(files.subset(16, seed=0)).to(args.device)
    rows: list[dict[str, Any]] = []

    def part(name: str, images: int, full: int, fn: Callable[[], Any], note: str = "") -> None:
        seconds = timed(fn)
        rows.append(
            {
                "part": name,
                "images timed": images,
                "seconds": round(seconds, 1),
                "seconds per image": round(seconds / images, 2),
                "images in the full audit": full,
                "full audit seconds": round(seconds / images * full),
                "note": note,
            }
        )
        print(rows[-1], flush=True)

    fwd, bwd = pass_rates(model, ds.x[:16])
    print(f"forward {fwd:.1f} images/s, forward-backward {bwd:.1f} images/s", flush=True)
    clean_set = files.subset(64, seed=1)
    part(
        "clean accuracy (decode, preprocess, forward)",
        64,
        1000,
        lambda: rl.evaluation.clean_accuracy(model, clean_set, batch_size=256),
        "per 1000 images of the data set (all of them are read)",
    )
    eight = ds[:8]
    part(
        "fixed-budget attacks (FGSM, I-FGSM, PGD-40, the standard ensemble)",
        8,
        cfg.data.attack_limit,
        lambda: _whitebox_evaluation(model, eight, cfg, None, False),
    )
    part(
        "DeepFool",
        8,
        wb.min_norm_limit,
        lambda: DeepFool(seed=0)(model, eight.x, eight.y, batch_size=batch),
    )
    four = ds[:4]
    part(
        "C&W (9 x 100 steps)",
        4,
        wb.min_norm_limit,
        lambda: CarliniWagner(steps=100, seed=0)(model, four.x, four.y, batch_size=batch),
    )
    pgd = PGD(eps=eps, steps=wb.steps, seed=0)
    part(
        "PGD-40 at 6 budgets (the eps curve)",
        8,
        wb.min_norm_limit,
        lambda: robust_accuracy_curve(pgd, model, eight.x, eight.y, wb.eps_curve),
    )
    part(
        "PGD-40 for the gallery",
        8,
        20 * wb.gallery,
        lambda: pgd(model, eight.x, eight.y, batch_size=batch),
    )
    two = ds[:2]
    part(
        "NES, 2000 queries",
        2,
        cfg.blackbox.images,
        lambda: blackbox_section(
            model, two, SuiteConfig.from_dict({"blackbox": {"images": 2}}, base=cfg)
        ),
    )
    part(
        "explanations (LIME 1000 samples, faithfulness, stability over 3 seeds on the first)",
        2,
        cfg.explanations.images,
        lambda: explanations_section(
            model, two, SuiteConfig.from_dict({"explanations": {"images": 2}}, base=cfg)
        ),
        "stability is counted once per 2 images here, once per 6 in the audit: an over-estimate",
    )
    part(
        "15 corruptions x 5 severities",
        8,
        cfg.bias.corruption_images,
        lambda: bias.corruption_robustness(model, eight, severities=(1, 2, 3, 4, 5), seed=0),
    )
    part(
        "random vs adversarial noise (DeepFool, 10 random draws)",
        8,
        200,
        lambda: bias.random_vs_adversarial(model, eight.x, eight.y, seed=0, batch_size=batch),
    )
    lime = Lime(samples=cfg.bias.superpixel_samples, K=5, output="logits", hide="constant")
    part(
        "superpixel statistics (LIME 500 samples)",
        2,
        cfg.bias.superpixel_images * cfg.bias.superpixel_classes,
        lambda: lime.explain_batch(model, two.x),
        f"{cfg.bias.superpixel_images} images in each of {cfg.bias.superpixel_classes} classes",
    )
    total = sum(r["full audit seconds"] for r in rows)
    worst = (1 + 20 + wb.steps + 100 + 9 * 100) / bwd + 5000 / fwd
    payload = {
        "command": "python bench/audit_cost.py " + " ".join(sys.argv[1:]),
        "model": "torchvision resnet18 (stand-in weights, see bench/imagenet.py)",
        "eps": eps,
        "forward_images_per_second": round(fwd, 2),
        "forward_backward_images_per_second": round(bwd, 2),
        "rows": rows,
        "full_audit_seconds_per_1000_images": total,
        "robust_image_fixed_budget_seconds": round(worst, 1),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": str(args.device),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print("| part | s / image | images in the full audit | seconds |\n|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['part']} | {r['seconds per image']} | {r['images in the full audit']} | "
            f"{r['full audit seconds']} |"
        )
    print(f"| **the full audit, 1000 images** | | | **{total}** ({total / 3600:.1f} h) |")
    print(
        f"forward {fwd:.1f} images/s, forward-backward {bwd:.1f} images/s; an image that resists "
        f"every fixed-budget attack costs {worst:.0f} s (FGSM 1, I-FGSM 20, PGD {wb.steps}, APGD-CE "
        "100 and APGD-T 9 x 100 gradient steps, Square 5000 queries)"
    )


if __name__ == "__main__":
    main()
