"""Penultimate features of a classifier, and a frozen backbone built on them.

A probe such as "name that dataset" on a network's features (:mod:`robustlens.bias.dataset`)
needs what a classifier's last layer reads: its penultimate features. :func:`penultimate` finds
them by one rule per kind of model:

- **timm** models: ``model.forward_head(model.forward_features(x), pre_logits=True)``, timm's own
  pre-logits features (pooled, before the classifier), without touching the classifier;
- **torchvision** models: the input of the last ``nn.Linear`` the forward pass calls, located by
  tracing the model (``torchvision.models.feature_extraction``) and computed by a
  ``create_feature_extractor`` graph that stops there (ResNet-18: the flattened average pool,
  512-d; ViT-B/16: the class token, 768-d);
- **any other** ``nn.Module``: the input of its last ``nn.Linear`` in registration order
  (``model.modules()``), caught by a forward hook while the whole model runs; a model whose last
  layer is not a ``Linear`` is refused, since no layer can be called its penultimate one.

A :class:`~robustlens.models.Normalized` wrapper (``rl.models.load`` puts the model's mean and
std in one) is applied first, so a backbone takes ``[0, 1]`` images like every robustlens model.
Features are flattened to ``(N, D)``.

:func:`backbone` resolves a model spec (``"torchvision:resnet18"``, ``"timm:NAME"``, a zoo name,
a file), an ``rl.models.LoadedModel`` or a module into a :class:`Backbone`: the features, the
preprocessing the model expects (its own, so the features are those it would compute) and where
its weights came from. A library model without ``weights=`` has **random weights**, drawn from
``seed``: its features are a fixed random projection of the image, not what a trained network
sees, so results on them say little about any real backbone (:attr:`Backbone.warnings`).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2)
    ... )
    >>> feats = penultimate(net)
    >>> feats(torch.rand(3, 3, 2, 2)).shape, feats.rule
    (torch.Size([3, 5]), "forward hook: the input of the last Linear '3'")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlens.data.preprocess import Preprocessing
from robustlens.errors import ModelOutputError, ParameterError
from robustlens.models.normalized import Normalized
from robustlens.models.resolve import LoadedModel

__all__ = ["Backbone", "Penultimate", "backbone", "penultimate"]


# --------------------------------------------------------------------------- the features


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return found[-1] if found else None


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.") and all(
        callable(getattr(model, a, None)) for a in ("forward_features", "forward_head")
    )


def _is_torchvision(model: nn.Module) -> bool:
    return type(model).__module__.startswith("torchvision.models")


def _torchvision_graph(model: nn.Module) -> tuple[nn.Module, str, str] | None:
    """``(extractor, node, linear)``: a graph of ``model`` returning the input of the last
    ``nn.Linear`` it calls (output key ``"features"``), or ``None`` when it does not trace."""
    from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor

    from robustlens._runtime import inference_mode

    try:
        with inference_mode(model):  # traced in eval mode; every submodule's mode restored
            tracer = NodePathTracer()
            graph = tracer.trace(model)
            calls = [
                n
                for n in graph.nodes
                if n.op == "call_module"
                and isinstance(model.get_submodule(str(n.target)), nn.Linear)
            ]
            if not calls or not calls[-1].args:
                return None
            source = calls[-1].args[0]
            node = (
                tracer.node_to_qualname.get(source) if isinstance(source, torch.fx.Node) else None
            )
            if node is None:
                return None
            extractor = create_feature_extractor(model, return_nodes={node: "features"})
    except Exception:  # a model FX cannot trace falls back to the hook rule
        return None
    return extractor, node, str(calls[-1].target)


class Penultimate(nn.Module):
    """The penultimate features of ``model`` (see the module docstring for the rule).

    Shape: ``(N, C, H, W)`` images in ``[0, 1]`` -> ``(N, D)`` features.

    Attributes:
        rule: how the features were found, in words (for results and the report).
        layer: the name of the last ``Linear`` layer whose input the features are (``""`` for
            timm's pre-logits).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ParameterError(
                f"penultimate: 'model' must be a torch.nn.Module, got {type(model).__name__}"
            )
        self.normalize: Normalized | None = model if isinstance(model, Normalized) else None
        base = model.model if isinstance(model, Normalized) else model
        self.base = base
        self.graph: nn.Module | None = None
        self._kind = "hook"
        self._hooked: nn.Linear | None = None
        if _is_timm(base):
            self._kind = "timm"
            self.rule = "timm forward_head(forward_features(x), pre_logits=True)"
            self.layer = ""
            return
        traced = _torchvision_graph(base) if _is_torchvision(base) else None
        if traced is not None:
            self.graph, node, linear = traced
            self._kind = "torchvision"
            self.layer = linear
            self.rule = (
                f"torchvision feature_extraction: node '{node}', the input of the last Linear "
                f"'{linear}'"
            )
            return
        last = _last_linear(base)
        if last is None:
            raise ParameterError(
                f"penultimate: {type(base).__name__} has no nn.Linear layer, so it has no "
                "penultimate features by robustlens' rule (the input of the last Linear); use a "
                "model with a linear classifier, or wrap your feature extractor so that a Linear "
                "layer reads its output"
            )
        self.layer, self._hooked = last
        self.rule = f"forward hook: the input of the last Linear '{self.layer}'"

    def forward(self, x: Tensor) -> Tensor:
        if self.normalize is not None:
            x = (x - self.normalize.mean) / self.normalize.std
        if self._kind == "timm":
            base: Any = self.base
            out = base.forward_head(base.forward_features(x), pre_logits=True)
        elif self._kind == "torchvision" and self.graph is not None:
            out = self.graph(x)["features"]
        else:
            out = self._hook(x)
        if not isinstance(out, Tensor) or out.ndim < 2 or out.shape[0] != x.shape[0]:
            raise ModelOutputError(
                f"penultimate: expected features (N, ...) for {x.shape[0]} images, got "
                f"{getattr(out, 'shape', type(out).__name__)} ({self.rule})"
            )
        return out.flatten(1)

    def _hook(self, x: Tensor) -> Tensor:
        layer = self._hooked
        if layer is None:
            raise ModelOutputError(f"penultimate: no layer to read features from ({self.rule})")
        seen: list[Tensor] = []

        def keep(_module: nn.Module, inputs: tuple[Any, ...], _output: Any) -> None:
            seen.append(inputs[0])

        handle = layer.register_forward_hook(keep)
        try:
            self.base(x)
        finally:
            handle.remove()
        if not seen:
            raise ModelOutputError(
                f"penultimate: the forward pass of {type(self.base).__name__} never called its "
                f"last Linear layer '{self.layer}', so its input cannot serve as features"
            )
        return seen[-1]


def penultimate(model: nn.Module) -> Penultimate:
    """The penultimate features of ``model`` as a module (see :class:`Penultimate`)."""
    return Penultimate(model)


# --------------------------------------------------------------------------- the backbone


@dataclass(frozen=True, eq=False)
class Backbone:
    """A frozen feature extractor with the preprocessing its model expects.

    Attributes:
        extractor: the :class:`Penultimate` features, ``(N, C, H, W)`` in ``[0, 1]`` -> ``(N, D)``.
        preprocessing: the model's input geometry (images are resized and cropped to it).
        name: the spec or the module's class name.
        dim: ``D``, the number of features.
        trained: ``False`` for random weights, ``True`` for weights from a file (a zoo model, a
            checkpoint, ``weights=``), ``None`` when unknown (a module passed as is).
        weights: the file the weights came from, or ``None``.
        seed: the seed random weights were drawn from (``None`` otherwise).
    """

    extractor: Penultimate
    preprocessing: Preprocessing
    name: str
    dim: int
    trained: bool | None
    weights: str | None = None
    seed: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """What a user must know before reading results on these features."""
        out = list(self.notes)
        if self.trained is False:
            out.append(
                f"the backbone {self.name} has random weights (seed {self.seed}): its features "
                "are a fixed random projection of the image, not a meaningful backbone; give "
                "its trained weights (weights=FILE; on the command line --weights FILE) to "
                "measure what a trained network sees"
            )
        return out

    @property
    def weights_text(self) -> str:
        """Where the weights came from, in words."""
        if self.trained is False:
            return f"random weights, seed {self.seed}"
        if self.weights:
            return f"weights from {self.weights}"
        return "weights of the module as given"

    def describe(self) -> str:
        """One line: which features, how many, and from which weights."""
        return (
            f"{self.name} penultimate features ({self.dim}-d, {self.extractor.rule}; "
            f"{self.weights_text})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {
            "name": self.name,
            "dim": self.dim,
            "rule": self.extractor.rule,
            "layer": self.extractor.layer,
            "trained": self.trained,
            "weights": self.weights,
            "seed": self.seed,
            "preprocessing": self.preprocessing.to_dict(),
            "description": self.describe(),
            "warnings": self.warnings,
        }

    @property
    def device(self) -> torch.device:
        from robustlens._checks import model_device

        return model_device(self.extractor) or torch.device("cpu")

    def __call__(self, x: Tensor) -> Tensor:
        """Features of images already at the backbone's input geometry, ``(N, D)``, no grad."""
        from robustlens._runtime import inference_mode

        with inference_mode(self.extractor), torch.no_grad():
            return self.extractor(x.to(self.device))

    def features(
        self, data: Any, *, batch_size: int = 64, desc: str = "features"
    ) -> tuple[Tensor, Tensor, int]:
        """``(features (N, D), labels (N,), files skipped)`` of a data set, read batch by batch.

        ``data`` is an ``ImageDataset`` (each batch brought to :attr:`preprocessing`) or an
        ``ImageFiles`` (decoded straight to it); only the features are kept, so memory is the
        batch plus ``N x D`` numbers. Files that do not decode are left out and counted.
        """
        from robustlens._runtime import inference_mode
        from robustlens.data.files import ImageFiles
        from robustlens.data.stream import batches

        pre = self.preprocessing
        source = data.with_preprocessing(pre) if isinstance(data, ImageFiles) else data
        feats: list[Tensor] = []
        labels: list[Tensor] = []
        device = self.device
        with inference_mode(self.extractor), torch.no_grad():
            for batch in batches(source, batch_size, desc=desc):
                x = batch.x if isinstance(source, ImageFiles) else pre.apply_to(batch.x)
                feats.append(self.extractor(x.to(device)))
                labels.append(batch.y.to(device))
        skipped = len(source.skipped) if isinstance(source, ImageFiles) else 0
        if not feats:
            return (
                torch.zeros(0, self.dim, device=device),
                torch.zeros(0, dtype=torch.long),
                skipped,
            )
        return torch.cat(feats), torch.cat(labels), skipped


def _weights_file(loaded: LoadedModel, weights: str | Path | None) -> str | None:
    if weights is not None:
        return str(weights)
    if loaded.kind == "zoo":
        from robustlens.models.zoo import ZOO

        return str(ZOO.get(loaded.spec).path)
    if loaded.kind in ("checkpoint", "state_dict", "torchscript", "export", "pickle"):
        return str(loaded.spec)
    return None


def backbone(
    model: str | LoadedModel | nn.Module | Backbone,
    *,
    weights: str | Path | None = None,
    input_size: int | None = None,
    resize: int | None = None,
    preprocessing: Preprocessing | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Backbone:
    """A frozen :class:`Backbone` from a model spec, a loaded model or a module.

    Args:
        model: a spec for :func:`robustlens.models.load` (``"torchvision:resnet18"``,
            ``"timm:NAME"``, a zoo name, a checkpoint file, ``file.py:factory``), an
            ``rl.models.LoadedModel``, an ``nn.Module`` (with ``preprocessing`` or
            ``input_size``) or a ``Backbone`` (returned as is).
        weights: a ``state_dict`` file for a library model or user code. Without it a
            torchvision or timm model has random weights (see the module docstring).
        input_size: the side the backbone takes (default: the model's own, 224 for ImageNet
            models; a smaller side is cheaper and changes what the features see).
        resize: the side the shorter image side is resized to before the centre crop
            (default: the model's crop ratio at ``input_size``).
        preprocessing: the full input geometry and normalisation of an ``nn.Module`` given as is
            (its mean/std are put inside, as ``rl.models.load`` does).
        seed: the seed random weights are drawn from (the same seed, the same backbone).
        device: where the backbone runs.

    Example:
        >>> bb = backbone("torchvision:resnet18", input_size=32, seed=0)
        >>> bb.dim, bb.trained, bb.preprocessing.input_size
        (512, False, (32, 32))
        >>> bb(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 512])
    """
    where = "backbone"
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ParameterError(f"{where}: 'seed' must be an int, got {seed!r}")
    if input_size is not None and (
        isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 8
    ):
        raise ParameterError(f"{where}: 'input_size' must be an int >= 8, got {input_size!r}")
    if isinstance(model, Backbone):
        if any(v is not None for v in (weights, input_size, resize, preprocessing)):
            raise ParameterError(
                f"{where}: a Backbone is already built; give the options when building it"
            )
        return model
    trained: bool | None
    notes: list[str] = []
    if isinstance(model, str):
        from robustlens.models.resolve import load

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # random initial weights, the same for the same seed
            loaded = load(
                model, weights=weights, input_size=input_size, resize=resize, device=device
            )
    elif isinstance(model, LoadedModel):
        if weights is not None:
            raise ParameterError(
                f"{where}: {model.spec} is loaded already; give weights to rl.models.load"
            )
        loaded = model
        if input_size is not None or resize is not None:
            from dataclasses import replace

            from robustlens.models.resolve import _override_preprocessing

            loaded = _override_preprocessing(loaded, None, None, input_size, resize, None)
            loaded = replace(loaded, module=loaded.module.to(device))
    elif isinstance(model, nn.Module):
        if weights is not None:
            from robustlens.models.resolve import load_weights

            load_weights(model, weights, spec=type(model).__name__)
        pre = preprocessing
        if pre is None and input_size is not None:
            pre = Preprocessing(input_size=(input_size, input_size), resize=resize or input_size)
        if pre is None or pre.input_size is None:
            raise ParameterError(
                f"{where}: give the input geometry of the {type(model).__name__} given as a "
                "module: input_size=PX, or preprocessing=Preprocessing(input_size=(H, W), "
                "resize=..., mean=..., std=...); or load it with rl.models.load(spec), which "
                "knows it"
            )
        module = model
        if pre.mean is not None and pre.std is not None and not isinstance(model, Normalized):
            mean = list(pre.mean) * (pre.channels if len(pre.mean) == 1 else 1)
            std = list(pre.std) * (pre.channels if len(pre.std) == 1 else 1)
            module = Normalized(model, mean, std)
        loaded = LoadedModel(
            module=module.to(device),
            preprocessing=pre,
            kind="module",
            spec=type(model).__name__,
            trained=True,
        )
    else:
        raise ParameterError(
            f"{where}: 'model' must be a model spec (e.g. 'torchvision:resnet18'), a "
            f"LoadedModel, an nn.Module or a Backbone, got {type(model).__name__}"
        )
    pre = loaded.preprocessing
    if pre.input_size is None:
        raise ParameterError(
            f"{where}: the input size of {loaded.spec} is unknown; give input_size=PX "
            "(on the command line --input-size PX)"
        )
    if loaded.kind == "module":
        trained = None if weights is None else True
    else:
        trained = loaded.trained
        notes += [w for w in loaded.warnings if "random weights" not in w]
    from robustlens._checks import model_device
    from robustlens._runtime import inference_mode

    extractor = penultimate(loaded.module)
    probe = torch.zeros(1, pre.channels, *pre.input_size, device=model_device(extractor))
    with inference_mode(extractor), torch.no_grad():
        dim = int(extractor(probe).shape[1])
    file = None if loaded.kind == "module" and weights is None else _weights_file(loaded, weights)
    return Backbone(
        extractor=extractor,
        preprocessing=pre,
        name=loaded.spec,
        dim=dim,
        trained=trained,
        weights=None if file is None else os.fspath(file),
        seed=seed if trained is False else None,
        notes=notes,
    )
