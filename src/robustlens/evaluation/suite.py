"""The audit suite behind ``robustlens audit``: every section as a JSON-ready dict, resumable.

Sections, in order (each one's settings in :class:`~robustlens.evaluation.config.SuiteConfig`):

- ``clean``: accuracy, per class, confusion matrix.
- ``whitebox``: FGSM, I-FGSM, PGD-40 and the standard ensemble at ``eps`` with the per-image
  worst case (the headline figure) and the evaluation's warnings; accuracy against normalised L2
  from each minimum-norm attack (DeepFool, C&W: one run gives the whole curve); PGD's robust
  accuracy against a list of budgets; a gallery of adversarial examples.
- ``blackbox``: NES through a score oracle (and, on request, through a label-only oracle) under a
  query budget, with success against queries.
- ``defenses``: :func:`~robustlens.evaluation.audit_defense` for each configured defense.
- ``explanations``: LIME on a few test images with faithfulness and stability.
- ``bias``: corruption robustness (with mCE against a baseline when given), random vs adversarial
  noise, ambiguous test images, for Fashion-MNIST accuracy at the levels of its class hierarchy,
  the shape bias (of the model if it classifies the synthetic cue-conflict shapes, of an
  ImageNet model on Geirhos' stimuli when their folder is given, else skipped with the reason),
  reliance on a planted cue, and superpixel statistics over classes.

Sections hold numbers; the images they show (gallery, explained images and their segments,
superpixel examples and masks, ambiguous images) are tensors in the section's dict. With ``out``,
each finished section's tensors are written as PNG files under ``out/images/NAME/`` and replaced
by their paths relative to ``out`` (:func:`robustlens._images.save_images`), so the dicts
``run_suite`` returns, and ``results.json``, hold no pixels; without ``out`` the tensors stay.

With ``out``, each finished section is also written to ``out/.robustlens/sections/NAME.json`` with
a fingerprint of the model, the data (images and labels) and the section's settings;
``resume=True`` reuses the sections whose fingerprint matches (and whose image files are still
there) and the white-box evaluation resumes from its per-image rows, so an interrupted audit loses
at most the section it was in (and none of the white-box rows).

Under torchrun (``distributed=True``) the white-box section's fixed-budget attacks are sharded
over the ranks with the per-image results of one process; rank 0 runs the rest and writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlens._images import image_refs, save_images
from robustlens._runtime import batched_logits, progress_option, status
from robustlens.attacks import FGSM, IFGSM, PGD, CarliniWagner, DeepFool, Ensemble
from robustlens.attacks.base import Attack, AttackResult
from robustlens.blackbox import NES, Oracle
from robustlens.data.dataset import ImageDataset
from robustlens.data.files import ImageFiles
from robustlens.data.stream import ImageData, fingerprint, in_memory, predict
from robustlens.evaluation.clean import clean_accuracy
from robustlens.evaluation.config import BiasConfig, SuiteConfig
from robustlens.evaluation.curves import accuracy_vs_distance, robust_accuracy_curve
from robustlens.evaluation.defaults import attack_batch, query_batch
from robustlens.evaluation.distributed import Group, group
from robustlens.evaluation.runner import Evaluation, evaluate, model_fingerprint

__all__ = ["run_suite", "success_vs_queries"]

Log = Callable[[str], None]

_FORMAT = 2
"""Version of the saved section files: 2 keeps images as PNG files beside them (1 held them as
nested lists in the JSON, and is run again rather than reused)."""


# --------------------------------------------------------------------------- storage


class _Store:
    """Finished sections on disk, each with the fingerprint of what produced it; their images as
    PNG files under ``out/images/NAME/``."""

    def __init__(
        self, out: Path | None, resume: bool, base: str, log: Log, *, writer: bool = True
    ) -> None:
        self.out = out
        self.loaded: dict[str, dict[str, Any] | None] = {}
        # The suite's bookkeeping lives under out/.robustlens, so that a fresh run clears only its
        # own files, never a folder of the user's; the images the results reference live under
        # out/images/NAME/, emptied of its PNG files when section NAME is written again.
        self.root = None if out is None else out / ".robustlens"
        self.dir = None if self.root is None else self.root / "sections"
        self.resume = resume
        self.base = base
        self.log = log
        # Under torchrun only rank 0 (the writer) clears and creates the folder; the other ranks
        # write their shards' rows into the work folders it names.
        if writer and self.root is not None and self.dir is not None:
            if not resume:
                shutil.rmtree(self.root, ignore_errors=True)
            self.dir.mkdir(parents=True, exist_ok=True)

    def work(self, name: str, settings: Any) -> Path | None:
        """A scratch folder for section ``name`` under these exact settings (for its per-image
        rows): a changed setting gets a fresh folder instead of an incompatible one."""
        return (
            None if self.root is None else self.root / "work" / f"{name}-{self.key(name, settings)}"
        )

    def key(self, name: str, settings: Any) -> str:
        text = json.dumps([self.base, name, settings], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def load(self, name: str, settings: Any) -> dict[str, Any] | None:
        """Section ``name`` as an earlier run saved it under these settings, else ``None``."""
        if name not in self.loaded:
            self.loaded[name] = self._load(name, settings)
        return self.loaded[name]

    def _load(self, name: str, settings: Any) -> dict[str, Any] | None:
        if self.out is None or self.dir is None or not self.resume:
            return None
        path = self.dir / f"{name}.json"
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            self.log(f"{name}: the saved section is unreadable, running it again")
            return None
        if saved.get("format") != _FORMAT:
            self.log(f"{name}: saved by an older robustlens, running again")
            return None
        if saved.get("fingerprint") != self.key(name, settings):
            self.log(f"{name}: model, data or settings changed since the saved run, running again")
            return None
        result: dict[str, Any] = saved["result"]
        missing = [ref for ref in image_refs(result) if not (self.out / ref).is_file()]
        if missing:
            self.log(
                f"{name}: {len(missing)} of its image files are missing ({missing[0]}), "
                "running again"
            )
            return None
        self.log(f"{name}: reused from the earlier run")
        return result

    def save(self, name: str, settings: Any, result: dict[str, Any]) -> dict[str, Any]:
        """Write section ``name`` (its tensors as PNG files, see :func:`save_images`) and return it
        as written; without a folder, return ``result`` as it is."""
        if self.dir is None or self.out is None:
            return result
        written: dict[str, Any] = save_images(result, self.out, name)
        path = self.dir / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        payload = {"format": _FORMAT, "fingerprint": self.key(name, settings), "result": written}
        tmp.write_text(json.dumps(payload, default=_json_default))
        tmp.replace(path)
        return written


def _data_fingerprint(ds: ImageData) -> str:
    """A short hash of a data set's images and labels (what a saved section was computed on):
    the pixels in memory, the files (paths, sizes) and input geometry of streamed data."""
    return fingerprint(ds)


def _device(ds: ImageData, model: nn.Module) -> torch.device:
    """Where a section's tensors go: the in-memory images' device, else the model's (streamed
    images are decoded on the CPU and sent to the model's device batch by batch)."""
    from robustlens._checks import model_device

    if isinstance(ds, ImageDataset):
        return ds.x.device
    return model_device(model) or torch.device("cpu")


def _check_suite(
    model: nn.Module,
    ds: ImageData,
    cfg: SuiteConfig,
    *,
    train: Callable[[], ImageDataset] | None,
    out: Path | None,
    resume: bool,
) -> None:
    """Everything that can be checked before the first section runs, checked there."""
    from robustlens._checks import check_model
    from robustlens.errors import DTypeError, ParameterError

    check_model(model, where="run_suite")
    if not isinstance(ds, ImageDataset | ImageFiles):
        raise DTypeError(
            f"run_suite: ds must be an ImageDataset or ImageFiles (rl.data.open_folder), got "
            f"{type(ds).__name__}"
        )
    if not isinstance(cfg, SuiteConfig):
        raise DTypeError(f"run_suite: config must be a SuiteConfig, got {type(cfg).__name__}")
    if resume and out is None:
        raise ParameterError("run_suite: resume=True needs the out= folder of the earlier run")
    if "quilting" in cfg.defenses.names and train is None:
        raise ParameterError(
            "run_suite: the quilting defense builds its database from clean training images; "
            "pass train=lambda: rl.data.load(name, split='train')"
        )
    if cfg.bias.enabled and cfg.bias.shape_bias and cfg.bias.cue_conflict:
        from robustlens.data import open_cue_conflict

        open_cue_conflict(cfg.bias.cue_conflict)  # names and layout, before hours of work
    if cfg.bias.enabled and cfg.bias.baseline:
        from robustlens.models.zoo import ZOO

        if cfg.bias.baseline not in ZOO and not Path(cfg.bias.baseline).is_file():
            raise ParameterError(
                f"suite config [bias]: 'baseline' {cfg.bias.baseline!r} is neither a zoo model "
                f"({', '.join(ZOO.names())}) nor a checkpoint file"
            )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# --------------------------------------------------------------------------- white-box


def _fixed_budget_attacks(
    names: tuple[str, ...], eps: float, steps: int, seed: int
) -> list[Attack]:
    make: dict[str, Callable[[], Attack]] = {
        "fgsm": lambda: FGSM(eps=eps, seed=seed),
        "ifgsm": lambda: IFGSM(eps=eps, steps=20, step=eps / 10, seed=seed),
        "pgd": lambda: PGD(eps=eps, steps=steps, seed=seed),
        "ensemble": lambda: Ensemble.standard(eps=eps, seed=seed),
    }
    return [make[n]() for n in names]


def _whitebox_evaluation(
    model: nn.Module,
    ds: ImageData,
    config: SuiteConfig,
    work: Path | None,
    show_progress: bool | None,
    distributed: Group | bool = False,
) -> Evaluation:
    """The fixed-budget attacks of the white-box section, per image: what every rank of a
    torchrun audit computes its shard of."""
    wb = config.whitebox
    attacks = _fixed_budget_attacks(wb.attacks, wb.eps, wb.steps, config.seed)
    return evaluate(
        model,
        ds,
        attacks,
        batch_size=attack_batch(ds.shape),
        out=work,
        show_progress=show_progress,
        distributed=distributed,
    )


def gallery(result: AttackResult, classes: list[str], count: int) -> list[dict[str, Any]]:
    """Up to ``count`` successful adversarial examples of ``result``, distinct true classes first."""
    idx = torch.nonzero(result.success & result.attacked).flatten().cpu()
    if not len(idx) or count == 0:
        return []
    labels = result.y.cpu()[idx]
    seen: set[int] = set()
    order: list[int] = []
    for i, lab in zip(idx.tolist(), labels.tolist(), strict=True):  # a few dozen at most
        if lab not in seen:
            seen.add(lab)
            order.append(i)
    order += [i for i in idx.tolist() if i not in order]
    items = []
    for i in order[:count]:
        items.append(
            {
                "index": i,
                "label": classes[int(result.y[i])],
                "clean_pred": classes[int(result.y[i])],
                "adv_pred": classes[int(result.pred[i])],
                "attack": result.attack,
                "l2": float(result.l2[i]),
                "linf": float(result.linf[i]),
                "l2_normalized": float(result.l2_normalized[i]),
            }
        )
    return items


def whitebox_section(
    model: nn.Module,
    ds: ImageData,
    config: SuiteConfig,
    *,
    work: Path | None,
    show_progress: bool | None,
    distributed: Group | bool = False,
) -> dict[str, Any]:
    """Fixed-budget attacks with the worst case, the lecture's two curves and a gallery.

    The headline figure is the worst case over the configured attacks (by default FGSM, I-FGSM,
    PGD-40 and the standard ensemble, APGD-CE, APGD-T, then Square); the single attacks are there
    to show how much a weak attack overstates. With a ``distributed`` group the fixed-budget
    attacks are sharded over its ranks (the others call :func:`_whitebox_evaluation`); the curves
    and the gallery, on small samples, run here.
    """
    wb, seed = config.whitebox, config.seed
    ev = _whitebox_evaluation(model, ds, config, work, show_progress, distributed)
    sub = in_memory(ds.subset(min(wb.min_norm_limit, len(ds)), seed=seed))
    batch = attack_batch(ds.shape)
    curves, summaries = [], {}
    for name in wb.min_norm:
        attack: Attack = (
            DeepFool(seed=seed) if name == "deepfool" else CarliniWagner(steps=100, seed=seed)
        )
        res = attack(model, sub.x, sub.y, batch_size=batch)
        curves.append(accuracy_vs_distance(res).to_dict())
        summaries[res.attack] = res.summary()
    pgd = PGD(eps=wb.eps, steps=wb.steps, seed=seed)
    eps_sweep = robust_accuracy_curve(pgd, model, sub.x, sub.y, wb.eps_curve, batch_size=batch)
    shown: list[dict[str, Any]] = []
    if wb.gallery:
        pool = in_memory(ds[: min(len(ds), 20 * wb.gallery)])
        res = pgd(model, pool.x, pool.y, batch_size=batch)
        shown = gallery(res, ds.classes, wb.gallery)
        for item in shown:  # tensors: stored as image files with the section
            item["x"] = pool.x[item["index"]].cpu()
            item["x_adv"] = res.x_adv[item["index"]].cpu()
    return {
        "eps": wb.eps,
        "n": len(ds),
        "evaluation": ev.to_dict(),
        "min_norm": summaries,
        "min_norm_n": len(sub),
        "accuracy_vs_l2_normalized": curves,
        "pgd_accuracy_vs_eps": eps_sweep.to_dict(),
        "gallery": shown,
    }


# --------------------------------------------------------------------------- black-box


def success_vs_queries(
    result: AttackResult, budget: int, points: int = 50
) -> dict[str, list[float]]:
    """Success rate over attacked images as a function of the query budget, from one run.

    An image counts as fooled within ``q`` queries when the attack succeeded on it having used at
    most ``q`` queries (the oracle's own per-image count).

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:6]
        >>> oracle = rl.blackbox.Oracle(rl.zoo.load("digits-cnn"), output="probs", budget=500)
        >>> res = rl.blackbox.NES(eps=0.3, max_queries=500)(oracle, ds.x, ds.y)
        >>> curve = success_vs_queries(res, 500)
        >>> curve["success_rate"][-1] == res.success_rate, curve["queries"][0]
        (True, 0.0)
    """
    grid = torch.linspace(0, budget, points, dtype=torch.float64)
    attacked = result.attacked.cpu()
    n = int(attacked.sum())
    q = result.queries.cpu().double()[attacked]
    ok = result.success.cpu()[attacked]
    hits = ((q[None, :] <= grid[:, None]) & ok[None, :]).sum(1).double()
    rate = (hits / n).tolist() if n else [math.nan] * points
    return {"queries": grid.tolist(), "success_rate": rate}


def blackbox_section(model: nn.Module, ds: ImageData, config: SuiteConfig) -> dict[str, Any]:
    """NES through a score oracle (``"nes"``) and a label-only oracle (``"nes-label"``, targeted at
    a random other class, starting from an image of that class)."""
    bb, eps, seed = config.blackbox, config.whitebox.eps, config.seed
    sub = in_memory(ds.subset(min(bb.images, len(ds)), seed=seed))
    out: dict[str, Any] = {"n": len(sub), "eps": eps, "queries": bb.queries, "attacks": {}}
    for name in bb.attacks:
        start = time.perf_counter()
        if name == "nes":
            oracle = Oracle(model, output="probs", budget=bb.queries)
            nes = NES(eps=eps, max_queries=bb.queries, seed=seed)
            held = query_batch(ds.shape, nes.samples)
            res = nes(oracle, sub.x, sub.y, batch_size=held)
            label = f"NES, scores (eps {eps:.4g})"
        else:
            g = torch.Generator().manual_seed(seed)
            k = ds.num_classes
            target = (sub.y.cpu() + torch.randint(1, k, (len(sub),), generator=g)) % k
            # A starting image for each target: the first image of ds the model classifies as it
            # (label-only NES starts inside the target's region and shrinks towards x).
            pred = predict(model, ds)  # -1 for a file that does not decode
            first_of = torch.full((k,), -1, dtype=torch.long)
            present = torch.unique(pred[pred >= 0])
            first_of[present] = torch.stack([torch.nonzero(pred == c)[0, 0] for c in present])
            target = torch.where(first_of[target] >= 0, target, sub.y.cpu())
            keep = target != sub.y.cpu()
            x_init = in_memory(ds[first_of[target].clamp_min(0)]).x.to(sub.x.device)
            oracle = Oracle(model, output="label", budget=bb.queries)
            attack = NES(eps=eps, mode="label-only", max_queries=bb.queries, seed=seed)
            dev = sub.x.device
            res = attack(
                oracle,
                sub.x[keep.to(dev)],
                sub.y[keep.to(dev)],
                target=target[keep].to(dev),
                x_init=x_init[keep.to(dev)],
                batch_size=query_batch(ds.shape, attack.samples * attack.mc_samples),
            )
            label = f"NES, labels only, targeted (eps {eps:.4g})"
        ok = res.success & res.attacked
        out["attacks"][label] = {
            "success_rate": _finite(res.success_rate),
            "robust_accuracy": _finite(res.robust_accuracy),
            "median_queries": float(res.queries[ok].double().median()) if bool(ok.any()) else None,
            "mean_queries": float(res.queries[res.attacked].double().mean())
            if bool(res.attacked.any())
            else None,
            "curve": success_vs_queries(res, bb.queries),
            "seconds": round(time.perf_counter() - start, 2),
        }
    return out


# --------------------------------------------------------------------------- defenses


def defenses_section(
    model: nn.Module,
    ds: ImageData,
    config: SuiteConfig,
    *,
    train: Callable[[], ImageDataset],
    show_progress: bool | None,
    log: Log,
) -> dict[str, Any]:
    """:func:`audit_defense` of ``model`` behind each configured defense, one at a time."""
    from robustlens import defenses
    from robustlens.evaluation.defense_audit import audit_defense

    dc, seed = config.defenses, config.seed
    sub = ds.subset(min(dc.images, len(ds)), seed=seed)  # streamed by audit_defense
    dev = _device(sub, model)
    out: dict[str, Any] = {}
    for name in dc.names:
        log(f"defense audit: {name}")
        clean = train().x if name == "quilting" else None
        pre = defenses.build(name, clean=clean, seed=seed).to(dev)
        audit = audit_defense(
            defenses.defend(model, pre),
            sub,
            model,
            eps=config.whitebox.eps,
            steps=dc.steps,
            samples=dc.samples,
            ensemble_steps=dc.ensemble_steps or None,
            blackbox_images=max(1, dc.blackbox_images),
            # 0 images or 0 queries: no black-box attack.
            blackbox_queries=(dc.blackbox_queries or None) if dc.blackbox_images else None,
            seed=seed,
            show_progress=show_progress,
        )
        out[name] = {"defense": repr(pre), **audit.to_dict()}
    return out


# --------------------------------------------------------------------------- the suite


@progress_option
def run_suite(
    model: nn.Module,
    ds: ImageData,
    config: SuiteConfig | None = None,
    *,
    train: Callable[[], ImageDataset] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    show_progress: bool | None = None,
    log: Log | None = None,
    distributed: Group | bool = False,
) -> dict[str, dict[str, Any]]:
    """Run every enabled section on ``model`` and ``ds`` (the test split); see the module docstring.

    Args:
        ds: an :class:`~robustlens.data.ImageDataset`, or an :class:`~robustlens.data.ImageFiles`
            (``rl.data.open_folder``) that every section reads batch by batch; a section keeps
            in memory only the small samples its settings name (see ``docs/data.md``).
        config: the suite's settings (default: :class:`SuiteConfig` defaults).
        train: returns the training split when a section needs it (quilting's database).
        out: folder for the finished sections, their images (``out/images/``) and the white-box
            evaluation's per-image rows.
        resume: reuse the sections ``out`` already holds for the same model, data and settings.
        distributed: ``True`` (the torchrun group of this process, :func:`~robustlens.evaluation.
            distributed.group`) or a :class:`~robustlens.evaluation.distributed.Group`: every
            rank calls ``run_suite`` with the same arguments; the white-box section's fixed-budget
            attacks, the audit's dominant cost, are sharded over the ranks (per-image results
            equal to one process's), everything else runs on rank 0, which alone writes and
            returns the sections (the other ranks return ``{}``). ``out`` must be a folder every
            rank sees.

    Returns:
        ``{section name: dict}``; each dict has its ``seconds``. With ``out`` the dicts are
        JSON-ready: their images are files under ``out/images/`` named by paths relative to
        ``out`` (``"images/whitebox/gallery-0-x.png"``). Without ``out`` the images are CPU
        tensors, float ``(C, H, W)`` in ``[0, 1]`` (segments and masks: integer ``(H, W)``);
        :func:`robustlens.report.render_html` takes either form.
    """
    cfg = config if config is not None else SuiteConfig()
    say = log or (lambda _: None)
    out_dir = None if out is None else Path(out)
    _check_suite(model, ds, cfg, train=train, out=out_dir, resume=resume)
    base = json.dumps(
        [model_fingerprint(model), ds.name, ds.classes, cfg.seed, _data_fingerprint(ds)],
        default=str,
    )
    grp = distributed if isinstance(distributed, Group) else group() if distributed else Group()
    store = _Store(out_dir, resume, base, say, writer=grp.is_main)
    attack_ds = ds.subset(min(cfg.data.attack_limit, len(ds)), seed=cfg.seed)
    attacked = _data_fingerprint(attack_ds)
    wb_settings = asdict(cfg.whitebox) | {"data": attacked}
    sharded: Group | bool = False
    if grp.active:
        # Rank 0 (after clearing or reading the folder) tells the others whether the white-box
        # attacks still need running; they take their shards of it and are done.
        todo = bool(
            grp.broadcast(
                grp.is_main and cfg.whitebox.enabled and store.load("whitebox", wb_settings) is None
            )
        )
        if not grp.is_main:
            if todo:
                work = store.work("whitebox", wb_settings)
                _whitebox_evaluation(model, attack_ds, cfg, work, False, grp)
            return {}
        sharded = grp if todo else False
    sections: dict[str, dict[str, Any]] = {}

    def section(name: str, settings: Any, message: str, fn: Callable[[], dict[str, Any]]) -> None:
        saved = store.load(name, settings)
        if saved is not None:
            sections[name] = saved
            return
        say(message)
        start = time.perf_counter()
        result = fn()
        result["seconds"] = round(time.perf_counter() - start, 2)
        sections[name] = store.save(name, settings, result)

    section(
        "clean",
        {},
        f"clean accuracy on {len(ds)} images",
        lambda: clean_accuracy(
            model, ds, show_progress=show_progress, out=store.work("clean", {})
        ).to_dict(),
    )
    if cfg.whitebox.enabled:
        section(
            "whitebox",
            wb_settings,
            f"white-box attacks on {len(attack_ds)} images at Linf eps {cfg.whitebox.eps:.4g}"
            + (f", sharded over {grp.world} processes" if sharded else ""),
            lambda: whitebox_section(
                model,
                attack_ds,
                cfg,
                work=store.work("whitebox", wb_settings),
                show_progress=show_progress,
                distributed=sharded,
            ),
        )
    if cfg.blackbox.enabled and cfg.blackbox.attacks:
        section(
            "blackbox",
            asdict(cfg.blackbox) | {"eps": cfg.whitebox.eps, "data": attacked},
            f"black-box attacks on {min(cfg.blackbox.images, len(attack_ds))} images, "
            f"{cfg.blackbox.queries} queries each",
            lambda: blackbox_section(model, attack_ds, cfg),
        )
    if cfg.defenses.names:
        section(
            "defenses",
            asdict(cfg.defenses) | {"eps": cfg.whitebox.eps, "data": attacked},
            f"defense audits: {', '.join(cfg.defenses.names)}",
            lambda: defenses_section(
                model,
                attack_ds,
                cfg,
                train=train or (lambda: in_memory(ds)),
                show_progress=show_progress,
                log=say,
            ),
        )
    if cfg.explanations.enabled:
        section(
            "explanations",
            asdict(cfg.explanations),
            f"LIME explanations of {cfg.explanations.images} images",
            lambda: explanations_section(model, ds, cfg),
        )
    if cfg.bias.enabled:
        section(
            "bias",
            asdict(cfg.bias),
            "bias measurements",
            lambda: bias_section(model, ds, cfg, log=say),
        )
    return sections


def _one_per_class(ds: ImageData, count: int, seed: int) -> Tensor:
    """Indices of ``count`` images of ``ds``: one per class in class order first, then the rest."""
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    y = ds.y.cpu()[perm]
    # Rank of each image within its class (in the shuffled order): rank 0 first, by class.
    rank = torch.zeros_like(y)
    for c in range(ds.num_classes):  # K classes, not samples
        mask = y == c
        rank[mask] = torch.arange(int(mask.sum()))
    order = perm[torch.argsort(rank * ds.num_classes + y, stable=True)]
    return order[:count]


def explanations_section(model: nn.Module, ds: ImageData, config: SuiteConfig) -> dict[str, Any]:
    """LIME on a few test images (one per class first), each explaining the model's prediction,
    with its deletion and insertion AUC, the deletion AUC of random orders and its trust flags;
    top-k stability across seeds on the first image."""
    from robustlens.explain import Lime, faithfulness, stability

    ec, seed = config.explanations, config.seed
    idx = _one_per_class(ds, min(ec.images, len(ds)), seed)
    shown, kept = in_memory(ds[idx], with_index=True)  # decodes only these images
    idx, x, y = idx[kept], shown.x, shown.y
    lime = Lime(
        samples=ec.samples,
        K=ec.K,
        output=ec.output,  # type: ignore[arg-type]
        hide=ec.hide,  # type: ignore[arg-type]
        seed=seed,
        class_names=ds.classes,
    )
    n_stab = ec.stability_seeds if ec.stability_seeds >= 2 and len(x) else 0
    items = []
    stab = None
    # One line over the section (explanations, faithfulness, stability), LIME's own below it.
    desc = f"explanations: LIME on {len(x)} images, faithfulness, stability"
    with status(desc, 2 * len(x) + n_stab, unit="step") as ticker, _lime_flags_kept():
        exps = lime.explain_batch(model, x)
        ticker.tick(len(x))
        for i, exp in zip(idx.tolist(), exps, strict=True):  # a handful of images
            faith = faithfulness(model, exp, seed=seed)  # with the random-order deletion baseline
            item = exp.to_dict(pixels="tensors")  # image and segments: stored as files
            item.update(
                index=i,
                label=ds.classes[int(ds.y[i])],
                pred=ds.classes[exp.prediction],
                deletion_auc=faith.deletion_auc,
                insertion_auc=faith.insertion_auc,
                random_deletion_auc=faith.random_deletion_auc,
                warnings=[*exp.warnings, *faith.warnings],  # the fit's flags, then deletion's
            )
            items.append(item)
            ticker.tick()
        if n_stab:
            seeds = tuple(range(seed, seed + ec.stability_seeds))
            stab = stability(lime, model, x[0], seeds=seeds).mean
            ticker.tick(n_stab)
    return {
        "samples": ec.samples,
        "K": ec.K,
        "n": len(items),
        "items": items,
        "stability": stab,
        "stability_seeds": ec.stability_seeds,
        "mean_r2": sum(e["r2"] for e in items) / len(items) if items else None,
        "correct": int((batched_logits(model, x).argmax(1) == y).sum()),
    }


def bias_section(
    model: nn.Module,
    ds: ImageData,
    config: SuiteConfig,
    *,
    load_model: Callable[[str], nn.Module] | None = None,
    log: Log,
) -> dict[str, Any]:
    """What the model relies on: corruptions (mCE against ``config.bias.baseline`` when given),
    random against adversarial noise of the same norm, ambiguous test images, accuracy at the
    levels of the class hierarchy (Fashion-MNIST), the shape bias (the model's when it classifies
    the cue-conflict shapes, else skipped with the reason), reliance on a planted
    ``cue`` when one is named, and superpixel statistics over classes."""
    from robustlens import bias
    from robustlens.explain import Lime

    bc, seed = config.bias, config.seed
    out: dict[str, Any] = {}
    sub = ds.subset(min(bc.corruption_images, len(ds)), seed=seed)
    log(f"corruptions on {len(sub)} images, severities {list(bc.severities)}")
    baseline = None
    if bc.baseline:
        if load_model is None:
            from robustlens.models import load

            ref = load(bc.baseline, device=_device(ds, model)).module
        else:
            ref = load_model(bc.baseline)
        baseline = bias.corruption_robustness(ref, sub, severities=bc.severities, seed=seed)
    corr = bias.corruption_robustness(
        model, sub, severities=bc.severities, baseline=baseline, seed=seed
    )
    out["corruptions"] = {**corr.to_dict(), "baseline": bc.baseline or None}
    noise = in_memory(sub[: min(len(sub), 200)])
    noise_n = len(noise)
    rva = bias.random_vs_adversarial(
        model, noise.x, noise.y, seed=seed, batch_size=attack_batch(ds.shape)
    )
    out["random_vs_adversarial"] = {**rva.to_dict(), "n": noise_n}
    if bc.ambiguous:
        amb = bias.ambiguous(model, ds, k=bc.ambiguous)
        items = amb.to_dict()
        for item in items:
            item["image"] = ds[item["index"]][0].cpu()  # a tensor: stored as a file
        out["ambiguous"] = {"n": len(ds), "items": items}
    if bc.shape_bias:
        out.update(_shape_bias(model, ds, bc, seed, log))
    if bc.cue:
        log(f"reliance on a planted {bc.cue} cue")
        # The cue is planted in every image: streamed data gets the corruption sample's.
        planted_on = ds if isinstance(ds, ImageDataset) else in_memory(sub)
        rel = bias.cue_reliance(model, planted_on, kind=bc.cue, seed=seed)  # type: ignore[arg-type]
        out["cue_reliance"] = {"kind": bc.cue, "model": "audited model", **rel.to_dict()}
    if bc.superpixel_images:
        log(f"superpixel statistics over {bc.superpixel_images} images per class")
        lime = Lime(samples=bc.superpixel_samples, K=5, output="logits", hide="constant", seed=seed)
        sp_ds, sp_mask, sp_data = ds, None, None
        if bc.cue == "patch":  # the planted patch is a region to test: explain images that show it
            from robustlens.data import cue_test_sets

            on = ds if isinstance(ds, ImageDataset) else in_memory(sub)  # as cue_reliance's
            aligned, _ = cue_test_sets(on, "patch", seed=seed)
            sp_ds, sp_mask = aligned.dataset, bias.patch_mask(aligned)
            sp_data = "test images with the planted patch of their class, its squares as the mask"
        studied = _classes_studied(sp_ds, bc.superpixel_classes, seed)
        with _lime_flags_kept():
            stats = bias.superpixel_statistics(
                model,
                sp_ds,
                classes=studied,
                images_per_class=bc.superpixel_images,
                lime=lime,
                mask=sp_mask,
                seed=seed,
            )
        out["superpixels"] = stats.to_dict(pixels="tensors")
        if studied is not None:
            drawn = (
                f"{len(studied)} of the data set's {len(sp_ds.classes)} classes, drawn at random "
                f"(seed {seed}; [bias] superpixel_classes sets how many)"
            )
            sp_data = f"{sp_data}; {drawn}" if sp_data else drawn
        if sp_data:
            out["superpixels"]["data"] = sp_data
    if ds.classes == bias.FASHION_MNIST.classes:
        pred = predict(model, ds)
        read = pred >= 0  # files that do not decode are left out
        pred, labels = pred[read], ds.y.cpu()[read]
        confusion, names = bias.FASHION_MNIST.confusion(pred, labels, level=1)
        out["hierarchy"] = {
            "levels": {
                "classes": bias.FASHION_MNIST.accuracy(pred, labels),
                "groups": bias.FASHION_MNIST.accuracy(pred, labels, level=1),
            },
            "groups": names,
            "confusion": confusion.tolist(),
        }
    return out


def _classes_studied(ds: ImageData, cap: int, seed: int) -> list[int] | None:
    """The classes the superpixel statistics explain: all of those with images when they are at
    most ``cap`` (``None``), else ``cap`` of them drawn with ``seed``, in index order."""
    present = torch.nonzero(torch.bincount(ds.y.cpu(), minlength=len(ds.classes))).flatten()
    if len(present) <= cap:
        return None
    g = torch.Generator().manual_seed(seed)
    chosen = present[torch.randperm(len(present), generator=g)[:cap]]
    return sorted(chosen.tolist())


@contextlib.contextmanager
def _lime_flags_kept() -> Iterator[None]:
    """LIME's per-explanation warnings stay in the results (items, report, findings) instead of
    interrupting the audit's progress lines on the console."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Lime: ", category=RuntimeWarning)
        warnings.filterwarnings(
            "ignore", message="superpixel_statistics: LIME warned", category=RuntimeWarning
        )
        yield


def _shape_bias(
    model: nn.Module, ds: ImageData, bc: BiasConfig, seed: int, log: Log
) -> dict[str, Any]:
    """The Geirhos shape bias of ``model``: on the synthetic stimuli when it classifies their
    classes, on Geirhos' stimuli (``bc.cue_conflict``) when it is an ImageNet-1k model; otherwise
    the section is skipped with the reason (never another model's bias in its place)."""
    from robustlens.bias import shape_bias, shape_bias_imagenet
    from robustlens.data import cue_conflict
    from robustlens.data.geirhos import STIMULI_URL
    from robustlens.models import ClassMapped

    n = bc.shape_stimuli
    probe = cue_conflict(2, seed=seed)
    c, h, w = ds.shape
    if ds.classes == probe.classes:
        log(f"shape bias of the audited model on {n} cue-conflict stimuli")
        stimuli = cue_conflict(n, size=h, channels=c, seed=seed, device=_device(ds, model))
        return {"shape_bias": {"audited model": shape_bias(model, stimuli).to_dict()}}
    # A model audited on part of its classes is measured on all of them.
    full = model.model if isinstance(model, ClassMapped) else model
    outputs = batched_logits(full, torch.zeros(1, c, h, w, device=_device(ds, model))).shape[1]
    if outputs != 1000:
        reason = (
            "skipped: the audited model does not classify the synthetic cue-conflict classes "
            f"({', '.join(probe.classes)}) nor the 1000 ImageNet classes (it has {outputs} "
            "outputs), so its shape bias cannot be measured on either set of stimuli"
        )
    elif not bc.cue_conflict:
        reason = (
            "skipped: the audited model is an ImageNet (1000-class) model, whose shape bias is "
            "measured on Geirhos et al.'s cue-conflict stimuli; robustlens does not ship them: "
            f"git clone {STIMULI_URL} and pass --cue-conflict "
            "texture-vs-shape/stimuli/style-transfer-preprocessed-512 (or cue_conflict in the "
            "suite file's [bias] table)"
        )
    else:
        from robustlens.data import Preprocessing, open_cue_conflict

        pre = (
            ds.preprocessing
            if isinstance(ds, ImageFiles)
            else Preprocessing(input_size=(h, w), channels=c)
        )
        every = open_cue_conflict(bc.cue_conflict, preprocessing=pre)
        conflicting = every[every.conflicting]
        chosen = conflicting.subset(n, seed=seed)
        log(f"shape bias of the audited model on {len(chosen)} of Geirhos' cue-conflict stimuli")
        result = shape_bias_imagenet(full, chosen, device=_device(ds, model)).to_dict()
        sample = (
            f"a seeded sample of {len(chosen)} of the {len(conflicting)} conflicting ones "
            "([bias] shape_stimuli sets how many)"
            if len(chosen) < len(conflicting)
            else f"all {len(conflicting)} conflicting ones"
        )
        result["stimuli"] = (
            f"Geirhos et al.'s cue-conflict stimuli in {bc.cue_conflict}: {sample}, read in the "
            "16 categories (mean probability of each category's ImageNet classes)"
        )
        return {"shape_bias": {"audited model": result}}
    log(f"shape bias {reason}")
    return {"shape_bias_note": {"note": reason}}
