"""Ingestion: native raw layouts -> one standard AnnData per section."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
