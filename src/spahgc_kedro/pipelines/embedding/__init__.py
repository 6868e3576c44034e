"""Embedding: standard sections -> one frozen-encoder feature vector per spot."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
