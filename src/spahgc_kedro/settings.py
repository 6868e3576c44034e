"""Project settings: config loader, hooks, and how ParallelRunner starts its workers."""

import os
import warnings

from kedro.config import OmegaConfigLoader

# kedro-mlflow defines an MLflow PythonModel at import time, and MLflow warns about its untyped `predict` under a
# "once" filter of its own that overrides any "ignore": import it here, before Kedro loads it, recording that warning.
with warnings.catch_warnings(record=True):
    import kedro_mlflow.mlflow  # noqa: F401

# ParallelRunner forks by default on Linux; a fork of a process whose torch thread pool
# has started can deadlock, so workers are spawned (override with KEDRO_MP_CONTEXT=fork).
os.environ.setdefault("KEDRO_MP_CONTEXT", "spawn")

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
}

from spahgc_kedro.hooks import (  # noqa: E402
    DemoDataHooks,
    MissingInputsHooks,
    ParameterValidationHooks,
    RunTrackingHooks,
    WorkerTrackingHooks,
)

HOOKS = (
    ParameterValidationHooks(),
    DemoDataHooks(),
    MissingInputsHooks(),
    WorkerTrackingHooks(),
    RunTrackingHooks(),
)
