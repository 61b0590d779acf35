"""An ensemble of attacks with a per-sample worst case: the robustness figure robustlens reports.

Members run in order, each only on the images that every earlier member failed to fool, so no image
is attacked again once broken and the cost falls as the ensemble goes on. An image is robust only if
every member failed, and then comes back as the failed attempt closest to the goal (highest margin
objective); each member's contribution (the images it fooled first) is reported in
``result.details["contribution"]``.

``Ensemble.standard(eps)`` is the parameter-free default in the spirit of AutoAttack (Croce and Hein
2020): APGD with cross-entropy, then APGD-T with the targeted DLR loss over the 9 most likely other
classes, then the Square attack (Andriushchenko et al. 2020), a score-based random search that needs
no gradient and so still works where gradients are masked. No step size or schedule to tune, which
is what makes it a reliable default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlens.attacks._steps import Norm, margin_objective
from robustlens.attacks.adaptive import Persist, Persistent, Wrapper
from robustlens.attacks.apgd import APGD
from robustlens.attacks.base import ATTACKS, Attack, AttackResult, Run
from robustlens.attacks.square import Square
from robustlens.errors import ParameterError

__all__ = ["Ensemble"]


@ATTACKS.register("ensemble")
@dataclass(frozen=True, kw_only=True)
class Ensemble(Attack):
    """Run ``attacks`` in order on the images still robust; worst case per image.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:32]
        >>> ens = Ensemble.standard(eps=0.1, steps=20, square_queries=500)
        >>> res = ens(rl.zoo.load("digits-cnn"), ds.x, ds.y)
        >>> sum(res.details["contribution"].values()) == int(res.success.sum())
        True
    """

    attacks: tuple[Attack, ...] = ()

    def __post_init__(self) -> None:
        if not self.attacks or not all(isinstance(a, Attack) for a in self.attacks):
            raise ParameterError(
                "Ensemble: 'attacks' must be a non-empty tuple of robustlens attacks"
            )
        object.__setattr__(self, "attacks", tuple(self.attacks))

    @classmethod
    def standard(
        cls,
        eps: float,
        *,
        norm: Norm = "linf",
        steps: int = 100,
        seed: int = 0,
        square_queries: int = 5000,
    ) -> Ensemble:
        """APGD-CE, then APGD-T (targeted DLR, 9 target classes), then Square with
        ``square_queries`` queries (0 leaves it out), at budget ``eps``.

        Example:
            >>> [a.name for a in Ensemble.standard(eps=0.1, square_queries=1000).attacks]
            ['APGD(eps=0.1)', 'APGD(eps=0.1, loss=dlr, targets=9)', 'Square(eps=0.1, queries=1000)']
        """
        if (
            not isinstance(square_queries, int)
            or isinstance(square_queries, bool)
            or square_queries < 0
        ):
            raise ParameterError(
                "Ensemble.standard: 'square_queries' must be an int >= 0 (0 leaves the Square "
                f"attack out), got {square_queries!r}"
            )
        attacks: tuple[Attack, ...] = (
            APGD(eps=eps, norm=norm, steps=steps, loss="ce", seed=seed),
            APGD(eps=eps, norm=norm, steps=steps, loss="dlr", targets=9, seed=seed),
        )
        if square_queries:
            attacks += (Square(eps=eps, norm=norm, queries=square_queries, seed=seed),)
        return cls(attacks=attacks, seed=seed)

    @property
    def name(self) -> str:
        return "Ensemble[" + ", ".join(a.name for a in self.attacks) + "]"

    @property
    def member_names(self) -> list[str]:
        names = [a.name for a in self.attacks]
        return names if len(set(names)) == len(names) else [f"{i}:{n}" for i, n in enumerate(names)]

    @property
    def attacks_every_input(self) -> bool:
        return any(a.attacks_every_input for a in self.attacks)

    def ball(self) -> tuple[Norm, float] | None:
        balls = {a.ball() for a in self.attacks}
        return balls.pop() if len(balls) == 1 else None

    def _progress_total(self) -> int:
        return len(self.attacks)  # one tick per member; each member draws its own line below

    def _run(self, run: Run) -> Tensor:
        m = len(run.x)
        dev = run.x.device
        out = run.x.clone()
        broken = torch.zeros(m, dtype=torch.bool, device=dev)
        pred = run.y.clone()  # robust images keep y as their prediction
        closest = torch.full((m,), -math.inf, device=dev)  # margin objective of what `out` holds
        contribution: dict[str, int] = {}
        offset = 0
        for i, (name, attack) in enumerate(zip(self.member_names, self.attacks, strict=True)):
            idx = (~broken).nonzero().squeeze(1)
            run.progress.advance_to(i)
            if len(idx) == 0:
                contribution[name] = 0
                continue
            run.progress.note(f"member {i + 1}/{len(self.attacks)}: {name} on {len(idx)} images")
            target = None if run.target is None else run.target[idx]
            # Inside EOT the members, too, run every step (a success on one draw is luck).
            member = Persist(attack) if isinstance(run, Persistent) else attack
            res = member(run.model, run.x[idx], run.y[idx], target=target)
            run.queries[idx] += res.queries
            run.gradients[idx] += res.gradients
            hit = res.success
            first = torch.where(res.steps >= 0, res.steps + offset, res.steps)
            run.first_success[idx[hit]] = first[hit]
            out[idx] = torch.where(hit.view(-1, *[1] * (out.ndim - 1)), res.x_adv, out[idx])
            pred[idx[hit]] = res.pred[hit]
            broken[idx[hit]] = True
            self._keep_closest(run, res, idx, target, out, pred, closest)
            contribution[name] = int(hit.sum())
            offset += _budget(attack)
        run.progress.advance_to(len(self.attacks))
        run.final_step = offset
        run.pred_adv = pred
        run.details["contribution"] = contribution
        return out

    @staticmethod
    def _keep_closest(
        run: Run,
        res: AttackResult,
        idx: Tensor,
        target: Tensor | None,
        out: Tensor,
        pred: Tensor,
        closest: Tensor,
    ) -> None:
        """For the images ``res`` failed on, keep its image where it comes closer to the goal (a
        higher margin objective, one more forward pass) than what an earlier member left.

        An image no member breaks thus comes back as the best failed attempt, as a single
        fixed-budget attack's does, not as the clean image: against a randomized model the
        judging draw may have been the unlucky one, and the attempt may fool most other draws.
        """
        miss = (res.attacked & ~res.success).nonzero().squeeze(1)
        if len(miss) == 0:
            return
        pos = idx[miss]
        logits = run.logits(res.x_adv[miss], pos)
        score = margin_objective(logits, run.y[pos], None if target is None else target[miss])
        better = score > closest[pos]
        pos, miss = pos[better], miss[better]
        out[pos] = res.x_adv[miss]
        pred[pos] = res.pred[miss]
        closest[pos] = score[better]


def _budget(attack: Attack) -> int:
    """Iterations an attack may spend, for numbering steps across members (a query-based
    attack such as Square: its queries; a wrapper such as BPDA: its inner attack's)."""
    while isinstance(attack, Wrapper):
        attack = attack.attack
    if isinstance(attack, Ensemble):
        return sum(_budget(a) for a in attack.attacks)
    steps = int(getattr(attack, "steps", getattr(attack, "queries", 1)))
    return (
        steps
        * int(getattr(attack, "restarts", 1))
        * max(int(getattr(attack, "targets", 1) or 1), 1)
    )
