"""The black-box oracle (query accounting, budgets, what each output mode shows) and NES."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import robustlens as rl
from robustlens.blackbox.nes import NES, nes_gradient
from robustlens.blackbox.oracle import UNLIMITED, Oracle, TopK
from robustlens.errors import LabelError, ParameterError, QueryBudgetError, ShapeError


class Counting(nn.Module):
    """Wraps a model and records how many images reach it, seen from outside the oracle."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.model(x)


@pytest.fixture(scope="module")
def digits() -> rl.data.ImageDataset:
    return rl.data.load("digits")


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return rl.zoo.load("digits-cnn")


@pytest.fixture(scope="module")
def one_per_class(digits: rl.data.ImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The first image of each class (all classified correctly by the zoo model)."""
    first = torch.stack([(digits.y == c).nonzero()[0, 0] for c in range(10)])
    return digits.x[first], digits.y[first]


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6))


# --------------------------------------------------------------------------- oracle


def test_budget_is_enforced_before_the_model_sees_the_batch() -> None:
    model = Counting(_linear())
    oracle = Oracle(model, output="probs", budget=3)
    x = torch.rand(3, 1, 3, 4)
    ids = oracle.new_ids(2)
    oracle(x[:2], ids)
    oracle(x[:2], ids[[0, 0]])  # id 0 reaches its budget exactly: allowed
    assert model.seen == 4
    assert oracle.queries(ids).tolist() == [3, 1]
    assert oracle.remaining(ids).tolist() == [0, 2]
    # A batch that would take id 0 past the budget is refused as a whole: the model sees none of
    # it, and id 1 in the same batch is not charged either.
    with pytest.raises(QueryBudgetError, match=r"past the budget of 3 .*oracle\.remaining"):
        oracle(x[:2], ids[[1, 0]])
    assert model.seen == 4
    assert oracle.queries(ids).tolist() == [3, 1]
    assert oracle.total == 4
    oracle(x[:2], ids[[1, 1]])
    assert model.seen == 6 and oracle.remaining(ids).tolist() == [0, 0]


def test_one_image_one_query_duplicates_included() -> None:
    model = Counting(_linear())
    oracle = Oracle(model, output="label")
    ids = oracle.new_ids(2)
    assert ids.dtype == torch.int64 and ids.tolist() == [0, 1]
    oracle(torch.rand(5, 1, 3, 4), ids[[0, 0, 1, 0, 1]])
    assert oracle.queries(ids).tolist() == [3, 2]
    assert oracle.total == 5 == model.seen
    assert oracle.remaining(ids).tolist() == [UNLIMITED, UNLIMITED]
    assert oracle.new_ids(3).tolist() == [2, 3, 4]  # fresh ids never reuse old counts
    assert oracle.queries(torch.tensor([4])).tolist() == [0]


def test_label_mode_returns_int64_labels_and_nothing_else() -> None:
    model = _linear()
    oracle = Oracle(model, output="label", budget=10)
    x = torch.rand(4, 1, 3, 4)
    out = oracle(x, oracle.new_ids(4))
    assert type(out) is torch.Tensor
    assert out.dtype == torch.int64 and out.shape == (4,)
    assert torch.equal(out, model(x).argmax(1))
    assert out.grad_fn is None and out._base is None
    for name in ("scores", "probs", "logits"):
        assert not hasattr(out, name)
    # Neither the answer nor the oracle hands out the model.
    public = [getattr(oracle, a) for a in dir(oracle) if not a.startswith("_")]
    assert not any(isinstance(v, nn.Module) for v in public)
    assert not hasattr(oracle, "model")
    assert repr(oracle) == "Oracle(output='label', k=5, budget=10, total=4)"


def test_topk_returns_exactly_k_classes_sorted_by_probability() -> None:
    model = _linear()
    x = torch.rand(5, 1, 3, 4)
    oracle = Oracle(model, output="topk", k=3)
    out = oracle(x, oracle.new_ids(5))
    assert isinstance(out, TopK)
    assert out.classes.dtype == torch.int64 and out.classes.shape == (5, 3)
    assert out.scores.shape == (5, 3)
    assert bool((out.scores[:, :-1] >= out.scores[:, 1:]).all())
    probs = torch.softmax(model(x), 1)
    ref_scores, ref_classes = probs.topk(3, dim=1)
    assert torch.equal(out.classes, ref_classes)
    torch.testing.assert_close(out.scores, ref_scores.detach())


@pytest.mark.parametrize("output", ["probs", "topk", "label"])
def test_outputs_are_detached_and_the_model_is_left_as_it_was(output: str) -> None:
    model = _linear().train()
    flags = [p.requires_grad for p in model.parameters()]
    oracle = Oracle(model, output=output, k=2)  # type: ignore[arg-type]
    x = torch.rand(3, 1, 3, 4, requires_grad=True)
    out = oracle(x, oracle.new_ids(3))
    tensors = [out.classes, out.scores] if isinstance(out, TopK) else [out]
    assert all(not t.requires_grad and t.grad_fn is None for t in tensors)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters()) and x.grad is None


def test_num_classes_is_learnt_from_the_first_query() -> None:
    oracle = Oracle(_linear(), output="label")
    assert oracle.num_classes is None and oracle.device == torch.device("cpu")
    oracle(torch.rand(1, 1, 3, 4), oracle.new_ids(1))
    assert oracle.num_classes == 6
    big_k = Oracle(_linear(), output="topk", k=7)
    ids = big_k.new_ids(1)
    with pytest.raises(ParameterError, match="'k' must be <= the number of classes 6"):
        big_k(torch.rand(1, 1, 3, 4), ids)
    assert big_k.queries(ids).tolist() == [0] and big_k.total == 0  # nothing answered, no charge


def test_oracle_errors_say_how_to_fix() -> None:
    model = _linear()
    with pytest.raises(ParameterError, match="'output' must be one of 'probs', 'topk', 'label'"):
        Oracle(model, output="logits")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'budget' must be an int >= 1, got 0"):
        Oracle(model, budget=0)
    with pytest.raises(ParameterError, match="'k' must be <= the number of classes 6"):
        Oracle(model, output="topk", k=7, num_classes=6)
    oracle = Oracle(model)
    ids = oracle.new_ids(2)
    with pytest.raises(ParameterError, match=r"ids this oracle issued \(0\.\.1\).*new_ids"):
        oracle(torch.rand(1, 1, 3, 4), torch.tensor([2]))
    with pytest.raises(ShapeError, match=r"ids must have shape \(1,\), one id per image"):
        oracle(torch.rand(1, 1, 3, 4), ids)
    with pytest.raises(rl.errors.RangeError, match="divide by 255"):
        oracle(torch.full((2, 1, 3, 4), 255.0), ids)
    assert oracle.total == 0


# --------------------------------------------------------------------------- NES estimator


def _expected_cosine(directions: int, d: int) -> tuple[float, float]:
    """Mean and standard deviation of cos(g, w) for the antithetic estimate of a linear loss.

    For ``f(x) = w . x`` the antithetic estimate is ``g = (1/m) sum_j u_j u_j^T w`` over the
    ``m = samples / 2`` directions (a pair ``u, -u`` contributes ``2 sigma (w . u) u``). Split each
    ``u_j = a_j w/|w| + v_j`` with ``v_j`` orthogonal to ``w``: the component of ``g`` along ``w``
    is ``|w| sum a_j^2 / m`` and, given the ``a_j``, the orthogonal one is Gaussian with squared
    norm ``|w|^2 (sum a_j^2 / m^2) chi2_{d-1}``. Hence ``cos^2 = chi2_m / (chi2_m + chi2_{d-1})``
    with independent chi-squares, i.e. ``cos^2 ~ Beta(m/2, (d-1)/2)`` exactly, and
    ``E[cos] = B(m/2 + 1/2, (d-1)/2) / B(m/2, (d-1)/2)``. (The rougher
    ``sqrt(m / (m + d + 1))`` from ``E|g|^2 = (m + d + 1)/m |w|^2`` is within 0.012 of it.)
    """
    a, b = directions / 2, (d - 1) / 2
    mean = math.exp(
        math.lgamma(a + 0.5) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(a + b + 0.5)
    )
    return mean, math.sqrt(a / (a + b) - mean**2)


@pytest.mark.parametrize(("samples", "d"), [(50, 64), (20, 100)])
def test_nes_cosine_with_the_true_gradient_matches_theory(samples: int, d: int) -> None:
    trials = 400
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    x = torch.rand(trials, d, generator=gen, dtype=torch.float64)
    g = nes_gradient(lambda p: p @ w, x, 0.01, samples, gen)
    cos = torch.nn.functional.cosine_similarity(g, w.expand_as(g), dim=1)
    mean, sd = _expected_cosine(samples // 2, d)
    # The mean of 400 independent cosines has standard error sd / 20 (about 0.003): 4 of those
    # is a bound a correct estimator passes, while a plain (non-antithetic) estimator or one that
    # used `samples` independent directions lands 0.1 or more (over 5 tol) away.
    tol = 4 * sd / math.sqrt(trials)
    assert abs(float(cos.mean()) - mean) < tol
    assert abs(_expected_cosine(samples, d)[0] - mean) > 5 * tol
    assert abs(float(cos.std()) - sd) < 0.25 * sd


def test_nes_gradient_is_unbiased_and_seeded() -> None:
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    x = torch.zeros(2000, 4, dtype=torch.float64)
    g = nes_gradient(lambda p: p @ w + 7.0, x, 0.1, 10, torch.Generator().manual_seed(0))
    torch.testing.assert_close(g.mean(0), w, atol=0.15, rtol=0)  # the constant 7 cancels
    a = nes_gradient(lambda p: p @ w, x[:3], 0.1, 10, torch.Generator().manual_seed(5))
    b = nes_gradient(lambda p: p @ w, x[:3], 0.1, 10, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ParameterError, match="'samples' must be an even int >= 2, got 5"):
        nes_gradient(lambda p: p @ w, x[:1], 0.1, 5)


# --------------------------------------------------------------------------- NES attacks


def test_query_limited_untargeted_on_digits(cnn: nn.Module, digits: rl.data.ImageDataset) -> None:
    x, y = digits.x[:20], digits.y[:20]  # images 13 and 17 are misclassified
    budget = 2000
    model = Counting(cnn)
    oracle = Oracle(model, output="probs", budget=budget)
    res = NES(eps=0.2, max_queries=budget)(oracle, x, y)
    # Measured: 18 of 18 attacked images, median 715 queries, at most 1021.
    assert int(res.attacked.sum()) == 18 and not bool(res.attacked[[13, 17]].any())
    assert res.success_rate >= 0.85
    assert bool((res.queries <= budget).all()) and int(res.queries.sum()) == model.seen
    assert res.queries[[13, 17]].tolist() == [1, 1]  # one label query, then left alone
    assert torch.equal(res.x_adv[[13, 17]], x[[13, 17]])
    assert float(res.linf.max()) <= 0.2 + 1e-6
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    with torch.no_grad():
        pred = cnn(res.x_adv).argmax(1)
    assert torch.equal(pred, res.pred)
    assert bool((pred[res.success] != y[res.success]).all())
    assert bool((res.steps[res.success] >= 1).all()) and bool((res.steps[~res.success] == -1).all())
    assert int(res.gradients.sum()) == 0
    assert res.details["mode"] == "query-limited" and res.summary()["mode"] == "query-limited"


def test_budget_stops_samples_cleanly(cnn: nn.Module, digits: rl.data.ImageDataset) -> None:
    x, y = digits.x[:6], digits.y[:6]
    oracle = Oracle(cnn, output="probs", budget=200)  # 1 label query + 3 iterations of 51
    res = NES(eps=0.1, max_queries=10_000)(oracle, x, y)  # the smaller limit wins, no error
    assert bool((res.queries <= 200).all())
    failed = res.attacked & ~res.success
    assert bool((res.queries[failed] > 200 - 51).all())  # stopped only when out of queries
    assert res.details["out_of_budget"] == int(failed.sum()) > 0
    small = NES(eps=0.1, max_queries=150)(Oracle(cnn, output="probs"), x, y)
    assert bool((small.queries <= 150).all())


def test_same_seed_same_result(cnn: nn.Module, digits: rl.data.ImageDataset) -> None:
    x, y = digits.x[:4], digits.y[:4]

    def run(seed: int) -> rl.attacks.AttackResult:
        return NES(eps=0.1, max_queries=400, seed=seed)(Oracle(cnn, output="probs"), x, y)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)


@pytest.mark.parametrize(("mode", "output"), [("partial-info", "topk"), ("query-limited", "probs")])
def test_targeted_on_digits(
    cnn: nn.Module, one_per_class: tuple[torch.Tensor, torch.Tensor], mode: str, output: str
) -> None:
    x, y = one_per_class
    target = (y + 1) % 10  # every target class is in the batch: the default start images
    oracle = Oracle(cnn, output=output, k=5, budget=10_000)  # type: ignore[arg-type]
    res = NES(eps=0.3, mode=mode)(oracle, x, y, target=target)  # type: ignore[arg-type]
    # Measured: 10 of 10 in both modes; median 664 (partial-info), 1174 (query-limited) queries.
    assert res.success_rate >= 0.8
    assert bool((res.queries <= 10_000).all())
    assert float(res.linf.max()) <= 0.3 + 1e-6
    with torch.no_grad():
        pred = cnn(res.x_adv).argmax(1)
    assert torch.equal(pred[res.success], target[res.success])


@pytest.mark.parametrize("output", ["label", "topk"])
def test_label_only_targeted_on_digits(
    cnn: nn.Module,
    digits: rl.data.ImageDataset,
    one_per_class: tuple[torch.Tensor, torch.Tensor],
    output: str,
) -> None:
    x, y = one_per_class[0][:6], one_per_class[1][:6]
    target = (y + 3) % 10
    last = torch.stack([(digits.y == c).nonzero()[-1, 0] for c in target.tolist()])
    oracle = Oracle(cnn, output=output, k=5)  # type: ignore[arg-type]
    attack = NES(eps=0.3, mode="label-only", samples=10, mc_samples=5, max_queries=8000)
    res = attack(oracle, x, y, target=target, x_init=digits.x[last])
    # Measured: 6 of 6 with labels (median 2865 queries), 5 of 6 with the top-5 classes.
    assert res.success_rate >= 0.5
    assert bool((res.queries <= 8000).all())
    assert float(res.linf.max()) <= 0.3 + 1e-6
    with torch.no_grad():
        pred = cnn(res.x_adv).argmax(1)
    assert torch.equal(pred, res.pred)
    assert torch.equal(pred[res.success], target[res.success])
    assert res.details["classes_read"] == (1 if output == "label" else 5)


def test_nes_errors_say_how_to_fix(cnn: nn.Module, digits: rl.data.ImageDataset) -> None:
    x, y = digits.x[:3], digits.y[:3]
    probs, labels = Oracle(cnn, output="probs"), Oracle(cnn, output="label")
    with pytest.raises(ParameterError, match="'samples' must be even"):
        NES(eps=0.1, samples=25)
    with pytest.raises(ParameterError, match="'eps' must be a float > 0, got -0.1"):
        NES(eps=-0.1)
    with pytest.raises(ParameterError, match="'eps_start' must be >= 'eps'"):
        NES(eps=0.3, eps_start=0.2, mode="partial-info")
    with pytest.raises(ParameterError, match=r"needs an Oracle\(output='probs'\).*'label-only'"):
        NES(eps=0.1)(labels, x, y)
    with pytest.raises(ParameterError, match="needs scores"):
        NES(eps=0.1, mode="partial-info")(labels, x, y, target=(y + 1) % 10)
    with pytest.raises(ParameterError, match="is a targeted attack: pass target="):
        NES(eps=0.1, mode="label-only")(labels, x, y)
    with pytest.raises(LabelError, match="target equals the true label for 3 images"):
        NES(eps=0.1)(probs, x, y, target=y)
    assert probs.total == 0 and labels.total == 0  # all refused before any query
    lonely = torch.tensor([9, 9, 9])  # no image of the batch is a 9
    with pytest.raises(ParameterError, match=r"class\(es\) \[9\].*pass x_init="):
        NES(eps=0.1, mode="label-only")(labels, x, y, target=lonely)


def test_nes_in_batches_holds_at_most_batch_size_images(
    cnn: nn.Module, digits: rl.data.ImageDataset
) -> None:
    """``batch_size`` bounds the images NES holds (each step queries ``samples`` copies of each):
    every query pass sees at most ``batch_size * samples`` images, and the joined result covers
    every image, queries counted per image as in one call."""
    x, y = digits.x[:7], digits.y[:7]
    seen: list[int] = []
    hook = cnn.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    nes = NES(eps=0.2, max_queries=300, samples=10)
    try:
        res = nes(Oracle(cnn, output="probs", budget=300), x, y, batch_size=3)
    finally:
        hook.remove()
    assert max(seen) <= 3 * 10 and len(res) == 7
    assert bool((res.queries <= 300).all()) and bool((res.queries >= 1).all())
    assert torch.equal(res.y, y) and res.details["mode"] == "query-limited"
    with pytest.raises(ParameterError, match="'batch_size' must be an int >= 1"):
        nes(Oracle(cnn, output="probs"), x, y, batch_size=0)
