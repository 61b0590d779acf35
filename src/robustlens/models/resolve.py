"""One model resolver: a model spec in, a module taking ``[0, 1]`` images plus its preprocessing out.

Every command and :func:`load` go through :func:`load`. A spec is one of:

======================================  =========================================================
``fmnist-cnn``                           a zoo name (shipped weights)
``path/to/checkpoint.pt``                a robustlens checkpoint, a bare ``state_dict`` (with
                                         ``arch=``), a TorchScript archive or a ``torch.export``
                                         program (``.pt2``), recognised by content, not by name
``torchvision:resnet18``                 a torchvision classification model (``weights=FILE``)
``timm:resnet18``                        a timm model (``weights=FILE``)
``path/to/file.py:factory``              the user's own code: ``factory(**model_args)`` is called
``package.module:factory``               likewise, imported from an installed package
======================================  =========================================================

Files are read with ``torch.load(..., weights_only=True)``, which cannot run code. A model pickled
whole is refused unless ``trust_pickle=True``. User code and TorchScript or exported programs run
because the user named them.

The preprocessing comes with the model: timm's ``pretrained_cfg`` (mean, std, input size,
``crop_pct``, interpolation), torchvision's weights metadata (the builder's default weights'
transforms, even when the weights come from a file), a robustlens checkpoint's normalisation and
image size, or what the caller gives (``mean=``, ``std=``, ``input_size=``, ``resize=``), which
wins over all of these. The returned module has the normalisation inside, so attacks, LIME and
corruptions act on ``[0, 1]`` pixels.

Example:
    >>> import robustlens as rl
    >>> loaded = rl.models.load("digits-cnn")
    >>> loaded.kind, loaded.preprocessing.input_size, len(loaded.classes)
    ('zoo', (8, 8), 10)
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
import sys
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlens.data.preprocess import Preprocessing
from robustlens.errors import CheckpointError, ParameterError, UnknownNameError
from robustlens.models.architectures import ARCHITECTURES
from robustlens.models.checkpoint import FORMAT, load_checkpoint, read_checkpoint
from robustlens.models.normalized import Normalized
from robustlens.models.wrappers import Exported
from robustlens.registry import closest

__all__ = ["LoadedModel", "load", "load_weights", "spec_kind"]

_CODE_SPEC = re.compile(r"^(?P<target>[A-Za-z_][\w.]*|.+\.py):(?P<factory>[A-Za-z_]\w*)$")
_UNTRAINED = (
    "{spec} has random weights: an audit of an untrained model measures nothing about your model. "
    "Give its trained weights with --weights FILE (Python: weights=FILE)"
)


@dataclass(frozen=True)
class LoadedModel:
    """A resolved model: the module (normalisation inside), its preprocessing and what is known.

    Attributes:
        module: ``nn.Module`` mapping ``(N, C, H, W)`` images in ``[0, 1]`` to logits, eval mode.
        preprocessing: input geometry and normalisation (see :class:`Preprocessing`).
        kind: ``"zoo"``, ``"checkpoint"``, ``"state_dict"``, ``"torchvision"``, ``"timm"``,
            ``"torchscript"``, ``"export"``, ``"code"`` or ``"pickle"``.
        spec: the spec as given.
        classes: names of the model's outputs when known (zoo, checkpoint, ImageNet weights).
        dataset: the data set the model was trained on, when known (zoo and checkpoints).
        trained: ``False`` when the weights are random (a library model without ``weights``).
        warnings: what the user should know before trusting results on this model.
    """

    module: nn.Module
    preprocessing: Preprocessing
    kind: str
    spec: str
    classes: list[str] | None = None
    dataset: str | None = None
    trained: bool = True
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int | None:
        """Number of outputs when known without running the model."""
        return None if self.classes is None else len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record for ``results.json`` and the report."""
        return {
            "spec": self.spec,
            "kind": self.kind,
            "trained": self.trained,
            "num_classes": self.num_classes,
            "dataset": self.dataset,
            "preprocessing": self.preprocessing.to_dict(),
            "warnings": list(self.warnings),
        }


def spec_kind(spec: str) -> str:
    """What kind of spec ``spec`` is, without loading it.

    Example:
        >>> [spec_kind(s) for s in ("fmnist-cnn", "timm:resnet18", "my_pkg.nets:build")]
        ['zoo', 'timm', 'code']
    """
    from robustlens.models.zoo import ZOO

    prefix, sep, _ = spec.partition(":")
    if sep and prefix in ("torchvision", "timm"):
        return prefix
    if spec in ZOO:
        return "zoo"
    if Path(spec).is_file():
        return "file"
    if _CODE_SPEC.match(spec) and not re.match(r"^[A-Za-z]:[\\/]", spec):
        return "code"
    return "unknown"


def load(
    spec: str,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    arch: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    trust_pickle: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | Sequence[int] | None = None,
    resize: int | None = None,
    interpolation: str | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Resolve ``spec`` into a :class:`LoadedModel` on ``device``, in eval mode.

    Args:
        spec: see the module docstring.
        weights: a ``state_dict`` file for a library model, user code or an ``arch=`` model,
            loaded with ``weights_only=True`` (``{"state_dict": ...}`` and ``{"model": ...}``
            wrappers and a ``module.`` prefix from DistributedDataParallel are unwrapped).
        num_classes: outputs of a library or ``arch=`` model (its constructor's ``num_classes``).
        arch: robustlens architecture of a bare ``state_dict`` file.
        model_args: keywords for the factory (user code, ``arch=``, timm and torchvision builders).
        trust_pickle: load a model pickled whole. This runs code from the file: only for files
            you trust.
        mean, std, input_size, resize, interpolation: preprocessing that overrides what comes with
            the model (``input_size`` is one int for a square input, or ``(H, W)``).
        device: where the module goes.
    """
    if not isinstance(spec, str) or not spec:
        raise ParameterError(f"models.load: 'spec' must be a non-empty string, got {spec!r}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
        raise ParameterError(f"models.load: 'num_classes' must be an int >= 2, got {num_classes!r}")
    args = dict(model_args or {})
    kind = spec_kind(spec)
    if kind in ("torchvision", "timm"):
        loaded = _library_model(kind, spec.partition(":")[2], weights, num_classes, args)
    elif kind == "zoo":
        _no_extras(spec, weights=weights, arch=arch)
        loaded = _zoo_model(spec)
    elif kind == "file":
        loaded = _file_model(spec, weights, num_classes, arch, args, trust_pickle)
    elif kind == "code":
        loaded = _code_model(spec, weights, num_classes, args)
    else:
        raise UnknownNameError(_unknown_spec(spec))
    loaded = _override_preprocessing(loaded, mean, std, input_size, resize, interpolation)
    module = loaded.module
    pre = loaded.preprocessing
    if pre.mean is not None and pre.std is not None and not isinstance(module, Normalized):
        mean_t = list(pre.mean) * (pre.channels if len(pre.mean) == 1 else 1)
        std_t = list(pre.std) * (pre.channels if len(pre.std) == 1 else 1)
        module = Normalized(module, mean_t, std_t)
    notes = list(loaded.warnings)
    if pre.input_size is None and loaded.kind not in ("zoo", "checkpoint"):
        notes.append(
            f"{spec}: the model's input size is unknown, so images are used at their own size; "
            "give --input-size (and --resize) if the model expects a fixed size"
        )
    if pre.mean is None and loaded.kind in (
        "torchscript",
        "export",
        "code",
        "pickle",
        "state_dict",
    ):
        notes.append(
            f"{spec}: no normalisation was given, so the model sees pixels in [0, 1]; if it was "
            "trained on normalised inputs, give --mean and --std (Python: mean=..., std=...)"
        )
    module = module.to(device).eval()
    return replace(loaded, module=module, warnings=notes)


# --------------------------------------------------------------------------- the kinds of spec


def _zoo_model(name: str) -> LoadedModel:
    from robustlens.models import zoo

    entry = zoo.ZOO.get(name)
    blob = read_checkpoint(entry.path) if entry.path.is_file() else {}
    info = zoo.info(name)
    return LoadedModel(
        module=zoo.load(name),
        preprocessing=_checkpoint_preprocessing(blob, source=f"zoo model {name}"),
        kind="zoo",
        spec=name,
        classes=[str(c) for c in info.get("classes") or []] or None,
        dataset=entry.dataset,
        meta=info,
    )


def _checkpoint_preprocessing(blob: Mapping[str, Any], *, source: str) -> Preprocessing:
    kwargs = dict(blob.get("arch_kwargs") or {})
    size = kwargs.get("image_size")
    norm = blob.get("normalize") or {}
    channels = int(kwargs.get("in_channels", 3))
    return Preprocessing(
        input_size=None if size is None else (int(size), int(size)),
        channels=channels if channels in (1, 3) else 3,
        mean=tuple(norm["mean"]) if norm.get("mean") else None,
        std=tuple(norm["std"]) if norm.get("std") else None,
        source=source,
    )


def _library_model(
    library: str,
    name: str,
    weights: str | Path | None,
    num_classes: int | None,
    args: dict[str, Any],
) -> LoadedModel:
    spec = f"{library}:{name}"
    kwargs = dict(args)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if library == "torchvision":
        net, pre, categories = _torchvision(name, kwargs)
    else:
        net, pre, categories = _timm(name, kwargs)
    if weights is not None:
        load_weights(net, weights, spec=spec)
    out = _output_width(net)
    classes = categories if categories is not None and out == len(categories) else None
    notes = [] if weights is not None else [_UNTRAINED.format(spec=spec)]
    return LoadedModel(
        module=net,
        preprocessing=pre,
        kind=library,
        spec=spec,
        classes=classes if classes is not None else _numbered(out),
        trained=weights is not None,
        warnings=notes,
        meta={"weights": None if weights is None else str(weights)},
    )


def _torchvision(
    name: str, kwargs: dict[str, Any]
) -> tuple[nn.Module, Preprocessing, list[str] | None]:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        guess = closest(name, known)
        hint = f"; did you mean 'torchvision:{guess}'?" if guess else ""
        raise UnknownNameError(
            f"unknown torchvision classification model {name!r}{hint} "
            f"(torchvision.models.list_models(module=torchvision.models) lists the "
            f"{len(known)} it has)"
        )
    try:
        net = torchvision.models.get_model(name, weights=None, **kwargs)
    except TypeError as exc:
        raise ParameterError(
            f"torchvision:{name}: {exc}; check --model-arg and --num-classes"
        ) from exc
    pre = Preprocessing(source="defaults")
    categories: list[str] | None = None
    try:
        default = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError):
        default = None
    if default is not None:
        t = default.transforms()
        crop = int(t.crop_size[0])
        pre = Preprocessing(
            input_size=(crop, crop),
            resize=int(t.resize_size[0]),
            interpolation=str(t.interpolation.value),  # type: ignore[arg-type]
            mean=tuple(float(m) for m in t.mean),
            std=tuple(float(s) for s in t.std),
            source=f"torchvision {default} transforms",
        )
        categories = [str(c) for c in default.meta.get("categories") or []] or None
    return net, pre, categories


def _timm(name: str, kwargs: dict[str, Any]) -> tuple[nn.Module, Preprocessing, list[str] | None]:
    import timm

    if not timm.is_model(name):
        known = timm.list_models()
        guess = closest(name, known)
        hint = f"; did you mean 'timm:{guess}'?" if guess else ""
        raise UnknownNameError(
            f"unknown timm model {name!r}{hint} (timm.list_models() lists the {len(known)} it has)"
        )
    try:
        net = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        raise ParameterError(f"timm:{name}: {exc}; check --model-arg and --num-classes") from exc
    pre = _timm_preprocessing(
        getattr(net, "pretrained_cfg", None) or {}, f"timm {name} pretrained_cfg"
    )
    categories = None
    if _output_width(net) == 1000:
        from robustlens.data.imagenet import imagenet_names

        categories = imagenet_names()
    return net, pre, categories


def _timm_preprocessing(cfg: Mapping[str, Any], source: str) -> Preprocessing:
    """A ``Preprocessing`` from a timm-style ``pretrained_cfg`` dict."""
    size = cfg.get("input_size")
    if not size:
        return Preprocessing(source="defaults")
    c, h, w = (int(v) for v in size)
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    mean, std = cfg.get("mean"), cfg.get("std")
    interp = str(cfg.get("interpolation") or "bilinear")
    return Preprocessing(
        input_size=(h, w),
        resize=Preprocessing.crop_pct_resize(min(h, w), crop_pct),
        interpolation=interp if interp in ("nearest", "bilinear", "bicubic") else "bilinear",  # type: ignore[arg-type]
        channels=c if c in (1, 3) else 3,
        mean=None if mean is None else tuple(float(m) for m in mean),
        std=None if std is None else tuple(float(s) for s in std),
        source=source,
    )


def _file_model(
    spec: str,
    weights: str | Path | None,
    num_classes: int | None,
    arch: str | None,
    args: dict[str, Any],
    trust_pickle: bool,
) -> LoadedModel:
    path = Path(spec)
    fmt = _sniff(path)
    if fmt == "torchscript":
        _no_extras(spec, weights=weights, arch=arch)
        try:
            with warnings.catch_warnings():  # torch.jit.load's deprecation notice is for authors
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, OSError) as exc:
            raise CheckpointError(f"{path}: cannot read this TorchScript archive: {exc}") from exc
        return LoadedModel(
            module=net,
            preprocessing=Preprocessing(source="not given"),
            kind="torchscript",
            spec=spec,
        )
    if fmt == "export":
        _no_extras(spec, weights=weights, arch=arch)
        return _exported(path, spec)
    if arch is None and num_classes is None and weights is None:
        try:
            blob = read_checkpoint(path)
        except CheckpointError as exc:
            if "Python objects" not in str(exc):
                raise
            if not trust_pickle:
                raise CheckpointError(_pickle_refusal(path, exc)) from None
            return _pickled(path, spec)
        if blob.get("format") == FORMAT:
            meta = dict(blob.get("meta") or {})
            return LoadedModel(
                module=load_checkpoint(path),
                preprocessing=_checkpoint_preprocessing(blob, source=f"checkpoint {path.name}"),
                kind="checkpoint",
                spec=spec,
                classes=[str(c) for c in meta.get("classes") or []] or None,
                dataset=meta.get("dataset"),
                meta=meta,
            )
        state = _unwrap_state(blob)
        raise CheckpointError(_bare_state_refusal(path, state))
    if weights is not None:
        raise ParameterError(
            f"{spec} is a file; --weights goes with a model built from code "
            "(torchvision:NAME, timm:NAME, file.py:factory) or with --arch"
        )
    if arch is None:
        raise ParameterError(
            f"{spec}: --num-classes and --model-arg describe a model to build; for a bare "
            f"state_dict file also give --arch NAME (one of {', '.join(ARCHITECTURES.names())})"
        )
    kwargs = dict(args)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    blob = read_checkpoint(path)
    if blob.get("format") != FORMAT:
        net = ARCHITECTURES.create(arch, **kwargs)
        _load_state(net, _unwrap_state(blob), spec=f"--arch {arch}", source=str(path))
    else:
        net = load_checkpoint(path, arch)
    size = kwargs.get("image_size")
    channels = int(kwargs.get("in_channels", 1 if size in (8, 28) else 3))
    pre = Preprocessing(
        input_size=None if size is None else (int(size), int(size)),
        channels=channels if channels in (1, 3) else 3,
        source=f"--arch {arch} options",
    )
    return LoadedModel(module=net, preprocessing=pre, kind="state_dict", spec=spec)


def _exported(path: Path, spec: str) -> LoadedModel:
    try:
        program = torch.export.load(str(path))
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot read this torch.export program: {exc}") from exc
    shape: tuple[Any, ...] | None = None
    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise CheckpointError(
            f"{path}: the exported program takes {len(user_inputs)} inputs; robustlens needs a "
            "classifier taking one image batch (N, C, H, W)"
        )
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == user_inputs[0]:
            val = node.meta.get("val")
            shape = None if val is None else tuple(val.shape)
    batch = size = None
    pre = Preprocessing(source="not given")
    if shape is not None and len(shape) == 4:
        batch = shape[0] if isinstance(shape[0], int) else None
        dims = shape[1:]
        if all(isinstance(d, int) for d in dims):
            size = (int(dims[0]), int(dims[1]), int(dims[2]))
            c = size[0]
            pre = Preprocessing(
                input_size=(size[1], size[2]),
                resize=min(size[1], size[2]),
                channels=c if c in (1, 3) else 3,
                source="the exported program's input shape",
            )
    net = Exported(program.module(), batch=batch, input_shape=size)
    return LoadedModel(module=net, preprocessing=pre, kind="export", spec=spec)


def _pickled(path: Path, spec: str) -> LoadedModel:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: loading the pickled model failed: {exc}") from exc
    if not isinstance(obj, nn.Module):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a torch.nn.Module; save the model itself "
            "or its state_dict"
        )
    cfg = getattr(obj, "pretrained_cfg", None)
    pre = (
        _timm_preprocessing(cfg, "the model's pretrained_cfg")
        if isinstance(cfg, Mapping)
        else Preprocessing(source="not given")
    )
    return LoadedModel(module=obj, preprocessing=pre, kind="pickle", spec=spec)


def _code_model(
    spec: str, weights: str | Path | None, num_classes: int | None, args: dict[str, Any]
) -> LoadedModel:
    match = _CODE_SPEC.match(spec)
    assert match is not None  # spec_kind checked it
    target, name = match["target"], match["factory"]
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise CheckpointError(f"{spec}: {path} does not exist; give path/to/file.py:factory")
        mod_name = f"robustlens_user_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise CheckpointError(f"{spec}: cannot import {path} as Python code")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[mod_name]
            raise CheckpointError(
                f"{spec}: importing {path} raised {type(exc).__name__}: {exc}"
            ) from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UnknownNameError(
                f"{spec}: cannot import module {target!r} ({exc}); install the package, or give "
                "a file: path/to/file.py:factory"
            ) from exc
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        guess = closest(name, found)
        hint = f"; did you mean {guess!r}?" if guess else ""
        raise UnknownNameError(f"{spec}: {target} has no callable {name!r}{hint}")
    kwargs = dict(args)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        net = factory(**kwargs)
    except TypeError as exc:
        raise ParameterError(f"{spec}: calling {name}({_kw(kwargs)}) failed: {exc}") from exc
    if not isinstance(net, nn.Module):
        raise CheckpointError(
            f"{spec}: {name}() returned a {type(net).__name__}; it must return a torch.nn.Module"
        )
    if weights is not None:
        load_weights(net, weights, spec=spec)
    cfg = getattr(net, "pretrained_cfg", None)
    pre = (
        _timm_preprocessing(cfg, f"{name}().pretrained_cfg")
        if isinstance(cfg, Mapping)
        else Preprocessing(source="not given")
    )
    return LoadedModel(
        module=net,
        preprocessing=pre,
        kind="code",
        spec=spec,
        meta={"weights": None if weights is None else str(weights)},
    )


# --------------------------------------------------------------------------- weights


def load_weights(net: nn.Module, path: str | Path, *, spec: str = "the model") -> None:
    """Load a ``state_dict`` file into ``net`` (``weights_only=True``, strict), with clear errors.

    ``{"state_dict": ...}``, ``{"model": ...}`` and ``{"model_state_dict": ...}`` wrappers and the
    ``module.`` prefix DistributedDataParallel adds are unwrapped.
    """
    try:
        blob = read_checkpoint(path)
    except CheckpointError as exc:
        if "Python objects" in str(exc):
            raise CheckpointError(_pickle_refusal(Path(path), exc)) from None
        raise
    if blob.get("format") == FORMAT:
        blob = blob.get("state_dict") or {}
    _load_state(net, _unwrap_state(blob), spec=spec, source=str(path))


def _load_state(net: nn.Module, state: Mapping[str, Any], *, spec: str, source: str) -> None:
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: the weights are not a mapping of names to tensors")
    ours = net.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    shapes = sorted(
        k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} tensors of another shape (e.g. {k}: file {tuple(state[k].shape)}, "
                f"model {tuple(ours[k].shape)})"
            )
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} not in the model (e.g. {', '.join(unexpected[:3])})")
        hint = "check that the file belongs to this architecture"
        head = [k for k in shapes if k.endswith("weight") and state[k].ndim == 2]
        if head:
            hint = (
                f"its classifier has {state[head[0]].shape[0]} outputs: pass --num-classes "
                f"{state[head[0]].shape[0]} (Python: num_classes=...)"
            )
        raise CheckpointError(f"{source} does not fit {spec}: {'; '.join(parts)}; {hint}")
    net.load_state_dict(dict(state), strict=True)


def _unwrap_state(blob: Mapping[str, Any]) -> Mapping[str, Any]:
    state: Mapping[str, Any] = blob
    for key in ("state_dict", "model_state_dict", "model"):
        inner = state.get(key) if isinstance(state, Mapping) else None
        if (
            isinstance(inner, Mapping)
            and inner
            and all(isinstance(v, torch.Tensor) for v in inner.values())
        ):
            state = inner
            break
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------- helpers


def _override_preprocessing(
    loaded: LoadedModel,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    input_size: int | Sequence[int] | None,
    resize: int | None,
    interpolation: str | None,
) -> LoadedModel:
    if (
        mean is None
        and std is None
        and input_size is None
        and resize is None
        and interpolation is None
    ):
        return loaded
    if (mean is None) != (std is None):
        raise ParameterError("give both --mean and --std (Python: mean=..., std=...), or neither")
    if loaded.kind in ("zoo", "checkpoint") and mean is not None:
        raise ParameterError(
            f"{loaded.spec} already normalises inside (robustlens checkpoint); leave out --mean/--std"
        )
    pre = loaded.preprocessing
    changes: dict[str, Any] = {}
    if mean is not None and std is not None:
        changes["mean"] = tuple(float(m) for m in mean)
        changes["std"] = tuple(float(s) for s in std)
        changes["channels"] = (
            len(changes["mean"]) if len(changes["mean"]) in (1, 3) else pre.channels
        )
    if input_size is not None:
        size = [input_size] if isinstance(input_size, int) else list(input_size)
        if len(size) not in (1, 2) or min(int(s) for s in size) < 1:
            raise ParameterError(f"--input-size takes one side or H W, got {input_size}")
        changes["input_size"] = (int(size[0]), int(size[-1]))
    if resize is not None:
        changes["resize"] = int(resize)
    elif input_size is not None and pre.resize is not None:
        # Keep the model's crop ratio at the new input size.
        ratio = pre.resize / min(pre.input_size or (pre.resize, pre.resize))
        changes["resize"] = math.floor(min(changes["input_size"]) * ratio)
    elif input_size is not None:
        # Keep the aspect ratio: shorter side to the input size, then the centre crop.
        changes["resize"] = min(changes["input_size"])
    if interpolation is not None:
        changes["interpolation"] = interpolation
    source = "flags" if pre.source in ("defaults", "not given") else f"flags over {pre.source}"
    return replace(loaded, preprocessing=replace(pre, **changes, source=source))


def _sniff(path: Path) -> str:
    """``"torchscript"``, ``"export"`` or ``"torch"`` from the file's content."""
    if not zipfile.is_zipfile(path):
        return "torch"
    try:
        names = zipfile.ZipFile(path).namelist()
    except (zipfile.BadZipFile, OSError):
        return "torch"
    if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") for n in names) or any("/code/" in n for n in names):
        return "torchscript"
    return "torch"


def _output_width(net: nn.Module) -> int | None:
    for attr in ("num_classes",):
        value = getattr(net, attr, None)
        if isinstance(value, int):
            return value
    for module in reversed(list(net.modules())):
        if isinstance(module, nn.Linear):
            return int(module.out_features)
    return None


def _numbered(k: int | None) -> list[str] | None:
    return None if k is None else [str(i) for i in range(k)]


def _kw(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _no_extras(spec: str, *, weights: Any, arch: Any) -> None:
    if weights is not None or arch is not None:
        flag = "--weights" if weights is not None else "--arch"
        raise ParameterError(
            f"{spec} carries its own weights and architecture; {flag} applies only to "
            "torchvision:NAME, timm:NAME, file.py:factory or a bare state_dict"
        )


def _pickle_refusal(path: Path, exc: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f"a {found.group(1)} object" if found else "Python objects"
    return (
        f"refusing to load {path}: it holds {what} pickled whole, and unpickling it runs code "
        "from the file. Two ways work: (1) save only the weights, torch.save(model.state_dict(), "
        "'weights.pt'), and load them into the architecture with --model torchvision:NAME, "
        "timm:NAME or path/to/file.py:factory plus --weights weights.pt (or --arch NAME for "
        "robustlens' own architectures); (2) if you trust the file, pass --trust-pickle "
        "(Python: trust_pickle=True), which runs its code"
    )


def _bare_state_refusal(path: Path, state: Mapping[str, Any]) -> str:
    keys = list(state)[:3]
    head = ""
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.ndim == 2 and k.endswith("weight"):
            head = f", a classifier of {v.shape[0]} outputs"
    return (
        f"{path} is a bare state_dict ({len(state)} tensors such as {', '.join(keys)}{head}) and "
        "names no architecture. Say which model it belongs to: --model torchvision:NAME "
        f"--weights {path} or --model timm:NAME --weights {path} for library models, --model "
        f"path/to/file.py:factory --weights {path} for your own code, or --model {path} --arch "
        f"NAME for robustlens' architectures ({', '.join(ARCHITECTURES.names())})"
    )


def _unknown_spec(spec: str) -> str:
    from robustlens.models.zoo import ZOO

    guess = closest(spec, ZOO.names())
    hint = f"; did you mean {guess!r}?" if guess else "."
    return (
        f"unknown model {spec!r}{hint} A model is a zoo name ({', '.join(ZOO.names())}), an "
        "existing file, torchvision:NAME, timm:NAME, path/to/file.py:factory or "
        "package.module:factory"
    )
