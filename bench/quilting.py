"""Image quilting throughput: images per second, exact torch search vs faiss.

The database holds ``--size`` patches cut from the Fashion-MNIST training images
(``Quilting.from_images``, seed 0); the first ``--images`` test images are quilted in batches of
``--batch`` with ``k`` nearest neighbours on the patch grid of stride ``patch``. Each backend runs
on the same images with the same seed. Both searches are exact, but many database patches are at
(nearly) the same distance from a query (Fashion-MNIST has large uniform backgrounds), and rounding
orders such ties differently, so the outputs differ where a tie changes which patch is drawn. The
table gives the share of output pixels equal to the exact backend's and, as the exactness check,
the largest gap between the true distances of the k neighbours each backend finds (first batch).
The time of building the faiss index (once per database) is reported apart from the throughput.

Not part of the test suite. faiss is optional; put it in a benchmark environment, for example::

    python -m venv --system-site-packages /tmp/bench && /tmp/bench/bin/pip install faiss-cpu
    OMP_NUM_THREADS=1 /tmp/bench/bin/python bench/quilting.py --images 200 --size 100000

A backend that is not installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

import robustlens as rl
from robustlens.defenses.quilting import Backend, Quilting, _import_faiss, grid


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(quilt: Quilting, x: Tensor, batch: int) -> tuple[Tensor, float]:
    """Quilt ``x`` in batches; the output and the seconds it took."""
    quilt.reseed()
    sync(x.device)
    t0 = time.perf_counter()
    out = torch.cat([quilt(x[i : i + batch]) for i in range(0, len(x), batch)])
    sync(x.device)
    return out, time.perf_counter() - t0


def neighbour_distances(quilt: Quilting, x: Tensor) -> Tensor:
    """Sorted true squared distances (float64) of the k neighbours the backend finds for ``x``."""
    queries = quilt._queries(x)[0]
    found = quilt.database[quilt._search(queries, quilt.k)].double()  # (Q, k, D)
    return (queries.double()[:, None] - found).square().sum(2).sort(1).values


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", type=int, default=500, help="test images to quilt")
    p.add_argument("--size", type=int, default=10**6, help="database patches")
    p.add_argument("--patch", type=int, default=5)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=100, help="images per call")
    p.add_argument(
        "--backend",
        choices=["all", "exact", "faiss"],
        default="all",
        help="all: both when faiss is installed",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", dest="out", default=None, help="write the results to this file")
    args = p.parse_args()

    device = torch.device(args.device)
    train = rl.data.load("fashion-mnist", split="train").x
    x = rl.data.load("fashion-mnist", split="test").x[: args.images].to(device)

    t0 = time.perf_counter()
    base = Quilting.from_images(train, patch=args.patch, k=args.k, size=args.size, backend="exact")
    build = time.perf_counter() - t0
    database = base.database.view(-1, train.shape[1], args.patch, args.patch)
    del train

    backends: list[Backend] = ["exact", "faiss"] if args.backend == "all" else [args.backend]
    if "faiss" in backends and _import_faiss() is None:
        print("faiss not installed: skipped (pip install faiss-cpu)", file=sys.stderr)
        backends.remove("faiss")
    if not backends:
        sys.exit("no backend left to run")

    rows: list[dict[str, object]] = []
    reference: Tensor | None = None
    reference_dists = torch.empty(0)
    for backend in backends:
        quilt = Quilting(database, stride=args.patch, k=args.k, backend=backend).to(device)
        index_s = 0.0
        if backend == "faiss":
            t0 = time.perf_counter()
            quilt._faiss()
            index_s = time.perf_counter() - t0
        quilt(x[:1])  # warm-up
        out, seconds = run(quilt, x, args.batch)
        dists = neighbour_distances(quilt, x[: args.batch])
        same = gap = None
        if reference is None:
            reference, reference_dists = out, dists
        else:
            same = float((out == reference).float().mean())
            gap = float((dists - reference_dists).abs().max())
        rows.append(
            {
                "backend": backend,
                "images": len(x),
                "seconds": round(seconds, 3),
                "images_per_s": round(len(x) / seconds, 2),
                "index_build_s": round(index_s, 3),
                "pixels_as_exact": same,
                "max_neighbour_distance_gap": gap,
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    meta = {
        "images": len(x),
        "size": int(database.shape[0]),
        "patch": args.patch,
        "stride": args.patch,
        "k": args.k,
        "batch": args.batch,
        "patches_per_image": len(grid(x.shape[2], args.patch, args.patch))
        * len(grid(x.shape[3], args.patch, args.patch)),
        "database_build_s": round(build, 3),
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "command": "python " + " ".join(sys.argv),
    }
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(
        f"\nFashion-MNIST test, {meta['images']} images x {meta['patches_per_image']} patches, "
        f"database {meta['size']} patches {args.patch}x{args.patch} (built in "
        f"{build:.1f} s), k={args.k}, {meta['threads']} thread(s), {device}\n"
    )
    print("| backend | images/s | seconds | index build s | pixels as exact | neighbour gap |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        pixels, dist_gap = r["pixels_as_exact"], r["max_neighbour_distance_gap"]
        print(
            f"| {r['backend']} | {r['images_per_s']} | {r['seconds']} | {r['index_build_s']} | "
            f"{'' if pixels is None else f'{pixels:.1%}'} | "
            f"{'' if dist_gap is None else f'{dist_gap:.1e}'} |"
        )


if __name__ == "__main__":
    main()
