"""Weighted sparse regression for LIME: the Lasso/LARS path and weighted least squares.

LIME's surrogate ``g(z') = b + w^T z'`` minimises ``sum_i pi_i (f_i - g(z'_i))^2``. With the
weighted means ``m_Z = sum_i pi_i z'_i / sum_i pi_i`` and ``m_f`` likewise, the rows

    X_i = sqrt(pi_i) (z'_i - m_Z),    y_i = sqrt(pi_i) (f_i - m_f)

turn that weighted problem with intercept into an ordinary one without intercept. The Lasso path of
``(X, y)`` (scikit-learn's ``lars_path``: least-angle regression with the Lasso modification,
Efron et al. 2004) gives the order in which superpixels enter as the penalty
falls; at its end (penalty 0) the coefficients are the unconstrained weighted least-squares fit.
Weighted least squares on a chosen support then gives the explanation's weights.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> Z = (torch.rand(200, 4, generator=g) < 0.5).double()
    >>> f = 0.5 + Z @ torch.tensor([1.0, 0.0, -2.0, 0.3], dtype=torch.float64)
    >>> path = lasso_path(Z, f, torch.ones(200, dtype=torch.float64))
    >>> path.order.tolist()
    [2, 0, 3]
    >>> fit = weighted_least_squares(Z[:, path.order], f, torch.ones(200, dtype=torch.float64))
    >>> [round(v, 6) for v in fit.coef.tolist()], round(fit.intercept, 6), round(fit.r2, 6)
    ([-2.0, 1.0, 0.3], 0.5, 1.0)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from robustlens.errors import ParameterError

__all__ = ["LassoPath", "WLSFit", "lasso_path", "weighted_center", "weighted_least_squares"]

PathMethod = Literal["lasso", "lar"]


@dataclass(frozen=True, eq=False)
class LassoPath:
    """The regularisation path of the weighted problem, one row per breakpoint.

    ``alphas`` (m,) are the penalties (decreasing, the last 0 unless the path stopped early),
    ``coefs`` (m, S) the coefficients at each breakpoint, ``sizes`` (m,) the number of non-zero
    coefficients, and ``order`` (q,) the superpixel ids in the order they first enter (ids that
    never enter are absent, so ``q <= S``).
    """

    alphas: Tensor
    coefs: Tensor
    sizes: Tensor
    order: Tensor

    @property
    def max_size(self) -> int:
        """The largest number of superpixels active at one breakpoint."""
        return int(self.sizes.max()) if self.sizes.numel() else 0

    def support(self, k: int) -> Tensor:
        """Ids active at the last breakpoint with at most ``k`` of them (lime's rule), sorted.

        On a path without drops (always with LAR, usually with the Lasso) these are the first
        ``k`` ids of ``order``.
        """
        ok = (self.sizes <= k).nonzero().flatten()
        if ok.numel() == 0:
            return torch.zeros(0, dtype=torch.long, device=self.coefs.device)
        row = self.coefs[int(ok[-1])]
        return (row != 0).nonzero().flatten()

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, JSON-ready."""
        return {
            "order": self.order.tolist(),
            "sizes": self.sizes.tolist(),
            "alphas": [float(a) for a in self.alphas.tolist()],
            "coefs": [[float(c) for c in row] for row in self.coefs.tolist()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], num_segments: int) -> LassoPath:
        """Inverse of :meth:`to_dict`."""
        coefs = torch.tensor(d["coefs"], dtype=torch.float64).reshape(-1, num_segments)
        return cls(
            alphas=torch.tensor(d["alphas"], dtype=torch.float64),
            coefs=coefs,
            sizes=torch.tensor(d["sizes"], dtype=torch.long),
            order=torch.tensor(d["order"], dtype=torch.long),
        )


@dataclass(frozen=True, eq=False)
class WLSFit:
    """A weighted least-squares fit with intercept: ``coef`` (p,), ``intercept``, weighted ``r2``."""

    coef: Tensor
    intercept: float
    r2: float


def weighted_center(X: Tensor, y: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """``sqrt(w) (X - m_X)`` and ``sqrt(w) (y - m_y)`` with the ``w``-weighted means.

    Shape: X (n, p), y (n,), w (n,) -> (n, p), (n,).
    """
    total = w.sum()
    mx = (w[:, None] * X).sum(0) / total
    my = (w * y).sum() / total
    root = w.sqrt()
    return root[:, None] * (X - mx), root * (y - my)


def lasso_path(Z: Tensor, y: Tensor, w: Tensor, *, method: PathMethod = "lasso") -> LassoPath:
    """The Lasso (or plain LAR) path of the ``w``-weighted regression of ``y`` on ``Z``.

    Runs scikit-learn's ``lars_path`` on the weighted, centred design (module docstring) in float64
    on the CPU; the result comes back on ``Z``'s device.

    Shape: Z (n, S), y (n,), w (n,) -> LassoPath with coefs (m, S).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import lars_path

    if method not in ("lasso", "lar"):
        raise ParameterError(f"lasso_path: 'method' must be 'lasso' or 'lar', got {method!r}")
    device = Z.device
    Xw, yw = weighted_center(Z.double().cpu(), y.double().cpu(), w.double().cpu())
    # lars_path stops at a fixed absolute tolerance (float32 eps on the penalty), so a
    # near-saturated output would give an empty path: solve for y / ||y||_rms and scale back.
    scale = float(yw.square().mean().sqrt())
    if scale > 0:
        yw = yw / scale
    else:
        scale = 1.0
    X_np, y_np = Xw.numpy(), yw.numpy()
    s = X_np.shape[1]
    with warnings.catch_warnings():
        # Degenerate paths (constant output, collinear superpixels) stop early; the caller reads
        # the path's length and warns in its own words.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        alphas, _, coefs = lars_path(
            X_np, y_np, method=method, max_iter=max(500, 4 * s), Gram="auto"
        )
    coef_t = torch.from_numpy(np.ascontiguousarray(coefs.T)) * scale  # (m, S)
    nonzero = coef_t != 0
    sizes = nonzero.sum(1)
    # First breakpoint at which each id is non-zero; never-active ids get m (sorted last, dropped).
    m = coef_t.shape[0]
    steps = torch.arange(m)[:, None].expand_as(nonzero)
    first = torch.where(nonzero, steps, torch.full_like(steps, m)).min(0).values
    entered = (first < m).nonzero().flatten()
    order = entered[torch.argsort(first[entered], stable=True)]
    return LassoPath(
        alphas=(torch.from_numpy(np.asarray(alphas, dtype=np.float64)) * scale).to(device),
        coefs=coef_t.to(device),
        sizes=sizes.to(device),
        order=order.to(device),
    )


def weighted_least_squares(X: Tensor, y: Tensor, w: Tensor) -> WLSFit:
    """Minimise ``sum_i w_i (y_i - b - X_i c)^2`` over ``b`` and ``c`` (float64, SVD-based lstsq).

    ``r2 = 1 - sum w (y - yhat)^2 / sum w (y - m_y)^2``; when ``y`` is constant ``r2`` is 1 for an
    exact fit, else 0.

    Shape: X (n, p) (p may be 0), y (n,), w (n,) -> WLSFit with coef (p,).
    """
    device = X.device
    Xd, yd, wd = X.double().cpu(), y.double().cpu(), w.double().cpu()
    n = Xd.shape[0]
    A = torch.cat([torch.ones(n, 1, dtype=torch.float64), Xd], dim=1)
    root = wd.sqrt()
    sol = torch.linalg.lstsq(root[:, None] * A, (root * yd)[:, None], driver="gelsd").solution
    sol = sol.flatten()
    pred = A @ sol
    mean = (wd * yd).sum() / wd.sum()
    ss_tot = float((wd * (yd - mean) ** 2).sum())
    ss_res = float((wd * (yd - pred) ** 2).sum())
    scale = float((wd * yd**2).sum()) + 1e-300
    exact = ss_res <= 1e-24 * scale
    r2 = (1.0 if exact else 0.0) if ss_tot <= 1e-24 * scale else 1.0 - ss_res / ss_tot
    return WLSFit(coef=sol[1:].to(device), intercept=float(sol[0]), r2=r2)
