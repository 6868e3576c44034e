"""The project's run command: `key:value` and `key=value` params, `--pipeline NAME`."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import click
import pytest

from spahgc_kedro.cli import parse_params
from tests.helpers.project import run_kedro


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("dataset:alex", {"dataset": "alex"}),
        ("dataset=alex", {"dataset": "alex"}),
        ("dataset:her2st,raw_dir:../shared/data/her2st", {"dataset": "her2st", "raw_dir": "../shared/data/her2st"}),
        ("train.epochs:5,train.lr=0.001", {"train": {"epochs": 5, "lr": 0.001}}),
        ("raw_dir=C:/data/x", {"raw_dir": "C:/data/x"}),
    ],
)
def test_parse_params_accepts_both_separators(raw, expected):
    assert parse_params(None, None, raw) == expected


@pytest.mark.parametrize("key", ["hf_token", "mlflow.password", "api_key", "s3.secret"])
def test_a_secret_is_refused_because_params_are_logged(key):
    with pytest.raises(click.BadParameter, match="looks like a secret.*environment"):
        parse_params(None, None, f"{key}:abc123")
    # ordinary names that merely contain those letters are parameters like any other
    assert parse_params(None, None, "tokenizer_size:3,keyframes:2") == {"tokenizer_size": 3, "keyframes": 2}


def test_parse_params_rejects_a_bare_word():
    with pytest.raises(click.BadParameter, match="key:value"):
        parse_params(None, None, "dataset")


def test_real_cli_takes_colon_params_and_pipeline_flag(project_copy: Path):
    result = run_kedro(
        project_copy, "run", "--pipeline=ingestion", "--params", "dataset:demo,datasets.demo.exclude:[B2]"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "'--pipeline' is deprecated" not in result.stdout + result.stderr
    written = sorted(p.stem for p in (project_copy / "data/02_intermediate/demo/sections").glob("*.h5ad"))
    assert written == ["A1", "A2", "B1"]
    section = ad.read_h5ad(project_copy / "data/02_intermediate/demo/sections/A1.h5ad")
    assert section.uns["patient_id"] == "A" and section.n_obs > 200


def test_help_prints_usage_and_nothing_else(project_copy: Path):
    result = run_kedro(project_copy, "--help")
    assert result.returncode == 0
    # no start-up chatter: MLflow's untyped-predict warning, Kedro's logging-config line
    assert result.stderr == "" and result.stdout.startswith("Usage: kedro")
