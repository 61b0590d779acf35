"""Dataset-level evaluation: clean accuracy, robustness under attacks, and the lecture's curves."""

from __future__ import annotations

from robustlens.errors import ResumeError
from robustlens.evaluation.checks import gradient_report
from robustlens.evaluation.clean import CleanResult, clean_accuracy, confusion_matrix
from robustlens.evaluation.curves import Curve, accuracy_vs_distance, robust_accuracy_curve
from robustlens.evaluation.defense_audit import Check, DefenseAudit, audit_defense
from robustlens.evaluation.runner import Evaluation, evaluate, model_fingerprint

__all__ = [
    "Check",
    "CleanResult",
    "Curve",
    "DefenseAudit",
    "Evaluation",
    "ResumeError",
    "accuracy_vs_distance",
    "audit_defense",
    "clean_accuracy",
    "confusion_matrix",
    "evaluate",
    "gradient_report",
    "model_fingerprint",
    "robust_accuracy_curve",
]
