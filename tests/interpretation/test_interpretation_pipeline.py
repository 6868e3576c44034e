"""Evaluation then interpretation on tiny generated folds with SequentialRunner, report written."""

from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from spahgc_kedro.pipelines.evaluation import create_pipeline as evaluation_pipeline
from spahgc_kedro.pipelines.interpretation import create_pipeline as interpretation_pipeline

EVALUATION = {
    "seed": 0,
    "n_top_genes": 5,
    "baselines": {"ridge_pca": {"alpha": 1.0, "n_components": 256}, "knn_l1": {"k": 7}},
}
INTERPRETATION = {
    "seed": 0,
    "n_top_genes": 2,
    "marker_genes": ["G4", "ERBB2"],
    "thumbnail_max_side": 128,
    "tumour_markers": ["G0"],
    "enrichment": {"gmt_files": [], "pcc_threshold": 0.3, "min_set_size": 2, "max_set_size": 500},
}


def catalog_in(tmp_path, synthetic_run, sections, labels, gmt_files):
    import pandas as pd
    from kedro.io import Version
    from kedro_datasets.json import JSONDataset
    from kedro_datasets.matplotlib import MatplotlibDataset
    from kedro_datasets.pandas import ParquetDataset
    from kedro_datasets.plotly import JSONDataset as PlotlyJSONDataset
    from kedro_datasets.text import TextDataset

    version = Version(None, None)
    out = tmp_path / "08_reporting"
    enrichment = {**INTERPRETATION["enrichment"], "gmt_files": gmt_files}
    return DataCatalog(
        {
            "predictions": MemoryDataset(synthetic_run["predictions"], copy_mode="assign"),
            "section_graphs": MemoryDataset(synthetic_run["section_graphs"], copy_mode="assign"),
            "sections": MemoryDataset(sections, copy_mode="assign"),
            "folds": MemoryDataset(synthetic_run["folds"]),
            "region_labels": MemoryDataset(pd.DataFrame(labels)),
            "params:evaluation": MemoryDataset(EVALUATION),
            "params:interpretation": MemoryDataset(INTERPRETATION),
            "params:interpretation.enrichment": MemoryDataset(enrichment),
            "evaluation_run_info": JSONDataset(filepath=str(out / "run_info.json"), version=version),
            "per_gene_pcc": ParquetDataset(filepath=str(out / "per_gene.parquet"), version=version),
            "comparison_table": ParquetDataset(filepath=str(out / "comparison.parquet"), version=version),
            "comparison_figure": PlotlyJSONDataset(filepath=str(out / "comparison.json"), version=version),
            "spatial_maps": PlotlyJSONDataset(filepath=str(out / "maps.json"), version=version),
            "spatial_maps_png": MatplotlibDataset(filepath=str(out / "maps_png"), version=version),
            "pathway_enrichment": ParquetDataset(filepath=str(out / "enrichment.parquet"), version=version),
            "region_agreement": ParquetDataset(filepath=str(out / "agreement.parquet"), version=version),
            "region_marker_scores": ParquetDataset(filepath=str(out / "scores.parquet"), version=version),
            "report": TextDataset(filepath=str(out / "report.html"), version=version),
        }
    )


def test_report_gathers_comparison_maps_regions_and_enrichment(tmp_path, synthetic_run, sections_with_images):
    gmt = tmp_path / "toy.gmt"
    gmt.write_text("TOY_PATHWAY\tdesc\tG0\tG1\tG2\tG3\tG4\n")
    labels = {
        "section": ["S0"] * 36,
        "spot_id": synthetic_run["sections"]["S0"]["spots"],
        "pixel_x": None,
        "pixel_y": None,
        "label": ["tumour"] * 18 + ["stroma"] * 18,
    }
    catalog = catalog_in(tmp_path, synthetic_run, sections_with_images, labels, [str(gmt)])
    SequentialRunner().run(evaluation_pipeline() + interpretation_pipeline(), catalog)

    report = catalog.load("report")
    for expected in (
        "synthetic",
        "leave_one_section_out",
        "toy",
        "10 genes",
        "log10(count+1)",
        "knn_l1",
        "TOY_PATHWAY",
        "tumour",
        "plotly",
        "pcc_gene_specific",
        "gene-specific PCC",  # the table's columns in words
        "Reference line, not a method",
        "fold_0: epoch",  # which models, and when
        "Generated",
    ):
        assert expected in report, expected
    assert len(list((tmp_path / "08_reporting" / "report.html").glob("*/report.html"))) == 1
    pngs = list((tmp_path / "08_reporting" / "maps_png").glob("*/maps_png/*.png"))
    assert sorted(p.name for p in pngs) == ["fold_0_S0.png", "fold_1_S1.png", "fold_2_S2.png"]
    maps = catalog.load("spatial_maps")
    # Best 2 genes + marker G4 (ERBB2 is not in the panel), 3 folds, measured and predicted.
    assert len(maps.data) == 3 * 3 * 2
    agreement = catalog.load("region_agreement")
    assert list(agreement["section_id"]) == ["S0"] and agreement.loc[0, "n_spots_labelled"] == 36
    assert catalog.load("pathway_enrichment").loc[0, "term"] == "TOY_PATHWAY"


def test_without_labels_or_gene_sets_the_report_says_skipped(tmp_path, synthetic_run):
    labels = {"section": [], "spot_id": [], "pixel_x": [], "pixel_y": [], "label": []}
    catalog = catalog_in(tmp_path, synthetic_run, {}, labels, [])
    SequentialRunner().run(evaluation_pipeline() + interpretation_pipeline(), catalog)
    report = catalog.load("report")
    assert "No region labels" in report and "No GMT gene-set files" in report
