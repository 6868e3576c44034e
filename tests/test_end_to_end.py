"""The real CLI end to end on the generated demo data: every stage, MLflow store, kedro-viz build."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spahgc_kedro.pipeline_registry import STAGES
from tests.helpers.browser import chromium, rendered_dom, screenshot, served
from tests.helpers.project import PROJECT_ROOT, run_kedro

TINY_MODEL = "train.epochs:2,train.model.hidden:32,train.model.heads:2,train.model.n_layers:1"


def _kedro(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    result = run_kedro(project, *args, timeout=1800, **env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def _executed_notebook(project: Path):
    """notebooks/spahgc_outputs.ipynb executed in `project` (raises on the first failing cell)."""
    import nbformat
    from nbclient import NotebookClient

    shutil.copytree(PROJECT_ROOT / "notebooks", project / "notebooks")
    notebook = nbformat.read(project / "notebooks" / "spahgc_outputs.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(project / "notebooks")}}
    ).execute()
    return notebook


@pytest.mark.slow
def test_full_run_logs_comparable_runs_and_builds_viz(project_copy: Path):
    import mlflow

    # a fresh clone: the train stage alone runs the stages it needs first
    first = _kedro(project_copy, "run", "--pipeline=train", "--params", TINY_MODEL)
    assert "so these run first: ingestion, embedding, graph" in first.stdout + first.stderr
    # not a terminal: one line per event, no progress-bar redraws, no params chatter
    log = first.stdout + first.stderr
    assert "\r" not in log and "Loading data from params:" not in log
    _kedro(project_copy, "run", "--params", TINY_MODEL)
    _kedro(project_copy, "run", "--pipeline=train", "--params", f"{TINY_MODEL},train.teacher:frozen")

    data = project_copy / "data"
    predictions = data / "07_model_output/demo/efficientnet_lite0/predictions"
    assert sorted(p.stem for p in predictions.glob("*.h5ad")) == ["A1", "A2", "B1", "B2"]
    assert len(list((data / "06_models/demo/efficientnet_lite0/spahgc.pt").iterdir())) == 3  # one version per run
    assert list((data / "08_reporting/demo/efficientnet_lite0").rglob("*.html")), "no HTML report written"

    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["spahgc-demo"])
    folds = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(folds) == 12 and set(folds["status"]) == {"FINISHED"}
    assert sorted(folds["params.teacher"]) == ["ema"] * 8 + ["frozen"] * 4
    assert folds["metrics.val_pcc"].notna().all()
    client = mlflow.tracking.MlflowClient()
    history = client.get_metric_history(folds.iloc[0]["run_id"], "train_loss")
    assert [m.step for m in history] == [1, 2]
    assert folds["metrics.test_pcc_acg"].notna().sum() == 4  # the evaluation ran in the full run only
    assert folds["metrics.test_pcc_gene_specific"].notna().sum() == 4
    # the full run's parent: overall metrics through the catalog's MLflow dataset, the report through the hook
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    # runs say what they are: pipelines, dataset, encoder and time; folds under their parent's name
    assert sorted(name.rsplit("-", 2)[0] for name in parents["tags.mlflow.runName"]) == [
        "__default__-demo-efficientnet_lite0",
        "ingestion+embedding+graph+train-demo-efficientnet_lite0",
        "train-demo-efficientnet_lite0",
    ]
    assert set(parents["tags.runner"]) == {"SequentialRunner"}
    assert all("--params train.epochs:2" in command for command in parents["tags.kedro_command"])
    names = dict(zip(parents["run_id"], parents["tags.mlflow.runName"], strict=True))
    assert all(
        fold["tags.mlflow.runName"] == f"{names[fold['tags.mlflow.parentRunId']]}/{fold['tags.fold']}"
        for _, fold in folds.iterrows()
    )
    assert parents["metrics.mean_best_val_pcc"].notna().sum() == 3
    experiment = mlflow.get_experiment_by_name("spahgc-demo")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    full = parents[parents["metrics.overall.spahgc/pcc_acg"].notna()]
    assert len(full) == 1
    assert np.isfinite(full.iloc[0]["metrics.overall.depth_rank1/pcc_gene_specific"])
    assert "spahgc_report.html" in [a.path for a in client.list_artifacts(full.iloc[0]["run_id"])]

    # rotated validation: the head folds are the last run's, so their stored models are reused; the
    # members train, and the evaluation scores their mean as its own row
    rotated = _kedro(
        project_copy, "run", "--params", f"{TINY_MODEL},train.teacher:frozen,graph.validation:rotate", COLUMNS="400"
    )
    log = rotated.stdout + rotated.stderr
    assert log.count("reusing the model stored") == 4 and log.count(": training on") == 8
    assert len(list((data / "06_models/demo/efficientnet_lite0/fold_models").glob("*.pt"))) == 12
    (latest,) = sorted((data / "08_reporting/demo/efficientnet_lite0/evaluation/comparison_table.parquet").iterdir())[
        -1:
    ]
    comparison = pd.read_parquet(next(latest.glob("*.parquet"))).set_index("method")
    assert list(comparison.index[:2]) == ["spahgc", "spahgc_ensemble"]
    assert comparison.loc["spahgc_ensemble", "n_test_sections"] == 4
    assert sorted(p.stem for p in predictions.glob("*.h5ad"))[:4] == ["A1", "A1@A2-A1", "A1@B2-A1", "A2"]

    # the example notebook runs on these outputs: catalog loads, a model that reproduces its prediction, a new slide
    notebook = _executed_notebook(project_copy)
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "largest difference from the stored prediction" in printed and "12 models" in printed

    _kedro(project_copy, "viz", "build")
    assert (project_copy / "build" / "index.html").is_file()
    # every node, the work-group ones included, carries its code and file for the viz side panel
    api = project_copy / "build" / "api"
    tasks = [n for n in json.loads((api / "main").read_text())["nodes"] if n["type"] == "task"]
    details = {n["name"]: json.loads((api / "nodes" / n["id"]).read_text()) for n in tasks}
    assert len(details) > 20 and all(d["code"] and d["filepath"] for d in details.values())
    assert details["train_fold_group_0"]["code"].startswith("def train_fold_group(")

    # what a user sees: the viz DAG and the report, rendered by a real browser
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the browser checks did not run")
    with served(project_copy / "build") as url:
        dom = rendered_dom(browser, url)
        png = screenshot(browser, url, project_copy / "viz.png", size=(1400, 900))
    drawn = set(re.findall(r'class="pipeline-node__text"[^>]*>([^<]+)<', dom))
    # one collapsed box per stage (namespaces), with the datasets that pass between them
    assert set(STAGES) | {"section_graphs", "predictions", "report"} <= drawn
    assert "train_fold_group_0" not in drawn
    assert png.stat().st_size > 20_000
    (report,) = sorted((data / "08_reporting/demo/efficientnet_lite0/report.html").glob("*/report.html"))[-1:]
    assert report.stat().st_size < 3_000_000  # plotly.js compressed, one downsampled thumbnail per section
    dom = rendered_dom(browser, report.as_uri())
    assert dom.count('class="main-svg"') >= 4  # plotly drew the comparison chart and the spatial maps
    assert "spahgc_ensemble" in dom and "depth_rank1" in dom
    assert screenshot(browser, report.as_uri(), project_copy / "report.png").stat().st_size > 20_000


def test_a_user_error_ends_in_one_short_message(project_copy: Path):
    result = run_kedro(project_copy, "run", "--pipeline=ingestion", "--params", "dataset:alex")
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Error: The raw data of dataset 'alex' is not here" in output and "10.48610/4fb74a9" in output
    assert "Traceback" not in output and "╭" not in output
