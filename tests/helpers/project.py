"""The project's own paths and resolved parameters, as `kedro run` sees them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def _config(kind: str, runtime_params: dict[str, Any]) -> dict[str, Any]:
    from kedro.config import OmegaConfigLoader

    loader = OmegaConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local", runtime_params=runtime_params
    )
    return loader[kind]


def project_parameters(**runtime_params: Any) -> dict[str, Any]:
    """conf/base parameters resolved by Kedro's config loader (interpolations such as `${seed}` filled in)."""
    return _config("parameters", runtime_params)


def project_catalog(**runtime_params: Any) -> dict[str, Any]:
    """conf/base catalog entries, templates resolved, for these runtime parameters (e.g. dataset, encoder)."""
    return _config("catalog", runtime_params)


def train_params(**overrides: Any) -> dict[str, Any]:
    """The `train` parameters with a tiny model (2 heads, 1 layer, hidden 16) and 3 epochs on the CPU."""
    params = project_parameters()["train"]
    model = {**params["model"], "hidden": 16, "heads": 2, "n_layers": 1}
    return {**params, "model": model, "epochs": 3, "device": "cpu", **overrides}
