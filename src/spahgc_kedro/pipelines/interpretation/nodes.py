"""Nodes of the interpretation pipeline: spatial maps, region agreement, enrichment, report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from spahgc_kedro.enrichment import ENRICHMENT_COLUMNS, hypergeometric_enrichment, read_gmt
from spahgc_kedro.images import data_uri, read_thumbnail
from spahgc_kedro.metrics import pearson_per_gene
from spahgc_kedro.partitions import load_partition
from spahgc_kedro.predictions import SectionPrediction, describe_run_text, with_run_info
from spahgc_kedro.progress import progress
from spahgc_kedro.report import (
    figure_html,
    plotly_loader_html,
    render_report,
    spatial_maps_matplotlib,
    spatial_maps_plotly,
)
from spahgc_kedro.schema import Uns

logger = logging.getLogger(__name__)

AGREEMENT_COLUMNS = [
    "fold",
    "section_id",
    "n_spots_labelled",
    "n_regions",
    "ari_predicted",
    "nmi_predicted",
    "ari_measured",
    "nmi_measured",
]
# the method whose predictions are mapped and interpreted (the evaluation's name for SpaHGC)
MODEL = "spahgc"
SCORE_COLUMNS = ["fold", "section_id", "label", "n_spots", "predicted_marker_score", "measured_marker_score", "markers"]


def select_map_genes(per_gene_pcc: pd.DataFrame, params: dict[str, Any]) -> dict[str, list[str]]:
    """The best-predicted genes (mean SpaHGC PCC over folds) and the requested markers found in the panel."""
    model = per_gene_pcc[per_gene_pcc["method"] == MODEL]
    best = model.groupby("gene")["pcc"].mean().dropna().sort_values(ascending=False, kind="stable")
    panel = set(model["gene"])
    markers = [g for g in params["marker_genes"] if g in panel]
    skipped = [g for g in params["marker_genes"] if g not in panel]
    if skipped:
        logger.info("Marker genes not in the gene panel, not mapped: %s", ", ".join(skipped))
    return {"best": list(best.index[: int(params["n_top_genes"])]), "markers": markers}


def _section_image(sections: dict[str, Callable[[], Any]], section_id: str, max_side: int) -> dict[str, Any]:
    """The section's H&E thumbnail and full size; empty when the section or image is unavailable."""
    if section_id not in sections:
        logger.info("Section '%s' not in `sections`: maps drawn without the H&E image.", section_id)
        return {}
    uns = load_partition(sections[section_id]).uns
    try:
        thumbnail, full_size = read_thumbnail(uns[Uns.IMAGE_PATH], max_side)
    except (KeyError, OSError, ValueError) as error:
        logger.warning("Section '%s': H&E thumbnail unavailable (%s); maps drawn without it.", section_id, error)
        return {}
    image_size = tuple(int(v) for v in uns.get(Uns.IMAGE_SIZE, full_size))
    return {"thumbnail": thumbnail, "thumbnail_uri": data_uri(thumbnail), "image_size": image_size}


def plot_spatial_maps(
    section_predictions: dict[str, SectionPrediction],
    sections: dict[str, Callable[[], Any]],
    map_genes: dict[str, list[str]],
    run_info: dict[str, Any],
    params: dict[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """Measured vs predicted maps over the H&E thumbnail: one interactive figure, one PNG per fold."""
    caption = describe_run_text(run_info)
    genes = list(dict.fromkeys([*map_genes["best"], *map_genes["markers"]]))
    all_panels, pngs = [], {}
    for prediction in progress(section_predictions.values(), desc="spatial maps"):
        image = _section_image(sections, prediction.section_id, int(params["thumbnail_max_side"]))
        present = [g for g in genes if g in prediction.genes]
        columns = [prediction.genes.index(g) for g in present]
        pcc = pearson_per_gene(prediction.measured[:, columns], prediction.predicted[:, columns])
        panels = [
            {
                "fold": prediction.fold,
                "section_id": prediction.section_id,
                "gene": gene,
                "spatial": prediction.spatial,
                "spot_ids": prediction.spot_ids,
                "measured": prediction.measured[:, c],
                "predicted": prediction.predicted[:, c],
                "pcc": float(p),
                **image,
            }
            for gene, c, p in zip(present, columns, pcc, strict=True)
        ]
        if panels:
            all_panels.extend(panels)
            pngs[f"{prediction.fold}_{prediction.section_id}.png"] = spatial_maps_matplotlib(panels, caption)
    if not all_panels:
        raise ValueError("No gene to map: the predictions share no gene with the selected genes.")
    return spatial_maps_plotly(all_panels, caption), pngs


def _match_labels(prediction: SectionPrediction, labels: pd.DataFrame) -> np.ndarray:
    """Region label per predicted spot: by spot id, else the nearest labelled pixel within half a spot spacing."""
    from scipy.spatial import cKDTree

    by_id = dict(zip(labels["spot_id"], labels["label"], strict=True))
    matched = np.array([by_id.get(spot) for spot in prediction.spot_ids], dtype=object)
    with_pixels = labels.dropna(subset=["pixel_x", "pixel_y"])
    unmatched = np.flatnonzero(pd.isna(matched))
    if unmatched.size and not with_pixels.empty and len(prediction.spatial) > 1:
        spacing = np.median(cKDTree(prediction.spatial).query(prediction.spatial, k=2)[0][:, 1])
        distance, nearest = cKDTree(with_pixels[["pixel_x", "pixel_y"]].to_numpy()).query(prediction.spatial[unmatched])
        close = distance <= spacing / 2
        matched[unmatched[close]] = with_pixels["label"].to_numpy()[nearest[close]]
    return matched


def region_agreement(
    section_predictions: dict[str, SectionPrediction],
    region_labels: pd.DataFrame,
    run_info: dict[str, Any],
    params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """KMeans clusters of predicted (and measured) expression vs annotated regions, and marker scores by region."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    agreement, scores = [], []
    labelled = set(region_labels["section"].astype(str))
    if not labelled:
        logger.info("No region labels: tumour-region agreement skipped.")
    for prediction in section_predictions.values() if labelled else []:
        fold = prediction.fold
        if prediction.section_id not in labelled:
            logger.info("Fold '%s': section '%s' has no region labels, skipped.", fold, prediction.section_id)
            continue
        spot_labels = _match_labels(
            prediction, region_labels[region_labels["section"].astype(str) == prediction.section_id]
        )
        keep = ~pd.isna(spot_labels)
        regions = spot_labels[keep].astype(str)
        n_regions = len(set(regions))
        if n_regions < 2 or keep.sum() <= n_regions:
            logger.info("Fold '%s': fewer than two labelled regions matched, skipped.", fold)
            continue
        row = {
            "fold": fold,
            "section_id": prediction.section_id,
            "n_spots_labelled": int(keep.sum()),
            "n_regions": n_regions,
        }
        for kind in ("predicted", "measured"):
            clusters = KMeans(n_clusters=n_regions, n_init=10, random_state=int(params["seed"])).fit_predict(
                getattr(prediction, kind)[keep]
            )
            row[f"ari_{kind}"] = float(adjusted_rand_score(regions, clusters))
            row[f"nmi_{kind}"] = float(normalized_mutual_info_score(regions, clusters))
        agreement.append(row)
        markers = [g for g in params["tumour_markers"] if g in prediction.genes]
        if not markers:
            logger.info("Fold '%s': no tumour marker in the gene panel, marker scores skipped.", fold)
            continue
        columns = [prediction.genes.index(g) for g in markers]
        for region in sorted(set(regions)):
            in_region = regions == region
            scores.append(
                {
                    "fold": fold,
                    "section_id": prediction.section_id,
                    "label": region,
                    "n_spots": int(in_region.sum()),
                    "predicted_marker_score": float(prediction.predicted[keep][in_region][:, columns].mean()),
                    "measured_marker_score": float(prediction.measured[keep][in_region][:, columns].mean()),
                    "markers": ",".join(markers),
                }
            )
    return (
        with_run_info(pd.DataFrame(agreement, columns=AGREEMENT_COLUMNS), run_info),
        with_run_info(pd.DataFrame(scores, columns=SCORE_COLUMNS), run_info),
    )


def enrich_well_predicted_genes(
    per_gene_pcc: pd.DataFrame, run_info: dict[str, Any], params: dict[str, Any]
) -> pd.DataFrame:
    """Hypergeometric enrichment of genes with mean SpaHGC PCC above the threshold, universe = the panel."""
    gmt_files = params.get("gmt_files") or []
    if not gmt_files:
        logger.info("No GMT files in interpretation.enrichment.gmt_files: pathway enrichment skipped.")
        return with_run_info(pd.DataFrame(columns=list(ENRICHMENT_COLUMNS)), run_info)
    model = per_gene_pcc[per_gene_pcc["method"] == MODEL]
    mean_pcc = model.groupby("gene")["pcc"].mean()
    selected = list(mean_pcc.index[mean_pcc > float(params["pcc_threshold"])])
    logger.info("%d of %d genes have mean PCC > %s.", len(selected), len(mean_pcc), params["pcc_threshold"])
    tables = []
    for path in gmt_files:
        tables.append(
            hypergeometric_enrichment(
                selected,
                list(mean_pcc.index),
                read_gmt(path),
                int(params["min_set_size"]),
                int(params["max_set_size"]),
                source=str(path),
            )
        )
    table = pd.concat(tables, ignore_index=True).sort_values("p_value", ignore_index=True)
    return with_run_info(table.assign(pcc_threshold=float(params["pcc_threshold"])), run_info)


def provenance(section_predictions: dict[str, SectionPrediction]) -> dict[str, str]:
    """What the report says it was made from: each fold's model (best epoch, MLflow run) and when."""
    from datetime import datetime

    from spahgc_kedro.tracking import active_run_id

    models = {
        p.fold: f"{p.fold}: epoch {p.uns.get(Uns.BEST_EPOCH, '?')}, run {p.uns.get(Uns.MLFLOW_RUN_ID) or 'not tracked'}"
        for p in section_predictions.values()
    }
    return {
        "models": "; ".join(models[fold] for fold in sorted(models)),
        "mlflow_run": active_run_id() or "tracking off for this run",
        "generated": datetime.now().strftime("%Y-%m-%d %H:%M"),
    }


def build_report(
    run_info: dict[str, Any],
    report_provenance: dict[str, str],
    overall_metrics: dict[str, Any],
    comparison_table: pd.DataFrame,
    comparison_figure: Any,
    spatial_maps: Any,
    enrichment: pd.DataFrame,
    agreement: pd.DataFrame,
    marker_scores: pd.DataFrame,
) -> str:
    """The per-run HTML report (plotly.js embedded so it opens offline)."""
    figures_html = {
        "comparison_figure": plotly_loader_html() + figure_html(comparison_figure, "comparison-figure"),
        "spatial_maps": figure_html(spatial_maps, "spatial-maps"),
    }
    return render_report(
        run_info,
        report_provenance,
        overall_metrics.get("reference_lines", {}),
        comparison_table,
        figures_html,
        enrichment,
        agreement,
        marker_scores,
    )
