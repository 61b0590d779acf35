"""Black-box attacks: the model is an oracle that answers queries, nothing more.

``Oracle`` wraps a model, counts queries per image, enforces a budget and shows only
probabilities, the top k, or labels. ``NES`` estimates gradients from queries (Ilyas et al. 2018)
in the query-limited, partial-information and label-only settings; ``Substitute`` trains a model
to mimic the oracle (Papernot et al. 2017) and ``Transfer`` moves adversarial examples made on a
surrogate to the target.

Example:
    >>> import robustlens as rl
    >>> oracle = rl.blackbox.Oracle(rl.zoo.load("digits-cnn"), output="label", budget=100)
    >>> oracle
    Oracle(output='label', k=5, budget=100, total=0)
"""

from __future__ import annotations

from robustlens.blackbox.nes import NES, NESMode, nes_gradient
from robustlens.blackbox.oracle import UNLIMITED, Oracle, OracleOutput, TopK
from robustlens.blackbox.substitute import (
    Substitute,
    SubstituteResult,
    jacobian_augment,
    lambda_schedule,
    oracle_labels,
)
from robustlens.blackbox.transfer import Transfer, TransferMatrix, transfer_matrix

__all__ = [
    "NES",
    "UNLIMITED",
    "NESMode",
    "Oracle",
    "OracleOutput",
    "Substitute",
    "SubstituteResult",
    "TopK",
    "Transfer",
    "TransferMatrix",
    "jacobian_augment",
    "lambda_schedule",
    "nes_gradient",
    "oracle_labels",
    "transfer_matrix",
]
