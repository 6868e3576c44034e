"""Every parameter is checked once, before a run starts: bad values are named with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from spahgc_kedro.errors import ParameterError
from spahgc_kedro.params import validate_parameters
from tests.helpers.project import project_parameters, run_kedro


@pytest.mark.parametrize(
    "dataset", ["demo", "her2st", "cscc", "alex", "visium_bc", "hest_lymph_node", "visium", "hest"]
)
def test_the_shipped_parameters_are_valid_for_every_preset(dataset):
    validate_parameters(project_parameters(dataset=dataset))


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"train": {"epochs": 0}}, "train.epochs = 0: Input should be greater than or equal to 1"),
        ({"train": {"epochs": "abc"}}, "train.epochs = 'abc'"),
        ({"train": {"epoch": 5}}, "train.epoch = 5: Extra inputs are not permitted"),
        ({"train": {"teacher": "mean"}}, "train.teacher = 'mean'"),
        ({"train": {"mask_reference": 1.0}}, "train.mask_reference = 1.0"),
        ({"train": {"model": {"hidden": 30}}}, "hidden (30) must be a multiple of heads (4)"),
        ({"train": {"model": {"decoder": "mlp"}}}, "train.model.decoder = 'mlp'"),
        ({"graph": {"k_refer": 0}}, "graph.k_refer = 0"),
        ({"graph": {"k_refer": -3}}, "graph.k_refer = -3"),
        ({"graph": {"fold_scheme": "random"}}, "graph.fold_scheme = 'random'"),
        ({"graph": {"retrieval_device": "tpu"}}, "graph.retrieval_device = 'tpu'"),
        ({"embedding": {"views": 4}}, "embedding.views = 4"),
        ({"embedding": {"context_scale": 0}}, "embedding.context_scale = 0"),
        ({"embedding": {"weights_path": "missing/uni.bin"}}, "no file at 'missing/uni.bin'"),
        ({"predict": {"min_tissue_fraction": 2}}, "predict.min_tissue_fraction = 2"),
        ({"evaluation": {"baselines": {"lasso": {}}}}, "evaluation.baselines.lasso"),
        ({"dataset": "bmini"}, "dataset = 'bmini': no such preset"),
        ({"device": "gpu0"}, "train.device = 'gpu0'"),
    ],
)
def test_a_bad_value_is_named_with_what_is_allowed(override, named):
    with pytest.raises(ParameterError, match="Parameters the run cannot use") as raised:
        validate_parameters(project_parameters(**override))
    assert named in str(raised.value)


def test_fold_and_section_names_may_be_numbers():
    """A numeric patient or section name (as Kedro reads `--params graph.fold=1`) is a name, not a type error."""
    validate_parameters(project_parameters(graph={"fold": 1, "validation": 2}, predict={"model_fold": 3}))


def test_every_problem_is_listed_at_once():
    bad = project_parameters(train={"epochs": 0}, graph={"k_close": -1})
    with pytest.raises(ParameterError) as raised:
        validate_parameters(bad)
    assert "train.epochs" in str(raised.value) and "graph.k_close" in str(raised.value)


def test_a_bad_parameter_stops_kedro_run_before_any_run_or_file(project_copy: Path):
    result = run_kedro(project_copy, "run", "--pipeline=train", "--params", "train.epochs:0,graph.k_refer:-3")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert "train.epochs = 0" in output and "graph.k_refer = -3" in output
    assert "Traceback" not in output
    assert not any((project_copy / "data").iterdir()), "nothing may be written"
    assert not (project_copy / "mlflow.db").exists() or _no_runs(project_copy / "mlflow.db")


def _no_runs(store: Path) -> bool:
    import sqlite3

    with sqlite3.connect(store) as db:
        return db.execute("select count(*) from runs").fetchone()[0] == 0
