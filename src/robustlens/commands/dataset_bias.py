"""``robustlens dataset-bias DATA DATA [...]``: name that dataset, the cross-dataset matrix and
class balance (Torralba and Efros 2011) on folders of photos or registered data sets.

Each ``DATA`` is a folder (``DIR/<class>/<image>``, as torchvision's ImageFolder, or a flat
``DIR/<image>`` folder, one class), streamed from disk batch by batch, or a registered data set
name (``digits``, ``printed-digits``, ``mnist``, ``cifar10``, ...). What the classifier sees is
``--features``: ``pixels`` (thumbnails of ``--size`` px, colour kept when every data set has it)
or a model spec (``torchvision:resnet18``, ``timm:NAME``, a zoo name, a checkpoint file), whose
penultimate features feed a logistic regression (see :mod:`robustlens.bias.dataset` and
:mod:`robustlens.models.features`). Writes ``OUT/results.json`` and ``OUT/index.html``.

Exit codes as every command: 0 done, 1 a run that failed (unreadable data), 2 bad input (fewer
than two data sets, a folder without images, options that do not go together).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

_EPILOG = (
    "examples: robustlens dataset-bias photos/set-a photos/set-b --out runs/bias; "
    "robustlens dataset-bias photos/set-a photos/set-b --features torchvision:resnet18 "
    "--weights resnet18.pth --out runs/bias-resnet; "
    "robustlens dataset-bias digits printed-digits --out runs/digits"
)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value}")
    return value


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``dataset-bias`` on the sub-parsers ``sub`` of the ``robustlens`` parser."""
    from robustlens.bias.dataset import THUMBNAIL_SIZE
    from robustlens.cli import _default_workers, _int_at_least, _non_negative_int, _positive_int

    p = sub.add_parser(
        "dataset-bias",
        help="name that dataset and the cross-dataset matrix (Torralba and Efros) on folders",
        description="Can a classifier tell which data set an image comes from? Trains one on "
        "thumbnails (colour, framing) or on a model's penultimate features, reports its "
        "accuracy against chance, the cross-dataset generalisation matrix when the data sets "
        "share their classes, and class vs dataset balance. Writes DIR/results.json and "
        "DIR/index.html.",
        epilog=_EPILOG,
    )
    p.add_argument(
        "data",
        nargs="+",
        metavar="DATA",
        help="two or more data sets: a folder (DIR/<class>/<image> or DIR/<image>, any image "
        "sizes) or a registered data set name",
    )
    p.add_argument(
        "--features",
        default="pixels",
        metavar="pixels|MODEL",
        help="what the classifier sees: 'pixels' (thumbnails, the default) or a model spec "
        "(torchvision:resnet18, timm:NAME, a zoo name, a checkpoint) whose penultimate features "
        "feed a logistic regression",
    )
    g = p.add_argument_group("pixels")
    g.add_argument(
        "--size",
        type=_int_at_least(4),
        metavar="PX",
        help=f"thumbnail side: shorter side resized to it, then the centre crop (default: "
        f"{THUMBNAIL_SIZE}, or the smallest image side when smaller, e.g. 8 for digits)",
    )
    g.add_argument(
        "--channels",
        type=int,
        choices=[1, 3],
        help="3: colour, 1: grey (default: 3 when every data set has colour)",
    )
    g.add_argument(
        "--classifier",
        choices=["logistic", "convnet"],
        default="logistic",
        help="on thumbnails: logistic regression (default) or the small convnet",
    )
    m = p.add_argument_group("a model's features (--features MODEL)")
    m.add_argument(
        "--weights",
        metavar="FILE",
        help="state_dict of a torchvision or timm model (without it: seeded random weights, "
        "which are no meaningful backbone)",
    )
    m.add_argument(
        "--input-size",
        type=_int_at_least(8),
        metavar="PX",
        help="the model's input side (default: its own, 224 for ImageNet models)",
    )
    m.add_argument(
        "--resize", type=_positive_int, metavar="PX", help="resize the shorter side first"
    )
    p.add_argument(
        "--per-dataset",
        type=_int_at_least(2),
        metavar="N",
        help="images drawn from each data set, stratified by class (default: as many as the "
        "smallest data set has)",
    )
    p.add_argument(
        "--unbalanced",
        action="store_true",
        help="name that dataset on every image of every data set (chance: the largest share)",
    )
    p.add_argument(
        "--test-fraction",
        type=_fraction,
        default=0.3,
        metavar="F",
        help="share of each data set held out for testing (default: 0.3)",
    )
    p.add_argument(
        "--epochs",
        type=_positive_int,
        help="L-BFGS iterations of the logistic regression (100) or convnet epochs (20)",
    )
    p.add_argument(
        "--no-cross",
        dest="cross",
        action="store_false",
        help="skip the cross-dataset matrix (run by default when the data sets share classes)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=["train", "test"],
        help="split of registered data sets (default: test)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=64, metavar="N")
    p.add_argument(
        "--workers",
        type=_non_negative_int,
        default=_default_workers(),
        metavar="N",
        help=f"processes decoding images (default: {_default_workers()})",
    )
    p.add_argument(
        "--strict", action="store_true", help="stop at the first file that does not decode"
    )
    p.add_argument("--out", default="dataset-bias", help="output folder (default: ./dataset-bias)")
    common(p)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- the data


def _open(arg: str, args: argparse.Namespace) -> tuple[Any, str]:
    """Data set ``arg`` (a folder or a registered name) and where it came from, in words."""
    import torch

    from robustlens import data
    from robustlens.cli import UsageError
    from robustlens.data.folder import IMAGE_SUFFIXES
    from robustlens.errors import DataNotFoundError
    from robustlens.registry import closest

    path = Path(arg).expanduser()
    if path.is_dir():
        subdirs = [e for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
        if subdirs:
            try:
                files = data.open_folder(path, workers=args.workers, strict=args.strict)
            except DataNotFoundError as exc:
                raise UsageError(f"{arg}: {exc}") from None
            return files, f"folder {path}, {files.num_classes} classes"
        images = sorted(
            str(f)
            for f in path.iterdir()
            if f.is_file()
            and not f.name.startswith(".")
            and f.name.lower().endswith(IMAGE_SUFFIXES)
        )
        if not images:
            raise UsageError(
                f"{arg} holds no images ({', '.join(IMAGE_SUFFIXES)}) and no sub-folders; give "
                "a folder of images (DIR/<image> or DIR/<class>/<image>)"
            )
        name = path.resolve().name or str(path)
        files = data.ImageFiles(
            files=tuple(images),
            y=torch.zeros(len(images), dtype=torch.long),
            classes=[name],
            name=name,
            root=str(path),
        ).with_options(workers=args.workers, strict=args.strict)
        return files, f"folder {path}, flat (one class)"
    known = [n for n in data.names() if n != "folder"]
    if path.exists():
        raise UsageError(
            f"{arg} is a file; give a folder of images or a registered data set "
            f"({', '.join(known)})"
        )
    if arg not in known:
        guess = closest(arg, known)
        hint = f"; did you mean {guess!r}?" if guess else ""
        raise UsageError(
            f"{arg!r} is neither a folder nor a registered data set ({', '.join(known)}){hint}"
        )
    return data.load(arg, split=args.split, root=args.data_root), f"{arg}, {args.split} split"


# --------------------------------------------------------------------------- findings


def _verdicts(named: Any, cross: Any, skipped: int) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    told = named.p_value < 0.01
    out.append(
        {
            "level": "warn" if told else "ok",
            "text": (
                f"The data sets are told apart: a {named.description} names an image's data set "
                f"{named.accuracy:.1%} of the time against {named.chance:.1%} by chance "
                f"(p = {named.p_value:.1e}). Each has a look of its own that a model trained on "
                "it can learn; see the confusion for which."
                if told
                else f"A {named.description} does not tell the data sets apart: "
                f"{named.accuracy:.1%} against {named.chance:.1%} by chance (p = "
                f"{named.p_value:.2g}). A richer representation (larger --size, a trained "
                "model's --features) may still find a difference."
            ),
        }
    )
    for warning in named.warnings:
        out.append({"level": "warn", "text": warning[:1].upper() + warning[1:] + "."})
    if cross is not None:
        worst = max(range(len(cross.names)), key=lambda i: cross.drop[i])
        drop = cross.drop[worst]
        out.append(
            {
                "level": "warn" if drop > 0.1 else "ok",
                "text": f"Trained on {cross.names[worst]}, the classifier loses {drop:.1%} of its "
                "accuracy on the other data sets (relative drop; the largest of the matrix).",
            }
        )
    if skipped:
        out.append(
            {
                "level": "warn",
                "text": f"{skipped} file(s) could not be decoded and were left out.",
            }
        )
    return out


def _print(named: Any, cross: Any) -> None:
    print(f"name that dataset: {named.description}")
    print(
        f"  accuracy {named.accuracy:.4f} on {named.n_test} test images (chance "
        f"{named.chance:.4f}, p = {named.p_value:.2g})"
    )
    width = max(len(n) for n in named.names)
    for name, recall in zip(named.names, named.per_dataset, strict=True):
        print(f"  {name:<{width}}  named correctly {recall:.4f}")
    if cross is not None:
        print("cross-dataset generalisation (rows: trained on; columns: tested on):")
        print(cross.table())


# --------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    from robustlens import models
    from robustlens._runtime import resolve_device
    from robustlens.bias.dataset import balance, cross_dataset_matrix, name_that_dataset
    from robustlens.cli import EXIT_OK, UsageError, _metadata, _say, _write_json
    from robustlens.report import write_report

    if len(args.data) < 2:
        raise UsageError(
            f"give at least two data sets to compare, got {len(args.data)} ({args.data[0]}); "
            "name that dataset asks which of several data sets an image comes from"
        )
    pixels = args.features == "pixels"
    if pixels and any(v is not None for v in (args.weights, args.input_size, args.resize)):
        raise UsageError(
            "--weights, --input-size and --resize configure the model of --features MODEL; "
            "with --features pixels, --size sets the thumbnails"
        )
    if not pixels and (args.size is not None or args.channels is not None):
        raise UsageError(
            "--size and --channels shape the thumbnails of --features pixels; the model takes "
            "its own input size (--input-size PX)"
        )
    if not pixels and args.classifier != "logistic":
        raise UsageError("on a model's features the classifier is a logistic regression")
    device = resolve_device(args.device)
    start = time.perf_counter()
    opened = [_open(arg, args) for arg in args.data]
    dss = [ds for ds, _ in opened]
    features: Any = "pixels"
    if not pixels:
        features = models.backbone(
            args.features,
            weights=args.weights,
            input_size=args.input_size,
            resize=args.resize,
            seed=args.seed,
            device=device,
        )
        if not args.quiet:
            _say(f"features: {features.describe()}")
            _say(f"  input: {features.preprocessing.describe()}")
        for warning in features.warnings:
            _say("warning: " + warning)
    common: dict[str, Any] = {
        "features": features,
        "per_dataset": args.per_dataset,
        "test_fraction": args.test_fraction,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }
    if pixels:
        common.update(size=args.size, channels=args.channels, classifier=args.classifier)
    named = name_that_dataset(dss, balanced=not args.unbalanced, **common)
    section: dict[str, Any] = {}
    notes: list[str] = []
    cross = None
    classes = dss[0].classes
    shared = all(ds.classes == classes for ds in dss) and len(classes) > 1
    if args.cross and shared:
        cross = cross_dataset_matrix(dss, **common)
    elif args.cross:
        notes.append(
            "No cross-dataset matrix: it needs data sets that share one label space (the same "
            "class folders) with at least two classes."
        )
    if any(len(ds.classes) > 1 for ds in dss):
        section["balance"] = balance(dss).to_dict()
    skipped = named.skipped
    section = {
        "data": [
            {
                "name": name,
                "source": source,
                "images": len(ds),
                "classes": len(ds.classes),
                "skipped": skipped[i] if i < len(skipped) else 0,
            }
            for i, (name, (ds, source)) in enumerate(zip(named.names, opened, strict=True))
        ],
        "notes": notes,
        "name_that_dataset": named.to_dict(),
        **({"cross_dataset": cross.to_dict()} if cross is not None else {}),
        **section,
        "seconds": round(time.perf_counter() - start, 1),
    }
    for note in notes:
        _say("note: " + note)
    verdicts = _verdicts(named, cross, sum(skipped))
    _print(named, cross)
    out = Path(args.out)
    payload = {
        "data": ", ".join(named.names),
        "verdicts": verdicts,
        "sections": {"dataset_bias": section},
        "meta": {
            **_metadata(args, device),
            "features": named.description,
            "seconds": section["seconds"],
        },
    }
    _write_json(out / "results.json", payload)
    page = write_report(payload, out)
    print(f"wrote {out / 'results.json'} and {page}")
    return EXIT_OK
