"""Fixtures shared by the whole suite: project paths, the real shared data, a project copy."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers.project import SHARED_DATA, copy_project, run_kedro
from tests.helpers.synthetic_folds import make_run
from tests.helpers.tiny_sections import graph_params as tiny_graph_params
from tests.helpers.tiny_sections import tiny_dataset


@pytest.fixture(autouse=True)
def isolated_mlflow_store(tmp_path_factory, monkeypatch) -> str:
    """Every test's MLflow calls go to a store of its own, never to mlflow.db in the repository."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    if "mlflow" in sys.modules:
        import mlflow

        # an earlier test's set_tracking_uri / set_experiment (kedro-mlflow's session hooks) would
        # win over the environment variable and point at an experiment this store does not have
        mlflow.set_tracking_uri(uri)
        monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    return uri


@pytest.fixture(scope="session")
def her2st_dir() -> Path:
    """The real HER2+ sections (patient C) in the her2st layout, read in place."""
    path = SHARED_DATA / "her2st"
    if not (path / "data" / "ST-cnts").is_dir():
        pytest.skip(f"real HER2+ data not found at {path} (shared data absent on this machine)")
    return path


@pytest.fixture(scope="session")
def her2st_gene_list() -> Path:
    """The 785-gene HER2+ panel of HisToGene/Hist2ST, read in place."""
    path = SHARED_DATA / "gene_lists" / "her_hvg_cut_1000.npy"
    if not path.is_file():
        pytest.skip(f"HER2+ gene list not found at {path} (shared data absent on this machine)")
    return path


@pytest.fixture(scope="session")
def demo_raw(tmp_path_factory) -> Path:
    """The generated demo dataset, written once per test session."""
    from spahgc_kedro.demo import generate_demo

    return generate_demo(tmp_path_factory.mktemp("demo_raw") / "demo")


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """A throwaway copy of the project, so CLI runs never touch the real data/ folder."""
    return copy_project(tmp_path)


@pytest.fixture(scope="session")
def demo_through_graph(tmp_path_factory, demo_raw) -> Path:
    """A project copy whose demo data went through ingestion, embedding and graph, once per test session."""
    project = copy_project(tmp_path_factory.mktemp("demo_through_graph") / "project")
    shutil.copytree(demo_raw, project / "data" / "01_raw" / "demo")  # where `kedro run` would generate it
    result = run_kedro(project, "run", "--pipeline=graph")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project


@pytest.fixture
def graph_ready_project(tmp_path, demo_through_graph) -> Path:
    """A throwaway copy of `demo_through_graph` (its data and MLflow store), where training can start at once."""
    return Path(shutil.copytree(demo_through_graph, tmp_path / "project"))


@pytest.fixture
def tiny():
    """Five tiny sections (patients A, A, B, B, C), their embeddings and manifest; S5's counts are all >= 1000."""
    return tiny_dataset()


@pytest.fixture
def graph_params():
    """The graph parameters with small blocks."""
    return tiny_graph_params()


@pytest.fixture(scope="session")
def synthetic_run():
    """Tiny folds (3 sections of 36 spots, genes G0-G9) with section graphs and noisy predictions."""
    return make_run()
