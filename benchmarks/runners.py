"""Wall time of the train stage under SequentialRunner and ParallelRunner with 1 and 2 worker processes.

Runs the real CLI in a scratch copy of the project's `conf/` (under the benchmark work
dir, so the project's own `data/` and `mlflow.db` are untouched): the upstream stages
once with SequentialRunner, then `kedro run --pipeline=train` under each case, timed
end to end (process start, imports, worker start-up and MLflow logging included), with
`train.resume:false` so no case reuses another's fold models. Each command also checks
the MLflow store: one nested fold run per fold under the pipeline's run. With
`--evaluate`, the evaluation stage runs (untimed) after each case and the table gives
SpaHGC's ACG and the epochs run, plus a run without early stopping (`train.patience:0`)
under the last case for the ACG to compare with.

    python -m benchmarks.runners                 # demo data, 4 folds, 50 epochs
    python -m benchmarks.runners --epochs 5      # quick look
    python -m benchmarks.runners --dataset her2st --evaluate --cases sequential-all-threads parallel-2
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
STAGES = ("ingestion", "embedding", "graph")
# case: (runner, worker processes, torch threads per process or None for --threads, kedro run options)
CASES = {
    "sequential-all-threads": ("SequentialRunner", 1, 0, []),
    "sequential": ("SequentialRunner", 1, None, []),
    "parallel-1": ("ParallelRunner", 1, None, ["--runner=ParallelRunner", "--runner-params", "max_workers:1"]),
    "parallel-2": ("ParallelRunner", 2, None, ["--runner=ParallelRunner", "--runner-params", "max_workers:2"]),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", choices=("demo", "her2st"), default="demo", help="her2st: the shared HER2+ sections"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="train.epochs (default: 50 on demo; her2st: the project's)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process (train.threads)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=["sequential", "parallel-1", "parallel-2"])
    parser.add_argument(
        "--evaluate", action="store_true", help="ACG and epochs per case, and a run without early stopping"
    )
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


def dataset_params(args: argparse.Namespace) -> list[str]:
    """The `--params` items that pick the dataset (her2st: the shared sections and gene list)."""
    if args.dataset == "demo":
        return ["dataset:demo"]
    missing = [str(path) for path in (common.HER2ST_RAW, common.HER2ST_GENES) if not path.exists()]
    if missing:
        raise SystemExit(f"skipped: the shared HER2+ data is not here ({', '.join(missing)})")
    return [
        "dataset:her2st",
        f"raw_dir:{common.HER2ST_RAW.resolve()}",
        f"datasets.her2st.gene_panel.path:{common.HER2ST_GENES.resolve()}",
    ]


def trained_outcome(project: Path, upstream: list[str]) -> tuple[float, list[int]]:
    """(SpaHGC's ACG from the evaluation stage, epochs run per fold) of the newest train run in the scratch project."""
    runtime = dict(item.split(":", 1) for item in upstream)
    catalog = common.project_catalog(project / "data", **runtime)
    acg = float(catalog.load("overall_metrics")["methods"]["spahgc"]["pcc_acg"])
    return acg, [len(checkpoint["history"]) for checkpoint in catalog.load("trained_models").values()]


def main(argv: list[str] | None = None) -> str:
    """Time the train stage under each case and print the table."""
    args = parse_args(argv)
    upstream = dataset_params(args)
    project = scratch_project(args.work_dir)
    epochs = args.epochs if args.epochs is not None else (50 if args.dataset == "demo" else None)
    train = ["train.resume:false"] + ([f"train.epochs:{epochs}"] if epochs is not None else [])
    setup = sum(kedro_run(project, f"--pipeline={stage}", "--params", ",".join(upstream)) for stage in STAGES)
    print(f"upstream stages (SequentialRunner): {setup:.0f} s", flush=True)
    runs = [(name, []) for name in args.cases] + ([(args.cases[-1], ["train.patience:0"])] if args.evaluate else [])
    rows = []
    for name, extra in runs:
        runner, workers, threads, options = CASES[name]
        params = ",".join([*upstream, *train, f"train.threads:{args.threads if threads is None else threads}", *extra])
        seconds = kedro_run(project, "--pipeline=train", "--params", params, *options)
        nested, top_level = fold_runs_of_last_pipeline_run(project)
        outcome = ""
        if args.evaluate:
            kedro_run(project, "--pipeline=evaluation", "--params", ",".join(upstream))
            acg, epochs_run = trained_outcome(project, upstream)
            outcome = f" | {acg:.3f} | {min(epochs_run)}-{max(epochs_run)}"
        rows.append(
            (
                f"{runner} | {workers} | `{params.removeprefix(','.join(upstream) + ',')}`",
                seconds,
                nested,
                top_level,
                outcome,
            )
        )
        print(f"{runner} x {workers} ({params}): {seconds:.0f} s{outcome}", flush=True)
    first = rows[0][1]
    # the table names the shared data by its path from the repository, not this machine's
    shown = [item.replace(str(common.SHARED.resolve()), "../shared/data") for item in upstream]
    sizes = "4 sections x 244 spots" if args.dataset == "demo" else "sections C2-C5, 180-187 spots, 785 genes"
    lines = [
        f"### Runners: the train stage in 1 and 2 worker processes ({args.dataset})",
        "",
        f"- data: {args.dataset} ({sizes}), leave-one-section-out, 4 folds; "
        f"`kedro run --pipeline=train --params {','.join(shown)},<train params>` after the upstream stages",
        "- fold groups: `conf/base/parallelism.yml` fold_groups (4 `train.train_fold_group_<i>` nodes + `train.merge_trained_models`)",
        "- wall time of the whole command: process start, imports, worker start-up (spawn), training, MLflow logging"
        + (
            "; ACG from the evaluation stage run after it (untimed): SpaHGC's per-gene PCC over a test section's "
            "spots, mean over genes, then over the 4 test sections"
            if args.evaluate
            else ""
        ),
        f"- machine: {common.cpu_model()}",
        "",
        "| runner | worker processes | train params | wall s | speed-up vs the first row | fold runs nested under the "
        "pipeline run | top-level MLflow runs so far"
        + (" | ACG | epochs run per fold" if args.evaluate else "")
        + " |",
        "|---|---|---|---|---|---|---" + ("|---|---" if args.evaluate else "") + "|",
    ]
    for case, seconds, nested, top_level, outcome in rows:
        lines.append(f"| {case} | {seconds:.0f} | {first / seconds:.2f}x | {nested} | {top_level}{outcome} |")
    table = "\n".join(lines)
    common.write_table(table, args.out)
    return table


if __name__ == "__main__":
    main()
