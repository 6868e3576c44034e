"""Train pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import log_predictions, predict_test_sections, train_models


def create_pipeline(**kwargs) -> Pipeline:
    """Section graphs -> trained models per fold -> test-section predictions."""
    return pipeline(
        [
            node(
                train_models,
                [
                    "section_graphs",
                    "folds",
                    "params:train",
                    "params:seed",
                    "params:device",
                    "params:dataset",
                    "params:encoder",
                ],
                "trained_models",
                name="train_models",
            ),
            node(
                predict_test_sections,
                ["trained_models", "section_graphs", "folds", "target_scaling", "params:dataset", "params:encoder"],
                "predictions",
                name="predict_test_sections",
            ),
            node(log_predictions, "predictions", None, name="log_predictions"),
        ]
    )
