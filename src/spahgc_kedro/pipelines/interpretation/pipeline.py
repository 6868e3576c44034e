"""Interpretation pipeline: spatial maps, region agreement, pathway enrichment and the HTML report."""

from kedro.pipeline import Pipeline, node, pipeline

from spahgc_kedro.predictions import gather_predictions

from .nodes import (
    build_report,
    enrich_well_predicted_genes,
    plot_spatial_maps,
    provenance,
    region_agreement,
    select_map_genes,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Wire the downstream analyses of the paper and the report that gathers them."""
    return pipeline(
        [
            node(gather_predictions, ["predictions", "folds"], "section_predictions", name="load_section_predictions"),
            node(select_map_genes, ["per_gene_pcc", "params:interpretation"], "map_genes", name="select_map_genes"),
            node(
                plot_spatial_maps,
                ["section_predictions", "sections", "map_genes", "evaluation_run_info", "params:interpretation"],
                ["spatial_maps", "spatial_maps_png"],
                name="plot_spatial_maps",
            ),
            node(
                region_agreement,
                ["section_predictions", "region_labels", "evaluation_run_info", "params:interpretation"],
                ["region_agreement", "region_marker_scores"],
                name="region_agreement",
            ),
            node(
                enrich_well_predicted_genes,
                ["per_gene_pcc", "evaluation_run_info", "params:interpretation.enrichment"],
                "pathway_enrichment",
                name="enrich_well_predicted_genes",
            ),
            node(provenance, "section_predictions", "report_provenance", name="describe_report_provenance"),
            node(
                build_report,
                [
                    "evaluation_run_info",
                    "report_provenance",
                    "overall_metrics",
                    "comparison_table",
                    "comparison_figure",
                    "spatial_maps",
                    "pathway_enrichment",
                    "region_agreement",
                    "region_marker_scores",
                ],
                "report",
                name="build_report",
            ),
        ]
    )
