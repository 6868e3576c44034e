"""Training: one SpaHGC per fold, logged to MLflow; predictions of each fold's test section."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
