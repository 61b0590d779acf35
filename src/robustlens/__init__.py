"""robustlens: audit PyTorch image classifiers for adversarial robustness, explanations and biases.

Example:
    >>> import robustlens as rl
    >>> sorted(rl.zoo.names())[:2]
    ['digits-cnn', 'fmnist-cnn']
"""

from __future__ import annotations

from robustlens import (
    attacks,
    bias,
    blackbox,
    data,
    defenses,
    errors,
    evaluation,
    explain,
    models,
    report,
    training,
    zoo,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "attacks",
    "bias",
    "blackbox",
    "data",
    "defenses",
    "errors",
    "evaluation",
    "explain",
    "models",
    "report",
    "training",
    "zoo",
]
