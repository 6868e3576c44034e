"""Embedding pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from spahgc_kedro.parallelism import group_count, group_nodes

from .nodes import embed_section_group, merge_section_embeddings


def create_pipeline(**kwargs) -> Pipeline:
    """Sections (+ previous embeddings as a cache) -> patch embeddings, in work groups of sections."""
    groups = kwargs.get("section_groups") or group_count("section_groups")
    inputs = ["sections", "embedding_cache", "params:embedding"]
    return pipeline(
        [
            *group_nodes(embed_section_group, inputs, "patch_embeddings", "embed_section_group", groups),
            node(
                merge_section_embeddings,
                [f"patch_embeddings_group_{group}" for group in range(groups)],
                "patch_embeddings",
                name="merge_section_embeddings",
            ),
        ]
    )
