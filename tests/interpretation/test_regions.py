"""Region labels: her2st files and user CSVs load; perfect clusters give ARI = 1."""

import numpy as np
import pandas as pd
import pytest

from spahgc_kedro.datasets.region_labels import RegionLabelsDataset
from spahgc_kedro.pipelines.interpretation.nodes import region_agreement
from spahgc_kedro.predictions import gather_predictions

RUN_INFO = {"dataset": "synthetic", "n_genes_panel": 3, "target_transform": "t", "fold_scheme": "s", "encoder": "e"}
PARAMS = {"seed": 0, "tumour_markers": ["ERBB2", "ABSENT"]}


def two_region_predictions():
    import anndata as ad

    rng = np.random.default_rng(0)
    n = 20
    tumour = np.arange(n) < 8
    expression = np.where(tumour[:, None], [5.0, 1.0, 0.0], [0.0, 1.0, 5.0]) + 0.01 * rng.normal(size=(n, 3))
    adata = ad.AnnData(X=expression.astype(np.float32), layers={"measured": expression.astype(np.float32)})
    adata.obs_names = [f"{i}x1" for i in range(n)]
    adata.var_names = ["ERBB2", "ACTB", "COL1A1"]
    adata.obsm["spatial"] = np.stack([np.arange(n) * 100.0, np.full(n, 50.0)], axis=1)
    adata.uns.update(fold="f0", section_id="A1")
    labels = np.where(tumour, "invasive cancer", "connective tissue")
    return gather_predictions({"f0": adata}, {"folds": {}}), labels


def test_perfect_clusters_agree_with_labels_matched_by_spot_id():
    predictions, labels = two_region_predictions()
    table = pd.DataFrame(
        {
            "section": "A1",
            "spot_id": [f"{i}x1" for i in range(20)],
            "pixel_x": np.nan,
            "pixel_y": np.nan,
            "label": labels,
        }
    )
    agreement, scores = region_agreement(predictions, table, RUN_INFO, PARAMS)
    assert agreement.loc[0, "ari_predicted"] == pytest.approx(1.0)
    assert agreement.loc[0, "nmi_predicted"] == pytest.approx(1.0)
    assert agreement.loc[0, "n_spots_labelled"] == 20 and agreement.loc[0, "n_regions"] == 2
    by_label = scores.set_index("label")
    assert by_label.loc["invasive cancer", "predicted_marker_score"] > 4.9
    assert by_label.loc["connective tissue", "predicted_marker_score"] < 0.1
    assert set(scores["markers"]) == {"ERBB2"} and set(scores["dataset"]) == {"synthetic"}


def test_labels_fall_back_to_nearest_pixel_and_missing_labels_skip():
    predictions, labels = two_region_predictions()
    # Spot ids that do not match, pixels within a few px of the spot centres.
    table = pd.DataFrame(
        {
            "section": "A1",
            "spot_id": [f"r{i}" for i in range(20)],
            "pixel_x": np.arange(20) * 100.0 + 3,
            "pixel_y": 52.0,
            "label": labels,
        }
    )
    agreement, _ = region_agreement(predictions, table, RUN_INFO, PARAMS)
    assert agreement.loc[0, "ari_predicted"] == pytest.approx(1.0)
    empty = pd.DataFrame(columns=["section", "spot_id", "pixel_x", "pixel_y", "label"])
    agreement, scores = region_agreement(predictions, empty, RUN_INFO, PARAMS)
    assert agreement.empty and scores.empty and "ari_predicted" in agreement.columns


def test_region_labels_dataset_reads_her2st_files_and_user_csv(tmp_path):
    folder = tmp_path / "ST-pat" / "lbl"
    folder.mkdir(parents=True)
    (folder / "A1_labeled_coordinates.tsv").write_text(
        "Row.names\tx\ty\tpixel_x\tpixel_y\tlabel\n"
        "1\t10.05\t3.97\t1000.5\t400.2\tinvasive cancer\n"
        "2\t11.02\t4.01\t1100.1\t500.3\tconnective tissue\n"
    )
    user = tmp_path / "labels.csv"
    user.write_text("section,spot_id,label\nA1,11x4,immune infiltrate\nB1,1x1,fat\n")
    labels = RegionLabelsDataset(str(tmp_path), str(user)).load().set_index(["section", "spot_id"])
    assert labels.loc[("A1", "10x4"), "label"] == "invasive cancer"
    assert labels.loc[("A1", "11x4"), "label"] == "immune infiltrate"
    assert len(labels) == 3
    assert RegionLabelsDataset(str(tmp_path / "nowhere")).load().empty
