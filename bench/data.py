"""Streamed image folders: throughput and peak memory against torchvision's ImageFolder loop.

A folder of JPEGs at mixed sizes around 400x300 (W x H), made from real photographs
(scikit-image's bundled cat, coffee cup and rocket) by random crops, flips and resizes, laid out
as ImageNet's validation set (``<wnid>/<image>.JPEG``). Two pipelines read it and run the same
model on the same images with the same batch size and worker count:

- **robustlens**: the user-facing calls on ``rl.data.open_folder(root, layout="imagenet",
  preprocessing=loaded.preprocessing, workers=W).subset(n)``: ``rl.evaluation.clean_accuracy``
  (task ``clean``) and ``rl.evaluation.evaluate`` with ``PGD(eps=4/255, steps=10)`` (task
  ``pgd``), files decoded in DataLoader workers, batch by batch;
- **torchvision** (the floor): ``torchvision.datasets.ImageFolder`` with the same evaluation
  transform (``v2.Resize(256)``, ``v2.CenterCrop(224)``, to float) in a ``DataLoader`` over the
  same images, and a hand-written loop doing the same forward and backward passes: the
  prediction per batch (``clean``), or the model checks ``evaluate`` makes on the first 64
  images, then per batch the clean prediction and the same PGD call (``pgd``).

Every measurement runs in a fresh process. Its main process's memory is read from
``/proc/self/status``: the peak (``VmHWM``, which ``exec`` resets) and the median of ``VmRSS``
sampled every 0.25 s during the run (the level it runs at; the peak is the rarest moment, which a
longer run is likelier to meet). ``ru_maxrss`` is not used for the main process: Linux carries it
over ``fork`` and ``exec``, so it reported the driver's own 1.6 GB as the floor of every row. The
largest DataLoader worker's peak is ``ru_maxrss`` of the children, which counts the pages a forked
worker shares with the main process. Models: ``resnet18`` is torchvision's
ResNet-18 through ``rl.models.load("torchvision:resnet18")`` (mean/std inside, resize 256 and
centre crop 224; nothing can be downloaded here, so its backbone has seeded random weights and
only its last layer is fitted, once and untimed, to the folder's three classes: the model then
classifies the images and PGD has them to attack; accuracy says nothing about ResNet-18);
``tiny`` is a near-free model (average pooling and a linear layer to 1000 outputs) that makes the
run data-bound: decoding is all there is to measure.

Run::

    python bench/data.py make --root /tmp/rl-jpegs --images 20000
    python bench/data.py run --root /tmp/rl-jpegs --model tiny --task clean \\
        --sizes 1000 5000 20000 --repeats 3 --workers 1 --json bench/results/data-tiny-clean.json
    python bench/data.py run --root /tmp/rl-jpegs --model resnet18 --task clean --sizes 256 \\
        --repeats 2 --workers 1 --json bench/results/data-resnet18-clean.json
    python bench/data.py run --root /tmp/rl-jpegs --model resnet18 --task pgd --sizes 64 \\
        --batch-size 32 --repeats 2 --workers 1 --json bench/results/data-resnet18-pgd.json
    python bench/data.py table bench/results/data-*.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SOURCES = {  # ImageNet WordNet id -> scikit-image picture
    "n02123045": "chelsea",  # tabby
    "n04008634": "rocket",  # projectile, missile
    "n07920052": "coffee",  # espresso
}


# --------------------------------------------------------------------------- the folder


def _make_part(args: tuple[str, int, int, int]) -> int:
    import numpy as np
    import skimage.data
    from PIL import Image, ImageOps

    root, start, stop, seed = args
    rng = np.random.default_rng(seed + start)
    pictures = {w: Image.fromarray(getattr(skimage.data, p)()) for w, p in SOURCES.items()}
    wnids = sorted(SOURCES)
    for i in range(start, stop):
        wnid = wnids[i % len(wnids)]
        src = pictures[wnid]
        w0, h0 = src.size
        cw, ch = int(w0 * rng.uniform(0.6, 1.0)), int(h0 * rng.uniform(0.6, 1.0))
        left, top = int(rng.integers(0, w0 - cw + 1)), int(rng.integers(0, h0 - ch + 1))
        image = src.crop((left, top, left + cw, top + ch))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        size = (int(rng.integers(340, 461)), int(rng.integers(250, 351)))  # around 400 x 300
        image = image.resize(size, Image.Resampling.BILINEAR)
        image.save(Path(root) / wnid / f"ILSVRC2012_val_{i:08d}.JPEG", "JPEG", quality=90)
    return stop - start


def make(root: Path, images: int, seed: int, processes: int) -> None:
    from multiprocessing import Pool

    for wnid in SOURCES:
        (root / wnid).mkdir(parents=True, exist_ok=True)
    existing = sum(1 for _ in root.rglob("*.JPEG"))
    if existing == images:
        print(f"{root}: {images} JPEGs already there")
        return
    step = -(-images // (processes * 8))
    parts = [(str(root), s, min(s + step, images), seed) for s in range(0, images, step)]
    start = time.perf_counter()
    with Pool(processes) as pool:
        done = sum(pool.map(_make_part, parts))
    print(f"{root}: {done} JPEGs in {time.perf_counter() - start:.0f} s")


# --------------------------------------------------------------------------- one measurement


def _head_path(root: str) -> Path:
    return Path(root).parent / f"{Path(root).name}-resnet18-fc.pt"


def fit_head(root: str, images: int = 96) -> None:
    """Fit the last layer of the seeded random ResNet-18 to the folder's three classes (its
    backbone stays random), so that the model classifies the images and PGD attacks them: with
    random weights every image is already misclassified and an attack skips it. Cached beside
    the folder; untimed."""
    import torch

    import robustlens as rl

    path = _head_path(root)
    if path.is_file():
        return
    torch.manual_seed(0)
    loaded = rl.models.load("torchvision:resnet18")
    net = loaded.module.eval()
    files = rl.data.open_folder(root, layout="imagenet", preprocessing=loaded.preprocessing)
    ds = rl.data.in_memory(files.subset(images, seed=1))
    fc = net.model.fc if hasattr(net, "model") else net.fc  # Normalized wraps the network
    captured: list[torch.Tensor] = []
    hook = fc.register_forward_hook(lambda m, args, out: captured.append(args[0].detach()))
    with torch.no_grad():
        net(ds.x)
    hook.remove()
    features = captured[0]
    opt = torch.optim.Adam(fc.parameters(), lr=0.01)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(fc(features), ds.y).backward()
        opt.step()
    acc = float((fc(features).argmax(1) == ds.y).double().mean())
    torch.save(fc.state_dict(), path)
    print(f"fitted the ResNet-18's last layer on {len(ds)} images: accuracy {acc:.2f}")


def _model(name: str, root: str) -> tuple[Any, Any]:
    import torch
    from torch import nn

    import robustlens as rl
    from robustlens.data import Preprocessing

    if name == "resnet18":
        torch.manual_seed(0)
        loaded = rl.models.load("torchvision:resnet18")
        net = loaded.module.eval()
        fc = net.model.fc if hasattr(net, "model") else net.fc
        fc.load_state_dict(torch.load(_head_path(root), weights_only=True))
        return net, loaded.preprocessing
    if name == "tiny":
        torch.manual_seed(0)
        net = nn.Sequential(nn.AvgPool2d(28), nn.Flatten(), nn.Linear(3 * 8 * 8, 1000)).eval()
        return net, Preprocessing(input_size=(224, 224), resize=256)
    raise SystemExit(f"unknown model {name!r}: resnet18 or tiny")


class _ToImageNet:
    """ImageFolder's label (sorted folder index) -> the ImageNet index of its WordNet id."""

    def __init__(self, classes: list[str]) -> None:
        from robustlens.data import imagenet_wnids

        wnids = imagenet_wnids()
        self.index = [wnids.index(c) for c in classes]

    def __call__(self, k: int) -> int:
        return self.index[k]


def _status_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process in MB; ``ru_maxrss`` off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class _RssSampler:
    """``VmRSS`` every ``period`` seconds in a thread, from creation to :meth:`stop`."""

    def __init__(self, period: float = 0.25) -> None:
        import threading

        self.samples: list[float] = []
        self.period = period
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(self.period):
            self.samples.append(_status_mb("VmRSS"))

    def stop(self) -> float:
        """The median sample in MB (the current RSS when the run was shorter than a period)."""
        import statistics

        self.done.set()
        self.thread.join()
        return statistics.median(self.samples) if self.samples else _status_mb("VmRSS")


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One pipeline, task, model and size; returns seconds, images/s and peak RSS."""
    import torch

    import robustlens as rl
    from robustlens._runtime import inference_mode
    from robustlens.attacks import PGD
    from robustlens.data.dataset import sample_indices
    from robustlens.evaluation.checks import model_warnings

    torch.set_num_threads(spec["threads"])
    model, pre = _model(spec["model"], spec["root"])
    n, batch, workers = spec["n"], spec["batch_size"], spec["workers"]
    attack = PGD(eps=4 / 255, steps=10, seed=0)
    if spec["pipeline"] == "robustlens":
        files = rl.data.open_folder(
            spec["root"], layout="imagenet", preprocessing=pre, workers=workers
        ).subset(n, seed=0)
    rss_before = _status_mb("VmHWM")
    sampler = _RssSampler()
    start = time.perf_counter()
    if spec["pipeline"] == "robustlens":
        if spec["task"] == "clean":
            score = rl.evaluation.clean_accuracy(model, files, batch_size=batch).accuracy
        else:
            score = rl.evaluation.evaluate(model, files, [attack], batch_size=batch).robust_accuracy
        images = len(files)
    else:
        from torch.utils.data import DataLoader, Subset
        from torchvision import datasets
        from torchvision.transforms import v2

        transform = v2.Compose(
            [
                v2.Resize(pre.resize, antialias=True),
                v2.CenterCrop(list(pre.input_size)),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )
        folder = datasets.ImageFolder(spec["root"], transform=transform)
        folder.target_transform = _ToImageNet(folder.classes)
        labels = torch.tensor([_ToImageNet(folder.classes)(t) for t in folder.targets])
        idx = sample_indices(labels, 1000, n, seed=0).tolist()
        loader = DataLoader(Subset(folder, idx), batch_size=batch, num_workers=workers)
        hits = robust = images = 0
        if spec["task"] == "pgd":  # the checks evaluate makes on its first 64 images
            head = [folder[i] for i in idx[:64]]
            x0 = torch.stack([im for im, _ in head])
            model_warnings(model, x0, torch.tensor([lab for _, lab in head]))
        with inference_mode(model):
            for x, y in loader:
                if spec["task"] == "clean":
                    with torch.no_grad():
                        hits += int((model(x).argmax(1) == y).sum())
                else:
                    with torch.no_grad():
                        correct = model(x).argmax(1) == y
                    res = attack(model, x, y)
                    robust += int((correct & ~res.success).sum())
                images += len(y)
        score = (hits if spec["task"] == "clean" else robust) / images
    seconds = time.perf_counter() - start
    median_rss = sampler.stop()
    return {
        **{k: spec[k] for k in ("pipeline", "task", "model", "n", "batch_size", "workers")},
        "images": images,
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 2),
        "score": score,
        "peak_rss_mb": _status_mb("VmHWM"),
        "median_rss_mb": median_rss,
        "rss_before_run_mb": rss_before,
        "peak_worker_rss_mb": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
        "in_memory_would_need_mb": round(n * 3 * 224 * 224 * 4 / 2**20, 1),
    }


# --------------------------------------------------------------------------- runs and table


def _median_rss(group: list[dict[str, Any]]) -> str:
    """The largest median RSS of the runs, or "-" for runs measured before it was recorded."""
    values = [r["median_rss_mb"] for r in group if "median_rss_mb" in r]
    return f"{max(values):.0f} MB" if values else "-"


def _machine() -> dict[str, Any]:
    import torch
    import torchvision

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def run(args: argparse.Namespace) -> None:
    if args.model == "resnet18":
        fit_head(str(args.root))
    rows = []
    floor = set(args.floor_sizes if args.floor_sizes is not None else args.sizes)
    for n in args.sizes:
        for repeat in range(args.repeats):
            pipelines = ["torchvision", "robustlens"] if n in floor else ["robustlens"]
            if args.floor_only:
                pipelines = ["torchvision"]
            if repeat % 2:  # alternate the order, so that a drift in the machine's load is shared
                pipelines.reverse()
            for pipeline in pipelines:
                rows.append(_one(args, pipeline, n, repeat))
    # glibc's allocator settings change the peak (docs/benchmarks.md): keep them with the rows.
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    payload = {"machine": _machine(), "command": " ".join(sys.argv), "rows": rows}
    if malloc:
        payload["environment"] = malloc
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


def _one(args: argparse.Namespace, pipeline: str, n: int, repeat: int) -> dict[str, Any]:
    """One measurement in a fresh process."""
    spec = {
        "pipeline": pipeline,
        "task": args.task,
        "model": args.model,
        "n": n,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "threads": args.threads,
        "root": str(args.root),
    }
    out = subprocess.run(
        [sys.executable, __file__, "measure", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
    )
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    row["repeat"] = repeat
    row["load_average"] = round(os.getloadavg()[0], 2)
    print(
        f"{pipeline:<12} {args.task:<5} {args.model:<8} n={n:<6} "
        f"{row['images_per_s']:8.1f} img/s  RSS median {row['median_rss_mb']:7.1f} MB, "
        f"peak {row['peak_rss_mb']:7.1f} MB (largest worker {row['peak_worker_rss_mb']:.1f} MB), "
        f"load {row['load_average']}",
        flush=True,
    )
    return row


def table(paths: list[str]) -> None:
    """Markdown rows: per model, task, size and pipeline, the median over repeats."""
    import statistics

    print(
        "| model | task | images | pipeline | runs | images/s (median) | vs floor | "
        "RSS, main: median | peak | largest worker | in memory would need |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        rows = json.loads(Path(path).read_text())["rows"]
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault((r["model"], r["task"], r["n"], r["pipeline"]), []).append(r)
        speed = {k: statistics.median(r["images_per_s"] for r in g) for k, g in groups.items()}
        for (model, task, n, pipeline), group in groups.items():
            floor = speed.get((model, task, n, "torchvision"))
            ratio = ""
            if floor and pipeline == "robustlens":
                ratio = f"{speed[model, task, n, pipeline] / floor:.2f}x"
            print(
                f"| {model} | {task} | {n} | {pipeline} | {len(group)} | "
                f"{speed[model, task, n, pipeline]:.1f} | {ratio} | "
                f"{_median_rss(group)} | {max(r['peak_rss_mb'] for r in group):.0f} MB | "
                f"{max(r['peak_worker_rss_mb'] for r in group):.0f} MB | "
                f"{group[0]['in_memory_would_need_mb']:.0f} MB |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make", help="write the folder of JPEGs")
    mk.add_argument("--root", type=Path, required=True)
    mk.add_argument("--images", type=int, default=20000)
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    rn = sub.add_parser("run", help="measure both pipelines, each size in a fresh process")
    rn.add_argument("--root", type=Path, required=True)
    rn.add_argument("--model", choices=["resnet18", "tiny"], default="resnet18")
    rn.add_argument("--task", choices=["clean", "pgd"], default="clean")
    rn.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    rn.add_argument(
        "--floor-sizes", type=int, nargs="*", help="sizes the floor also runs (default: all)"
    )
    rn.add_argument(
        "--floor-only", action="store_true", help="run the torchvision floor alone (to add a row)"
    )
    rn.add_argument("--batch-size", type=int, default=64)
    rn.add_argument("--workers", type=int, default=max(0, min(8, (os.cpu_count() or 1) - 1)))
    rn.add_argument("--threads", type=int, default=torch_threads())
    rn.add_argument("--repeats", type=int, default=1, help="runs of each (order alternates)")
    rn.add_argument("--json", help="write the rows and the machine here")
    ms = sub.add_parser("measure", help="(internal) one measurement, JSON on stdout")
    ms.add_argument("spec")
    tb = sub.add_parser("table", help="markdown table of result files")
    tb.add_argument("paths", nargs="+")
    args = parser.parse_args()
    if args.command == "make":
        make(args.root, args.images, args.seed, args.processes)
    elif args.command == "run":
        run(args)
    elif args.command == "measure":
        print(json.dumps(measure(json.loads(args.spec))))
    else:
        table(args.paths)


def torch_threads() -> int:
    return os.cpu_count() or 1


if __name__ == "__main__":
    main()
