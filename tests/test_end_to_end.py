"""The real CLI end to end on the generated demo data: every stage, MLflow store, kedro-viz build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TINY_MODEL = "train.epochs:2,train.model.hidden:32,train.model.heads:2,train.model.n_layers:1"


def _kedro(project: Path, *args: str) -> subprocess.CompletedProcess:
    kedro = Path(sys.executable).with_name("kedro")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    result = subprocess.run([str(kedro), *args], cwd=project, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_full_run_logs_comparable_runs_and_builds_viz(project_copy: Path):
    import mlflow

    _kedro(project_copy, "run", "--params", TINY_MODEL)
    _kedro(project_copy, "run", "--pipeline=train", "--params", f"{TINY_MODEL},train.teacher:frozen")

    data = project_copy / "data"
    assert sorted(p.stem for p in (data / "07_model_output/demo/efficientnet_lite0/predictions").glob("*.h5ad")) == [
        "A1",
        "A2",
        "B1",
        "B2",
    ]
    assert len(list((data / "06_models/demo/efficientnet_lite0/spahgc.pt").iterdir())) == 2  # one version per run
    assert list((data / "08_reporting/demo").rglob("*.html")), "no HTML report written"

    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["spahgc-demo"])
    folds = runs[runs["tags.mlflow.runName"].str.startswith("demo-efficientnet_lite0-")]
    assert len(folds) == 8 and set(folds["status"]) == {"FINISHED"}
    assert set(folds["params.teacher"]) == {"ema", "frozen"}
    assert folds["metrics.val_pcc"].notna().all()
    client = mlflow.tracking.MlflowClient()
    history = client.get_metric_history(folds.iloc[0]["run_id"], "train_loss")
    assert [m.step for m in history] == [1, 2]
    assert folds["metrics.test_pcc_acg"].notna().sum() == 4  # the evaluation ran after the first run only
    assert folds["metrics.test_pcc_gene_specific"].notna().sum() == 4
    # the full run's parent: overall metrics through the catalog's MLflow dataset, the report through the hook
    full = runs[runs["params.train.teacher"] == "ema"]
    parent = full[full["tags.mlflow.parentRunId"].isna()].iloc[0]
    assert np.isfinite(parent["metrics.overall.spahgc/pcc_acg"])
    assert np.isfinite(parent["metrics.overall.depth_rank1/pcc_gene_specific"])
    assert "spahgc_report.html" in [a.path for a in client.list_artifacts(parent["run_id"])]

    _kedro(project_copy, "viz", "build")
    assert (project_copy / "build" / "index.html").is_file()
