"""The fault suite: what a hostile or unlucky user does, through the real `kedro` CLI.

Each case prepares a throwaway project (and, where it needs one, a copy of the generated demo
data), runs one command and states the exit code and what the message must name. Every case
also asserts: no traceback, no MLflow run left RUNNING, and outputs written before the fault
unchanged. Cases run two at a time (they are separate processes) and are checked one by one.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers.project import copy_project, run_kedro

DEMO = "dataset:demo,raw_dir:{raw}"


@dataclass
class Case:
    """One fault: the command (`{raw}`/`{project}` filled in), what to break first, and the expected outcome."""

    name: str
    command: list[str]
    names: list[str]
    prepare: Callable[[Path, Path], None] | None = None
    exit_code: int = 1
    data: bool = False
    ingest_first: bool = False
    check: Callable[[Path, str], None] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


def _run(*pipeline_and_params: str) -> list[str]:
    """`kedro run --pipeline=<p> --params <params>`."""
    pipeline, params = pipeline_and_params
    return ["run", f"--pipeline={pipeline}", "--params", params]


def _counts(raw: Path, section: str) -> pd.DataFrame:
    return pd.read_csv(raw / "ST-cnts" / f"{section}.tsv.gz", sep="\t", index_col=0)


def _write_counts(raw: Path, section: str, counts: pd.DataFrame) -> None:
    counts.to_csv(raw / "ST-cnts" / f"{section}.tsv.gz", sep="\t", compression="gzip")


def _edit_counts(section: str, edit: Callable[[pd.DataFrame], None]) -> Callable[[Path, Path], None]:
    def prepare(project: Path, raw: Path) -> None:
        counts = _counts(raw, section)
        edit(counts)
        _write_counts(raw, section, counts)

    return prepare


def _edit_spots(section: str, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path, Path], None]:
    def prepare(project: Path, raw: Path) -> None:
        path = raw / "ST-spotfiles" / f"{section}_selection.tsv"
        edit(pd.read_csv(path, sep="\t")).to_csv(path, sep="\t", index=False)

    return prepare


def _set(frame: pd.DataFrame, row: int, column: int, value: float) -> None:
    frame.iloc[row, column] = value


def _one_spot(project: Path, raw: Path) -> None:
    counts = _counts(raw, "B1")
    _write_counts(raw, "B1", counts.iloc[:1])
    spots = raw / "ST-spotfiles" / "B1_selection.tsv"
    table = pd.read_csv(spots, sep="\t")
    table[[f"{x}x{y}" == counts.index[0] for x, y in zip(table["x"], table["y"], strict=True)]].to_csv(
        spots, sep="\t", index=False
    )


def _remove_section(section: str) -> Callable[[Path, Path], None]:
    def prepare(project: Path, raw: Path) -> None:
        (raw / "ST-cnts" / f"{section}.tsv.gz").unlink()
        (raw / "ST-spotfiles" / f"{section}_selection.tsv").unlink()
        shutil.rmtree(raw / "ST-imgs" / section[0] / section)

    return prepare


def _pickled_gene_list(project: Path, raw: Path) -> None:
    # an object array whose unpickling would create `pwned`: a reader that unpickles runs it
    class Payload:
        def __reduce__(self):
            return (Path.touch, (project / "pwned",))

    np.save(project / "genes.npy", np.array([Payload()], dtype=object), allow_pickle=True)


def _truncate_section_file(project: Path, raw: Path) -> None:
    path = project / "data" / "02_intermediate" / "demo" / "sections" / "A1.h5ad"
    path.write_bytes(path.read_bytes()[:200])


def _gene_list(genes: list[str]) -> Callable[[Path, Path], None]:
    def prepare(project: Path, raw: Path) -> None:
        (project / "genes.txt").write_text("\n".join(genes) + "\n")

    return prepare


def _new_folder(project: Path, raw: Path) -> None:
    (project / "new").mkdir()
    (project / "new" / "notes.txt").write_text("no image here\n")


def _no_pwned(project: Path, output: str) -> None:
    assert not (project / "pwned").exists(), "the gene list's payload ran"


def _stale_section_gone(project: Path, output: str) -> None:
    sections = sorted(p.stem for p in (project / "data" / "02_intermediate" / "demo" / "sections").glob("*.h5ad"))
    assert sections == ["A1", "A2", "B1"], sections
    manifest = max((project / "data" / "02_intermediate" / "demo" / "section_manifest.json").iterdir())
    assert "B2" not in (manifest / "section_manifest.json").read_text()


def _download_stays_inside(project: Path, output: str) -> None:
    assert not any(project.parent.glob("*.zip")) and not (project.parent / "etc").exists()


CASES = [
    # parameters: stopped before any node, naming the parameter, the value and what is allowed
    Case("epochs zero", _run("train", "train.epochs:0"), ["train.epochs = 0"]),
    Case("epochs not a number", _run("train", "train.epochs:abc"), ["train.epochs", "abc"]),
    Case("k_refer zero", _run("graph", "graph.k_refer:0"), ["graph.k_refer = 0"]),
    Case("k_refer negative", _run("graph", "graph.k_refer:-3"), ["graph.k_refer = -3"]),
    Case("heads zero", _run("train", "train.model.heads:0"), ["train.model.heads = 0"]),
    Case("unknown dataset", _run("ingestion", "dataset:nope"), ["nope", "her2st"]),
    Case("empty values", _run("ingestion", "dataset:bmini,,raw_dir:"), ["bmini", "raw_dir = ''"]),
    Case("unknown encoder", _run("embedding", "encoder:nope"), ["encoder", "nope"]),
    Case("unknown device", _run("train", "device:tpu"), ["device", "tpu"]),
    Case("misspelt parameter", _run("train", "train.epoch:3"), ["train.epoch"]),
    Case("unknown teacher", _run("train", "train.teacher:bogus"), ["train.teacher", "bogus"]),
    Case("fractional context", _run("embedding", "embedding.context_scale:0.5"), ["embedding.context_scale"]),
    Case("negative patience", _run("train", "train.patience:-1"), ["train.patience"]),
    Case("unknown decoder", _run("train", "train.model.decoder:mlp"), ["train.model.decoder", "mlp"]),
    Case("secret as a parameter", _run("ingestion", "hf_token:abc123"), ["hf_token", "environment"], exit_code=2),
    # raw data: stopped at ingestion, naming the section, the file or the folder, and the fix
    Case(
        "raw folder absent",
        _run("ingestion", "dataset:visium,raw_dir:{project}/no_such_folder"),
        ["no_such_folder", "raw_dir"],
    ),
    Case(
        "negative counts",
        _run("ingestion", DEMO),
        ["A1", "negative"],
        _edit_counts("A1", lambda c: _set(c, 3, 2, -4)),
        data=True,
    ),
    Case(
        "fractional counts",
        _run("ingestion", DEMO),
        ["A2", "ingestion.counts"],
        _edit_counts("A2", lambda c: _set(c, 0, 0, 2.5)),
        data=True,
    ),
    Case(
        "non-finite counts",
        _run("ingestion", DEMO),
        ["B1"],
        _edit_counts("B1", lambda c: _set(c, 1, 1, np.nan)),
        data=True,
    ),
    Case(
        "NaN spot coordinate",
        _run("ingestion", DEMO),
        ["A1", "spot centres", "10x2"],
        _edit_spots("A1", lambda s: s.assign(pixel_x=s["pixel_x"].where(s.index != 4))),
        data=True,
    ),
    Case("one-spot section", _run("ingestion", DEMO), ["B1", "min_spots_per_section"], _one_spot, data=True),
    Case(
        "counts and spots share no spot",
        _run("ingestion", DEMO),
        ["A2"],
        _edit_spots("A2", lambda s: s.assign(x=s["x"] + 1000)),
        data=True,
    ),
    Case(
        "spot table without pixel columns",
        _run("ingestion", DEMO),
        ["A1", "pixel_x"],
        _edit_spots("A1", lambda s: s.drop(columns=["pixel_x", "pixel_y"])),
        data=True,
    ),
    Case(
        "garbage counts file",
        _run("ingestion", DEMO),
        ["B2.tsv.gz"],
        lambda project, raw: (raw / "ST-cnts" / "B2.tsv.gz").write_bytes(b"\x00\x01 not a table"),
        data=True,
    ),
    Case(
        "image missing",
        _run("ingestion", DEMO),
        ["A2", "image"],
        lambda project, raw: shutil.rmtree(raw / "ST-imgs" / "A" / "A2"),
        data=True,
    ),
    Case(
        "section listed but absent",
        _run("ingestion", DEMO + ",datasets.demo.sections:[Z9]"),
        ["Z9", "datasets.demo.sections"],
        data=True,
    ),
    Case(
        "gene list absent",
        _run("ingestion", DEMO + ",datasets.demo.gene_panel.rule:list,datasets.demo.gene_panel.path:/no/genes.npy"),
        ["/no/genes.npy"],
        data=True,
    ),
    Case(
        "pickled gene list",
        _run(
            "ingestion", DEMO + ",datasets.demo.gene_panel.rule:list,datasets.demo.gene_panel.path:{project}/genes.npy"
        ),
        ["genes.npy", "pickle"],
        _pickled_gene_list,
        data=True,
        check=_no_pwned,
    ),
    Case(
        "empty gene list",
        _run(
            "ingestion", DEMO + ",datasets.demo.gene_panel.rule:list,datasets.demo.gene_panel.path:{project}/genes.txt"
        ),
        ["genes.txt", "empty"],
        _gene_list([""]),
        data=True,
    ),
    # outputs of an earlier run: damaged or stale files are named, never used
    Case(
        "damaged section file",
        _run("embedding", DEMO),
        ["A1.h5ad", "damaged", "re-run the pipeline that writes it"],
        _truncate_section_file,
        data=True,
        ingest_first=True,
    ),
    Case(
        "section removed from the raw folder",
        _run("ingestion", DEMO),
        [],
        _remove_section("B2"),
        exit_code=0,
        data=True,
        ingest_first=True,
        check=_stale_section_gone,
    ),
    # prediction and downloads
    Case("unknown counts kind", _run("ingestion", "ingestion.counts:bogus"), ["ingestion.counts", "bogus"]),
    Case("predict folder absent", _run("predict", DEMO + ",new_dir:/nonexistent/new"), ["/nonexistent/new"]),
    Case("predict folder without images", _run("predict", DEMO + ",new_dir:{project}/new"), ["new"], _new_folder),
    Case("UNI without weights, offline", _run("embedding", DEMO + ",encoder:uni"), ["uni", "weights"], data=True),
    Case(
        "download path escape",
        ["download", "--dataset", "hest_../../.."],
        ["hest_../../..", "not a dataset name"],
        exit_code=2,
        check=_download_stays_inside,
    ),
]


def _snapshot(project: Path) -> dict[str, str]:
    """Hash of every file under data/: what a failing run must leave as it was."""
    return {
        str(path.relative_to(project)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((project / "data").rglob("*"))
        if path.is_file()
    }


def _running_runs(project: Path) -> int:
    store = project / "mlflow.db"
    if not store.exists():
        return 0
    with sqlite3.connect(store) as db:
        return db.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0]


@dataclass
class Outcome:
    project: Path
    result: subprocess.CompletedProcess
    before: dict[str, str]
    after: dict[str, str]
    setup_failed: bool = False


def run_case(case: Case, root: Path, demo: Path) -> Outcome:
    """Prepare the case's project (and data), run its command, and record what it left."""
    root.mkdir(parents=True)
    project = copy_project(root / "project")
    raw = root / "raw"
    if case.data:
        shutil.copytree(demo, raw)
    # the short messages are what is checked, never the traceback a developer may have asked for
    env = {**case.extra_env, "SPAHGC_TRACEBACK": ""}
    fill = {"raw": str(raw), "project": str(project)}
    if case.ingest_first:
        first = run_kedro(project, *_run("ingestion", DEMO.format(**fill)), **env)
        if first.returncode != 0:
            return Outcome(project, first, {}, {}, setup_failed=True)
    if case.prepare:
        case.prepare(project, raw)
    before = _snapshot(project)
    result = run_kedro(project, *(part.format(**fill) for part in case.command), **env)
    return Outcome(project, result, before, _snapshot(project))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, demo_raw) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("faults")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {case.name: pool.submit(run_case, case, root / f"case{i}", demo_raw) for i, case in enumerate(CASES)}
        return {name: future.result() for name, future in futures.items()}


def test_the_suite_covers_at_least_35_faults():
    assert len(CASES) >= 35 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(case: Case, outcomes: dict[str, Outcome]):
    outcome = outcomes[case.name]
    output = outcome.result.stdout + outcome.result.stderr
    assert not outcome.setup_failed, f"the ingestion before the fault failed:\n{output[-3000:]}"
    assert outcome.result.returncode == case.exit_code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for name in case.names:
        assert name in output, f"the message does not name {name!r}:\n{output[-3000:]}"
    assert _running_runs(outcome.project) == 0, "an MLflow run was left RUNNING"
    if case.exit_code != 0:
        changed = {p for p in outcome.before if outcome.after.get(p) != outcome.before[p]}
        assert not changed, f"a failing run changed earlier outputs: {sorted(changed)}"
    if case.check:
        case.check(outcome.project, output)
