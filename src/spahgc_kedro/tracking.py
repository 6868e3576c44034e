"""MLflow logging that follows kedro-mlflow: child runs under the pipeline's run, or nothing."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b": value} with values MLflow can store."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, (int, float, bool, str)) or value is None else str(value)
    return flat


def pipeline_run_active() -> bool:
    """Whether kedro-mlflow's run is active here, resuming it first in a worker process."""
    import mlflow

    if mlflow.active_run() is None and os.environ.get("MLFLOW_RUN_ID"):
        # a worker process (WorkerTrackingHooks): MLflow resumes the driver's run from MLFLOW_RUN_ID
        mlflow.start_run()
    return mlflow.active_run() is not None


@contextmanager
def child_run(run_name: str, params: dict[str, Any], tags: dict[str, str]) -> Iterator[str | None]:
    """A nested MLflow run under kedro-mlflow's active run; yields its id, or None when tracking is off."""
    import mlflow

    if not pipeline_run_active():
        logger.debug("No active MLflow run (tracking off for this pipeline): %s not logged.", run_name)
        yield None
        return
    # with MLFLOW_RUN_ID set (WorkerTrackingHooks), MLflow would resume that run instead of nesting
    published = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        started = mlflow.start_run(run_name=run_name, nested=True)
    finally:
        if published is not None:
            os.environ["MLFLOW_RUN_ID"] = published  # for worker processes started later
    with started as run:
        mlflow.log_params({k: str(v)[:250] for k, v in flatten(params).items()})
        mlflow.set_tags(tags)
        yield run.info.run_id
