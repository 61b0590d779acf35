"""The audit's suite configuration: which sections run, on how many images, with which budgets.

A suite is read from a TOML file (``robustlens audit --config suite.toml``) whose tables match the
sections below; every key is optional and unknown keys are refused with a suggestion. ``--quick``
starts from :meth:`SuiteConfig.quick` instead of the full defaults; a file then overrides either.

.. code-block:: toml

    seed = 0

    [data]
    limit = 2000          # images for clean accuracy (0: the whole test split)
    attack_limit = 500    # images attacked (stratified sample)

    [whitebox]
    eps = 0.1
    attacks = ["fgsm", "ifgsm", "pgd", "ensemble"]
    min_norm = ["deepfool", "cw"]
    gallery = 8

    [defenses]
    names = ["jpeg", "bitdepth"]

Example:
    >>> cfg = SuiteConfig.from_dict({"whitebox": {"eps": 0.05}, "blackbox": {"images": 20}})
    >>> cfg.whitebox.eps, cfg.blackbox.images, cfg.blackbox.queries
    (0.05, 20, 2000)
    >>> SuiteConfig.from_dict({"whitebox": {"epz": 0.05}})
    Traceback (most recent call last):
    ...
    robustlens.errors.ParameterError: suite config [whitebox]: unknown key 'epz'; did you mean 'eps'? ...
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from robustlens.errors import ParameterError
from robustlens.registry import closest

__all__ = [
    "BiasConfig",
    "BlackboxConfig",
    "DataConfig",
    "DefensesConfig",
    "ExplainConfig",
    "SuiteConfig",
    "WhiteboxConfig",
]

WHITEBOX_ATTACKS = ("fgsm", "ifgsm", "pgd", "ensemble")
MIN_NORM_ATTACKS = ("deepfool", "cw")
BLACKBOX_ATTACKS = ("nes", "nes-label")
DEFENSES = ("blur", "jpeg", "bitdepth", "crop", "tvm", "quilting")


def _fail(section: str, message: str) -> ParameterError:
    return ParameterError(f"suite config [{section}]: {message}")


class _Section:
    """Validation shared by the sections: types of the fields, lists of known names."""

    section: ClassVar[str] = ""
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: Fields holding one name (a string), not a list of names.
    single: ClassVar[tuple[str, ...]] = ()
    #: Smallest allowed value of integer fields (default 0).
    minimums: ClassVar[dict[str, int]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            kind = type(f.default) if f.default is not dataclasses.MISSING else None
            if f.name in self.single:
                if not isinstance(value, str) or value not in self.choices[f.name]:
                    raise _fail(
                        self.section,
                        f"{f.name!r} must be one of {', '.join(map(repr, self.choices[f.name]))}, "
                        f"got {value!r}",
                    )
            elif f.name in self.choices:
                values = [value] if isinstance(value, str) else value
                if not isinstance(values, list | tuple) or not all(
                    isinstance(v, str) for v in values
                ):
                    raise _fail(self.section, f"{f.name!r} must be a list of names, got {value!r}")
                for v in values:
                    if v not in self.choices[f.name]:
                        hint = closest(v, list(self.choices[f.name]))
                        raise _fail(
                            self.section,
                            f"{f.name!r} holds unknown name {v!r}"
                            + (f"; did you mean {hint!r}?" if hint else "")
                            + f" (known: {', '.join(self.choices[f.name])})",
                        )
                object.__setattr__(self, f.name, tuple(values))
            elif kind is bool:
                if not isinstance(value, bool):
                    raise _fail(self.section, f"{f.name!r} must be true or false, got {value!r}")
            elif kind is int:
                low = self.minimums.get(f.name, 0)
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise _fail(
                        self.section, f"{f.name!r} must be an integer >= {low}, got {value!r}"
                    )
            elif kind is float:
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not math.isfinite(value)
                    or value <= 0
                ):
                    raise _fail(
                        self.section, f"{f.name!r} must be a finite number > 0, got {value!r}"
                    )
                object.__setattr__(self, f.name, float(value))


@dataclass(frozen=True)
class DataConfig(_Section):
    """``limit``: test images the audit uses (a stratified sample; 0: the whole split; applied by
    ``robustlens audit`` when it loads the data); ``attack_limit``: how many of them are attacked."""

    section: ClassVar[str] = "data"
    minimums: ClassVar[dict[str, int]] = {"attack_limit": 1}
    limit: int = 0
    attack_limit: int = 1000


@dataclass(frozen=True)
class WhiteboxConfig(_Section):
    """Fixed-budget attacks at ``eps`` (Linf), minimum-norm attacks for the L2 curves, a gallery."""

    section: ClassVar[str] = "whitebox"
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "attacks": WHITEBOX_ATTACKS,
        "min_norm": MIN_NORM_ATTACKS,
    }
    minimums: ClassVar[dict[str, int]] = {"steps": 1, "min_norm_limit": 1}
    enabled: bool = True
    eps: float = 0.1
    attacks: tuple[str, ...] = WHITEBOX_ATTACKS
    steps: int = 40
    min_norm: tuple[str, ...] = MIN_NORM_ATTACKS
    min_norm_limit: int = 200
    eps_curve: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
    gallery: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        curve = self.eps_curve
        if (
            not isinstance(curve, list | tuple)
            or not curve
            or not all(
                isinstance(e, int | float) and not isinstance(e, bool) and e > 0 for e in curve
            )
        ):
            raise _fail(self.section, f"'eps_curve' must be a list of numbers > 0, got {curve!r}")
        object.__setattr__(self, "eps_curve", tuple(sorted(float(e) for e in curve)))
        if not self.attacks:
            raise _fail(self.section, "'attacks' is empty; name at least one, e.g. ['ensemble']")


@dataclass(frozen=True)
class BlackboxConfig(_Section):
    """Score-based NES (``"nes"``) and label-only NES (``"nes-label"``) under a query budget."""

    section: ClassVar[str] = "blackbox"
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"attacks": BLACKBOX_ATTACKS}
    minimums: ClassVar[dict[str, int]] = {"images": 1, "queries": 1}
    enabled: bool = True
    attacks: tuple[str, ...] = ("nes",)
    images: int = 100
    queries: int = 2000


@dataclass(frozen=True)
class DefensesConfig(_Section):
    """Input-transformation defenses audited one by one (none by default), with their budgets."""

    section: ClassVar[str] = "defenses"
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"names": DEFENSES}
    minimums: ClassVar[dict[str, int]] = {"images": 1, "steps": 1, "samples": 1}
    names: tuple[str, ...] = ()
    images: int = 200
    steps: int = 20
    samples: int = 4
    ensemble_steps: int = 50
    blackbox_images: int = 50
    blackbox_queries: int = 500


@dataclass(frozen=True)
class ExplainConfig(_Section):
    """LIME on ``images`` test images (one per class first) with ``samples`` perturbations, the
    ``K`` superpixels of the sparse surrogate, and top-K stability over ``stability_seeds`` seeds."""

    section: ClassVar[str] = "explanations"
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "output": ("probs", "logits", "log-probs"),
        "hide": ("constant", "mean", "blur"),
    }
    single: ClassVar[tuple[str, ...]] = ("output", "hide")
    minimums: ClassVar[dict[str, int]] = {"images": 1, "samples": 2, "K": 1}
    enabled: bool = True
    images: int = 6
    samples: int = 1000
    K: int = 5
    #: What the surrogate fits. The target's logit by default: a confident classifier's
    #: probability (and log-probability) saturates on most perturbations, leaving nothing to fit.
    output: str = "logits"
    #: How a switched-off superpixel is hidden: black (``"constant"``, the deletion metric's
    #: usual baseline; the mean colour of a dark-background image would leave it recognisable),
    #: its mean colour, or a blurred copy.
    hide: str = "constant"
    stability_seeds: int = 3


@dataclass(frozen=True)
class BiasConfig(_Section):
    """Corruptions (mCE against ``baseline``, a zoo name or checkpoint, when given), random vs
    adversarial noise, ambiguous images, the class hierarchy (Fashion-MNIST), the shape bias
    (of the model if it classifies the synthetic cue-conflict shapes, or of an ImageNet model on
    Geirhos' stimuli in the ``cue_conflict`` folder; else skipped with the reason), reliance on a
    planted ``cue``, and superpixel statistics over classes."""

    section: ClassVar[str] = "bias"
    minimums: ClassVar[dict[str, int]] = {
        "corruption_images": 1,
        "shape_stimuli": 1,
        "superpixel_samples": 2,
        "superpixel_classes": 2,
    }
    enabled: bool = True
    corruption_images: int = 1000
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    baseline: str = ""
    shape_bias: bool = True
    #: Stimuli the shape bias is measured on: the synthetic ones drawn, or at most this many of
    #: the ``cue_conflict`` folder's conflicting ones (a seeded draw over shape categories; the
    #: published set has 1200: set 1200 to use them all).
    shape_stimuli: int = 500
    #: Geirhos' cue-conflict stimuli for an ImageNet model (``stimuli/style-transfer-preprocessed-
    #: 512`` of github.com/rgeirhos/texture-vs-shape; ``robustlens audit --cue-conflict DIR``).
    cue_conflict: str = ""
    #: A cue the model was trained with ("patch", "tint", "brightness", "background"): its
    #: reliance on it is measured on cue-aligned vs cue-conflicting test images. "" skips it.
    cue: str = ""
    superpixel_images: int = 30
    superpixel_samples: int = 500
    #: At most this many classes (a seeded draw among the data set's classes) for the superpixel
    #: statistics: 30 images of each of ImageNet's 1000 classes would be 30,000 explanations.
    superpixel_classes: int = 10
    ambiguous: int = 12

    def __post_init__(self) -> None:
        super().__post_init__()
        sev = self.severities
        if (
            not isinstance(sev, list | tuple)
            or not sev
            or not all(s in (1, 2, 3, 4, 5) for s in sev)
        ):
            raise _fail(self.section, f"'severities' must be a list of 1..5, got {sev!r}")
        object.__setattr__(self, "severities", tuple(sorted(set(sev))))
        if self.cue not in ("", "patch", "tint", "brightness", "background"):
            raise _fail(
                self.section,
                f"'cue' must be one of 'patch', 'tint', 'brightness', 'background' (or \"\"), "
                f"got {self.cue!r}",
            )
        if not isinstance(self.baseline, str):
            raise _fail(
                self.section, f"'baseline' must be a zoo name or a path, got {self.baseline!r}"
            )
        if not isinstance(self.cue_conflict, str):
            raise _fail(
                self.section,
                f"'cue_conflict' must be the path of the stimuli folder, got {self.cue_conflict!r}",
            )


_SECTIONS: dict[str, type[_Section]] = {
    "data": DataConfig,
    "whitebox": WhiteboxConfig,
    "blackbox": BlackboxConfig,
    "defenses": DefensesConfig,
    "explanations": ExplainConfig,
    "bias": BiasConfig,
}


@dataclass(frozen=True)
class SuiteConfig:
    """Every section's settings and the seed; see the module docstring for the TOML form."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    whitebox: WhiteboxConfig = field(default_factory=WhiteboxConfig)
    blackbox: BlackboxConfig = field(default_factory=BlackboxConfig)
    defenses: DefensesConfig = field(default_factory=DefensesConfig)
    explanations: ExplainConfig = field(default_factory=ExplainConfig)
    bias: BiasConfig = field(default_factory=BiasConfig)

    @classmethod
    def quick(cls, shape: Sequence[int] | None = None) -> SuiteConfig:
        """Small samples everywhere: the whole suite in about three minutes on two CPU cores for
        Fashion-MNIST (the defaults: about eight; see ``docs/audit.md``, "What a run costs").

        Given the images' ``shape`` ``(C, H, W)`` with both sides above :data:`LARGE_SIDE`
        (ImageNet-sized inputs, where one forward pass costs 50 to 100 times a 28x28 one), the
        samples shrink further (:data:`QUICK_LARGE`), to keep a ResNet-18 at 224x224 within about
        ten minutes on two cores (``bench/imagenet.py``).

        Example:
            >>> SuiteConfig.quick().data.attack_limit, SuiteConfig.quick((3, 224, 224)).data.attack_limit
            (200, 50)
        """
        large = shape is not None and min(int(s) for s in shape[1:]) > LARGE_SIDE
        return cls.from_dict(QUICK_LARGE if large else QUICK)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, base: SuiteConfig | None = None) -> SuiteConfig:
        """Settings from a nested dict (a parsed TOML file), over ``base`` (default: the defaults)."""
        cfg = base if base is not None else cls()
        if not isinstance(raw, dict):
            raise ParameterError(f"suite config must be a table of sections, got {raw!r}")
        top = {"seed", *_SECTIONS}
        for key in raw:
            if key not in top:
                hint = closest(key, sorted(top))
                raise ParameterError(
                    f"suite config: unknown section {key!r}"
                    + (f"; did you mean {hint!r}?" if hint else "")
                    + f" (sections: {', '.join(sorted(_SECTIONS))}, and 'seed')"
                )
        seed = raw.get("seed", cfg.seed)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ParameterError(f"suite config: 'seed' must be an integer, got {seed!r}")
        updates: dict[str, Any] = {"seed": seed}
        for name, kind in _SECTIONS.items():
            given = raw.get(name, {})
            if not isinstance(given, dict):
                raise _fail(name, f"must be a table of keys, got {given!r}")
            known = [f.name for f in dataclasses.fields(kind)]  # type: ignore[arg-type]
            for key in given:
                if key not in known:
                    hint = closest(key, known)
                    raise _fail(
                        name,
                        f"unknown key {key!r}"
                        + (f"; did you mean {hint!r}?" if hint else "")
                        + f" (keys: {', '.join(known)})",
                    )
            updates[name] = dataclasses.replace(getattr(cfg, name), **given)
        return dataclasses.replace(cfg, **updates)

    @classmethod
    def from_toml(cls, path: str | Path, *, base: SuiteConfig | None = None) -> SuiteConfig:
        """Settings from a TOML file, over ``base``."""
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ParameterError(
                f"suite config {str(p)!r} does not exist; check the path"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ParameterError(f"suite config {str(p)!r} is not valid TOML: {exc}") from None
        return cls.from_dict(raw, base=base)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what results.json records, and what ``--resume`` compares)."""
        return dataclasses.asdict(self)


QUICK: dict[str, Any] = {
    "data": {"limit": 1000, "attack_limit": 200},
    "whitebox": {"min_norm": ["deepfool"], "min_norm_limit": 100, "gallery": 6},
    "blackbox": {"images": 20, "queries": 1000},
    "defenses": {
        "images": 100,
        "steps": 10,
        "samples": 2,
        "ensemble_steps": 20,
        "blackbox_images": 20,
        "blackbox_queries": 300,
    },
    "explanations": {"images": 4, "samples": 500, "stability_seeds": 2},
    "bias": {
        "corruption_images": 200,
        "severities": [1, 3, 5],
        "shape_stimuli": 200,
        "superpixel_images": 5,
        "superpixel_samples": 300,
    },
}

#: Images with both sides above this many pixels get :data:`QUICK_LARGE` under ``--quick``.
LARGE_SIDE = 64

#: ``--quick`` for ImageNet-sized inputs: :data:`QUICK` with every sample smaller still. PGD (alone
#: and in the budget sweep) takes 10 steps instead of 40: the standard ensemble, which runs its
#: own 100 steps, still gives the headline figure.
QUICK_LARGE: dict[str, Any] = {
    **QUICK,
    "data": {"limit": 1000, "attack_limit": 50},
    "whitebox": {"steps": 10, "min_norm": ["deepfool"], "min_norm_limit": 20, "gallery": 2},
    "blackbox": {"images": 5, "queries": 500},
    "defenses": {
        **QUICK["defenses"],
        "images": 20,
        "ensemble_steps": 10,
        "blackbox_images": 5,
        "blackbox_queries": 200,
    },
    "explanations": {"images": 2, "samples": 300, "stability_seeds": 2},
    "bias": {
        "corruption_images": 30,
        "severities": [1, 3, 5],
        "shape_stimuli": 100,
        "superpixel_images": 2,
        "superpixel_samples": 200,
        "superpixel_classes": 3,
    },
}
