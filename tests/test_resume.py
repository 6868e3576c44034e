"""Kill tests: SIGKILL a real `kedro run` once a stage has stored part of its work, rerun, and check that the
rerun resumes from what was stored (and only from that)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.project import run_kedro


def kill_once_written(project: Path, folder: Path, pattern: str, *args: str) -> list[str]:
    """Start `kedro run *args`, SIGKILL it as soon as `folder` holds a file matching `pattern`; those files' stems."""
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("kedro")), "run", *args],
        cwd=project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(3000):
        if any(folder.glob(pattern)):
            break
        assert process.poll() is None, f"`kedro run {' '.join(args)}` ended before it stored anything in {folder}"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return sorted(path.name.removesuffix(pattern.lstrip("*")) for path in folder.glob(pattern))


@pytest.mark.slow
def test_embedding_killed_after_a_section_resumes_from_the_finished_sections(graph_ready_project):
    """SIGKILL once a section's embeddings are written: the rerun reuses them and embeds only the others."""
    cache = graph_ready_project / "data" / "04_feature" / "demo" / "efficientnet_lite0"
    shutil.rmtree(cache)  # the ingested sections stay: every section is to be embedded
    finished = kill_once_written(graph_ready_project, cache, "*.h5ad", "--pipeline=embedding")
    (manifest_path,) = (graph_ready_project / "data" / "02_intermediate" / "demo").glob(
        "section_manifest.json/*/*.json"
    )
    manifest = json.loads(manifest_path.read_text())
    sections = [s["section_id"] for s in manifest["sections"]]
    assert 0 < len(finished) < len(sections)

    rerun = run_kedro(graph_ready_project, "run", "--pipeline=embedding", COLUMNS="400")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    for section in sections:
        assert (f"Section {section}: embeddings unchanged, reusing" in log) == (section in finished), section
        assert (f"Section {section}: embedded " in log) == (section not in finished), section


@pytest.mark.slow
def test_training_killed_after_a_fold_resumes_from_the_finished_folds(graph_ready_project):
    """SIGKILL once a fold's model is stored: the rerun reuses it (the same weights, a new fold run naming the
    killed one) and trains only the other folds."""
    import mlflow
    import torch

    tiny = "train.model.hidden:16,train.model.heads:2,train.model.n_layers:1,train.patience:0,train.epochs:60"
    models = graph_ready_project / "data" / "06_models" / "demo" / "efficientnet_lite0"
    finished = kill_once_written(
        graph_ready_project, models / "fold_models", "*.pt", "--pipeline=train", "--params", tiny
    )
    stored = {fold: torch.load(models / "fold_models" / f"{fold}.pt", weights_only=True) for fold in finished}

    rerun = run_kedro(graph_ready_project, "run", "--pipeline=train", "--params", tiny, COLUMNS="400")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    folds = json.loads(
        (graph_ready_project / "data" / "05_model_input" / "demo" / "efficientnet_lite0" / "folds.json").read_text()
    )["folds"]
    assert 0 < len(finished) < len(folds)
    for fold in folds:
        assert (f"Fold {fold}: reusing the model stored" in log) == (fold in finished), fold
        assert (f"Fold {fold}: training on" in log) == (fold not in finished), fold
    (trained_path,) = (models / "spahgc.pt").glob("*/spahgc.pt")
    trained = torch.load(trained_path, weights_only=True)
    assert set(trained) == set(folds)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{graph_ready_project / 'mlflow.db'}")
    for fold in finished:
        assert all(torch.equal(trained[fold]["state_dict"][k], v) for k, v in stored[fold]["state_dict"].items())
        run = client.get_run(trained[fold]["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["resumed_from_run"] == stored[fold]["mlflow_run_id"]
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 60
