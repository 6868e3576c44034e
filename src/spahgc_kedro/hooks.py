"""Project hooks: create the demo dataset when first needed; stop early when an input is missing;
hand the MLflow run to worker processes."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from spahgc_kedro.errors import MissingInputError

logger = logging.getLogger(__name__)


class DemoDataHooks:
    """Generates `<data_root>/01_raw/demo` (data/ by default) before a run that reads it, when it is absent."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """Generate the demo raw data if this run ingests the demo dataset and it is missing."""
        runtime = run_params.get("runtime_params") or {}
        if runtime.get("dataset", "demo") != "demo" or "raw_slides" not in pipeline.inputs():
            return
        raw_dir = Path(runtime.get("raw_dir") or Path(runtime.get("data_root") or "data") / "01_raw" / "demo")
        if not raw_dir.is_absolute():
            raw_dir = Path(run_params.get("project_path") or ".") / raw_dir
        if raw_dir.exists():
            return
        from spahgc_kedro.demo import generate_demo

        logger.info("Demo data not found at %s: generating its four sections.", raw_dir)
        generate_demo(raw_dir)


class ParameterValidationHooks:
    """Checks every parameter against `params.py`'s schema as soon as the run's context exists,
    so a bad value stops the run before any node, file or MLflow run is made."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Raise one ParameterError naming every value the run cannot use."""
        from spahgc_kedro.params import validate_parameters

        validate_parameters(context.params)


def stage_producers() -> dict[str, str]:
    """{dataset: the stage pipeline (or predict) that makes it}, built from each pipeline's module."""
    from importlib import import_module

    from spahgc_kedro.pipeline_registry import STAGES

    producers: dict[str, str] = {}
    # each stage's own module: a run of one pipeline only registers that one
    for name in (*STAGES, "predict"):
        for output in import_module(f"spahgc_kedro.pipelines.{name}").create_pipeline().all_outputs():
            producers.setdefault(output, name)
    return producers


def missing_inputs(pipeline: Any, catalog: Any) -> dict[str, str]:
    """{input: stage that makes it} for the pipeline's project-made inputs that have no data yet."""
    producers = stage_producers()
    return {
        name: producers[name]
        for name in sorted(pipeline.inputs())
        if name in producers and name in catalog and not _exists(catalog, name)
    }


class MissingInputsHooks:
    """Stops a run before any node when an input another pipeline makes is not there yet."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """Fail naming the pipeline to run first for every missing project-made input."""
        from spahgc_kedro.pipeline_registry import STAGES

        missing = missing_inputs(pipeline, catalog)
        if missing:
            listed = ", ".join(f"{name} (made by the `{stage}` pipeline)" for name, stage in missing.items())
            first = next(stage for stage in (*STAGES, "predict") if stage in missing.values())
            raise MissingInputError(
                f"Not found: {listed}. Run `kedro run --pipeline={first}` first with the same "
                "--params dataset/encoder (or the whole `kedro run`)."
            )


def _exists(catalog: Any, name: str) -> bool:
    """Whether a dataset has data; partitioned datasets raise on an empty folder instead of saying no."""
    try:
        return bool(catalog.exists(name))
    except Exception:  # noqa: BLE001 - any failure to find data means it is not usable
        return False


class RunTrackingHooks:
    """What kedro-mlflow's run needs besides parameters: a name and tags that tell runs apart, the
    training summary, the report as an artifact (so the report module knows nothing of MLflow).

    A hook rather than kedro-mlflow's MlflowArtifactDataset: that wrapper gives a versioned
    dataset a save version of its own, which Kedro 1.7's catalog refuses.
    """

    ARTIFACTS = {"report": "spahgc_report.html"}

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """Name and tag the run kedro-mlflow has just started (it runs first: plugins' hooks are called first)."""
        import shlex
        import sys

        if "mlflow" not in sys.modules:
            return
        from spahgc_kedro.tracking import describe_pipeline_run

        runtime = run_params.get("runtime_params") or {}
        describe_pipeline_run(
            list(run_params.get("pipeline_names") or []),
            str(runtime.get("dataset", "demo")),
            str(runtime.get("encoder", "efficientnet_lite0")),
            str(run_params.get("runner", "")),
            shlex.join(["kedro", *sys.argv[1:]]),
        )

    @hook_impl
    def after_node_run(self, node: Any, outputs: dict[str, Any]) -> None:
        """After the folds are merged: the training summary on the pipeline's run."""
        if "trained_models" in outputs:
            from spahgc_kedro.tracking import log_training_summary

            log_training_summary(outputs["trained_models"])

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        """Log a report dataset's text as an artifact of the active run."""
        if dataset_name in self.ARTIFACTS:
            from spahgc_kedro.tracking import log_pipeline_artifact

            log_pipeline_artifact(data, self.ARTIFACTS[dataset_name])


class WorkerTrackingHooks:
    """Lets nodes in ParallelRunner / Dask worker processes log under the run kedro-mlflow started.

    Spawned workers do not share the driver's MLflow state, so the tracking URI, experiment and
    run id travel as MLflow's own environment variables, which workers started after this hook
    inherit: a worker's first MLflow call (kedro-mlflow's parameter logging, or `child_run`)
    resumes the driver's run instead of opening a stray one.
    """

    def __init__(self) -> None:
        self._previous: dict[str, str | None] = {}

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """Publish the active MLflow run (if any) to processes started from now on."""
        import sys

        mlflow = sys.modules.get("mlflow")
        run = mlflow.active_run() if mlflow is not None else None
        if run is None:
            return
        published = {
            "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
            "MLFLOW_RUN_ID": run.info.run_id,
            "MLFLOW_EXPERIMENT_ID": run.info.experiment_id,
        }
        self._previous = {name: os.environ.get(name) for name in published}
        os.environ.update(published)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result: Any, pipeline: Any, catalog: Any) -> None:
        """Restore the environment as it was before the run."""
        self._restore()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """Restore the environment as it was before the failed run."""
        self._restore()

    def _restore(self) -> None:
        for name, value in self._previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._previous = {}
