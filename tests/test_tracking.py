"""MLflow hand-over to worker processes: published run, nesting with MLFLOW_RUN_ID set, restore."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

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


def test_a_fold_run_names_its_process_from_its_creation(monkeypatch):
    """A process killed right after creating its fold run (before its params and tags are written) still
    leaves a run that the next start can tell is orphaned."""
    import mlflow

    from spahgc_kedro.tracking import PROCESS_TAG

    def killed(*args, **kwargs):
        raise RuntimeError("the process died here")

    monkeypatch.setattr(mlflow, "log_params", killed)
    with mlflow.start_run(run_name="pipeline") as parent, pytest.raises(RuntimeError):
        with fold_run("fold-A1", {"device": "cpu"}, {"fold": "A1"}):
            pass
    (child,) = mlflow.MlflowClient().search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert child.data.tags[PROCESS_TAG] == f"{socket.gethostname()}:{os.getpid()}"


def test_without_an_active_run_nothing_is_logged():
    import mlflow

    with fold_run("fold-A1", {"device": "cpu"}, {"fold": "A1"}) as run:
        assert run is None
    assert mlflow.active_run() is None


def test_runs_of_a_dead_process_are_marked_failed_others_are_left_alone():
    import socket
    import subprocess
    import sys

    import mlflow

    from spahgc_kedro.tracking import PROCESS_TAG, close_orphaned_runs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("orphans")
    runs = {}
    for name, process in {
        "killed": f"{here}:{dead.pid}",
        "alive": f"{here}:{os.getpid()}",
        "elsewhere": f"other-host:{dead.pid}",
    }.items():
        runs[name] = client.create_run(experiment, tags={PROCESS_TAG: process}).info.run_id
    current = client.create_run(experiment).info.run_id
    assert close_orphaned_runs(experiment, current) == [runs["killed"]]
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"killed": "FAILED", "alive": "RUNNING", "elsewhere": "RUNNING"}
    assert "later start" in client.get_run(runs["killed"]).data.tags["spahgc.note"]


@pytest.mark.slow
def test_killed_and_interrupted_runs_end_with_the_truth(graph_ready_project):
    """SIGKILL mid-training: the next start marks its runs FAILED; SIGTERM: the runs end KILLED (or FAILED),
    never FINISHED or RUNNING."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    kedro = Path(sys.executable).with_name("kedro")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    store = graph_ready_project / "mlflow.db"
    tiny = "train.model.hidden:16,train.model.heads:2,train.model.n_layers:1,train.patience:0"

    def training(epochs):
        return subprocess.Popen(
            [str(kedro), "run", "--pipeline=train", "--params", f"{tiny},train.epochs:{epochs}"],
            cwd=graph_ready_project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def statuses():
        with sqlite3.connect(store) as db:
            return dict(db.execute("select run_uuid, status from runs").fetchall())

    def wait_for_fold_run(process, seen):
        for _ in range(600):
            if store.exists() and len(set(statuses()) - seen) >= 2:  # the pipeline's run and a fold run
                return set(statuses()) - seen
            assert process.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.5)
        raise AssertionError("no fold run started")

    killed = training(5000)
    killed_runs = wait_for_fold_run(killed, set())
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert {statuses()[r] for r in killed_runs} == {"RUNNING"}  # what SIGKILL leaves behind

    interrupted = training(5000)
    interrupted_runs = wait_for_fold_run(interrupted, killed_runs)
    interrupted.send_signal(signal.SIGTERM)
    assert interrupted.wait(timeout=120) == 1
    final = statuses()
    assert {final[r] for r in killed_runs} == {"FAILED"}  # closed when the next run started
    # the fold run is ended KILLED by the CLI; kedro-mlflow's error hook may end the pipeline's run FAILED first
    assert {final[r] for r in interrupted_runs} <= {"KILLED", "FAILED"}
    assert "KILLED" in {final[r] for r in interrupted_runs}
