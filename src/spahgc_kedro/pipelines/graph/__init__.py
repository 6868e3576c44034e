"""Graph construction: folds, gene panels and target scaling, one heterogeneous graph per section per fold."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
