"""Project hooks: create the embedded demo dataset the first time it is needed; fail early without a model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


class DemoDataHooks:
    """Generates `data/01_raw/demo` before a run that reads it, when it is absent."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """Generate the demo raw data if this run ingests the demo dataset and it is missing."""
        runtime = run_params.get("runtime_params") or {}
        if runtime.get("dataset", "demo") != "demo" or "raw_slides" not in pipeline.inputs():
            return
        raw_dir = Path(runtime.get("raw_dir", "data/01_raw/demo"))
        if not raw_dir.is_absolute():
            raw_dir = Path(run_params.get("project_path") or ".") / raw_dir
        if raw_dir.exists():
            return
        from spahgc_kedro.demo import generate_demo

        logger.info("Demo data not found at %s: generating it (a few seconds).", raw_dir)
        generate_demo(raw_dir)


class TrainedModelHooks:
    """Stops a run that reads `trained_models` (e.g. --pipeline=predict) before any node, when none is saved."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """Fail naming the train pipeline when `trained_models` is a free input with no saved version."""
        if "trained_models" not in pipeline.inputs() or catalog.exists("trained_models"):
            return
        where = getattr(catalog.get("trained_models"), "_filepath", "trained_models")
        raise FileNotFoundError(
            f"No trained model yet at '{where}': run kedro run --pipeline=train first "
            "(with the same --params dataset/encoder), or the full `kedro run`."
        )
