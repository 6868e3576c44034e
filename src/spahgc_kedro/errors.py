"""Errors a user can fix: their message says what is wrong and what to do."""

from __future__ import annotations

__all__ = ["InputDataError"]


class InputDataError(ValueError):
    """Raw input that cannot be turned into a standard section; the message says what to fix."""
