"""LIME: seconds per explanation against lime's ``lime_image`` and captum's ``Lime``, and the floor.

Same model, same image, same sample count and the same segmentation (each tool runs robustlens'
segmenter itself, so each pays for it), mean-colour hiding for all three, the same model batch
size. Two cases: the zoo's ``fmnist-cnn`` on a 28x28 Fashion-MNIST image (SLIC), and a ResNet-18
(``rl.models.create("resnet", image_size=224)``, random weights: timing only) on a 224x224 colour
photograph (scikit-image's cat; quickshift, lime_image's segmenter, whose robustlens defaults at
224x224 are lime's 4 / 200 / 0.2).

- **floor**: the model's forward passes alone over the same number of perturbed images (built
  beforehand, untimed), in the same batches;
- **overhead** of a tool: its total minus the floor, and measured directly with a near-free
  stand-in model (a linear probe on channel means) in place of the real one;
- **faithfulness**: deletion and insertion AUC (target probability, superpixels hidden in order of
  weight into a black image, one batched call per image) of robustlens' and of lime's explanation
  of the same images, both made with black hiding (``hide="constant"`` / ``hide_color=0``), K=5,
  probabilities, 1000 samples, lime's ``lasso_path`` selection;
- **stability**: mean pairwise top-5 Jaccard index of the pixel masks over 5 seeds at 1000
  samples, for both tools.

Run (lime and captum in a separate environment)::

    /work/benchenv/bin/pip install lime captum --no-deps
    OMP_NUM_THREADS=1 /work/benchenv/bin/python bench/explain.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # lime_image draws a progress bar per explanation

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import robustlens as rl
from robustlens.explain import Lime, perturbation_curves
from robustlens.explain.lime import channels_last

K = 5


class Probe(nn.Module):
    """A near-free stand-in model: a linear map of the channel means (non-constant output)."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(channels, classes, generator=g))

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3)) @ self.w


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def floor_seconds(
    model: nn.Module, image: Tensor, seg: Tensor, n: int, batch: int, layout: str
) -> float:
    """Forward passes alone over ``n`` perturbed images (built beforehand) in batches of ``batch``,
    in NCHW (``layout="nchw"``) or channels-last (``"cl"``) memory layout."""
    s = int(seg.max()) + 1
    g = torch.Generator().manual_seed(0)
    Z = torch.rand(n, s, generator=g) < 0.5
    hidden = rl.explain.hidden_image(image, seg, "mean")
    masks = Z[:, seg].unsqueeze(1).float()
    images = hidden + masks * (image - hidden)
    chunks = [images[i : i + batch] for i in range(0, n, batch)]
    if layout == "cl":
        chunks = [channels_last(c) for c in chunks]
    start = time.perf_counter()
    with torch.no_grad():
        for chunk in chunks:
            model(chunk)
    return time.perf_counter() - start


# --------------------------------------------------------------------------- the three tools


def run_robustlens(
    model: nn.Module,
    image: Tensor,
    target: int,
    n: int,
    batch: int,
    segmenter: Any,
    seed: int,
    hide: str = "mean",
    cl: bool = False,
) -> Tensor:
    lime = Lime(
        samples=n,
        K=K,
        segmenter=segmenter,
        hide=hide,  # type: ignore[arg-type]
        batch_size=batch,
        channels_last=cl,
        seed=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp = lime.explain(model, image, target)
    return exp.weights


def lime_classifier(model: nn.Module, channels: int) -> Callable[[np.ndarray], np.ndarray]:
    def classify(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).float().permute(0, 3, 1, 2)[:, :channels]
        with torch.no_grad():
            return torch.softmax(model(x), 1).numpy()

    return classify


def run_lime(
    model: nn.Module,
    image: Tensor,
    target: int,
    n: int,
    batch: int,
    segmenter: Any,
    seed: int,
    hide_color: float | None = None,
) -> Tensor:
    from lime import lime_image

    c = image.shape[0]
    arr = image.permute(1, 2, 0).double().numpy()
    arr = arr[..., 0] if c == 1 else arr  # lime_image turns greyscale into RGB itself

    def segmentation_fn(img: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(img)).float().permute(2, 0, 1)[:c]
        return rl.explain.segment(t, segmenter).numpy()

    explainer = lime_image.LimeImageExplainer(feature_selection="lasso_path", random_state=seed)
    exp = explainer.explain_instance(
        arr,
        lime_classifier(model, c),
        labels=(target,),
        top_labels=None,
        hide_color=hide_color,
        num_features=K,
        num_samples=n,
        batch_size=batch,
        segmentation_fn=segmentation_fn,
        random_seed=seed,
    )
    s = int(np.max(exp.segments)) + 1
    weights = torch.zeros(s, dtype=torch.float64)
    for sid, w in exp.local_exp[target]:
        weights[int(sid)] = float(w)
    return weights


def run_captum(
    model: nn.Module, image: Tensor, target: int, n: int, batch: int, segmenter: Any, seed: int
) -> Tensor:
    from captum.attr import Lime as CaptumLime

    torch.manual_seed(seed)
    seg = rl.explain.segment(image, segmenter)
    hidden = rl.explain.hidden_image(image, seg, "mean")

    def forward(x: Tensor) -> Tensor:
        return torch.softmax(model(x), 1)

    with torch.no_grad():
        attr = CaptumLime(forward).attribute(
            image[None],
            baselines=hidden[None],
            target=target,
            feature_mask=seg[None, None].expand(1, *image.shape),
            n_samples=n,
            perturbations_per_eval=batch,
            return_input_shape=False,
        )
    return attr.flatten().double()


def run_robustlens_cl(
    model: nn.Module, image: Tensor, target: int, n: int, batch: int, segmenter: Any, seed: int
) -> Tensor:
    return run_robustlens(model, image, target, n, batch, segmenter, seed, cl=True)


TOOLS = {
    "robustlens": run_robustlens,
    "robustlens-cl": run_robustlens_cl,
    "lime_image": run_lime,
    "captum": run_captum,
}
#: The memory layout in which each tool hands images to the model: lime_image's classifier gets
#: NHWC numpy arrays, whose permuted view is channels-last (for greyscale, lime's RGB copy sliced
#: to one channel: unambiguously channels-last too); the floor of a tool is in its layout.
LAYOUT = {"robustlens": "nchw", "robustlens-cl": "cl", "lime_image": "cl", "captum": "nchw"}


def time_case(
    name: str,
    model: nn.Module,
    image: Tensor,
    segmenter: Any,
    n: int,
    batch: int,
    repeats: int,
    tools: list[str],
) -> dict[str, Any]:
    model.eval()
    with torch.no_grad():
        target = int(model(image[None]).argmax(1))
    seg = rl.explain.segment(image, segmenter)
    probe = Probe(image.shape[0], 10).eval()
    row: dict[str, Any] = {
        "image": list(image.shape),
        "superpixels": int(seg.max()) + 1,
        "samples": n,
        "batch_size": batch,
        "repeats": repeats,
    }
    for tool in tools:  # warm-up (allocations, kernel selection), untimed
        TOOLS[tool](probe, image, 0, 20, batch, segmenter, 0)
        TOOLS[tool](model, image, target, batch, batch, segmenter, 0)
    for layout in ("nchw", "cl"):
        floor_seconds(model, image, seg, batch, batch, layout)
    row["segmentation_seconds"] = timed(lambda: rl.explain.segment(image, segmenter), 3)[0]
    # Interleaved repeats (floors, then each tool with the real and the free model), so a change in
    # the machine's load during the run affects all of them alike; medians over the repeats.
    floor_runs: dict[str, list[float]] = {"nchw": [], "cl": []}
    totals: dict[str, list[float]] = {t: [] for t in tools}
    stubs: dict[str, list[float]] = {t: [] for t in tools}
    for _ in range(repeats):
        for layout in floor_runs:
            floor_runs[layout].append(floor_seconds(model, image, seg, n, batch, layout))
        for tool in tools:
            fn = TOOLS[tool]
            totals[tool].append(
                timed(lambda fn=fn: fn(model, image, target, n, batch, segmenter, 0), 1)[0]
            )
            stubs[tool].append(
                timed(lambda fn=fn: fn(probe, image, 0, n, batch, segmenter, 0), 1)[0]
            )
    row["floor_seconds"] = {k: statistics.median(v) for k, v in floor_runs.items()}
    row["all_floor_seconds"] = floor_runs
    print(
        f"[{name}] {row['superpixels']} superpixels, floor {row['floor_seconds']['nchw']:.3f} s "
        f"(channels-last {row['floor_seconds']['cl']:.3f} s), segmentation "
        f"{row['segmentation_seconds']:.3f} s",
        flush=True,
    )
    for tool in tools:
        layout = LAYOUT[tool]
        floors = floor_runs[layout]
        total = statistics.median(totals[tool])
        stub = statistics.median(stubs[tool])
        ratio = statistics.median(t / f for t, f in zip(totals[tool], floors, strict=True))
        row[tool] = {
            "layout": layout,
            "seconds": total,
            "overhead_seconds": total - statistics.median(floors),
            "stub_seconds": stub,
            "ratio_to_floor": ratio,
            "all_seconds": totals[tool],
            "all_stub_seconds": stubs[tool],
        }
        print(
            f"[{name}] {tool}: {total:.3f} s ({ratio:.2f}x its {layout} floor), overhead "
            f"{row[tool]['overhead_seconds']:.3f} s, with a free model {stub:.3f} s",
            flush=True,
        )
    seg_s = row["segmentation_seconds"]
    if "lime_image" in row:
        theirs = row["lime_image"]
        row["targets"] = {}
        for tool in ("robustlens", "robustlens-cl"):
            if tool not in row:
                continue
            ours = row[tool]
            row["targets"][tool] = {
                "total_le_1.2x_floor": ours["ratio_to_floor"] <= 1.2,
                "overhead_le_third_of_lime": ours["overhead_seconds"]
                <= theirs["overhead_seconds"] / 3,
                "free_model_le_third_of_lime": ours["stub_seconds"] <= theirs["stub_seconds"] / 3,
                "free_model_without_segmentation_le_third_of_lime": ours["stub_seconds"] - seg_s
                <= (theirs["stub_seconds"] - seg_s) / 3,
                "speedup_vs_lime_end_to_end": theirs["seconds"] / ours["seconds"],
            }
    return row


# --------------------------------------------------------------------------- quality


def top_mask(weights: Tensor, seg: Tensor, k: int = K) -> Tensor:
    order = torch.argsort(weights, descending=True, stable=True)[:k]
    keep = torch.zeros(len(weights), dtype=torch.bool)
    keep[order[weights[order] > 0]] = True
    return keep[seg]


def jaccard(a: Tensor, b: Tensor) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def quality(
    model: nn.Module, ds: Any, n_images: int, n_stab: int, seeds: int, n: int, batch: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"images": n_images, "samples": n, "hide": "constant 0", "K": K}
    aucs: dict[str, list[tuple[float, float]]] = {"robustlens": [], "lime_image": []}
    stab: dict[str, list[float]] = {"robustlens": [], "lime_image": []}
    for i in range(max(n_images, n_stab)):
        image = ds.x[i]
        with torch.no_grad():
            target = int(model(image[None]).argmax(1))
        seg = rl.explain.segment(image, "slic")
        black = torch.zeros_like(image)
        runs = {
            "robustlens": lambda s, x=image, t=target: run_robustlens(
                model, x, t, n, batch, "slic", s, hide="constant"
            ),
            "lime_image": lambda s, x=image, t=target: run_lime(
                model, x, t, n, batch, "slic", s, hide_color=0.0
            ),
        }
        for tool, run in runs.items():
            weights = [run(s) for s in range(seeds if i < n_stab else 1)]
            if i < n_images:
                c = perturbation_curves(model, image, seg, weights[0], target, black)
                aucs[tool].append((c.deletion_auc, c.insertion_auc))
            if i < n_stab:
                masks = [top_mask(w, seg) for w in weights]
                pairs = [jaccard(a, b) for a, b in itertools.combinations(masks, 2)]
                stab[tool].append(float(np.mean(pairs)))
        print(
            f"[quality] image {i}: deletion AUC robustlens "
            f"{aucs['robustlens'][-1][0] if i < n_images else float('nan'):.3f}, lime "
            f"{aucs['lime_image'][-1][0] if i < n_images else float('nan'):.3f}",
            flush=True,
        )
    for tool in aucs:
        d = np.array(aucs[tool])
        out[tool] = {
            "deletion_auc": float(d[:, 0].mean()),
            "insertion_auc": float(d[:, 1].mean()),
            "top5_jaccard_over_seeds": float(np.mean(stab[tool])),
            "stability_images": n_stab,
            "seeds": seeds,
        }
    return out


# --------------------------------------------------------------------------- report


def render(res: dict[str, Any]) -> str:
    lines = [
        "## LIME explanations (`bench/explain.py`)",
        "",
        f"Machine: {res['machine']}, torch {res['torch']}, 2 shared cores. No GPU was available "
        "to this run, so the GPU target (>= 5x faster than lime_image end to end) is not measured.",
        "",
        "Seconds per explanation with the same model, image, segmentation (each tool runs "
        "robustlens' segmenter), sample count, mean-colour hiding and model batch size (100); "
        "medians of interleaved repeats. *floor*: the model's forward passes alone over the same "
        "number of perturbed images, in the memory layout the tool hands the model (NCHW, or "
        "channels-last: lime_image's NHWC arrays and `Lime(channels_last=True)`); *overhead* = "
        "total - that floor; *free model*: the same call with a near-free stand-in model, i.e. "
        "the overhead measured directly (it includes the segmentation, listed per case).",
        "",
        "| case | tool | layout | seconds | x floor | overhead s | free model s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for case, row in res["cases"].items():
        fl = row["floor_seconds"]
        lines.append(
            f"| {case}: {row['superpixels']} superpixels, {row['samples']} samples, segmentation "
            f"{row['segmentation_seconds']:.3f} s | floor | NCHW / channels-last | "
            f"{fl['nchw']:.3f} / {fl['cl']:.3f} | 1 | - | - |"
        )
        for tool in ("robustlens", "robustlens-cl", "lime_image", "captum"):
            if tool in row:
                t = row[tool]
                name = "robustlens, channels_last=True" if tool == "robustlens-cl" else tool
                lines.append(
                    f"| | {name} | {t['layout']} | {t['seconds']:.3f} | {t['ratio_to_floor']:.2f} "
                    f"| {t['overhead_seconds']:.3f} | {t['stub_seconds']:.3f} |"
                )
    spread = ", ".join(
        f"{case} {min(row['all_floor_seconds']['nchw']):.3f}-{max(row['all_floor_seconds']['nchw']):.3f} s"
        for case, row in res["cases"].items()
    )
    lines += [
        "",
        "The two cores were shared with other jobs, so timings are noisy: the NCHW floor ranged "
        f"over the repeats as follows: {spread}. The free-model column (pure overhead, a few "
        "milliseconds of work per call at 28x28) is the least affected measure of overhead.",
        "",
        "Targets on the CPU:",
        "",
    ]
    ok = {True: "met", False: "**not met**"}
    for case, row in res["cases"].items():
        theirs = row.get("lime_image")
        for tool, tg in row.get("targets", {}).items():
            ours = row[tool]
            seg_s = row["segmentation_seconds"]
            name = "robustlens, channels_last=True" if tool == "robustlens-cl" else "robustlens"
            lines.append(
                f"- {case}, {name}: total <= 1.2x floor {ok[tg['total_le_1.2x_floor']]} "
                f"({ours['ratio_to_floor']:.2f}x); overhead <= 1/3 of lime_image's: measured with "
                f"the free model {ok[tg['free_model_le_third_of_lime']]} "
                f"({ours['stub_seconds']:.3f} s vs {theirs['stub_seconds']:.3f} s), without the "
                f"shared segmentation {ok[tg['free_model_without_segmentation_le_third_of_lime']]} "
                f"({ours['stub_seconds'] - seg_s:.3f} s vs {theirs['stub_seconds'] - seg_s:.3f} s), "
                f"as total - floor {ok[tg['overhead_le_third_of_lime']]} "
                f"({ours['overhead_seconds']:.3f} s vs {theirs['overhead_seconds']:.3f} s); "
                f"end to end {tg['speedup_vs_lime_end_to_end']:.2f}x lime_image's speed"
            )
    q = res.get("quality")
    if q:
        lines += [
            "",
            f"Faithfulness and stability on the first {q['images']} Fashion-MNIST test images "
            f"(fmnist-cnn, SLIC, K={q['K']}, {q['samples']} samples, black hiding, "
            "probabilities; deletion/insertion AUC: target probability as superpixels are hidden "
            "/ inserted in order of weight, black baseline; stability: mean pairwise top-5 "
            f"Jaccard over {q['robustlens']['seeds']} seeds on the first "
            f"{q['robustlens']['stability_images']} images):",
            "",
            "| tool | deletion AUC (lower: better) | insertion AUC (higher: better) | "
            "top-5 Jaccard over seeds |",
            "| --- | ---: | ---: | ---: |",
        ]
        for tool in ("robustlens", "lime_image"):
            t = q[tool]
            lines.append(
                f"| {tool} | {t['deletion_auc']:.3f} | {t['insertion_auc']:.3f} | "
                f"{t['top5_jaccard_over_seeds']:.3f} |"
            )
    lines += ["", "Command:", "", "```", res["command"], "```", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=1000, help="samples at 28x28 (default 1000)")
    p.add_argument("--samples-224", type=int, default=200, help="samples at 224x224 (default 200)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--repeats-224", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--quality-images", type=int, default=20)
    p.add_argument("--stability-images", type=int, default=5)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--skip-224", action="store_true")
    p.add_argument("--tools", default="robustlens,robustlens-cl,lime_image,captum")
    p.add_argument("--out", default="bench/results/explain.json")
    p.add_argument("--md", default="bench/results/explain.md")
    p.add_argument("--render", metavar="JSON", help="only print the markdown of a results file")
    args = p.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    torch.manual_seed(0)
    tools = args.tools.split(",")
    res: dict[str, Any] = {
        "command": "OMP_NUM_THREADS=1 " + " ".join(["/work/benchenv/bin/python", *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": str(torch.__version__),
        "cases": {},
    }
    ds = rl.data.load("fashion-mnist", split="test")
    fm = rl.zoo.load("fmnist-cnn")
    res["cases"]["fmnist-cnn 28x28 slic"] = time_case(
        "fmnist 28x28", fm, ds.x[0], "slic", args.samples, args.batch_size, args.repeats, tools
    )
    if not args.skip_224:
        from skimage.data import chelsea

        cat = torch.from_numpy(chelsea()).permute(2, 0, 1).float()[None] / 255
        cat = F.interpolate(cat, size=(224, 224), mode="area")[0].clamp(0, 1)
        torch.manual_seed(0)
        resnet = rl.models.create("resnet", in_channels=3, num_classes=1000, image_size=224)
        for segmenter in ("quickshift", "slic"):
            res["cases"][f"resnet-18 224x224 {segmenter}"] = time_case(
                f"resnet 224x224 {segmenter}",
                resnet.eval(),
                cat,
                segmenter,
                args.samples_224,
                args.batch_size,
                args.repeats_224,
                tools,
            )
    if args.quality_images and "lime_image" in tools:
        res["quality"] = quality(
            fm,
            ds,
            args.quality_images,
            args.stability_images,
            args.seeds,
            args.samples,
            args.batch_size,
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    Path(args.md).write_text(render(res))
    print(render(res))


if __name__ == "__main__":
    main()
