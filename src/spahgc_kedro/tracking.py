"""MLflow logging that follows kedro-mlflow: fold runs nested under the pipeline's run, or nothing.

kedro-mlflow opens the pipeline's run and logs the parameters; the catalog logs the report
and the overall metrics (kedro-mlflow datasets). What no catalog dataset can do lives here:
one nested run per fold, with its epochs, best model, test-section predictions and, after
the evaluation, its test metrics.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from spahgc_kedro.model.training import FitResult

__all__ = [
    "FoldRun",
    "active_run_id",
    "close_orphaned_runs",
    "end_interrupted_runs",
    "describe_pipeline_run",
    "log_training_summary",
    "log_pipeline_artifact",
    "flatten",
    "fold_run",
    "log_fold_predictions",
    "log_fold_test_metrics",
    "resume_pipeline_run",
]

logger = logging.getLogger(__name__)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b": value} with values MLflow can store."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, int | float | bool | str) or value is None else str(value)
    return flat


def active_run_id() -> str | None:
    """The id of kedro-mlflow's run when tracking is on here, else None (MLflow is not even imported)."""
    import sys

    mlflow = sys.modules.get("mlflow")
    run = mlflow.active_run() if mlflow is not None else None
    return run.info.run_id if run is not None else None


def resume_pipeline_run() -> bool:
    """Whether kedro-mlflow's run is active here, resuming it first in a worker process."""
    import mlflow

    if mlflow.active_run() is None and os.environ.get("MLFLOW_RUN_ID"):
        # a worker process (WorkerTrackingHooks): MLflow resumes the driver's run from MLFLOW_RUN_ID
        mlflow.start_run()
    return mlflow.active_run() is not None


def describe_pipeline_run(pipelines: list[str], dataset: str, encoder: str, runner: str, command: str) -> None:
    """Name and tag kedro-mlflow's run for the UI: `<pipelines>-<dataset>-<encoder>-<time>`, the runner's class,
    the full command; and make the experiment open on its runs (MLflow 3's experiment kind)."""
    import re
    from datetime import datetime

    import mlflow

    run = mlflow.active_run()
    if run is None:
        return
    close_orphaned_runs(run.info.experiment_id, run.info.run_id)
    from spahgc_kedro.pipeline_registry import STAGES

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    pipelines = sorted(pipelines, key=lambda name: (STAGES.index(name) if name in STAGES else len(STAGES), name))
    runner_class = re.search(r"(\w*Runner)", runner)
    mlflow.set_tags(
        {
            "mlflow.runName": f"{'+'.join(pipelines) or '__default__'}-{dataset}-{encoder}-{stamp}",
            "runner": runner_class.group(1) if runner_class else runner,
            "kedro_command": command,
            # who runs it, so a later start can tell a run whose process died from one still going
            PROCESS_TAG: _this_process(),
        }
    )
    mlflow.MlflowClient().set_experiment_tag(
        run.info.experiment_id, "mlflow.experimentKind", "custom_model_development"
    )


PROCESS_TAG = "spahgc.process"


def _this_process() -> str:
    """`host:pid` of this process, as the process tag records it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_alive(process: str) -> bool:
    """Whether `host:pid` names a live process of this machine (other machines' runs are left alone)."""
    host, _, pid = process.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_orphaned_runs(experiment_id: str, current_run_id: str) -> list[str]:
    """Mark FAILED the runs left RUNNING by a process of this machine that has died (killed, crashed).

    A run of another live process (two runs at once), or of another machine, is left alone.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    closed = []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        process = run.data.tags.get(PROCESS_TAG)
        if run.info.run_id == current_run_id or process is None or _process_alive(process):
            continue
        client.set_tag(run.info.run_id, "spahgc.note", "marked FAILED at a later start: its process had ended")
        client.set_terminated(run.info.run_id, status="FAILED")
        closed.append(run.info.run_id)
    if closed:
        logger.warning("Marked %d MLflow runs FAILED: their process had ended without closing them.", len(closed))
    return closed


def end_interrupted_runs(status: str = "KILLED") -> None:
    """End every active run (fold runs first, then the pipeline's) with `status` after an interruption."""
    import sys

    mlflow = sys.modules.get("mlflow")
    while mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run(status=status)


def log_training_summary(trained_models: Mapping[str, Any]) -> None:
    """The pipeline run's mean over folds of the best validation PCC and of the epochs run (a train-only run
    has no test metrics: those come with the evaluation)."""
    import mlflow

    if not resume_pipeline_run() or not trained_models:
        return
    best = [max(r["val_pcc"] for r in c["history"]) for c in trained_models.values() if c["history"]]
    finite = [v for v in best if not math.isnan(v)]
    metrics = {"mean_epochs_run": sum(len(c["history"]) for c in trained_models.values()) / len(trained_models)}
    if finite:
        metrics["mean_best_val_pcc"] = sum(finite) / len(finite)
    mlflow.log_metrics(metrics)


def log_pipeline_artifact(text: str, filename: str) -> None:
    """A text file (the HTML report) attached to kedro-mlflow's run; nothing when tracking is off."""
    import mlflow

    if resume_pipeline_run():
        mlflow.log_text(text, filename)


class FoldRun:
    """A fold's nested MLflow run: per-epoch metrics and the best model."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_epoch(self, epoch: int, row: dict[str, float]) -> None:
        """The epoch's training and validation figures as metric histories (NaN ones skipped)."""
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch" and not math.isnan(v)}, step=epoch)

    def log_model(self, result: FitResult) -> None:
        """The best epoch, the model config and the best weights as an MLflow PyTorch model."""
        import mlflow
        import torch
        import torch_geometric

        from spahgc_kedro.model.training import load_model

        checkpoint = result.to_checkpoint(self.run_id)
        mlflow.log_dict(checkpoint["model_config"], "model_config.json")
        mlflow.log_metric("best_epoch", result.best_epoch)
        mlflow.log_metric("epochs_run", len(result.history))
        # explicit requirements: inferring them would import-scan and may reach the network;
        # pickle format: a graph model has no tensor input example for the pt2 tracer
        mlflow.pytorch.log_model(
            load_model(checkpoint),
            name="model",
            serialization_format="pickle",
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"torch-geometric=={torch_geometric.__version__}",
            ],
        )


@contextmanager
def fold_run(run_name: str, params: Mapping[str, Any], tags: dict[str, str]) -> Iterator[FoldRun | None]:
    """A nested MLflow run under kedro-mlflow's active run; yields None when tracking is off."""
    import mlflow

    if not resume_pipeline_run():
        logger.debug("No active MLflow run (tracking off for this pipeline): %s not logged.", run_name)
        yield None
        return
    parent_name = mlflow.active_run().info.run_name
    # with MLFLOW_RUN_ID set (WorkerTrackingHooks), MLflow would resume that run instead of nesting
    published = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        # the process tag goes in with the run: a process killed before its later writes still leaves a run
        # that the next start can close
        started = mlflow.start_run(run_name=run_name, nested=True, tags={PROCESS_TAG: _this_process()})
    finally:
        if published is not None:
            os.environ["MLFLOW_RUN_ID"] = published  # for worker processes started later
    with started as run:
        if parent_name:
            # unique across runs, and readable as the parent's in chart legends and the compare view
            mlflow.set_tag("mlflow.runName", f"{parent_name}/{tags.get('fold', run_name)}")
        mlflow.log_params({k: str(v)[:250] for k, v in flatten(params).items()})
        mlflow.set_tags({**tags, "parent_run_name": parent_name or ""})
        yield FoldRun(run.info.run_id)


def log_fold_predictions(predictions: Mapping[str, Any]) -> None:
    """Attach each test section's prediction (h5ad) to the run of the fold that made it."""
    import tempfile
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from spahgc_kedro.partitions import iter_partitions
    from spahgc_kedro.schema import Uns

    client = None  # created only when there is a run: a client alone makes an empty store
    for key, adata in iter_partitions(predictions):
        run_id = adata.uns.get(Uns.MLFLOW_RUN_ID)
        if not run_id:
            continue
        client = client or MlflowClient()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"predictions_{key}.h5ad"
            adata.write_h5ad(path)
            client.log_artifact(run_id, str(path), artifact_path="predictions")


def log_fold_test_metrics(fold_metrics: pd.DataFrame, method: str, metrics: tuple[str, ...]) -> None:
    """Each fold's test metrics of `method` as `test_<metric>` in the fold's own run (when it has one)."""
    from mlflow.tracking import MlflowClient

    rows = fold_metrics[(fold_metrics["method"] == method) & (fold_metrics["mlflow_run_id"] != "")]
    if rows.empty:
        return
    client = MlflowClient()
    for _, row in rows.iterrows():
        try:
            for metric in metrics:
                if math.isfinite(row[metric]):
                    client.log_metric(row["mlflow_run_id"], f"test_{metric}", float(row[metric]))
        except Exception as error:  # noqa: BLE001 - a deleted run or moved store must not fail the evaluation
            logger.warning(
                "Fold '%s': test metrics not logged to run %s (%s).", row["fold"], row["mlflow_run_id"], error
            )
