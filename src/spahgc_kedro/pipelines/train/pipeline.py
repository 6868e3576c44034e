"""Train pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from spahgc_kedro.parallelism import group_count, group_nodes

from .nodes import log_predictions, merge_trained_models, predict_test_sections, train_fold_group


def create_pipeline(**kwargs) -> Pipeline:
    """Section graphs -> trained models per fold (in work groups) -> test-section predictions."""
    groups = kwargs.get("fold_groups") or group_count("fold_groups")
    inputs = ["section_graphs", "folds", "fold_models", "params:train", "params:dataset", "params:encoder"]
    return pipeline(
        [
            *group_nodes(train_fold_group, inputs, "trained_models", "train_fold_group", groups),
            node(
                merge_trained_models,
                ["folds", *(f"trained_models_group_{group}" for group in range(groups))],
                "trained_models",
                name="merge_trained_models",
            ),
            node(
                predict_test_sections,
                [
                    "trained_models",
                    "section_graphs",
                    "folds",
                    "target_scaling",
                    "params:dataset",
                    "params:encoder",
                    "params:prediction_chunk_spots",
                ],
                "predictions",
                name="predict_test_sections",
            ),
            node(log_predictions, "predictions", None, name="log_predictions"),
        ]
    )
