"""The project's own paths and resolved parameters, as `kedro run` sees them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# the mutation run (`make mutation`) tests a copy of the project in mutants/ and points here explicitly
SHARED_DATA = Path(os.environ.get("SPAHGC_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


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


def copy_project(root: Path) -> Path:
    """A throwaway copy of the project (config with its logging, sources, an empty data/) at `root`, so CLI runs never touch the
    real data/ folder or MLflow store."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "conf" / "base", root / "conf" / "base")
    shutil.copy(PROJECT_ROOT / "conf" / "logging.yml", root / "conf" / "logging.yml")
    (root / "conf" / "local").mkdir()
    (root / "data").mkdir()
    shutil.copytree(PROJECT_ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return root


def run_kedro(project: Path, *args: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """The real `kedro` command of this environment, run in `project` (telemetry off, output captured)."""
    kedro = Path(sys.executable).with_name("kedro")
    environment = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", **env}
    return subprocess.run(
        [str(kedro), *args], cwd=project, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )
