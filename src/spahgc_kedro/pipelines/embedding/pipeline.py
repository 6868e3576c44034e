"""Embedding pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import embed_sections


def create_pipeline(**kwargs) -> Pipeline:
    """Sections (+ previous embeddings as a cache) -> patch embeddings."""
    return pipeline(
        [
            node(
                embed_sections,
                [
                    "sections",
                    "embedding_cache",
                    "params:encoder",
                    "params:device",
                    "params:seed",
                    "params:embedding",
                ],
                "patch_embeddings",
                name="embed_sections",
            ),
        ]
    )
