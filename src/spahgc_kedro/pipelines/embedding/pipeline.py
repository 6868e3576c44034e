"""Embedding pipeline wiring."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from spahgc_kedro.parallelism import group_count

from .nodes import embed_section_group, merge_section_embeddings


def create_pipeline(**kwargs) -> Pipeline:
    """Sections (+ previous embeddings as a cache) -> patch embeddings, in work groups of sections."""
    groups = kwargs.get("section_groups") or group_count("section_groups")
    group_nodes = [
        node(
            update_wrapper(partial(embed_section_group, group=group, groups=groups), embed_section_group),
            [
                "sections",
                "embedding_cache",
                "params:encoder",
                "params:device",
                "params:seed",
                "params:embedding",
            ],
            f"patch_embeddings_group_{group}",
            name=f"embed_section_group_{group}",
        )
        for group in range(groups)
    ]
    return pipeline(
        [
            *group_nodes,
            node(
                merge_section_embeddings,
                [f"patch_embeddings_group_{group}" for group in range(groups)],
                "patch_embeddings",
                name="merge_section_embeddings",
            ),
        ]
    )
