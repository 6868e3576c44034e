"""Interpretation: the paper's downstream analyses and the per-run HTML report."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
