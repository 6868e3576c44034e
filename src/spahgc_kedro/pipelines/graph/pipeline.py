"""Graph pipeline: folds -> target scaling -> one HeteroData per section per fold."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_section_graphs, fit_target_scaling, make_fold_plan


def create_pipeline(**kwargs) -> Pipeline:
    """Wire the graph construction nodes."""
    return Pipeline(
        [
            Node(
                make_fold_plan,
                inputs=["section_manifest", "params:graph"],
                outputs="folds",
                name="make_fold_plan",
            ),
            Node(
                fit_target_scaling,
                inputs=[
                    "sections",
                    "section_manifest",
                    "folds",
                    "params:datasets",
                    "params:dataset",
                    "params:graph",
                ],
                outputs="target_scaling",
                name="fit_target_scaling",
            ),
            Node(
                build_section_graphs,
                inputs=[
                    "sections",
                    "patch_embeddings",
                    "section_manifest",
                    "folds",
                    "target_scaling",
                    "params:datasets",
                    "params:dataset",
                    "params:graph",
                ],
                outputs="section_graphs",
                name="build_section_graphs",
            ),
        ]
    )
