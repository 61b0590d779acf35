"""``robustlens``: the command line, a thin layer over the registries.

Exit codes: 0 on success, 1 when a run fails (missing data, unreadable checkpoint, ...), 2 on bad
usage (unknown option, unknown model or data set name, invalid value).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from robustlens import __version__
from robustlens.errors import (
    DataNotFoundError,
    LabelError,
    ParameterError,
    RobustLensError,
    UnknownNameError,
)

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_MODEL = "fmnist-cnn"


class UsageError(Exception):
    """A command line that cannot be run as given (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


_QUIET_RANK = False  # set on the ranks other than 0 of a torchrun job: rank 0 speaks for all


def _say(msg: str) -> None:
    if not _QUIET_RANK:
        print(msg, file=sys.stderr, flush=True)


def _join_ranks(args: argparse.Namespace) -> Any:
    """The torchrun group this process belongs to (one process without torchrun); on ranks
    other than 0, nothing is printed or written."""
    global _QUIET_RANK
    from robustlens.evaluation.distributed import group

    grp = group()
    if not grp.is_main:
        _QUIET_RANK = True
        args.quiet = True
    return grp


# --------------------------------------------------------------------------- shared helpers


def _resolve_model(args: argparse.Namespace, device: torch.device) -> Any:
    """The ``--model`` spec and its options through the one resolver (``rl.models.load``)."""
    from robustlens import models

    loaded = models.load(
        args.model,
        weights=args.weights,
        num_classes=args.num_classes,
        arch=args.arch,
        model_args=_key_values(args.model_arg, flag="--model-arg"),
        trust_pickle=args.trust_pickle,
        mean=args.mean,
        std=args.std,
        input_size=args.input_size,
        resize=args.resize,
        interpolation=args.interpolation,
        device=device,
    )
    if not args.quiet:
        _say(f"model {args.model} ({loaded.kind}): {loaded.preprocessing.describe()}")
        _say(f"  preprocessing from {loaded.preprocessing.source}")
    for note in loaded.warnings:
        _say("warning: " + note)
    return loaded


def _data_name(args: argparse.Namespace, loaded: Any) -> str:
    from robustlens import data

    labels = getattr(args, "labels", None)
    name = args.data or (str(Path(labels).parent) if labels else None) or loaded.dataset
    if args.data and loaded.dataset and args.data != loaded.dataset:
        _say(
            f"note: {args.model} was trained on {loaded.dataset}; its results on {args.data} "
            "say how it transfers, not how it does on its own data"
        )
    if name is None:
        raise UsageError(
            f"the data {args.model} was trained on is unknown: give --data NAME "
            f"({', '.join(data.names())}), --data path/to/folder (one sub-folder per class) or "
            "--data DIR --labels FILE.csv"
        )
    return str(name)


def _load_data(
    args: argparse.Namespace,
    loaded: Any,
    name: str,
    split: str,
    limit: int | None,
    seed: int,
) -> Any:
    """Data set ``name`` in the model's input geometry: a registered name, loaded in memory, or a
    folder (ImageFolder, ImageNet layout, or flat with ``--labels``), streamed from disk."""
    from robustlens import data

    pre = loaded.preprocessing
    labels = getattr(args, "labels", None)
    layout: Any = getattr(args, "layout", "auto")
    folder = Path(name) if name not in data.names() and Path(name).is_dir() else None
    if name == "folder":
        if args.data_root is None:
            raise UsageError("--data folder needs --data-root DIR (or give --data DIR directly)")
        folder = Path(args.data_root)
    if folder is None and (labels or layout != "auto"):
        raise UsageError(
            f"--labels and --layout describe a folder of images, but --data {name} is a "
            "registered data set; give --data DIR"
        )
    if folder is not None:
        files = data.open_folder(
            folder,
            labels=labels,
            layout=layout,
            split="val" if split == "test" else split,
            preprocessing=pre,
            workers=getattr(args, "workers", 0),
            strict=getattr(args, "strict", False),
        )
        total = len(files)
        if limit is not None:
            files = files.subset(limit, seed=seed)
        if not args.quiet:
            sample = (
                f"a stratified sample of {len(files)} of its {total}"
                if len(files) < total
                else f"its {total}"
            )
            _say(
                f"data: {sample} images in {files.num_classes} classes from {files.root}, "
                f"streamed ({files.workers} decoding worker{'s' if files.workers != 1 else ''}"
                f"{', stop at an unreadable file' if files.strict else ''})"
            )
        return files
    try:
        ds = data.load(name, split=split, root=args.data_root)
    except DataNotFoundError as exc:  # the library says root=...; the flag is --data-root
        raise DataNotFoundError(str(exc).replace("root=...", "--data-root DIR")) from None
    if limit is not None:
        ds = ds.subset(limit, seed=seed)
    c, h, w = ds.shape
    size = pre.input_size
    if (size is not None and (h, w) != tuple(size)) or c != pre.channels:
        # Converted batch by batch as they are read: the whole set at the model's size could be
        # many times the memory of the set itself.
        before = f"{c}x{h}x{w}"
        resized = data.ResizedImages.of(ds, pre, workers=getattr(args, "workers", 0))
        _say(
            f"note: {name} images ({before}) are converted to the model's input "
            f"{'x'.join(map(str, resized.shape))} batch by batch as they are read"
        )
        return resized
    return ds


def _skipped(ds: Any) -> dict[str, Any]:
    """The unreadable files of a streamed data set, for results.json (and a warning)."""
    files = [f.to_dict() for f in getattr(ds, "skipped", [])]
    if files:
        _say(
            f"warning: {len(files)} file(s) of {ds.name} could not be read and were left out; "
            f"first: {files[0]['path']} ({files[0]['error']}); all are listed in the results"
        )
    return {"count": len(files), "files": files}


def _fit_classes(
    args: argparse.Namespace, loaded: Any, ds: Any, device: torch.device
) -> tuple[torch.nn.Module, Any]:
    """The module to audit on ``ds`` (classes mapped when needed) and ``ds`` with its classes."""
    from robustlens import data, models

    probe = data.in_memory(ds[: min(len(ds), 8)]).x.to(device)
    try:
        with torch.no_grad():
            out = loaded.module(probe)
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UsageError(
            f"{args.model} cannot take {ds.name}'s images {tuple(probe.shape[1:])}: {detail}. "
            "Check that --data is the data the model was made for, or give its input geometry "
            "(--input-size, --resize)"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise UsageError(
            f"{args.model} returned {getattr(out, 'shape', type(out).__name__)} on a batch of "
            f"{len(probe)} images; robustlens needs logits (N, K)"
        )
    k = int(out.shape[1])
    numbered = list(ds.classes) == [str(i) for i in range(len(ds.classes))]
    if isinstance(ds, data.ImageFiles) and numbered and k > len(ds.classes) and not args.class_map:
        ds = ds.with_classes([str(i) for i in range(k)])  # integer labels: the model's outputs
    try:
        module, classes = models.map_classes(
            loaded.module,
            list(ds.classes),
            num_outputs=int(out.shape[1]),
            model_classes=loaded.classes,
            class_map=args.class_map,
        )
    except LabelError as exc:
        raise UsageError(f"{args.model} on {ds.name}: {exc}") from None
    if module is not loaded.module:
        _say(
            f"classes: the {len(ds.classes)} classes of {ds.name} mapped onto the model's "
            f"{out.shape[1]} outputs"
            + (", the rest counted as '(other)'" if len(classes) > len(ds.classes) else "")
        )
        ds = ds.with_classes(classes)
    return module, ds


def _model_record(loaded: Any, module: torch.nn.Module) -> dict[str, Any]:
    from robustlens.models import ClassMapped

    record: dict[str, Any] = loaded.to_dict()
    if isinstance(module, ClassMapped):
        record["class_map"] = module.index.tolist()
    return record


def _sanity(loaded: Any, module: torch.nn.Module, ds: Any, accuracy: float) -> list[str]:
    from robustlens._checks import model_device
    from robustlens.data import in_memory
    from robustlens.evaluation.defaults import sanity_warnings
    from robustlens.models import ClassMapped

    device = model_device(module) or torch.device("cpu")
    with torch.no_grad():
        logits = module(in_memory(ds[: min(len(ds), 32)]).x.to(device))
    notes = sanity_warnings(
        logits,
        accuracy=accuracy,
        num_classes=len([c for c in ds.classes if c != "(other)"]),
        trained=loaded.trained,
        normalised=loaded.preprocessing.mean is not None,
        mapped=isinstance(module, ClassMapped),
    )
    for note in notes:
        _say("warning: " + note)
    return notes


def _int_at_least(minimum: int) -> Any:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _default_workers() -> int:
    """Decoding processes by default: one per core left over from the model, at most 4."""
    import os

    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def _metadata(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    return {
        "robustlens": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "device": str(device),
        "seed": getattr(args, "seed", None),
        "command": "robustlens " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "robustlens",
    }


def _print_clean(res: Any, out: str | None) -> None:
    print(f"accuracy: {res.accuracy:.4f} on {res.n} images")
    _print_per_class(list(zip(res.classes, res.per_class.tolist(), strict=True)), out)


#: Up to this many classes, the terminal lists every class's accuracy; above it, the weakest and
#: strongest :data:`_EXTREMES` (a 1000-class model would print 1000 lines).
_ALL_CLASSES = 20
_EXTREMES = 5


def _print_per_class(rates: list[tuple[str, float | None]], out: str | None) -> None:
    """Per-class accuracies for the terminal: classes without a test image are counted, not
    listed; more than :data:`_ALL_CLASSES` classes show the weakest and strongest few, and say
    where the rest are."""
    seen = [(c, a) for c, a in rates if a is not None and not math.isnan(a)]
    if len(seen) <= _ALL_CLASSES:
        rows = [("", seen)]
    else:
        ranked = sorted(seen, key=lambda row: row[1])
        rows = [
            (f"the {_EXTREMES} weakest of {len(seen)} classes:", ranked[:_EXTREMES]),
            (f"the {_EXTREMES} strongest:", ranked[::-1][:_EXTREMES]),
        ]
    width = max((len(c) for _, chosen in rows for c, _ in chosen), default=0)
    for title, chosen in rows:
        if title:
            print(f"  {title}")
        for cls, acc in chosen:
            print(f"  {cls:<{width}}  {_rate(acc)}")
    rest = []
    if len(seen) > _ALL_CLASSES:
        where = f"{Path(out) / 'results.json'}" if out else "results.json (--out DIR)"
        rest.append(f"every class in {where}")
    if len(seen) < len(rates):
        rest.append(f"{len(rates) - len(seen)} of the model's {len(rates)} classes have no image")
    if rest:
        print(f"  ({'; '.join(rest)})")


def _rate(value: float | None) -> str:
    """A rate for the terminal; ``-`` where there was nothing to count (no image of a class,
    no image attacked)."""
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


# --------------------------------------------------------------------------- commands


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from robustlens import zoo

    rows = [zoo.info(name) for name in zoo.names()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    wn = max(len("name"), *(len(r["name"]) for r in rows))
    wd = max(len("data"), *(len(r["dataset"]) for r in rows))
    print(f"{'name':<{wn}} {'data':<{wd}} {'test acc':>8} {'size':>8}  description")
    for r in rows:
        acc = r.get("test_accuracy")
        size = r["size_bytes"]
        acc_text = "-" if acc is None else f"{acc:.4f}"
        size_text = "missing" if size is None else f"{size / 1e6:.2f} MB"
        print(
            f"{r['name']:<{wn}} {r['dataset']:<{wd}} {acc_text:>8} {size_text:>8}  "
            f"{r['description']}"
        )
    return EXIT_OK


def _key_values(pairs: Sequence[str], *, flag: str = "--arch-option") -> dict[str, Any]:
    """``key=value`` pairs; values are JSON (``widths=[16,32]``) or plain strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _init_from(model: torch.nn.Module, spec: str) -> None:
    """Copy the weights of model ``spec`` (any spec the resolver takes) into ``model``."""
    from robustlens import models

    source = models.load(spec).module
    ours, theirs = model.state_dict(), source.state_dict()
    mismatch = sorted(
        k
        for k in ours.keys() | theirs.keys()
        if k not in ours or k not in theirs or ours[k].shape != theirs[k].shape
    )
    if mismatch:
        raise UsageError(
            f"--init {spec}: its weights do not fit the model being trained (differing: "
            f"{', '.join(mismatch[:5])}); use the same --arch, --arch-option and normalisation"
        )
    model.load_state_dict(theirs)
    _say(f"starting from the weights of {spec}")


def cmd_train(args: argparse.Namespace) -> int:
    from robustlens import data, models
    from robustlens._runtime import resolve_device
    from robustlens.evaluation import clean_accuracy
    from robustlens.training import TrainConfig, channel_stats, fit

    device = resolve_device(args.device)
    models.ARCHITECTURES.get(args.arch)
    train = data.load(args.data, split="train", root=args.data_root)
    test = data.load(args.data, split="test", root=args.data_root)
    c, h, w = train.shape
    if h != w:
        raise UsageError(f"train: the architectures take square images, {args.data} is {h}x{w}")
    arch_kwargs = {
        "in_channels": c,
        "num_classes": train.num_classes,
        "image_size": h,
        **_key_values(args.arch_option),
    }
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        augment=args.augment,
        shift=args.shift,
        seed=args.seed,
    )
    torch.manual_seed(args.seed)
    net = models.create(args.arch, **arch_kwargs)
    model: torch.nn.Module = net
    mean, std = channel_stats(train)
    if args.normalize:
        model = models.Normalized(net, mean, std)
    if args.init is not None:
        _init_from(model, args.init)
    model = model.to(device)
    _say(f"training {args.arch} on {args.data} ({len(train)} images) on {device}")
    start = time.perf_counter()
    val = test if args.val else None
    log = None if args.quiet else _say
    if args.adversarial is None:
        history = fit(model, train, config=config, val=val, show_progress=not args.quiet, log=log)
    else:
        from robustlens.defenses import AdversarialConfig, adversarial_fit

        adversarial = AdversarialConfig(
            method=args.adversarial,
            eps=args.eps,
            steps=args.adv_steps,
            step=args.adv_step,
            lipschitz=args.lipschitz,
            lipschitz_weight=args.lipschitz_weight,
            guard=args.guard,
        )
        _say(f"adversarial training: {adversarial}")
        history = adversarial_fit(
            model,
            train,
            config=config,
            adversarial=adversarial,
            val=val,
            show_progress=not args.quiet,
            log=log,
        )
    seconds = time.perf_counter() - start
    res = clean_accuracy(model, test)
    _say(f"test accuracy {res.accuracy:.4f} after {seconds:.0f} s")
    meta = {
        "dataset": args.data,
        "classes": list(train.classes),
        "test_accuracy": res.accuracy,
        "train_seconds": round(seconds, 1),
        "init": args.init,
        "command": "robustlens " + shlex.join(sys.argv[1:]),
        "config": history.config,
        "history": {
            "loss": history.loss,
            "train_accuracy": history.train_accuracy,
            "guard_robust_accuracy": history.robust_accuracy,
        },
        "robustlens": __version__,
        "torch": str(torch.__version__),
    }
    models.save_checkpoint(
        args.out,
        model.cpu(),
        arch=args.arch,
        arch_kwargs=arch_kwargs,
        mean=mean if args.normalize else None,
        std=std if args.normalize else None,
        meta=meta,
    )
    print(f"wrote {args.out} (test accuracy {res.accuracy:.4f})")
    return EXIT_OK


def _attacks_from_args(args: argparse.Namespace, eps: float | None) -> list[Any]:
    """Build the ``--attack`` list; shared options go to the attacks that take them."""
    import dataclasses

    from robustlens import attacks

    shared = {"eps": eps, "norm": args.norm, "steps": args.steps, "restarts": args.restarts}
    extra = _key_values(args.attack_option)
    built: list[Any] = []
    for name in args.attack:
        cls = attacks.ATTACKS.get(name)
        if cls is attacks.Ensemble:
            # An ensemble is built from its members; on the command line, the standard one.
            if eps is None:
                raise UsageError("attack 'ensemble' needs a budget: add --eps")
            options = {k: v for k, v in (("norm", args.norm), ("steps", args.steps)) if v}
            built.append(attacks.Ensemble.standard(eps, seed=args.seed, **options, **extra))
            continue
        accepted = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in shared.items() if v is not None and k in accepted}
        kwargs.update(extra)
        if "eps" in accepted and "eps" not in kwargs:
            raise UsageError(f"attack {name!r} needs a budget: add --eps (for example --eps 0.1)")
        built.append(attacks.create(name, seed=args.seed, **kwargs))
    return built


def cmd_evaluate(args: argparse.Namespace) -> int:
    from robustlens import attacks
    from robustlens._runtime import resolve_device
    from robustlens.evaluation import clean_accuracy, evaluate
    from robustlens.evaluation.defaults import default_eps, describe_eps

    grp = _join_ranks(args)
    device = grp.device if grp.device is not None else resolve_device(args.device)
    for name in args.attack:
        attacks.ATTACKS.get(name)
    loaded = _resolve_model(args, device)
    data_name = _data_name(args, loaded)
    ds = _load_data(args, loaded, data_name, args.split, args.limit, args.seed)
    model, ds = _fit_classes(args, loaded, ds, device)
    eps = args.eps
    if args.attack and eps is None:
        eps = default_eps(ds.shape)
        if args.norm == "l2":
            eps = 0.5 if max(ds.shape[1:]) <= 64 and ds.shape[0] == 3 else eps * 10
        _say(
            f"budget: {describe_eps(eps) if args.norm != 'l2' else f'L2 eps {eps:.4g}'} (the "
            "convention for images of this size; --eps to change)"
        )
    attack_list = _attacks_from_args(args, eps)
    if not grp.is_main:  # the other ranks take their shares of the attacks only
        if attack_list:
            evaluate(
                model,
                ds,
                attack_list,
                batch_size=args.batch_size,  # None: 256, fewer large images
                out=args.out,
                show_progress=False,
                distributed=grp,
            )
        grp.close()
        return EXIT_OK
    res = clean_accuracy(
        model, ds, batch_size=args.batch_size or 256, show_progress=not args.quiet, out=args.out
    )
    _print_clean(res, args.out)
    notes = _sanity(loaded, model, ds, res.accuracy)
    payload: dict[str, Any] = {
        "model": args.model,
        "model_info": _model_record(loaded, model),
        "data": data_name,
        "split": args.split,
        "eps": eps,
        "warnings": loaded.warnings + notes,
        "clean": res.to_dict(),
    }
    if attack_list:
        ev = evaluate(
            model,
            ds,
            attack_list,
            batch_size=args.batch_size,  # None: 256, fewer large images
            out=args.out,
            show_progress=not args.quiet,
            distributed=grp if grp.active else False,
        )
        payload["robustness"] = ev.to_dict()
        print(
            f"robust accuracy (worst case over {len(attack_list)} attacks): "
            f"{ev.robust_accuracy:.4f}"
        )
        for name, row in ev.per_attack.items():
            l2n = row["median_l2_normalized"]
            print(
                f"  {name}: success {_rate(row['success_rate'])}, robust accuracy "
                f"{row['robust_accuracy']:.4f}, median normalised L2 "
                f"{'-' if l2n is None else f'{l2n:.4f}'}, "
                f"only this attack: {ev.contribution[name]['unique']}"
            )
    payload["skipped"] = _skipped(ds)
    if args.out:
        payload["meta"] = {**_metadata(args, device), "processes": grp.world}
        _write_json(Path(args.out) / "results.json", payload)
        print(f"wrote {Path(args.out) / 'results.json'}")
    grp.close()
    return EXIT_OK


def cmd_audit_defense(args: argparse.Namespace) -> int:
    from robustlens import data, defenses
    from robustlens._runtime import resolve_device
    from robustlens.evaluation import audit_defense
    from robustlens.evaluation.defaults import default_eps, describe_eps

    device = resolve_device(args.device)
    loaded = _resolve_model(args, device)
    data_name = _data_name(args, loaded)
    ds = _load_data(args, loaded, data_name, "test", args.limit, args.seed)
    model, ds = _fit_classes(args, loaded, ds, device)
    eps = default_eps(ds.shape) if args.eps is None else args.eps
    _say(f"budget: {describe_eps(eps)}")
    options = _key_values(args.defense_option, flag="--defense-option")
    pres: list[torch.nn.Module] = []
    for name in args.defense:
        clean = None
        if name == "quilting":
            if data_name not in data.names():
                raise UsageError(
                    "quilting builds its patch database from training images: give --data NAME "
                    f"of a registered data set with a train split ({', '.join(data.names())})"
                )
            clean = _load_data(args, loaded, data_name, "train", None, args.seed).x
        pres.append(defenses.build(name, clean=clean, seed=args.seed, **options).to(device))
    defended = defenses.defend(model, *pres)
    audit = audit_defense(
        defended,
        ds,
        model,
        eps=eps,
        steps=args.steps,
        restarts=args.restarts,
        samples=args.samples,
        ensemble_steps=args.ensemble_steps or None,
        blackbox_images=args.blackbox_images,
        blackbox_queries=args.blackbox_queries or None,
        seed=args.seed,
        show_progress=not args.quiet,
        log=None if args.quiet else _say,
    )
    print(audit.format())
    skipped = _skipped(ds)
    if args.out:
        payload = {
            "model": args.model,
            "model_info": _model_record(loaded, model),
            "data": data_name,
            "eps": eps,
            "defenses": [repr(p) for p in pres],
            "audit": audit.to_dict(),
            "skipped": skipped,
            "meta": _metadata(args, device),
        }
        _write_json(Path(args.out) / "defense_audit.json", payload)
        print(f"wrote {Path(args.out) / 'defense_audit.json'}")
    return EXIT_OK


def _suite_config(args: argparse.Namespace, shape: Sequence[int] | None = None) -> Any:
    """The audit's settings: defaults or --quick (for images of ``shape``), then --config, then
    the explicit options."""
    from robustlens.evaluation.config import SuiteConfig

    cfg = SuiteConfig.quick(shape) if args.quick else SuiteConfig()
    if args.config:
        cfg = SuiteConfig.from_toml(args.config, base=cfg)
    given: dict[str, Any] = {} if args.seed is None else {"seed": args.seed}
    data: dict[str, Any] = {}
    if args.limit is not None:
        data["limit"] = args.limit
    if args.attack_limit is not None:
        data["attack_limit"] = args.attack_limit
    if data:
        given["data"] = data
    if args.eps is not None:
        given["whitebox"] = {"eps": args.eps}
    if args.defense:
        given["defenses"] = {"names": args.defense}
    if getattr(args, "cue_conflict", None):
        given["bias"] = {"cue_conflict": args.cue_conflict}
    return SuiteConfig.from_dict(given, base=cfg)


def _default_budget(args: argparse.Namespace, cfg: Any, shape: Sequence[int]) -> Any:
    """The data's conventional budget unless ``--eps`` or the suite file gave one."""
    import tomllib

    from robustlens.evaluation.config import SuiteConfig, WhiteboxConfig
    from robustlens.evaluation.defaults import default_eps, describe_eps

    given = args.eps is not None
    if args.config and not given:
        with open(args.config, "rb") as fh:
            given = "eps" in (tomllib.load(fh).get("whitebox") or {})
    if not given:
        eps = default_eps(shape)
        changes: dict[str, Any] = {"eps": eps}
        if cfg.whitebox.eps_curve == WhiteboxConfig.eps_curve and eps != cfg.whitebox.eps:
            changes["eps_curve"] = [
                round(e * eps / cfg.whitebox.eps, 6) for e in cfg.whitebox.eps_curve
            ]
        cfg = SuiteConfig.from_dict({"whitebox": changes}, base=cfg)
    _say(
        f"budget: {describe_eps(cfg.whitebox.eps)}"
        + ("" if given else " (the convention for images of this size; --eps to change)")
    )
    return cfg


def _print_audit(sections: dict[str, Any], verdicts: list[dict[str, str]], out: str | None) -> None:
    from robustlens.report.verdicts import clean_populations

    clean = sections["clean"]
    print(f"clean accuracy: {clean['accuracy']:.4f} on the {clean['n']} test images")
    _print_per_class(list(clean["per_class"].items()), out)
    others = clean_populations(sections)[1:]
    if others:
        print("clean accuracy of the image sets the other parts use:")
        for what, n, acc in others:
            print(f"  {acc:.4f} on {'the' if n is None else f'the {n}'} {what}")
    wb = sections.get("whitebox")
    if wb:
        ev = wb["evaluation"]
        print(
            f"white-box, {wb['n']} attacked images, Linf eps {wb['eps']:.4g}: robust accuracy "
            f"{ev['robust_accuracy']:.4f} from {ev['clean_accuracy']:.4f} clean (worst case "
            f"over {', '.join(ev['attacks'])})"
        )
        for name, row in ev["per_attack"].items():
            print(f"  {name:<28} robust accuracy {row['robust_accuracy']:.4f}")
        for name, summary in wb["min_norm"].items():
            l2n = summary["median_l2_normalized"]
            on = f" on {wb['min_norm_n']} images" if "min_norm_n" in wb else ""
            print(f"  {name}{on}: median normalised L2 {'-' if l2n is None else f'{l2n:.4f}'}")
    print("findings:")
    for v in verdicts:
        print(f"  [{v['level']}] {v['text']}")


def cmd_audit(args: argparse.Namespace) -> int:
    from robustlens import data
    from robustlens._runtime import resolve_device
    from robustlens.evaluation.suite import run_suite
    from robustlens.report import write_report
    from robustlens.report.verdicts import derive_verdicts

    grp = _join_ranks(args)
    cfg = _suite_config(args)
    device = grp.device if grp.device is not None else resolve_device(args.device)
    model_name = args.model
    notes: list[str] = []
    if args.data is None and model_name == DEFAULT_MODEL and not data.available("fashion-mnist"):
        notes.append(
            "Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist); the audit "
            "fell back to the digits-cnn model on scikit-learn's digits"
        )
        _say("note: " + notes[-1])
        model_name = args.model = "digits-cnn"
    loaded = _resolve_model(args, device)
    data_name = _data_name(args, loaded)
    args.seed = cfg.seed  # recorded in the metadata
    ds = _load_data(args, loaded, data_name, "test", cfg.data.limit or None, cfg.seed)
    model, ds = _fit_classes(args, loaded, ds, device)
    if isinstance(ds, data.ImageDataset):  # files are read batch by batch onto the device
        ds = ds.to(device)
    if args.quick:  # smaller samples still for ImageNet-sized images (the same data limit)
        cfg = _suite_config(args, ds.shape)
    cfg = _default_budget(args, cfg, ds.shape)

    def train() -> Any:
        if data_name not in data.names():
            raise UsageError(
                "quilting builds its patch database from training images: audit a registered "
                f"data set with a train split ({', '.join(data.names())}), or leave out quilting"
            )
        return _load_data(args, loaded, data_name, "train", None, cfg.seed).to(device)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sections = run_suite(
        model,
        ds,
        cfg,
        train=train,
        out=out,
        resume=args.resume,
        show_progress=not args.quiet,
        log=None if args.quiet else _say,
        distributed=grp if grp.active else False,
    )
    if not grp.is_main:  # the other ranks took their shares of the white-box attacks
        grp.close()
        return EXIT_OK
    model_notes = loaded.warnings + _sanity(loaded, model, ds, float(sections["clean"]["accuracy"]))
    found = [{"level": "warn", "text": note} for note in model_notes]
    found += [{"level": v.level, "text": v.text} for v in derive_verdicts(sections)]
    _print_audit(sections, found, args.out)
    payload = {
        "model": model_name,
        "model_info": _model_record(loaded, model),
        "data": data_name,
        "notes": notes,
        "verdicts": found,
        "config": cfg.to_dict(),
        "sections": sections,
        "skipped": _skipped(ds),
        "meta": {
            **_metadata(args, device),
            "model source": f"{loaded.kind}: {args.model}",
            "preprocessing": f"{loaded.preprocessing.describe()} (from "
            f"{loaded.preprocessing.source})",
            "seconds": round(time.perf_counter() - start, 1),
            "processes": grp.world,
        },
    }
    _write_json(out / "results.json", payload)
    page = write_report(payload, out)
    print(f"wrote {out / 'results.json'} and {page}")
    grp.close()
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from robustlens import models
    from robustlens._runtime import resolve_device
    from robustlens.explain import Lime, faithfulness, plot_explanation, plot_path

    device = resolve_device(args.device)
    loaded = _resolve_model(args, device)
    model = loaded.module
    classes = list(loaded.classes or [])
    pre = loaded.preprocessing
    source: dict[str, Any]
    if args.image:
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(args.image) as opened:
                rgb = np.asarray(
                    opened.convert("L" if pre.channels == 1 else "RGB"), dtype=np.uint8
                )
        except (OSError, UnidentifiedImageError) as exc:
            raise UsageError(f"explain: cannot read image {args.image!r}: {exc}") from None
        pixels = torch.from_numpy(rgb.copy()).float().div_(255.0)
        pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        image = pre.apply_to(pixels.unsqueeze(0))[0]
        source = {"image": str(args.image), "label": None}
    else:
        data_name = _data_name(args, loaded)
        ds = _load_data(args, loaded, data_name, args.split, None, args.seed)
        if not 0 <= args.index < len(ds):
            raise UsageError(
                f"explain: --index must lie in 0..{len(ds) - 1} for {data_name} {args.split}, "
                f"got {args.index}"
            )
        mapped, ds = _fit_classes(args, loaded, ds, device)
        image, label = ds[args.index]
        label_name = ds.classes[int(label)]
        source = {"data": data_name, "split": args.split, "index": args.index, "label": int(label)}
        if isinstance(mapped, models.ClassMapped):
            # Explain the model's own classes; the label is the model's output for it.
            label_index = int(mapped.index[int(label)])
            source.update(label=label_index, label_name=label_name)
        else:
            classes = list(ds.classes)
    source["preprocessing"] = pre.to_dict()
    lime = Lime(
        samples=args.samples,
        K=args.K,
        segmenter=args.segmenter,
        kernel=args.kernel,
        hide=args.hide,
        output=args.output,
        batch_size=args.batch_size,
        seed=args.seed,
        class_names=classes or None,
    )
    import warnings

    from robustlens.explain import DELETION_MARGIN, MAX_GAP, MIN_R2

    with warnings.catch_warnings():  # the flags are printed below, once
        warnings.filterwarnings("ignore", message="Lime: ", category=RuntimeWarning)
        exp = lime.explain(model, image.to(device), args.target)
    curves = faithfulness(model, exp, batch_size=args.batch_size, seed=args.seed)
    label = source.get("label")
    given = "given by --target" if args.target is not None else "by default the prediction"
    print(f"explained class: {exp.explained_as(label)}; {given}")
    print(exp.format())
    print(
        f"deletion AUC {curves.deletion_auc:.4f} (lower: more faithful; random order "
        f"{curves.random_deletion_auc:.4f}, the mean over {curves.random_orders} "
        f"orders), insertion AUC {curves.insertion_auc:.4f} (higher: more faithful)"
    )
    flags = [*exp.warnings, *curves.warnings]
    for flag in curves.warnings:
        print(f"warning: {flag}")
    print(
        f"trust: {len(flags)} warning(s)"
        if flags
        else f"trust: no warning (weighted R2 >= {MIN_R2:g}, surrogate within {MAX_GAP:g} "
        "standard deviation(s) of the model at the image, deletion AUC at least "
        f"{DELETION_MARGIN:.0%} below random order's)"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": args.model,
        "model_info": loaded.to_dict(),
        **source,
        "explained": {
            "class": exp.target,
            "name": exp.label,
            "prediction": exp.prediction,
            "is_prediction": exp.target == exp.prediction,
            "is_label": None if label is None else exp.target == label,
            "given": args.target is not None,
        },
        "warnings": flags,
        "explanation": exp.to_dict(),
        "faithfulness": curves.to_dict(),
        "meta": _metadata(args, device),
    }
    _write_json(out / "explanation.json", payload)
    plot_explanation(exp).savefig(out / "explanation.png", dpi=110)
    plot_path(exp).savefig(out / "path.png", dpi=110)
    print(f"wrote {out / 'explanation.json'}, {out / 'explanation.png'}, {out / 'path.png'}")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def _attack_names() -> list[str]:
    from robustlens import attacks

    return attacks.ATTACKS.names()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="robustlens",
        description="Audit a PyTorch image classifier: how easily it is fooled, and what it relies on.",
        epilog="Run 'robustlens COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"robustlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: auto)")
        p.add_argument(
            "--seed", type=int, default=0, help="seed of every random choice (default: 0)"
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--data-root", metavar="DIR", help="folder to look for the data in first")

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model",
            default=DEFAULT_MODEL,
            help="a zoo name, a checkpoint, TorchScript or torch.export file, torchvision:NAME, "
            "timm:NAME, path/to/file.py:factory or package.module:factory (default: "
            f"{DEFAULT_MODEL}; see docs/own-model.md)",
        )
        g = p.add_argument_group(
            "your own model",
            "how to build it, and its preprocessing when the model does not carry it",
        )
        g.add_argument(
            "--weights", metavar="FILE", help="state_dict for torchvision:, timm:, code or --arch"
        )
        g.add_argument(
            "--num-classes",
            type=_positive_int,
            help="outputs of a model built here (constructor's)",
        )
        g.add_argument("--arch", help="robustlens architecture of a bare state_dict file")
        g.add_argument(
            "--model-arg",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="keyword for the model's factory, value as JSON (repeatable)",
        )
        g.add_argument(
            "--trust-pickle",
            action="store_true",
            help="load a model pickled whole: this RUNS CODE from the file, only for files you trust",
        )
        g.add_argument(
            "--mean", type=float, nargs="+", metavar="M", help="normalisation mean per channel"
        )
        g.add_argument(
            "--std", type=float, nargs="+", metavar="S", help="normalisation std per channel"
        )
        g.add_argument(
            "--input-size",
            type=_positive_int,
            nargs="+",
            metavar="PX",
            help="model input side (or H W); images are centre-cropped to it",
        )
        g.add_argument(
            "--resize", type=_positive_int, metavar="PX", help="resize the shorter side first"
        )
        g.add_argument("--interpolation", choices=["bilinear", "bicubic", "nearest"])
        g.add_argument(
            "--class-map",
            metavar="FILE",
            help="JSON or text file mapping each data set class to a model output",
        )

    def data_options(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group(
            "a folder of images",
            "--data DIR streams the images from disk, decoded in worker processes, batch by "
            "batch (see docs/data.md)",
        )
        g.add_argument(
            "--labels",
            metavar="CSV",
            help="labels of a flat folder: one 'path,label' row per image (paths relative to "
            "--data DIR, default the file's folder; Kaggle's LOC_val_solution.csv also reads)",
        )
        g.add_argument(
            "--layout",
            choices=["auto", "imagefolder", "imagenet"],
            default="auto",
            help="imagefolder: DIR/<class>/<image>; imagenet: DIR/<wnid>/<image> (or "
            "DIR/val/<wnid>/...) labelled with the ImageNet-1k index; auto: imagefolder, or "
            "the --labels file (default: auto)",
        )
        g.add_argument(
            "--workers",
            type=_non_negative_int,
            default=_default_workers(),
            metavar="N",
            help="processes decoding images (0: the main process; default: "
            f"{_default_workers()}, from the CPU count)",
        )
        g.add_argument(
            "--strict",
            action="store_true",
            help="stop at the first file that does not decode (default: skip it, count it and "
            "list it in the results)",
        )

    zoo_p = sub.add_parser("zoo", help="list the pretrained models shipped with robustlens")
    zoo_sub = zoo_p.add_subparsers(dest="zoo_command", metavar="ACTION", parser_class=_Parser)
    zl = zoo_sub.add_parser("list", help="name, data set, test accuracy and size of each model")
    zl.add_argument("--json", action="store_true", help="print JSON instead of a table")
    zl.set_defaults(func=cmd_zoo_list)

    tr = sub.add_parser(
        "train",
        help="train a registered architecture (this is how the zoo weights were made)",
        description="Train an architecture on a data set with a fixed seed and save a checkpoint.",
    )
    tr.add_argument("--arch", default="convnet", help="architecture name (default: convnet)")
    tr.add_argument(
        "--arch-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="architecture keyword, value as JSON, e.g. widths=[16,32] (repeatable)",
    )
    tr.add_argument(
        "--data", default="fashion-mnist", help="data set name (default: fashion-mnist)"
    )
    tr.add_argument("--epochs", type=_positive_int, default=10)
    tr.add_argument("--batch-size", type=_positive_int, default=128)
    tr.add_argument(
        "--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule"
    )
    tr.add_argument("--weight-decay", type=float, default=5e-4)
    tr.add_argument("--augment", choices=["none", "shift", "shift-flip"], default="shift")
    tr.add_argument(
        "--shift", type=int, default=2, help="largest random shift in pixels (default: 2)"
    )
    tr.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        help="do not put the data's mean/std normalisation inside the model",
    )
    tr.add_argument("--val", action="store_true", help="print test accuracy after every epoch")
    tr.add_argument(
        "--init",
        metavar="MODEL",
        help="start from the weights of a zoo model or checkpoint of the same architecture "
        "(adversarial fine-tuning of a standard model)",
    )
    adv = tr.add_argument_group("adversarial training")
    adv.add_argument(
        "--adversarial",
        choices=["pgd", "fast"],
        help="train on Linf adversarial examples: Madry's PGD or fast FGSM with random start",
    )
    adv.add_argument("--eps", type=float, default=0.1, help="Linf budget (default: 0.1)")
    adv.add_argument("--adv-steps", type=_positive_int, default=7, help="PGD steps (default: 7)")
    adv.add_argument(
        "--adv-step", type=float, help="step size (default: 2.5 eps / steps; fast: 1.25 eps)"
    )
    adv.add_argument("--lipschitz", choices=["none", "parseval", "spectral"], default="none")
    adv.add_argument("--lipschitz-weight", type=float, default=1e-3)
    adv.add_argument(
        "--no-guard",
        dest="guard",
        action="store_false",
        help="skip the per-epoch PGD check that stops catastrophic overfitting",
    )
    tr.add_argument("--out", required=True, help="checkpoint file to write")
    common(tr)
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "evaluate",
        help="clean accuracy, per-class accuracy and confusion of a model",
        description="Evaluate a zoo model or a checkpoint on a data set, clean and under attacks. "
        "Example: robustlens evaluate --model fmnist-cnn --attack pgd --eps 0.1 "
        "--out runs/pgd",
    )
    model_options(ev)
    data_options(ev)
    ev.add_argument("--data", help="data set name or folder (default: the model's own)")
    ev.add_argument("--split", default="test", choices=["train", "test"])
    ev.add_argument("--limit", type=_positive_int, help="evaluate a stratified sample of N images")
    ev.add_argument(
        "--batch-size",
        type=_positive_int,
        help="images per batch (default: 256; attacks take fewer large images at a time: 64 "
        "at 224x224)",
    )
    ev.add_argument(
        "--attack",
        action="append",
        default=[],
        metavar="NAME",
        help="attack to run (repeatable): " + ", ".join(_attack_names()) + " (ensemble: the "
        "standard one, APGD-CE, APGD-T then Square)",
    )
    ev.add_argument(
        "--eps",
        type=float,
        help="attack budget in pixel space (default: 0.1 for MNIST-like images, 8/255 "
        "CIFAR-sized, 4/255 larger)",
    )
    ev.add_argument("--norm", choices=["linf", "l2"], help="threat model of the budget")
    ev.add_argument("--steps", type=_positive_int, help="attack iterations")
    ev.add_argument("--restarts", type=_positive_int, help="random restarts (PGD)")
    ev.add_argument(
        "--attack-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other attack parameter, value as JSON (repeatable)",
    )
    ev.add_argument(
        "--out",
        metavar="DIR",
        help="write results.json (and samples.csv, summary.json with attacks) here; "
        "an unfinished run in DIR with the same settings is resumed",
    )
    common(ev)
    ev.set_defaults(func=cmd_evaluate)

    au = sub.add_parser(
        "audit",
        help="run the audit suite and write DIR/index.html and DIR/results.json",
        description="Run the standard audit suite on a model and data set and write a "
        "self-contained HTML report. Default: the zoo's fmnist-cnn on Fashion-MNIST (digits if "
        "it is missing).",
    )
    model_options(au)
    data_options(au)
    au.add_argument("--data", help="data set name or folder (default: the model's own)")
    au.add_argument(
        "--quick",
        action="store_true",
        help="small samples: about 3 minutes on 2 CPU cores (the full suite: about 8)",
    )
    au.add_argument("--config", metavar="TOML", help="suite file: sections, budgets, data sizes")
    au.add_argument(
        "--resume",
        action="store_true",
        help="reuse the sections DIR already holds for the same model, data and settings",
    )
    au.add_argument(
        "--limit",
        type=_positive_int,
        help="clean accuracy on a stratified sample of N images (default: all; --quick: 1000)",
    )
    au.add_argument(
        "--attack-limit", type=_positive_int, help="images attacked (default 1000; --quick: 200)"
    )
    au.add_argument(
        "--eps",
        type=float,
        help="Linf budget of the fixed-budget attacks (default: 0.1 for MNIST-like images, 8/255 "
        "for CIFAR-sized, 4/255 for larger)",
    )
    au.add_argument(
        "--defense",
        action="append",
        choices=["blur", "jpeg", "bitdepth", "crop", "tvm", "quilting"],
        help="audit the model behind this defense too (repeatable)",
    )
    au.add_argument(
        "--cue-conflict",
        metavar="DIR",
        help="Geirhos' cue-conflict stimuli, for the shape bias of an ImageNet model (the folder "
        "stimuli/style-transfer-preprocessed-512 of github.com/rgeirhos/texture-vs-shape)",
    )
    au.add_argument("--out", default="audit", help="output folder (default: ./audit)")
    common(au)
    au.set_defaults(seed=None)  # None: the suite file's seed (default 0)
    au.set_defaults(func=cmd_audit)

    ad = sub.add_parser(
        "audit-defense",
        help="naive vs adaptive attacks and gradient-masking checks on a defended model",
        description="Put a model behind input-transformation defenses and audit them: naive, "
        "adaptive (BPDA/EOT) and transfer attacks, the sanity checks of Athalye et al. 2018, a "
        "verdict. Example: robustlens audit-defense --defense jpeg --defense-option quality=75 "
        "--limit 200",
    )
    model_options(ad)
    data_options(ad)
    ad.add_argument("--data", help="data set name or folder (default: the model's own)")
    ad.add_argument(
        "--defense",
        action="append",
        required=True,
        choices=["blur", "jpeg", "bitdepth", "crop", "tvm", "quilting"],
        help="preprocessor, applied in the order given (repeatable)",
    )
    ad.add_argument(
        "--defense-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="preprocessor parameter, value as JSON, e.g. quality=75, given to every --defense "
        "(repeatable)",
    )
    ad.add_argument("--limit", type=_positive_int, default=200, help="images (default: 200)")
    ad.add_argument(
        "--eps",
        type=float,
        help="Linf budget (default: 0.1 for MNIST-like, 8/255 CIFAR-sized, 4/255 larger images)",
    )
    ad.add_argument("--steps", type=_positive_int, default=20, help="PGD steps (default: 20)")
    ad.add_argument("--restarts", type=_positive_int, default=1)
    ad.add_argument("--samples", type=_positive_int, default=4, help="EOT draws (default: 4)")
    ad.add_argument(
        "--ensemble-steps",
        type=int,
        default=100,
        help="steps of APGD-CE and APGD-T in the ensemble run on the survivors, whose Square "
        "attack gets 50x as many queries (0: skip; default: 100)",
    )
    ad.add_argument(
        "--blackbox-images", type=_positive_int, default=100, help="images NES attacks (100)"
    )
    ad.add_argument(
        "--blackbox-queries",
        type=int,
        default=1000,
        help="NES queries per image (0: skip the black-box attack; default: 1000)",
    )
    ad.add_argument("--out", metavar="DIR", help="write DIR/defense_audit.json")
    common(ad)
    ad.set_defaults(func=cmd_audit_defense)

    ex = sub.add_parser(
        "explain",
        help="LIME superpixel explanation of one image, with its path and trust diagnostics",
        description="Explain a model's prediction on one image with LIME (Ribeiro et al. 2016): "
        "the top superpixels with their weights, the fit's r2, the kernel's effective sample "
        "size, warnings, deletion/insertion AUC. Writes DIR/explanation.json, "
        "DIR/explanation.png and DIR/path.png. Example: robustlens explain --model fmnist-cnn "
        "--index 0 --out runs/explain",
    )
    model_options(ex)
    data_options(ex)
    ex.add_argument("--data", help="data set name or folder (default: the model's own)")
    ex.add_argument("--split", default="test", choices=["train", "test"])
    ex.add_argument(
        "--index", type=int, default=0, help="index of the image in the data set (default: 0)"
    )
    ex.add_argument(
        "--image",
        metavar="PATH",
        help="a PNG/JPEG file instead of --data/--index, converted to the model's channels and size",
    )
    ex.add_argument("--target", type=int, help="class to explain (default: the predicted one)")
    ex.add_argument(
        "--samples", type=_positive_int, default=1000, help="perturbed images (default: 1000)"
    )
    ex.add_argument(
        "--K", type=_positive_int, default=5, help="superpixels in the explanation (default: 5)"
    )
    ex.add_argument(
        "--segmenter",
        default="slic",
        choices=["slic", "quickshift", "felzenszwalb", "grid"],
        help="superpixel algorithm, parameters adapted to the image size (default: slic)",
    )
    ex.add_argument(
        "--hide",
        default="constant",
        choices=["mean", "constant", "blur"],
        help="what replaces a switched-off superpixel (default: black, as the deletion metric "
        "does; 'mean' is lime's choice, but a dark-background image stays recognisable under it)",
    )
    ex.add_argument(
        "--kernel",
        default="image",
        choices=["image", "binary"],
        help="proximity kernel: on the image distance (default) or lime's on the presence vector",
    )
    ex.add_argument(
        "--output",
        default="logits",
        choices=["probs", "logits", "log-probs"],
        help="model output explained (default: the target's logit, since a confident model's "
        "probability saturates; 'probs' is lime's choice)",
    )
    ex.add_argument("--batch-size", type=_positive_int, default=256)
    ex.add_argument("--out", required=True, metavar="DIR", help="output folder")
    common(ex)
    ex.set_defaults(func=cmd_explain)

    from robustlens.commands import dataset_bias

    dataset_bias.add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``robustlens`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        target = parser
        if args.command == "zoo":
            target = next(
                a
                for a in parser._subparsers._group_actions  # type: ignore[union-attr]
                if isinstance(a, argparse._SubParsersAction)
            ).choices["zoo"]
        target.print_help(sys.stderr)
        return EXIT_USAGE
    from robustlens._runtime import progress_scope

    try:
        # Progress lines on stderr for every loop of the command, unless --quiet.
        with progress_scope(not getattr(args, "quiet", False)):
            return int(args.func(args))
    except (UsageError, UnknownNameError, ParameterError) as exc:
        _say(f"robustlens {args.command}: error: {exc}")
        return EXIT_USAGE
    except RobustLensError as exc:
        _say(f"robustlens {args.command}: failed: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
