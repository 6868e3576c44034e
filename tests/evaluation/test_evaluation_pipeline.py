"""The evaluation pipeline on tiny generated folds with SequentialRunner."""

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from spahgc_kedro.pipelines.evaluation import create_pipeline
from spahgc_kedro.pipelines.evaluation.nodes import log_fold_metrics
from tests.helpers.synthetic_folds import make_run

PARAMS = {
    "seed": 0,
    "n_top_genes": 5,
    "baselines": {
        "ridge_pca": {"alpha": 1.0, "n_components": 256},
        "depth_rank1": {"alpha": 1.0, "n_components": 256},
        "knn_l1": {"k": 7},
        "train_mean": {},
    },
}


def run_evaluation(synthetic_run, tmp_path):
    from kedro_datasets.json import JSONDataset as PlainJSONDataset
    from kedro_datasets.pandas import ParquetDataset
    from kedro_datasets.plotly import JSONDataset

    catalog = DataCatalog(
        {
            "predictions": MemoryDataset(synthetic_run["predictions"], copy_mode="assign"),
            "section_graphs": MemoryDataset(synthetic_run["section_graphs"], copy_mode="assign"),
            "folds": MemoryDataset(synthetic_run["folds"]),
            "params:evaluation": MemoryDataset(PARAMS),
            "comparison_table": ParquetDataset(filepath=str(tmp_path / "comparison.parquet")),
            "per_gene_pcc": ParquetDataset(filepath=str(tmp_path / "per_gene.parquet")),
            "overall_metrics": PlainJSONDataset(filepath=str(tmp_path / "overall.json")),
            "comparison_figure": JSONDataset(filepath=str(tmp_path / "comparison.json")),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_pipeline_scores_spahgc_beside_every_baseline(synthetic_run, tmp_path):
    catalog = run_evaluation(synthetic_run, tmp_path)
    comparison = catalog.load("comparison_table").set_index("method")
    assert list(comparison.index) == ["spahgc", "ridge_pca", "depth_rank1", "knn_l1", "train_mean"]
    # Targets are linear in the embeddings: ridge must beat the noisy "model" and kNN.
    assert comparison.loc["ridge_pca", "pcc_acg"] > 0.9
    assert comparison.loc["ridge_pca", "pcc_acg"] > comparison.loc["knn_l1", "pcc_acg"]
    assert np.isnan(comparison.loc["train_mean", "pcc_acg"])
    assert comparison.loc["train_mean", "n_constant_mean"] == 10
    assert set(comparison["dataset"]) == {"synthetic"} and set(comparison["encoder"]) == {"toy"}
    assert set(comparison["fold_scheme"]) == {"leave_one_section_out"} and set(comparison["n_genes_panel"]) == {"10"}
    per_gene = catalog.load("per_gene_pcc")
    assert len(per_gene) == 5 * 3 * 10 and per_gene["heg5"].sum() == 5 * 3 * 5
    overall = catalog.load("overall_metrics")
    assert overall["methods"]["spahgc"]["pcc_acg"] == pytest.approx(comparison.loc["spahgc", "pcc_acg"])
    # targets linear in 8-d embeddings are far from rank 1: depth alone explains little of them
    assert comparison.loc["ridge_pca", "pcc_gene_specific"] > 0.9
    assert comparison.loc["depth_rank1", "pcc_gene_specific"] < comparison.loc["ridge_pca", "pcc_gene_specific"] - 0.3
    oracle = overall["reference_lines"]["oracle_depth"]
    assert "oracle_depth" not in comparison.index and "oracle_depth" not in overall["methods"]
    assert oracle["pcc_gene_specific"] == pytest.approx(0.0, abs=1e-9)
    figure = catalog.load("comparison_figure")
    assert len(figure.data) == 5 and "synthetic" in figure.layout.title.text
    assert "oracle depth" in figure.layout.annotations[0].text
    mlflow_metrics = catalog.load("overall_mlflow_metrics")
    assert mlflow_metrics["spahgc/pcc_acg"]["value"] == pytest.approx(comparison.loc["spahgc", "pcc_acg"])
    assert "train_mean/pcc_acg" not in mlflow_metrics  # NaN: not a metric MLflow can hold


def test_fold_metrics_go_to_the_fold_run_and_overall_to_the_active_run(tmp_path):
    import mlflow
    import pandas as pd
    from kedro_mlflow.io.metrics import MlflowMetricsHistoryDataset

    with mlflow.start_run() as fold_run:
        pass
    row = {"method": "spahgc", "pcc_acg": 0.4, "pcc_gene_specific": 0.1, "mse": 0.1, "pcc_heg50": 0.5}
    row.update({"pcc_hvg50": 0.5, "mae": 0.2, "n_genes": 3, "n_constant": 0, "n_pcc_gt_0_3": 1, "n_pcc_gt_0_5": 0})
    fold_metrics = pd.DataFrame(
        [{**row, "fold": "f0", "mlflow_run_id": fold_run.info.run_id}, {**row, "fold": "f1", "mlflow_run_id": ""}]
    )
    with mlflow.start_run() as active:
        log_fold_metrics(fold_metrics)
        # the catalog's kedro-mlflow dataset for the overall metrics, as conf/base/catalog_evaluation.yml declares it
        MlflowMetricsHistoryDataset().save({"spahgc/pcc_acg": {"value": 0.25, "step": 0}})
    client = mlflow.tracking.MlflowClient()
    assert client.get_run(fold_run.info.run_id).data.metrics["test_pcc_acg"] == pytest.approx(0.4)
    assert client.get_run(fold_run.info.run_id).data.metrics["test_pcc_gene_specific"] == pytest.approx(0.1)
    assert client.get_run(active.info.run_id).data.metrics == {"spahgc/pcc_acg": 0.25}


def test_folds_with_several_test_sections_score_each_section():
    from spahgc_kedro.pipelines.evaluation.nodes import compute_fold_metrics, predict_baselines, summarise_metrics
    from spahgc_kedro.predictions import describe_run, gather_predictions

    run = make_run(n_sections=4, tests_per_fold=2)
    gathered = gather_predictions(run["predictions"], run["folds"])
    run_info = describe_run(gathered, run["folds"])
    assert run_info["n_folds"] == 2 and run_info["folds"] == {"fold_0": ["S0", "S1"], "fold_1": ["S2", "S3"]}
    baselines, oracle = predict_baselines(
        run["section_graphs"], run["folds"], gathered, {"seed": 0, "baselines": {"knn_l1": {"k": 1}}}
    )
    fold_metrics, _ = compute_fold_metrics(gathered, baselines, {}, run_info, {"n_top_genes": 5})
    assert sorted(fold_metrics.loc[fold_metrics["method"] == "knn_l1", "section_id"]) == ["S0", "S1", "S2", "S3"]
    _, comparison, _ = summarise_metrics(fold_metrics, gathered, baselines, {}, oracle, run_info)
    assert list(comparison["n_test_sections"]) == [4, 4]
    assert set(comparison["fold_scheme"]) == {"leave_one_patient_out"}


def test_ensemble_row_scores_the_mean_of_each_folds_rotated_members(synthetic_run, tmp_path):
    """graph.validation: rotate -> `spahgc_ensemble` = the mean of every member's prediction of the fold's test
    section (checked against scipy); the single-model row stays the head folds' own."""
    from scipy.stats import pearsonr

    from spahgc_kedro.partitions import load_partition
    from spahgc_kedro.predictions import prediction_key

    rng = np.random.default_rng(1)
    folds = {"scheme": synthetic_run["folds"]["scheme"], "folds": {}}
    predictions = dict(synthetic_run["predictions"])
    expected = []
    for fold, spec in synthetic_run["folds"]["folds"].items():
        folds["folds"][fold] = {**spec, "ensemble": fold}
        head = load_partition(predictions[fold])
        measured = np.asarray(head.layers["measured"])
        stack = [np.asarray(head.X)]
        for v in range(2):
            member = f"{fold}@V{v}"
            folds["folds"][member] = {**spec, "ensemble": fold}
            adata = head.copy()
            adata.X = (measured + rng.normal(size=measured.shape)).astype(np.float32)
            adata.uns["fold"] = member
            predictions[prediction_key(member, spec["test"][0])] = adata
            stack.append(np.asarray(adata.X))
        mean = np.mean(stack, axis=0)
        expected.append(np.mean([pearsonr(measured[:, g], mean[:, g]).statistic for g in range(measured.shape[1])]))

    plain = run_evaluation(synthetic_run, tmp_path / "plain").load("comparison_table").set_index("method")
    catalog = run_evaluation({**synthetic_run, "folds": folds, "predictions": predictions}, tmp_path / "rotated")
    comparison = catalog.load("comparison_table").set_index("method")
    assert list(comparison.index) == ["spahgc", "spahgc_ensemble", *plain.index[1:]]
    assert comparison.loc["spahgc_ensemble", "pcc_acg"] == pytest.approx(np.mean(expected), abs=1e-5)
    assert comparison.loc["spahgc_ensemble", "n_test_sections"] == len(synthetic_run["folds"]["folds"])
    for method in plain.index:
        assert comparison.loc[method, "pcc_acg"] == pytest.approx(plain.loc[method, "pcc_acg"], nan_ok=True)
    assert "spahgc_ensemble/pcc_acg" in catalog.load("overall_mlflow_metrics")

    del predictions[prediction_key(f"{next(iter(synthetic_run['folds']['folds']))}@V0", "S0")]
    with pytest.raises(Exception, match="rotated member fold"):
        run_evaluation({**synthetic_run, "folds": folds, "predictions": predictions}, tmp_path / "missing")


def test_knn_baseline_is_the_mean_of_the_k_nearest_training_spots_by_l1():
    from spahgc_kedro.pipelines.evaluation.nodes import predict_baselines
    from spahgc_kedro.predictions import gather_predictions

    run = make_run(n_sections=4)
    gathered = gather_predictions(run["predictions"], run["folds"])
    baselines, _ = predict_baselines(
        run["section_graphs"], run["folds"], gathered, {"seed": 0, "baselines": {"knn_l1": {"k": 2}}}
    )
    for key, prediction in gathered.items():
        # the pool is SpaHGC's: the fold's training sections, not its validation or test section
        pool = run["folds"]["folds"][prediction.fold]["train"]
        train_x = np.vstack([run["sections"][s]["x"] for s in pool])
        train_y = np.vstack([run["sections"][s]["y"] for s in pool])
        for row, spot_x in enumerate(run["sections"][prediction.section_id]["x"]):
            nearest = np.argsort(np.abs(train_x - spot_x).sum(axis=1), kind="stable")[:2]
            np.testing.assert_allclose(baselines[key]["knn_l1"][row], train_y[nearest].mean(axis=0), rtol=1e-5)
