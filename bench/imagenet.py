"""The audit of an ImageNet-class model on a CPU: a torchvision ResNet-18 at 224x224, section by section.

A user's first run: ``robustlens audit --quick --model torchvision:resnet18 --weights W.pt --data
FOLDER`` on a folder of photos in ImageNet's validation layout. The folder is made from real
photographs (scikit-image's bundled cat, coffee cup and rocket: random crops, flips and resizes to
about 400x300, JPEG; ``bench/data.py make``). Nothing can be downloaded here, so the ResNet-18 has
seeded random convolutional weights and only its last layer is fitted (once, untimed) to the
folder's three classes, so that it classifies the photos and the attacks have images to attack
(with all-random weights every image would already be misclassified and skipped, and the timing
would mean nothing). Its numbers say nothing about ResNet-18's robustness; the time each section
takes is what this measures, and it depends on the input size and the network, not on the weights
(apart from attacks that stop early on images they have already fooled).

The audit runs in a fresh process through the CLI; the seconds of each section are read from its
``results.json``::

    python bench/imagenet.py --root /tmp/rl-imagenet --images 1000 --quick
    python bench/imagenet.py --root /tmp/rl-imagenet --images 1000 --quick --threads 1

Writes ``bench/results/imagenet-quick.json`` (or ``imagenet-full.json``) and prints a markdown
table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _bench_data() -> Any:
    spec = importlib.util.spec_from_file_location("bench_data", HERE / "data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_data"] = module  # its worker pool pickles functions by module name
    spec.loader.exec_module(module)
    return module


def weights(root: Path, images: int = 96) -> Path:
    """A torchvision ResNet-18 state dict: seeded random backbone, last layer fitted to the
    folder's classes (their ImageNet indices). Cached beside the folder."""
    import torch
    import torchvision

    import robustlens as rl

    path = root.parent / f"{root.name}-resnet18.pt"
    if path.is_file():
        return path
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    loaded = rl.models.load("torchvision:resnet18")  # for its preprocessing
    files = rl.data.open_folder(root, layout="imagenet", preprocessing=loaded.preprocessing)
    ds = rl.data.in_memory(files.subset(images, seed=1))
    mean = torch.tensor(loaded.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.preprocessing.std).view(1, 3, 1, 1)
    captured: list[torch.Tensor] = []
    hook = net.fc.register_forward_hook(lambda m, a, o: captured.append(a[0].detach()))
    with torch.no_grad():
        net((ds.x - mean) / std)
    hook.remove()
    features = captured[0]
    opt = torch.optim.Adam(net.fc.parameters(), lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net.fc(features), ds.y).backward()
        opt.step()
    acc = float((net.fc(features).argmax(1) == ds.y).double().mean())
    torch.save(net.state_dict(), path)
    print(f"fitted the ResNet-18's last layer on {len(ds)} photos: accuracy {acc:.2f}")
    return path


def audit(root: Path, weights_file: Path, quick: bool, threads: int, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "robustlens", "audit", "--model", "torchvision:resnet18",
        "--weights", str(weights_file), "--data", str(root), "--layout", "imagenet",
        "--out", str(out), "--quiet",
    ] + (["--quick"] if quick else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - start
    results = json.loads((out / "results.json").read_text())
    sections = results["sections"]
    return {
        "command": " ".join(cmd[1:]),
        "wall_seconds": round(wall, 1),
        "audit_seconds": results["meta"]["seconds"],
        "sections": {name: sec.get("seconds") for name, sec in sections.items()},
        "images": {
            "data set": sections["clean"]["n"],
            "attacked": sections.get("whitebox", {}).get("n"),
        },
        "clean_accuracy": sections["clean"]["accuracy"],
        "config": results["config"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/rl-imagenet"))
    p.add_argument("--images", type=int, default=1000, help="photos in the folder")
    p.add_argument("--quick", action="store_true", help="the --quick audit (default: full)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, help="results JSON (default bench/results/imagenet-*.json)")
    args = p.parse_args()
    import torch

    _bench_data().make(args.root, args.images, 0, os.cpu_count() or 1)
    weights_file = weights(args.root)
    kind = "quick" if args.quick else "full"
    folder = args.root.parent / f"{args.root.name}-{kind}"
    result = audit(args.root, weights_file, args.quick, args.threads, folder)
    result["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    result["bench"] = "python bench/imagenet.py " + " ".join(sys.argv[1:])
    out = args.out or HERE / "results" / f"imagenet-{kind}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| section | seconds |\n|---|---:|")
    for name, sec in result["sections"].items():
        print(f"| {name} | {sec} |")
    print(f"| **total (audit)** | {result['audit_seconds']} |")
    print(f"wall {result['wall_seconds']} s (with start-up, model and data loading)")


if __name__ == "__main__":
    main()
