"""The audit's self-contained HTML report: pure functions of the audit's results."""

from __future__ import annotations

__all__: list[str] = []
