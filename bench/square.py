"""Robust accuracy on fmnist-cnn-adv, 200 Fashion-MNIST test images (stratified subset, seed 0),
Linf eps 0.1: APGD-CE + APGD-T alone, then Square (5000 queries) on the images they leave robust
(what Ensemble.standard does as its third member), and Square alone on every image; with
``--torchattacks``, torchattacks' Square (its port of AutoAttack's) on the same images.

Not part of the test suite. ``python bench/square.py --alone --torchattacks`` (torchattacks in the
benchmark environment, see docs/benchmarks.md); the last JSON line is bench/results/square.json.
"""

from __future__ import annotations

import json
import sys
import time

import torch

import robustlens as rl
from robustlens.attacks import Ensemble, Square

eps = 0.1
ds = rl.data.load("fashion-mnist", split="test").subset(200, seed=0)
model = rl.zoo.load("fmnist-cnn-adv")
x, y = ds.x, ds.y
out: dict[str, object] = {"torch": torch.__version__, "threads": torch.get_num_threads()}

t = time.perf_counter()
two = Ensemble.standard(eps=eps, square_queries=0)(model, x, y)
out["apgd_ce_t_seconds"] = time.perf_counter() - t
out["clean_accuracy"] = two.clean_accuracy
out["apgd_ce_t_robust_accuracy"] = two.robust_accuracy
out["apgd_contribution"] = two.details["contribution"]
print(json.dumps(out), flush=True)

idx = two.robust.nonzero().squeeze(1)
t = time.perf_counter()
sq = Square(eps=eps, queries=5000)(model, x[idx], y[idx])
out["square_on_survivors_seconds"] = time.perf_counter() - t
out["survivors"] = len(idx)
out["square_on_survivors_success"] = int(sq.success.sum())
robust = two.robust.clone()
robust[idx[sq.success]] = False
out["ensemble_with_square_robust_accuracy"] = float(robust.double().mean())
out["square_queries_on_success"] = sq.queries[sq.success].tolist()
out["square_linf_max"] = float(sq.linf.max())
print(json.dumps(out), flush=True)

if "--alone" in sys.argv:
    t = time.perf_counter()
    alone = Square(eps=eps, queries=5000)(model, x, y)
    out["square_alone_seconds"] = time.perf_counter() - t
    out["square_alone_robust_accuracy"] = alone.robust_accuracy
    out["square_alone_median_queries_success"] = float(
        alone.queries[alone.success].float().median()
    )
    out["square_alone_mean_queries"] = float(alone.queries[alone.attacked].float().mean())
    print(json.dumps(out), flush=True)

if "--torchattacks" in sys.argv:
    import torchattacks as ta

    for p in model.parameters():
        p.requires_grad_(False)
    atk = ta.Square(
        model,
        norm="Linf",
        eps=eps,
        n_queries=5000,
        n_restarts=1,
        p_init=0.8,
        loss="margin",
        resc_schedule=True,
        seed=0,
    )
    t = time.perf_counter()
    adv = atk(x, y)
    out["ta_square_alone_seconds"] = time.perf_counter() - t
    with torch.no_grad():
        rob = (model(x).argmax(1) == y) & (model(adv).argmax(1) == y)
    out["ta_square_alone_robust_accuracy"] = float(rob.double().mean())
    print(json.dumps(out), flush=True)
