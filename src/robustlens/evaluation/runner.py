"""Dataset-level evaluation under several attacks: batched, resumable, worst case per sample.

``evaluate(model, ds, attacks=[...], out=DIR)`` runs every attack on every batch and records, per
image, whether each attack fooled the model and how far it moved the image. Rows are appended to
``DIR/samples.csv`` after every batch (flushed and synced), so an interrupted run started again with
the same arguments resumes at the first unfinished batch: nothing is lost or counted twice. The
summary goes to ``DIR/summary.json``.

Robust accuracy is reported per attack and for the worst case over the ensemble (an image counts as
robust only if no attack fooled it), with each attack's contribution: the images it alone fooled,
and the images it fooled that no earlier attack in the list did.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlens._checks import check_model
from robustlens._runtime import inference_mode, progress
from robustlens.attacks.base import Attack
from robustlens.attacks.ensemble import Ensemble
from robustlens.data.dataset import ImageDataset
from robustlens.errors import ParameterError, ResumeError
from robustlens.evaluation.checks import model_warnings, weak_attacks

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "attacks": self.attacks,
            "per_attack": self.per_attack,
            "contribution": self.contribution,
            "warnings": self.warnings,
        }


def _columns(names: Sequence[str]) -> list[str]:
    cols = ["index", "label", "clean_pred"]
    for i in range(len(names)):
        cols += [f"a{i}_{f}" for f in _FIELDS]
    return cols


def _read_rows(path: Path, columns: list[str]) -> list[dict[str, str]]:
    """Complete rows of a CSV written by an earlier run; a torn last line is cut off the file."""
    if not path.is_file():
        return []
    text = path.read_text()
    keep_upto = text.rfind("\n") + 1  # anything after the last newline is a torn write
    lines = text[:keep_upto]
    if keep_upto != len(text):
        with path.open("r+") as fh:
            fh.truncate(keep_upto)
    reader = csv.DictReader(io.StringIO(lines))
    if reader.fieldnames is not None and list(reader.fieldnames) != columns:
        raise ResumeError(f"{path} has columns {reader.fieldnames}, expected {columns}")
    rows = []
    for row in reader:
        if None in row.values() or len(row) != len(columns):
            break
        rows.append(row)
    return rows


def _append(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    if new:
        writer.writeheader()
    writer.writerows(rows)
    with path.open("a") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


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


def evaluate(
    model: nn.Module,
    ds: ImageDataset,
    attacks: Sequence[Attack] | None = None,
    *,
    batch_size: int = 256,
    out: str | Path | None = None,
    device: torch.device | str | None = None,
    show_progress: bool = False,
) -> Evaluation:
    """Attack every image of ``ds`` with every attack; per attack and worst case over all of them.

    Args:
        model: maps images ``(N, C, H, W)`` in ``[0, 1]`` to logits.
        ds: the images and their true labels.
        attacks: the attacks to run, in order (default: ``Ensemble.standard(eps=0.1)``, APGD-CE,
            APGD-T, then Square on the images still robust: the figure to trust).
        batch_size: images per batch; results are written after each.
        out: folder for ``samples.csv`` (per image) and ``summary.json``; a folder holding an
            unfinished run with the same model, data and attacks is resumed.
        device: where to run (default: the model's device).

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:64]
        >>> ev = evaluate(rl.zoo.load("digits-cnn"), ds,
        ...               [rl.attacks.FGSM(eps=0.1), rl.attacks.PGD(eps=0.1, steps=10)])
        >>> ev.robust_accuracy <= min(a["robust_accuracy"] for a in ev.per_attack.values())
        True
    """
    check_model(model, where="evaluate")
    attack_list = list(attacks) if attacks is not None else [Ensemble.standard(eps=0.1)]
    if not attack_list or not all(isinstance(a, Attack) for a in attack_list):
        raise ParameterError("evaluate: 'attacks' must be a non-empty list of robustlens attacks")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"evaluate: 'batch_size' must be an int >= 1, got {batch_size!r}")
    names = [a.name for a in attack_list]
    if len(set(names)) != len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    dev = (
        torch.device(device)
        if device is not None
        else next((p.device for p in model.parameters()), torch.device("cpu"))
    )
    columns = _columns(names)
    rows: list[dict[str, Any]] = []
    csv_path = None
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        csv_path = folder / "samples.csv"
        config = {
            "model": model_fingerprint(model),
            "data": ds.name,
            "n": len(ds),
            "labels": hashlib.sha256(ds.y.cpu().numpy().tobytes()).hexdigest()[:16],
            "attacks": [repr(a) for a in attack_list],
        }
        run_path = folder / "run.json"
        if run_path.is_file() and csv_path.is_file():
            previous = json.loads(run_path.read_text())
            if previous != config:
                raise ResumeError(
                    f"evaluate: {folder} holds a run with other settings ({previous}); use another "
                    "'out' folder or delete it to start again"
                )
            rows = _read_rows(csv_path, columns)
        else:
            csv_path.unlink(missing_ok=True)
            run_path.write_text(json.dumps(config, indent=2))
    done = len(rows)
    probe = min(len(ds), 64)
    warnings = model_warnings(model, ds.x[:probe].to(dev), ds.y[:probe].to(dev))
    with inference_mode(model):
        for start in progress(
            range(done, len(ds), batch_size), show=show_progress, desc="evaluate"
        ):
            xb = ds.x[start : start + batch_size].to(dev)
            yb = ds.y[start : start + batch_size].to(dev)
            with torch.no_grad():
                clean_pred = model(xb).argmax(1)
            batch_rows: list[dict[str, Any]] = [
                {"index": start + j, "label": int(yb[j]), "clean_pred": int(clean_pred[j])}
                for j in range(len(xb))
            ]
            for i, attack in enumerate(attack_list):
                res = attack(model, xb, yb)
                for f in _FIELDS:
                    values = getattr(res, f).detach().cpu()
                    values = values.long() if values.dtype == torch.bool else values
                    for row, v in zip(batch_rows, values.tolist(), strict=True):
                        row[f"a{i}_{f}"] = v
            if csv_path is not None:
                _append(csv_path, columns, batch_rows)
            rows.extend(batch_rows)
    result = _summarise(rows, names)
    if len(attack_list) > 1:
        per = {k: v["robust_accuracy"] for k, v in result.per_attack.items()}
        for name in weak_attacks(per, result.robust_accuracy):
            warnings.append(
                f"{name} leaves robust accuracy at {per[name]:.1%}, more than a point above the "
                f"worst case over all attacks ({result.robust_accuracy:.1%}): it is a weak attack "
                "here, do not quote its figure alone"
            )
    result.warnings = warnings
    if out is not None:
        (Path(out) / "summary.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result
