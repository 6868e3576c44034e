"""Project settings: config loader and session store."""

from kedro.config import OmegaConfigLoader

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
}

from spahgc_kedro.hooks import DemoDataHooks, MissingInputsHooks  # noqa: E402

HOOKS = (DemoDataHooks(), MissingInputsHooks())
