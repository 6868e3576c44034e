"""Predict pipeline wiring (not part of `__default__`: run it with --pipeline=predict)."""

from kedro.pipeline import Pipeline, node, pipeline

from spahgc_kedro.graph import graph_preset

from .nodes import (
    build_new_section_graphs,
    choose_model_folds,
    embed_new_sections,
    export_new_predictions,
    fit_model_references,
    plot_new_prediction_maps,
    predict_new_sections,
    read_new_sections,
)


def create_pipeline(**kwargs) -> Pipeline:
    """New sections + the trained fold models and their reference sections -> predicted expression, uncertainty, maps,
    SpatialData stores."""
    return pipeline(
        [
            node(read_new_sections, ["new_slides", "params:predict"], "new_sections", name="read_new_sections"),
            node(
                choose_model_folds,
                ["trained_models", "folds", "params:predict"],
                "model_folds",
                name="choose_model_folds",
            ),
            node(
                embed_new_sections,
                ["new_sections", "patch_embeddings", "folds", "model_folds", "params:embedding"],
                "new_patch_embeddings",
                name="embed_new_sections",
            ),
            node(
                graph_preset,
                ["section_manifest", "params:datasets", "params:dataset"],
                "model_graph_preset",
                name="resolve_model_graph_preset",
            ),
            node(
                fit_model_references,
                ["sections", "patch_embeddings", "folds", "target_scaling", "model_folds", "params:graph"],
                "model_references",
                name="fit_model_references",
            ),
            node(
                build_new_section_graphs,
                ["new_sections", "new_patch_embeddings", "model_references", "model_graph_preset"],
                "new_section_graphs",
                name="build_new_section_graphs",
            ),
            node(
                predict_new_sections,
                [
                    "trained_models",
                    "model_references",
                    "new_section_graphs",
                    "new_sections",
                    "params:predict",
                    "params:dataset",
                    "params:encoder",
                ],
                "new_predictions",
                name="predict_new_sections",
            ),
            node(
                plot_new_prediction_maps,
                ["new_predictions", "params:predict"],
                "new_prediction_maps",
                name="plot_new_prediction_maps",
            ),
            node(
                export_new_predictions,
                ["new_predictions", "params:predict"],
                "new_predictions_spatialdata",
                name="export_new_predictions",
            ),
        ]
    )
