"""Evaluation: per-fold and overall metrics of SpaHGC beside baselines."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
