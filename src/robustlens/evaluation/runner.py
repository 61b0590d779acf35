"""Dataset-level evaluation under several attacks: batched, resumable, worst case per sample.

``evaluate(model, ds, attacks=[...], out=DIR)`` runs every attack on every batch and records, per
image, whether each attack fooled the model and how far it moved the image. The data is an
in-memory :class:`~robustlens.data.ImageDataset` or an :class:`~robustlens.data.ImageFiles` streamed
from disk; both go through :func:`robustlens.data.batches`, so a batch holds the same images either
way and memory is bounded by the batch. Rows are keyed by the image's position in the data set
(``index``; for files also ``file``, the path) and appended to ``DIR/samples.csv`` after every batch
(flushed and synced; files that do not decode go to ``DIR/skipped.csv``), so an interrupted run
started again with the same arguments resumes at the first unfinished batch: nothing is lost or
counted twice, and every image is attacked in the same batch as in an uninterrupted run, so the
final results are the same. The summary goes to ``DIR/summary.json``.

Robust accuracy is reported per attack and for the worst case over the ensemble (an image counts as
robust only if no attack fooled it), with each attack's contribution: the images it alone fooled,
and the images it fooled that no earlier attack in the list did.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlens._checks import check_model
from robustlens._runtime import inference_mode, progress_option, status
from robustlens.attacks.base import Attack
from robustlens.attacks.ensemble import Ensemble
from robustlens.data.files import ImageFiles, SkippedFile
from robustlens.data.stream import (
    Batch,
    ImageData,
    batches,
    check_image_data,
    fingerprint,
    in_memory,
)
from robustlens.errors import ParameterError, ResumeError
from robustlens.evaluation._rows import SKIPPED_COLUMNS, RowLog, read_rows, write_rows
from robustlens.evaluation.checks import model_warnings, weak_attacks
from robustlens.evaluation.defaults import attack_batch
from robustlens.evaluation.distributed import Group, group, shard

__all__ = ["Evaluation", "evaluate", "model_fingerprint"]

_FIELDS = ("success", "l2", "linf", "l2_normalized", "queries", "gradients")


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's parameters and buffers (names, shapes and values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class Evaluation:
    """Per-image outcomes (``rows``) and their summary.

    ``per_attack[name]`` has the attack's success rate, robust accuracy and median distances;
    ``robust_accuracy`` is the worst case over all attacks; ``contribution[name]`` has ``unique``
    (images only this attack fooled) and ``first`` (fooled by it and by no earlier attack).
    """

    n: int
    clean_accuracy: float
    robust_accuracy: float
    per_attack: dict[str, dict[str, Any]]
    contribution: dict[str, dict[str, int]]
    attacks: list[str]
    warnings: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(repr=False, default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "attacks": self.attacks,
            "per_attack": self.per_attack,
            "contribution": self.contribution,
            "warnings": self.warnings,
            "skipped": [f.to_dict() for f in self.skipped],
        }


def _columns(names: Sequence[str], files: bool) -> list[str]:
    cols = ["index", "label", "clean_pred"]
    for i in range(len(names)):
        cols += [f"a{i}_{f}" for f in _FIELDS]
    return cols + (["file"] if files else [])


def _column(rows: list[dict[str, Any]], key: str) -> Tensor:
    return torch.tensor([float(r[key]) for r in rows], dtype=torch.float64)


def _median(values: Tensor, mask: Tensor) -> float | None:
    return float(values[mask].median()) if bool(mask.any()) else None


def _summarise(rows: list[dict[str, Any]], names: list[str]) -> Evaluation:
    n = len(rows)
    correct = _column(rows, "clean_pred") == _column(rows, "label")
    attacked = int(correct.sum())
    fooled = torch.zeros(len(names), n, dtype=torch.bool)
    per_attack: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        fooled[i] = (_column(rows, f"a{i}_success") > 0) & correct
        queries = _column(rows, f"a{i}_queries")
        per_attack[name] = {
            "success_rate": float(fooled[i].sum()) / attacked if attacked else math.nan,
            "robust_accuracy": float((correct & ~fooled[i]).double().mean()) if n else math.nan,
            **{
                f"median_{f}": _median(_column(rows, f"a{i}_{f}"), fooled[i])
                for f in ("l2", "linf", "l2_normalized")
            },
            "mean_queries": float(queries[correct].mean()) if attacked else 0.0,
        }
    earlier = torch.zeros(n, dtype=torch.bool)
    contribution: dict[str, dict[str, int]] = {}
    for i, name in enumerate(names):
        others = torch.cat([fooled[:i], fooled[i + 1 :]]).any(0)
        contribution[name] = {
            "unique": int((fooled[i] & ~others).sum()),
            "first": int((fooled[i] & ~earlier).sum()),
        }
        earlier |= fooled[i]
    return Evaluation(
        n=n,
        clean_accuracy=float(correct.double().mean()) if n else math.nan,
        robust_accuracy=float((correct & ~fooled.any(0)).double().mean()) if n else math.nan,
        per_attack=per_attack,
        contribution=contribution,
        attacks=names,
        rows=rows,
    )


def _attack_rows(
    model: nn.Module, batch: Batch, attack_list: Sequence[Attack], data: ImageData
) -> list[dict[str, Any]]:
    """One row per image of ``batch``: label, clean prediction and each attack's outcome."""
    xb, yb = batch.x, batch.y
    with torch.no_grad():
        clean_pred = model(xb).argmax(1).tolist()
    rows: list[dict[str, Any]] = [
        {"index": i, "label": label, "clean_pred": pred}
        for i, label, pred in zip(batch.index.tolist(), yb.tolist(), clean_pred, strict=True)
    ]
    for i, attack in enumerate(attack_list):
        res = attack(model, xb, yb)
        for f in _FIELDS:
            values = getattr(res, f).detach().cpu()
            values = values.long() if values.dtype == torch.bool else values
            for row, v in zip(rows, values.tolist(), strict=True):
                row[f"a{i}_{f}"] = v
    if isinstance(data, ImageFiles):
        for row in rows:
            row["file"] = data.relative(row["index"])
    return rows


@progress_option
def evaluate(
    model: nn.Module,
    ds: ImageData,
    attacks: Sequence[Attack] | None = None,
    *,
    batch_size: int | None = None,
    out: str | Path | None = None,
    device: torch.device | str | None = None,
    show_progress: bool | None = None,
    distributed: bool | Group = False,
) -> Evaluation:
    """Attack every image of ``ds`` with every attack; per attack and worst case over all of them.

    Args:
        model: maps images ``(N, C, H, W)`` in ``[0, 1]`` to logits.
        ds: the images and their true labels: an :class:`~robustlens.data.ImageDataset`, or an
            :class:`~robustlens.data.ImageFiles` decoded batch by batch in its ``workers``
            (unreadable files are skipped and listed in ``skipped``, or raise with ``strict``).
        attacks: the attacks to run, in order (default: ``Ensemble.standard(eps=0.1)``, APGD-CE,
            APGD-T, then Square on the images still robust: the figure to trust).
        batch_size: images per batch; results are written after each (default: 256, fewer for
            large images: :func:`~robustlens.evaluation.defaults.attack_batch`, 64 at 224x224).
        out: folder for ``samples.csv`` (per image), ``skipped.csv`` and ``summary.json``; a
            folder holding an unfinished run with the same model, data, attacks and batch size
            is resumed.
        device: where to run (default: the model's device).
        distributed: shard the images over the ranks ``torchrun`` started (``True``: join them,
            see :func:`robustlens.evaluation.distributed.group`; or a ``Group``). Each rank
            attacks its stratified shard and writes its rows to ``DIR/samples.part-R-of-W.csv``
            as it goes; rank 0 merges them into ``DIR/samples.csv``. Every rank returns the whole
            result, identical per image to a single process's. A run resumed after a failure,
            with any number of ranks (one included), attacks only the images no shard finished.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:64]
        >>> ev = evaluate(rl.zoo.load("digits-cnn"), ds,
        ...               [rl.attacks.FGSM(eps=0.1), rl.attacks.PGD(eps=0.1, steps=10)])
        >>> ev.robust_accuracy <= min(a["robust_accuracy"] for a in ev.per_attack.values())
        True
    """
    check_model(model, where="evaluate")
    data = check_image_data(ds, "evaluate")
    attack_list = list(attacks) if attacks is not None else [Ensemble.standard(eps=0.1)]
    if not attack_list or not all(isinstance(a, Attack) for a in attack_list):
        raise ParameterError("evaluate: 'attacks' must be a non-empty list of robustlens attacks")
    if batch_size is None:
        batch_size = min(256, attack_batch(data.shape))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"evaluate: 'batch_size' must be an int >= 1, got {batch_size!r}")
    names = [a.name for a in attack_list]
    if len(set(names)) != len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    dev = (
        torch.device(device)
        if device is not None
        else next((p.device for p in model.parameters()), torch.device("cpu"))
    )
    files = isinstance(data, ImageFiles)
    columns = _columns(names, files)
    rows: list[dict[str, Any]] = []
    skipped: list[SkippedFile] = []
    todo: Tensor | None = None
    log: RowLog | None = None
    grp = distributed if isinstance(distributed, Group) else group() if distributed else Group()
    if grp.active or (out is not None and _part_files(Path(out))):
        return _evaluate_sharded(
            model,
            data,
            attack_list,
            names,
            columns,
            out,
            dev,
            batch_size,
            grp,
            config=_run_config(model, data, attack_list, batch_size),
        )
    if out is not None:
        config = _run_config(model, data, attack_list, batch_size)
        log = RowLog(out, columns, config, where="evaluate")
        rows, skipped, todo = log.resume(len(data), batch_size)
    head = in_memory(data[: min(len(data), 64, batch_size)])  # a gradient pass: one batch at most
    warnings = model_warnings(model, head.x.to(dev), head.y.to(dev))
    with inference_mode(model):
        for batch in batches(
            data,
            batch_size,
            device=dev,
            positions=todo,
            show_progress=show_progress,
            desc="evaluate",
        ):
            batch_rows = _attack_rows(model, batch, attack_list, data)
            if log is not None:
                log.append(batch_rows, batch.skipped)
            rows.extend(batch_rows)
            skipped.extend(batch.skipped)
    return _finish(rows, skipped, names, warnings, data, out)


def _finish(
    rows: list[dict[str, Any]],
    skipped: list[SkippedFile],
    names: list[str],
    warnings: list[str],
    data: ImageData,
    out: str | Path | None,
) -> Evaluation:
    """The summary of all rows, its warnings, and ``summary.json`` when there is a folder."""
    rows.sort(key=lambda r: int(r["index"]))
    result = _summarise(rows, names)
    if len(names) > 1:
        per = {k: v["robust_accuracy"] for k, v in result.per_attack.items()}
        for name in weak_attacks(per, result.robust_accuracy):
            warnings.append(
                f"{name} leaves robust accuracy at {per[name]:.1%}, more than a point above the "
                f"worst case over all attacks ({result.robust_accuracy:.1%}): it is a weak attack "
                "here, do not quote its figure alone"
            )
    result.warnings = warnings
    result.skipped = sorted(skipped, key=lambda f: f.index)
    if result.skipped:
        result.warnings.append(
            f"{len(result.skipped)} file(s) of {data.name} could not be read and were left out "
            f"(first: {result.skipped[0].path}: {result.skipped[0].error}); see 'skipped'"
        )
    if out is not None:
        (Path(out) / "summary.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def _run_config(
    model: nn.Module, data: ImageData, attack_list: Sequence[Attack], batch_size: int
) -> dict[str, Any]:
    """What a resumed run must share with the run it resumes."""
    return {
        "model": model_fingerprint(model),
        "data": data.name,
        "n": len(data),
        "labels": hashlib.sha256(data.y.cpu().numpy().tobytes()).hexdigest()[:16],
        "images": fingerprint(data),
        "attacks": [repr(a) for a in attack_list],
        "batch_size": batch_size,
    }


def _part_files(folder: Path) -> list[Path]:
    """The per-rank row files a sharded run left in ``folder`` (unfinished: rank 0 merges and
    removes them when a run completes)."""
    return sorted(folder.glob("samples.part-*-of-*.csv")) if folder.is_dir() else []


def _evaluate_sharded(
    model: nn.Module,
    data: ImageData,
    attack_list: Sequence[Attack],
    names: list[str],
    columns: list[str],
    out: str | Path | None,
    dev: torch.device,
    batch_size: int,
    grp: Group,
    *,
    config: dict[str, Any],
) -> Evaluation:
    """:func:`evaluate` over the ranks of ``grp``: each attacks its shard of the images that no
    earlier run finished, rank 0 merges every rank's rows (see ``distributed`` in
    :func:`evaluate`)."""
    folder = None if out is None else Path(out)
    tag = f"part-{grp.rank}-of-{grp.world}"
    # Rank 0 reads what earlier runs finished (of any number of ranks) and tells the others.
    plan: dict[str, Any] = {}
    if grp.is_main:
        plan = _resume_plan(folder, columns, config, len(data))
    plan = grp.broadcast(plan)
    if plan.get("error"):
        raise ResumeError(plan["error"])
    done = torch.zeros(len(data), dtype=torch.bool)
    done[torch.tensor(plan["done"], dtype=torch.int64)] = True
    pending = (~done).nonzero().squeeze(1)
    labels = data.y.cpu()
    mine = shard(labels, pending, grp.rank, grp.world)
    # Every rank runs as many steps as the longest shard, so the progress sums stay in step.
    steps = max(
        len(_chunk_ids(shard(labels, pending, r, grp.world), batch_size)) for r in range(grp.world)
    )
    log = None
    if folder is not None:
        log = RowLog(
            folder,
            columns,
            config,
            rows=f"samples.{tag}.csv",
            config_name=f"run.{tag}.json",
            skipped=f"skipped.{tag}.csv",
            where="evaluate",
        )
        log.resume(len(data), None)  # this rank's own earlier rows are in plan["done"] already
    head = in_memory(data[: min(len(data), 64, batch_size)])  # a gradient pass: one batch at most
    warnings = model_warnings(model, head.x.to(dev), head.y.to(dev))
    if plan.get("note"):
        warnings.append(plan["note"])
    new_rows: list[dict[str, Any]] = []
    new_skipped: list[SkippedFile] = []
    taken = 0
    with (
        inference_mode(model),
        status(
            "evaluate", total=len(pending), unit="image", show=None if grp.is_main else False
        ) as ticker,
    ):
        for batch in batches(data, batch_size, device=dev, positions=mine, show_progress=False):
            batch_rows = _attack_rows(model, batch, attack_list, data)
            if log is not None:
                log.append(batch_rows, batch.skipped)
            new_rows.extend(batch_rows)
            new_skipped.extend(batch.skipped)
            ticker.tick(grp.total(len(batch) + len(batch.skipped)))
            taken += 1
        for _ in range(taken, steps):  # a shorter shard still joins the others' sums
            ticker.tick(grp.total(0))
    gathered = grp.gather((new_rows, [s.to_dict() for s in new_skipped]))
    result: Evaluation | None = None
    if gathered is not None:  # rank 0
        rows = list(plan["rows"])
        skipped = [SkippedFile(**s) for s in plan["skipped"]]
        for part_rows, part_skipped in gathered:
            rows.extend(part_rows)
            skipped.extend(SkippedFile(**s) for s in part_skipped)
        if folder is not None:
            _write_merged(folder, columns, rows, skipped)
        result = _finish(rows, skipped, names, warnings, data, out)
    result = grp.broadcast(result)
    assert result is not None
    return result


def _chunk_ids(positions: Tensor, batch_size: int) -> set[int]:
    return set((positions // batch_size).tolist())


def _resume_plan(
    folder: Path | None, columns: list[str], config: dict[str, Any], n: int
) -> dict[str, Any]:
    """The rows and skipped files earlier runs in ``folder`` finished, whatever their number of
    ranks, or the reason the folder cannot be resumed."""
    plan: dict[str, Any] = {"rows": [], "skipped": [], "done": [], "note": None}
    if folder is None:
        return plan
    config = json.loads(json.dumps(config))
    run_path = folder / "run.json"
    parts = _part_files(folder)
    if run_path.is_file() and ((folder / "samples.csv").is_file() or parts):
        previous = json.loads(run_path.read_text())
        if previous != config:
            changed = sorted(
                k for k in set(previous) | set(config) if previous.get(k) != config.get(k)
            )
            plan["error"] = (
                f"evaluate: {folder} holds a run with other settings (differs in "
                f"{', '.join(changed)}); use another 'out' folder or delete it to start again"
            )
            return plan
    else:
        for stale in [*parts, folder / "samples.csv", folder / "skipped.csv"]:
            stale.unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        run_path.write_text(json.dumps(config, indent=2))
        return plan
    by_index: dict[int, dict[str, Any]] = {}
    skipped: dict[int, dict[str, Any]] = {}
    sources = [folder / "samples.csv", *parts]
    for path in sources:
        for row in read_rows(path, columns):
            by_index[int(row["index"])] = row
        for row in read_rows(
            path.with_name(path.name.replace("samples", "skipped")), SKIPPED_COLUMNS
        ):
            skipped[int(row["index"])] = {
                "index": int(row["index"]),
                "path": row["file"],
                "error": row["error"],
            }
    plan["rows"] = [by_index[k] for k in sorted(by_index)]
    plan["skipped"] = [skipped[k] for k in sorted(skipped)]
    plan["done"] = sorted(by_index.keys() | skipped.keys())
    if parts:
        counts = ", ".join(f"{p.name}: {len(read_rows(p, columns))} images" for p in parts)
        plan["note"] = (
            f"resumed an unfinished sharded run: {len(plan['done'])} of {n} images were done "
            f"({counts}); the rest were attacked now"
        )
    return plan


def _write_merged(
    folder: Path, columns: list[str], rows: list[dict[str, Any]], skipped: list[SkippedFile]
) -> None:
    """The one ``samples.csv`` (and ``skipped.csv``) of a sharded run; the part files go."""
    rows = sorted(rows, key=lambda r: int(r["index"]))
    write_rows(folder / "samples.csv", columns, rows)
    write_rows(
        folder / "skipped.csv",
        SKIPPED_COLUMNS,
        [
            {"index": s.index, "file": s.path, "error": s.error}
            for s in sorted(skipped, key=lambda s: s.index)
        ],
    )
    for part in _part_files(folder):
        tag = part.name[len("samples.") : -len(".csv")]
        for name in (part.name, f"run.{tag}.json", f"skipped.{tag}.csv"):
            (folder / name).unlink(missing_ok=True)
