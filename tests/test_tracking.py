"""MLflow hand-over to worker processes: published run, nesting with MLFLOW_RUN_ID set, restore."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from spahgc_kedro.hooks import WorkerTrackingHooks
from spahgc_kedro.tracking import fold_run


def test_hook_publishes_the_active_run_and_restores_the_environment(monkeypatch):
    run = SimpleNamespace(info=SimpleNamespace(run_id="parent123", experiment_id="7"))
    fake = SimpleNamespace(active_run=lambda: run, get_tracking_uri=lambda: "sqlite:///x.db")
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///users.db")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    hooks = WorkerTrackingHooks()
    hooks.before_pipeline_run({}, None, None)
    assert os.environ["MLFLOW_RUN_ID"] == "parent123"
    assert os.environ["MLFLOW_EXPERIMENT_ID"] == "7"
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///x.db"
    hooks.after_pipeline_run({}, None, None, None)
    assert "MLFLOW_RUN_ID" not in os.environ
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///users.db"


def test_fold_run_nests_even_when_the_run_is_published(monkeypatch):
    import mlflow

    with mlflow.start_run(run_name="pipeline") as parent:
        # what WorkerTrackingHooks publishes; MLflow would otherwise resume this run
        monkeypatch.setenv("MLFLOW_RUN_ID", parent.info.run_id)
        with fold_run("fold-A1", {"device": "cpu", "model": {"hidden": 8}}, {"fold": "A1"}) as run:
            assert run.run_id != parent.info.run_id
            run.log_epoch(1, {"epoch": 1, "train_loss": 0.5, "val_pcc": float("nan")})
        assert mlflow.active_run().info.run_id == parent.info.run_id
    client = mlflow.MlflowClient()
    child = client.get_run(run.run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.params == {"device": "cpu", "model.hidden": "8"}
    assert child.data.metrics == {"train_loss": 0.5}  # NaN validation (no validation section) not logged
    assert client.get_run(parent.info.run_id).info.run_name == "pipeline"


def test_without_an_active_run_nothing_is_logged():
    import mlflow

    with fold_run("fold-A1", {"device": "cpu"}, {"fold": "A1"}) as run:
        assert run is None
    assert mlflow.active_run() is None
