"""Which depth-controlled PCC to report: candidate definitions on predictions whose answer is known.

A depth-controlled metric must give 0 to a prediction that only knows each spot's depth
(here: the *measured* depth of the test section through each gene's training line, the
oracle-depth reference line) and should not reward the depth-only baseline. The table
scores three predictions with the plain per-gene PCC (ACG) and three candidates:
spot-mean-centred PCC on the min-max targets, the same on log10(count + 1), and the
partial correlation given the measured spot depth (`metrics.gene_specific_pcc`, the
project's definition). Same folds, genes, targets and features as the accuracy table.

    python -m benchmarks.depth_metrics --out benchmarks/results/depth_metrics.md
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import accuracy, common


def centred_pcc(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per-gene PCC after subtracting each spot's mean over the panel from both (a candidate, not used)."""
    from spahgc_kedro.metrics import pearson_per_gene

    return pearson_per_gene(
        measured - measured.mean(axis=1, keepdims=True), predicted - predicted.mean(axis=1, keepdims=True)
    )


def fold_predictions(catalog: Any, folds: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per fold: measured targets, the depth-only and ridge baselines, the oracle-depth line and the scaling."""
    from spahgc_kedro.baselines import oracle_depth_predict, predict_baseline
    from spahgc_kedro.graph import raw_embeddings

    graphs = catalog.load("section_graphs")
    scaling = catalog.load("target_scaling")
    out = {}
    for fold, split in sorted(folds["folds"].items()):
        fitting = [graphs[f"{fold}/{s}"]() for s in split["train"] + split["validation"]]
        train_x = np.concatenate([raw_embeddings(g) for g in fitting])
        train_y = np.concatenate([g["target"].y.numpy() for g in fitting])
        test = graphs[f"{fold}/{split['test'][0]}"]()
        measured = test["target"].y.numpy()
        options = {name: dict(evaluation["baselines"][name]) for name in ("depth_rank1", "ridge_pca")}
        out[fold] = {
            "measured": measured,
            "scaling": scaling[fold],
            "depth_rank1": predict_baseline(
                "depth_rank1", train_x, train_y, raw_embeddings(test), options["depth_rank1"], 0
            ),
            "ridge_pca": predict_baseline("ridge_pca", train_x, train_y, raw_embeddings(test), options["ridge_pca"], 0),
            "oracle depth (measured)": oracle_depth_predict(train_y, measured),
        }
    return out


def table(predictions: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows: each prediction's mean over folds of every candidate."""
    from spahgc_kedro.metrics import finite_mean, gene_specific_pcc, pearson_per_gene
    from spahgc_kedro.targets import minmax_unscale

    names = ["oracle depth (measured)", "depth_rank1", "ridge_pca"]
    lines = [
        "| prediction | ACG | spot-mean-centred PCC (min-max targets) | spot-mean-centred PCC (log10 targets) | "
        "partial PCC given measured depth (the project's) |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        cells = {k: [] for k in ("acg", "centred", "centred_log", "partial")}
        for fold in predictions.values():
            measured, predicted, scaling = fold["measured"], fold[name], fold["scaling"]
            log_measured = minmax_unscale(measured, scaling["min"], scaling["max"])
            log_predicted = minmax_unscale(predicted, scaling["min"], scaling["max"])
            cells["acg"].append(finite_mean(pearson_per_gene(measured, predicted)))
            cells["centred"].append(finite_mean(centred_pcc(measured, predicted)))
            cells["centred_log"].append(finite_mean(centred_pcc(log_measured, log_predicted)))
            cells["partial"].append(finite_mean(gene_specific_pcc(measured, predicted)))
        lines.append(f"| {name} | " + " | ".join(f"{np.mean(v):.3f}" for v in cells.values()) + " |")
    return lines


def main(argv: list[str] | None = None) -> str:
    """Build the HER2+ inputs with the project's pipelines (shared with the accuracy benchmark) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=common.WORK_DIR)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (common.HER2ST_RAW.exists() and common.HER2ST_GENES.exists()):
        print(f"SKIPPED: the real HER2+ data is absent ({common.HER2ST_RAW}).")
        return ""
    settings = accuracy.parse_args(["--work-dir", str(args.work_dir)])
    params = accuracy.run_params(settings, common.HER2ST_RAW)
    root, written = accuracy.prepare(settings, params)
    catalog = common.project_catalog(root, **accuracy.upstream_params(params))
    evaluation = common.project_parameters(**params)["evaluation"]
    rows = table(fold_predictions(catalog, written["folds"], evaluation))
    text = "\n".join(
        [
            "### Depth-controlled PCC: candidate definitions",
            "",
            "- data: the 4 HER2+ sections (C2-C5), 785 genes, log10(count + 1) min-max scaled with each fold's "
            "train + validation statistics; leave-one-section-out (4 folds), values are means over the folds",
            "- features: EfficientNet-Lite0 embeddings of 224 px patches (the accuracy table's); baselines fit on "
            "train + validation",
            "- predictions: oracle depth = the test section's MEASURED spot depth (mean target over the panel) "
            "through each gene's least-squares line on the training spots, so it knows nothing but depth; "
            "depth_rank1 = the same with a ridge-predicted depth; ridge_pca = per-gene PCA 256 + ridge",
            "- candidates: spot-mean-centred = per-gene PCC after subtracting each spot's mean over the panel from "
            "measured and predicted values; partial = per-gene PCC of the residuals of measured and predicted values "
            "after a least-squares fit on [1, measured spot depth] (`metrics.gene_specific_pcc`)",
            f"- machine: {common.cpu_model()}",
            "",
            *rows,
            "",
            "A depth-controlled metric must score the oracle-depth prediction 0: the spot-mean-centred variants do "
            "not (genes follow depth with different slopes, so removing one mean per spot leaves depth in every "
            "gene), and they rank the depth-only baseline above ridge. The partial correlation gives depth-only "
            "predictions 0 by construction.",
        ]
    )
    common.write_table(text, args.out)
    return text


if __name__ == "__main__":
    main()
