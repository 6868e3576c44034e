"""Speed-up of running the train stage's fold groups in 2 worker processes instead of 1.

Runs the real CLI in a scratch copy of the project's `conf/` (under the benchmark work
dir, so the project's own `data/` and `mlflow.db` are untouched): the upstream stages
once with SequentialRunner, then `kedro run --pipeline=train` with SequentialRunner,
ParallelRunner with 1 worker and ParallelRunner with 2 workers, each timed end to end
(process start, imports, worker start-up and MLflow logging included). Each command
also checks the MLflow store: one nested fold run per fold under the pipeline's run.

    python -m benchmarks.runners                 # demo data, 4 folds, 50 epochs
    python -m benchmarks.runners --epochs 5      # quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common

KEDRO = Path(sys.executable).with_name("kedro")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process (train.threads)")
    parser.add_argument("--work-dir", type=Path, default=common.WORK_DIR / "runners")
    parser.add_argument("--out", type=Path, default=None, help="write the table (markdown) here")
    return parser.parse_args(argv)


def scratch_project(work_dir: Path) -> Path:
    """A fresh folder with the project's conf/ and a copy of its source."""
    project = work_dir / "project"
    if project.exists():
        shutil.rmtree(project)
    (project / "data").mkdir(parents=True)
    shutil.copytree(common.REPO / "conf", project / "conf")
    shutil.copy(common.REPO / "pyproject.toml", project / "pyproject.toml")
    # Kedro wants the source folder inside the project (same code as the installed package)
    shutil.copytree(common.REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return project


def kedro_run(project: Path, *options: str) -> float:
    """Wall seconds of one `kedro run` in the scratch project; raises with its log tail on failure."""
    start = time.perf_counter()
    result = subprocess.run(
        [str(KEDRO), "run", *options],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"kedro run {' '.join(options)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return seconds


def fold_runs_of_last_pipeline_run(project: Path) -> tuple[int, int]:
    """(fold runs nested under the newest top-level run, runs that are neither) in the scratch MLflow store."""
    with sqlite3.connect(project / "mlflow.db") as db:
        runs = db.execute("SELECT run_uuid, start_time FROM runs").fetchall()
        parents = dict(db.execute("SELECT run_uuid, value FROM tags WHERE key = 'mlflow.parentRunId'").fetchall())
    top = [r for r in runs if r[0] not in parents]
    newest = max(top, key=lambda r: r[1])[0]
    nested = sum(1 for parent in parents.values() if parent == newest)
    return nested, len(top)


def main(argv: list[str] | None = None) -> str:
    """Time the train stage under each runner and print the table."""
    args = parse_args(argv)
    project = scratch_project(args.work_dir)
    params = f"dataset:demo,train.epochs:{args.epochs},train.threads:{args.threads}"
    setup = kedro_run(project, "--pipeline=ingestion", "--params", "dataset:demo")
    setup += kedro_run(project, "--pipeline=embedding", "--params", "dataset:demo")
    setup += kedro_run(project, "--pipeline=graph", "--params", "dataset:demo")
    print(f"upstream stages (SequentialRunner): {setup:.0f} s", flush=True)
    cases = [
        ("SequentialRunner", 1, []),
        ("ParallelRunner", 1, ["--runner=ParallelRunner", "--runner-params", "max_workers:1"]),
        ("ParallelRunner", 2, ["--runner=ParallelRunner", "--runner-params", "max_workers:2"]),
    ]
    rows = []
    for runner, workers, options in cases:
        seconds = kedro_run(project, "--pipeline=train", "--params", params, *options)
        nested, top_level = fold_runs_of_last_pipeline_run(project)
        rows.append((runner, workers, seconds, nested, top_level))
        print(f"{runner} x {workers}: {seconds:.0f} s, {nested} fold runs nested under the pipeline run", flush=True)
    one_worker = rows[1][2]
    lines = [
        "### Runners: the train stage in 1 and 2 worker processes",
        "",
        f"- data: the generated demo dataset (4 sections x 244 spots), leave-one-section-out, 4 folds; "
        f"`kedro run --pipeline=train --params {params}` after the upstream stages",
        "- fold groups: `conf/base/parallelism.yml` fold_groups (4 `train.train_fold_group_<i>` nodes + `train.merge_trained_models`)",
        "- wall time of the whole command: process start, imports, worker start-up (spawn), training, MLflow logging",
        f"- machine: {common.cpu_model()}",
        "",
        "| runner | worker processes | wall s | speed-up vs 1 worker | fold runs nested under the pipeline run | top-level MLflow runs so far |",
        "|---|---|---|---|---|---|",
    ]
    for runner, workers, seconds, nested, top_level in rows:
        lines.append(f"| {runner} | {workers} | {seconds:.0f} | {one_worker / seconds:.2f}x | {nested} | {top_level} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
        print(f"\nwritten to {args.out}")
    return table


if __name__ == "__main__":
    main()
