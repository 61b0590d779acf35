"""The defense audit: does a defended model's robustness survive the attacks that know about it?

A defense is only as good as the strongest attack that knows about it (Athalye, Carlini and Wagner
2018). :func:`audit_defense` measures the defended model's accuracy clean, under the naive attack
(PGD run as if the defense were not there), under the adaptive attack (PGD with BPDA and/or EOT as
probing calls for), under transfer from the undefended model and under a black-box attack (NES);
then it runs the sanity checks
of Athalye et al. 2018 and Carlini et al. 2019 ("On evaluating adversarial robustness"), each
reported with its numbers, and ends with a verdict.

The headline robust accuracy is the per-image worst case over every attack run at ``eps``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from robustlens._checks import (
    check_images,
    check_labels,
    check_model,
    check_same_device,
    model_device,
)
from robustlens._runtime import inference_mode, progress_option
from robustlens.attacks.adaptive import adaptive, diagnose
from robustlens.attacks.base import Attack
from robustlens.attacks.ensemble import Ensemble
from robustlens.attacks.gradient import FGSM, PGD
from robustlens.blackbox.nes import NES
from robustlens.blackbox.oracle import Oracle
from robustlens.data.dataset import ImageDataset
from robustlens.data.files import ImageFiles
from robustlens.data.stream import ImageData, batches, in_memory, model_outputs
from robustlens.defenses.base import Preprocessor
from robustlens.errors import DataFileError, ParameterError
from robustlens.evaluation.checks import gradient_report
from robustlens.evaluation.defaults import ATTACK_BATCH_ELEMENTS, query_batch

__all__ = ["Check", "DefenseAudit", "audit_defense"]


@dataclass(frozen=True)
class Check:
    """One sanity check: its name, whether it passed, what it measured, and what that means."""

    name: str
    passed: bool
    numbers: dict[str, Any]
    detail: str


@dataclass(frozen=True)
class DefenseAudit:
    """The outcome of :func:`audit_defense`.

    ``table`` has one row per measurement (``measure``, ``attack``, ``accuracy``); ``checks`` the
    sanity checks; ``verdict`` one sentence; ``supported`` whether the naive figure (what a defense
    that is evaluated without adaptive attacks would claim) holds up.
    """

    eps: float
    norm: str
    n: int
    num_classes: int
    table: list[dict[str, Any]]
    checks: list[Check]
    verdict: str
    supported: bool
    claimed_accuracy: float
    robust_accuracy: float
    diagnosis: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of everything above."""
        return asdict(self)

    def format(self) -> str:
        """The table, the checks and the verdict as plain text."""
        lines = [f"defense audit: {self.n} images, eps {self.eps:.4g} ({self.norm})", ""]
        width = max(len(r["measure"]) for r in self.table)
        for r in self.table:
            lines.append(f"  {r['measure']:<{width}}  {r['accuracy']:7.2%}  {r['attack']}")
        lines.append("")
        for c in self.checks:
            lines.append(f"  [{'pass' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
        lines += ["", self.verdict]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _robust(
    attack: Attack,
    model: nn.Module,
    data: ImageData,
    batch_size: int,
    desc: str,
    show: bool | None,
    device: torch.device,
) -> Tensor:
    """Per image: correctly classified before and after ``attack`` (bool ``(N,)`` on ``device``).

    The images come batch by batch (:func:`robustlens.data.batches`: slices in memory, decoded
    files streamed), so memory holds one batch. The adversarial images are judged by a fresh
    call of ``model``, not by the attack's own record: on a randomized defense that call is a new
    draw, as a deployed model would make.
    """
    out = []
    for batch in batches(data, batch_size, device=device, show_progress=show, desc=desc):
        ys = batch.y
        res = attack(model, batch.x, ys)
        with inference_mode(model), torch.no_grad():
            out.append(res.attacked & (model(res.x_adv).argmax(1) == ys))
    robust = torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=device)
    if len(robust) != len(data):
        raise DataFileError(
            f"audit_defense: {len(data) - len(robust)} image(s) of {data.name} could not be read "
            "on a later pass (a file changed during the audit?); run it again"
        )
    return robust


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


@progress_option
def audit_defense(
    defended: nn.Module,
    ds: ImageData,
    undefended: nn.Module | None = None,
    *,
    eps: float = 0.1,
    norm: Literal["linf", "l2"] = "linf",
    steps: int = 40,
    restarts: int = 1,
    samples: int = 10,
    ensemble_steps: int | None = 100,
    blackbox_images: int = 100,
    blackbox_queries: int | None = 1000,
    large_eps: float | None = None,
    tolerance: float = 0.02,
    gap: float = 0.05,
    batch_size: int | None = None,
    seed: int = 0,
    show_progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> DefenseAudit:
    """Audit the robustness of ``defended`` on ``ds`` at ``eps`` (see the module docstring).

    ``ds`` is an ``ImageDataset`` or an ``ImageFiles`` read from disk: every attack pass goes
    over it batch by batch (:func:`robustlens.data.batches`), so memory holds one batch (and
    the first ``blackbox_images`` images NES attacks together), never the whole set; files that
    do not decode are found by the clean pass and left out, with a note.

    Attacks: PGD with ``steps`` and ``restarts`` (naive, then adapted by
    :func:`~robustlens.attacks.adaptive` with ``samples`` EOT draws when needed), the adapted
    FGSM, the adapted PGD with doubled steps and restarts, the adapted PGD at ``eps / 2``,
    ``2 eps`` and ``large_eps`` (default 0.5 in Linf, ``0.5 sqrt(d)`` in L2: the whole image can
    be rewritten), and PGD on ``undefended`` transferred to ``defended``. Last, the adapted
    standard ensemble (APGD-CE then APGD-T, ``ensemble_steps`` each, then Square with
    ``50 * ensemble_steps`` queries; ``None`` skips it) attacks the images that every other
    attack left, so the worst case is the ensemble's figure. The
    black-box attack is NES (query-limited, scores) on the first ``blackbox_images`` images with
    ``blackbox_queries`` queries each (``None`` skips it).

    ``batch_size``: images per pass (default: 100, fewer for large images, where an adapted
    attack holds ``samples`` EOT copies of each: at most
    :data:`~robustlens.evaluation.defaults.ATTACK_BATCH_ELEMENTS` input elements, so 6 images at
    224x224 with 10 draws).

    Checks (each passes or fails with its numbers): input gradients are present, non-zero, finite
    and repeatable; the naive attack is within ``gap`` of the adaptive one; accuracy does not
    rise with eps (up to ``tolerance``) and reaches chance at ``large_eps``; iterative beats
    single-step; doubling steps and restarts changes accuracy by at most ``tolerance``; neither
    transfer nor black-box beats white-box. The verdict: supported when the naive figure is within
    ``gap`` of the worst case and every check passed.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits", split="test")[:24]
        >>> model = rl.zoo.load("digits-cnn")
        >>> defended = rl.defenses.defend(model, rl.defenses.BitDepth(bits=2))
        >>> audit = audit_defense(defended, ds, model, eps=0.1, steps=10, ensemble_steps=20)
        >>> audit.supported, "gradients" in [c.name for c in audit.failed]
        (False, True)
    """
    where = "audit_defense"
    check_model(defended, where=where)
    if not isinstance(ds, ImageDataset | ImageFiles):
        raise ParameterError(
            f"{where}: 'ds' must be a robustlens ImageDataset (rl.data.load(...) or "
            f"ImageDataset(x, y, classes)) or ImageFiles (rl.data.open_folder(...)), got "
            f"{type(ds).__name__}"
        )
    data: ImageData = ds
    if isinstance(ds, ImageDataset):
        device = next((p.device for p in defended.parameters()), ds.x.device)
        data = ImageDataset(ds.x.to(device), ds.y.to(device), classes=ds.classes, name=ds.name)
        check_images(data.x, where=where)
        check_same_device(defended, data.x, where=where)
    else:
        device = model_device(defended) or torch.device("cpu")
    if undefended is not None:
        check_model(undefended, where=where)
        if isinstance(data, ImageDataset):
            check_same_device(undefended, data.x, where=where)
    if ensemble_steps is not None and (not isinstance(ensemble_steps, int) or ensemble_steps < 1):
        raise ParameterError(
            f"{where}: 'ensemble_steps' must be an int >= 1 or None, got {ensemble_steps!r}"
        )
    if not isinstance(blackbox_images, int) or blackbox_images < 1:
        raise ParameterError(
            f"{where}: 'blackbox_images' must be an int >= 1, got {blackbox_images!r}"
        )
    for name, value in (("tolerance", tolerance), ("gap", gap)):
        if not 0 <= value < 1:
            raise ParameterError(f"{where}: {name!r} must be a float in [0, 1), got {value!r}")
    pgd = PGD(eps=eps, norm=norm, steps=steps, restarts=restarts, seed=seed)  # validates eps, ...
    if batch_size is None:
        per_image = max(1, samples) * math.prod(data.shape)  # EOT holds `samples` copies
        batch_size = min(100, max(1, ATTACK_BATCH_ELEMENTS // per_image))
    d = math.prod(data.shape)
    large = large_eps if large_eps is not None else (0.5 if norm == "linf" else 0.5 * math.sqrt(d))
    if large <= eps:
        raise ParameterError(f"{where}: 'large_eps' must exceed eps={eps}, got {large}")

    def say(msg: str) -> None:
        if log is not None:
            log(msg)

    def acc_of(robust: Tensor) -> float:
        return float(robust.double().mean())

    notes: list[str] = []
    # The clean pass, which also finds the files that do not decode: later passes leave them out.
    logits, read = model_outputs(defended, data, batch_size=batch_size, device=device)
    if len(read) < len(data):
        skipped = len(data) - len(read)
        notes.append(f"{skipped} file(s) of {data.name} could not be read and were left out")
        data = data[read]
    logits = logits.to(device)
    num_classes = logits.shape[1]
    y = check_labels(data.y.to(device), len(data), num_classes=num_classes, where=where)
    clean = logits.argmax(1) == y
    table: list[dict[str, Any]] = [
        {"measure": "clean", "attack": "none", "accuracy": acc_of(clean)}
    ]
    if undefended is not None:
        und_logits, _ = model_outputs(undefended, data, batch_size=batch_size, device=device)
        table.append(
            {
                "measure": "clean (undefended)",
                "attack": "none",
                "accuracy": acc_of(und_logits.to(device).argmax(1) == y),
            }
        )

    # Randomized preprocessors restart their streams, so the same seed gives the same audit.
    for m in defended.modules():
        if isinstance(m, Preprocessor):
            m.reseed()
    probe_x = in_memory(data[: min(len(data), 16)]).x.to(device)
    diag = diagnose(defended, probe_x)
    say(f"probe: gradient {diag.gradient}, randomized {diag.randomized}")

    def adapt(attack: Attack) -> Attack:
        return adaptive(attack, defended, probe_x, samples=samples)

    def run(attack: Attack, model: nn.Module, desc: str) -> Tensor:
        say(f"{desc}: {attack.name}")
        return _robust(attack, model, data, batch_size, desc, show_progress, device)

    naive = run(pgd, defended, "naive")
    adaptive_pgd = adapt(pgd)
    adapted = run(adaptive_pgd, defended, "adaptive")
    table.append({"measure": "naive", "attack": pgd.name, "accuracy": acc_of(naive)})
    table.append({"measure": "adaptive", "attack": adaptive_pgd.name, "accuracy": acc_of(adapted)})
    worst = naive & adapted

    transfer: Tensor | None = None
    if undefended is not None:
        rob = []
        for batch in batches(data, batch_size, device=device):
            x_adv = pgd(undefended, batch.x, batch.y).x_adv
            with inference_mode(defended), torch.no_grad():
                rob.append(defended(x_adv).argmax(1) == batch.y)
        transfer = torch.cat(rob) & clean
        worst &= transfer
        table.append(
            {
                "measure": "transfer from undefended",
                "attack": pgd.name,
                "accuracy": acc_of(transfer),
            }
        )
        say(f"transfer: {acc_of(transfer):.4f}")
    else:
        notes.append("no undefended model given: transfer was not measured")
    blackbox: Tensor | None = None
    nb = min(len(data), blackbox_images)
    if blackbox_queries and norm == "linf":
        oracle = Oracle(defended, output="probs", budget=blackbox_queries)
        nes = NES(eps=eps, max_queries=blackbox_queries, seed=seed)
        say(f"black-box: {nes.name} on {nb} images, {blackbox_queries} queries each")
        held = query_batch(data.shape, nes.samples)
        res = nes(oracle, in_memory(data[:nb]).x.to(device), y[:nb], batch_size=held)
        with inference_mode(defended), torch.no_grad():
            blackbox = res.attacked & (defended(res.x_adv).argmax(1) == y[:nb])
        worst[:nb] &= blackbox
        table.append(
            {
                "measure": f"black-box ({nb} images)",
                "attack": f"{nes.name}, {blackbox_queries} queries",
                "accuracy": acc_of(blackbox),
            }
        )
    elif blackbox_queries:
        notes.append("the black-box attack (NES) works in Linf only: it was not run")

    single: Attack = (
        FGSM(eps=eps, seed=seed)
        if norm == "linf"
        else PGD(eps=eps, norm=norm, steps=1, step=eps, random_start=False, seed=seed)
    )
    fgsm_robust = run(adapt(single), defended, "single-step")
    doubled = adapt(PGD(eps=eps, norm=norm, steps=2 * steps, restarts=2 * restarts, seed=seed + 1))
    doubled_robust = run(doubled, defended, "doubled")
    worst &= fgsm_robust & doubled_robust
    table.append({"measure": "single-step", "attack": single.name, "accuracy": acc_of(fgsm_robust)})
    table.append({"measure": "doubled", "attack": doubled.name, "accuracy": acc_of(doubled_robust)})

    curve = {0.0: acc_of(clean)}
    for e in (eps / 2, eps, 2 * eps, large):
        if e == eps:
            curve[e] = acc_of(adapted)
            continue
        att = adapt(PGD(eps=e, norm=norm, steps=steps, restarts=restarts, seed=seed))
        curve[e] = acc_of(run(att, defended, f"eps {e:.4g}"))
    table.append(
        {"measure": f"eps {large:.4g}", "attack": "adaptive PGD", "accuracy": curve[large]}
    )
    if ensemble_steps is not None:
        ens = adapt(
            Ensemble.standard(
                eps=eps,
                norm=norm,
                steps=ensemble_steps,
                seed=seed,
                square_queries=50 * ensemble_steps,  # 5000, the standard, at 100 steps
            )
        )
        alive = worst.nonzero().squeeze(1)
        if len(alive):
            worst[alive] = _robust(
                ens, defended, data[alive.cpu()], batch_size, "ensemble", show_progress, device
            )
            say(f"ensemble on {len(alive)} survivors: {ens.name}")
        table.append(
            {"measure": "ensemble on survivors", "attack": ens.name, "accuracy": acc_of(worst)}
        )
    robust_acc = acc_of(worst)
    table.append({"measure": "worst case", "attack": "all of the above", "accuracy": robust_acc})

    # ------------------------------------------------------------------- checks
    grads = gradient_report(defended, probe_x, y[: len(probe_x)])
    bad_grad = grads["missing"] + grads["zero"] + grads["non_finite"]
    random_grad = not math.isnan(grads["cosine"]) and grads["cosine"] < 0.9
    problems = [
        label
        for label, hit in (
            ("no gradient", grads["missing"] > 0),
            (f"zero gradients for {_pct(grads['zero'])} of images", grads["zero"] > 0),
            (f"non-finite gradients for {_pct(grads['non_finite'])}", grads["non_finite"] > 0),
            (f"random gradients (cosine {grads['cosine']:.2f} between calls)", random_grad),
        )
        if hit
    ]
    checks = [
        Check(
            "gradients",
            bad_grad == 0 and not random_grad,
            grads,
            "input gradients are present, finite, non-zero and repeatable"
            if not problems
            else "; ".join(problems) + " (shattered or stochastic gradients)",
        )
    ]
    drop = acc_of(naive) - acc_of(adapted)
    checks.append(
        Check(
            "naive vs adaptive",
            drop <= gap,
            {"naive": acc_of(naive), "adaptive": acc_of(adapted), "attack": adaptive_pgd.name},
            f"{adaptive_pgd.name} drops accuracy from {_pct(acc_of(naive))} to "
            f"{_pct(acc_of(adapted))}",
        )
    )
    keys = sorted(curve)
    rises = [(a, b) for a, b in itertools.pairwise(keys) if curve[b] > curve[a] + tolerance]
    chance = 1.0 / num_classes
    checks.append(
        Check(
            "monotone in eps",
            not rises,
            {f"{k:g}": v for k, v in curve.items()},
            "accuracy falls with eps: "
            + ", ".join(f"{_pct(curve[k])} at {k:g}" for k in keys)
            + (
                ""
                if not rises
                else f"; it rises between eps {rises[0][0]:.4g} and {rises[0][1]:.4g}"
            ),
        )
    )
    checks.append(
        Check(
            "reaches chance",
            curve[large] <= chance,
            {"eps": large, "accuracy": curve[large], "chance": chance},
            f"at eps {large:.4g} the attack leaves {_pct(curve[large])} (chance {_pct(chance)})",
        )
    )
    checks.append(
        Check(
            "iterative beats single-step",
            acc_of(adapted) <= acc_of(fgsm_robust) + tolerance,
            {"iterative": acc_of(adapted), "single_step": acc_of(fgsm_robust)},
            f"PGD leaves {_pct(acc_of(adapted))}, FGSM {_pct(acc_of(fgsm_robust))}",
        )
    )
    checks.append(
        Check(
            "more steps and restarts",
            abs(acc_of(doubled_robust) - acc_of(adapted)) <= tolerance,
            {"base": acc_of(adapted), "doubled": acc_of(doubled_robust)},
            f"doubling steps and restarts moves accuracy from {_pct(acc_of(adapted))} to "
            f"{_pct(acc_of(doubled_robust))}",
        )
    )
    if transfer is not None:
        white = min(acc_of(naive), acc_of(adapted))
        checks.append(
            Check(
                "transfer does not beat white-box",
                acc_of(transfer) >= white - tolerance,
                {"transfer": acc_of(transfer), "white_box": white},
                f"transfer leaves {_pct(acc_of(transfer))}, white-box {_pct(white)}",
            )
        )

    if blackbox is not None:
        white_nb = min(acc_of(naive[:nb]), acc_of(adapted[:nb]))
        checks.append(
            Check(
                "black-box does not beat white-box",
                acc_of(blackbox) >= white_nb - tolerance,
                {"black_box": acc_of(blackbox), "white_box": white_nb, "images": nb},
                f"on the first {nb} images NES leaves {_pct(acc_of(blackbox))}, white-box "
                f"{_pct(white_nb)}",
            )
        )

    claimed = acc_of(naive)
    failed = [c for c in checks if not c.passed]
    supported = claimed - robust_acc <= gap and not failed
    if supported:
        verdict = (
            f"robustness claim supported: {_pct(robust_acc)} accuracy at eps {eps:g} ({norm}) "
            f"under the worst case of every attack, and all {len(checks)} sanity checks passed"
        )
    else:
        reasons = ", ".join(c.name if c.name != "gradients" else c.detail for c in failed)
        verdict = (
            f"robustness claim not supported: {reasons or 'stronger attacks exist'}; "
            f"the worst case drops accuracy from {_pct(claimed)} (naive {pgd.name}) to "
            f"{_pct(robust_acc)}"
        )
    return DefenseAudit(
        eps=eps,
        norm=norm,
        n=len(data),
        num_classes=num_classes,
        table=table,
        checks=checks,
        verdict=verdict,
        supported=supported,
        claimed_accuracy=claimed,
        robust_accuracy=robust_acc,
        diagnosis=diag.as_dict(),
        notes=notes,
    )
