"""Ingestion pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import describe_sections, read_sections, resolve_preset, select_sections


def create_pipeline(**kwargs) -> Pipeline:
    """Raw folder -> standard sections + manifest."""
    return pipeline(
        [
            node(
                resolve_preset,
                ["params:dataset", "params:datasets", "params:raw_dir"],
                "dataset_preset",
                name="resolve_dataset_preset",
            ),
            node(select_sections, ["raw_slides", "dataset_preset"], "section_ids", name="select_sections"),
            node(
                read_sections,
                ["raw_slides", "dataset_preset", "section_ids", "params:ingestion"],
                "sections",
                name="read_sections",
            ),
            node(describe_sections, ["sections", "dataset_preset"], "section_manifest", name="describe_sections"),
        ]
    )
