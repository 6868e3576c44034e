"""Prediction on new sections: H&E + spot coordinates (or a tile grid), no ST, with a trained fold model."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
