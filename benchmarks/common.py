"""Shared helpers of the benchmarks: run the project's pipelines, measure, describe the machine.

Benchmarks run the registered Kedro pipelines on the project's catalog (`project_catalog`
+ `run_pipelines`: the `benchmark` environment, no MLflow run) with every output under a
work folder of their own (the `data_root` runtime parameter), so they never touch the
project's `data/` and what they measure is what `kedro run` runs, node for node.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
HER2ST_RAW = SHARED / "her2st"
HER2ST_GENES = SHARED / "gene_lists" / "her_hvg_cut_1000.npy"
WORK_DIR = REPO / "data" / "benchmarks"
# outputs of the stages before training: shared by every run that trains on the same inputs
UPSTREAM_LAYERS = ("01_raw", "02_intermediate", "04_feature", "05_model_input")


def project_catalog(data_root: Path, **runtime_params: Any) -> Any:
    """The project's catalog (datasets and parameters) as `kedro run --env benchmark --params ...` builds it,
    with every output under `data_root`."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(REPO)
    params = {"data_root": str(Path(data_root).resolve()), **runtime_params}
    with KedroSession.create(project_path=REPO, env="benchmark", runtime_params=params) as session:
        return session.load_context().catalog


def run_pipelines(catalog: Any, *names: str) -> None:
    """Run the project's registered pipelines `names` on `catalog`, as `kedro run --pipelines` does (no hooks)."""
    from kedro.framework.project import pipelines
    from kedro.runner import SequentialRunner

    SequentialRunner().run(sum((pipelines[name] for name in names), start=type(pipelines[names[0]])([])), catalog)


def project_parameters(**runtime_params: Any) -> dict[str, Any]:
    """The project's parameters as `kedro run --env benchmark --params ...` sees them."""
    from kedro.config import OmegaConfigLoader

    loader = OmegaConfigLoader(
        conf_source=str(REPO / "conf"), base_env="base", default_run_env="benchmark", runtime_params=runtime_params
    )
    return loader["parameters"]


def digest(value: Any) -> str:
    """A short stable hash of a JSON-able value (work-folder and cache keys)."""
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_folder(root: Path, upstream: Path) -> Path:
    """A fresh folder for one training run whose upstream layers are links to `upstream`'s."""
    root.mkdir(parents=True, exist_ok=True)
    for layer in UPSTREAM_LAYERS:
        (upstream / layer).mkdir(parents=True, exist_ok=True)
        link = root / layer
        if not link.exists():
            link.symlink_to((upstream / layer).resolve(), target_is_directory=True)
    return root


def cpu_model() -> str:
    """CPU model name and logical core count from /proc/cpuinfo (platform fallback)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        if names:
            return f"{names[0]} x {len(names)} logical cores (os.cpu_count {os.cpu_count()})"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x {os.cpu_count()} cores"


def machine_line(device: str) -> str:
    """One line naming the CPU, torch version and threads, and the torch device used."""
    import torch

    return f"{cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; device {device}"


def peak_rss_mib() -> float:
    """This process's maximum resident set size so far (MiB, from getrusage)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_memory_mib() -> tuple[float, float]:
    """This process's resident set size and its anonymous part (MiB, from /proc/self/statm): resident minus
    shared pages, i.e. without mapped files (memory-mapped stores) that the kernel can drop and read again."""
    try:
        resident, shared = (int(field) for field in Path("/proc/self/statm").read_text().split()[1:3])
        page = os.sysconf("SC_PAGE_SIZE") / 2**20
        return resident * page, (resident - shared) * page
    except (OSError, ValueError):
        return float("nan"), float("nan")


def current_rss_mib() -> float:
    """This process's current resident set size (MiB, from /proc/self/statm)."""
    return current_memory_mib()[0]


@dataclass
class StageMeasure:
    """Wall time and memory of one stage: peak RSS sampled during it, its growth over the
    start, the peak of its anonymous part (RSS without mapped files), and (CUDA only) the
    peak of torch's allocated GPU memory during it."""

    seconds: float = 0.0
    rss_before_mib: float = 0.0
    peak_rss_mib: float = 0.0
    notes: list[str] = field(default_factory=list)
    gpu_peak_mib: float = float("nan")
    peak_anonymous_mib: float = float("nan")

    @property
    def peak_growth_mib(self) -> float:
        """Peak RSS during the stage minus RSS at its start (what the stage itself needed, roughly)."""
        return max(self.peak_rss_mib - self.rss_before_mib, 0.0)


@contextmanager
def measure(interval: float = 0.02, cuda: bool = False) -> Iterator[StageMeasure]:
    """Time a block and sample this process's RSS (/proc/self/statm) every `interval` s in a thread.

    RSS covers numpy, torch and every native allocation, unlike tracemalloc; short spikes
    between two samples can be missed. `cuda`: synchronise before and after (so queued
    kernels are timed) and record `torch.cuda.max_memory_allocated` over the block.
    """
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss, anonymous = current_memory_mib()
    result = StageMeasure(rss_before_mib=rss, peak_rss_mib=rss, peak_anonymous_mib=anonymous)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss, anonymous = current_memory_mib()
            result.peak_rss_mib = max(result.peak_rss_mib, rss)
            result.peak_anonymous_mib = max(result.peak_anonymous_mib, anonymous)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        yield result
    finally:
        if cuda:
            torch.cuda.synchronize()
            result.gpu_peak_mib = torch.cuda.max_memory_allocated() / 2**20
        result.seconds = time.perf_counter() - start
        stop.set()
        thread.join()
        rss, anonymous = current_memory_mib()
        result.peak_rss_mib = max(result.peak_rss_mib, rss)
        result.peak_anonymous_mib = max(result.peak_anonymous_mib, anonymous)


def in_fresh_process(function: Any, *args: Any) -> Any:
    """`function(*args)` in a new (spawned) Python process: its peak RSS is not hidden by memory an earlier
    measurement left mapped in this one. `function` must be importable by name, its result picklable."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def log_log_slope(sizes: list[float], values: list[float]) -> float:
    """Least-squares slope of log(value) on log(size): the growth exponent (NaN with < 2 usable points)."""
    pairs = [(s, v) for s, v in zip(sizes, values, strict=True) if s > 0 and v > 0 and np.isfinite(v)]
    if len(pairs) < 2:
        return float("nan")
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(x, y, 1)[0])


def write_table(text: str, out: Path | None, footer: str = "") -> None:
    """Print a generated table and, with `out`, write it (and a footer) there."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + ("\n\n" + footer if footer else "") + "\n")
        print(f"\nwritten to {out}")
