"""Dataset-level evaluation: clean accuracy and confusion (attacks build on it)."""

from __future__ import annotations

from robustlens.evaluation.clean import CleanResult, clean_accuracy, confusion_matrix

__all__ = ["CleanResult", "clean_accuracy", "confusion_matrix"]
