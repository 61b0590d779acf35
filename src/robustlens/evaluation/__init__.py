"""Dataset-level evaluation: clean accuracy, robustness under attacks, and the lecture's curves."""

from __future__ import annotations

from robustlens.errors import ResumeError
from robustlens.evaluation.clean import CleanResult, clean_accuracy, confusion_matrix
from robustlens.evaluation.curves import Curve, accuracy_vs_distance, robust_accuracy_curve
from robustlens.evaluation.runner import Evaluation, evaluate, model_fingerprint

__all__ = [
    "CleanResult",
    "Curve",
    "Evaluation",
    "ResumeError",
    "accuracy_vs_distance",
    "clean_accuracy",
    "confusion_matrix",
    "evaluate",
    "model_fingerprint",
    "robust_accuracy_curve",
]
