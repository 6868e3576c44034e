"""Graph pipeline: preset -> folds -> target scaling -> one HeteroData per section per fold."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_section_graphs, fit_target_scaling, make_fold_plan, resolve_graph_preset


def create_pipeline(**kwargs) -> Pipeline:
    """Wire the graph construction nodes."""
    return Pipeline(
        [
            Node(
                resolve_graph_preset,
                inputs=["section_manifest", "params:datasets", "params:dataset"],
                outputs="graph_preset",
                name="resolve_graph_preset",
            ),
            Node(make_fold_plan, inputs=["section_manifest", "params:graph"], outputs="folds", name="make_fold_plan"),
            Node(
                fit_target_scaling,
                inputs=["sections", "section_manifest", "folds", "graph_preset", "params:graph"],
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
                    "graph_preset",
                    "params:graph",
                ],
                outputs="section_graphs",
                name="build_section_graphs",
            ),
        ]
    )
